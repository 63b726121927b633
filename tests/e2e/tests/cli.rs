//! The command line's contract with cron and scripts: JSON documents, exit codes, parallel
//! targets, `--log-file`, `SAFEKEEPING_CONFIG`, lock waiting, and `--recovery`.

use std::process::Command;
use std::time::{Duration, Instant};

use safekeeping_e2e::{binary, Lab};

#[test]
fn json_documents_parallel_targets_logs_and_config_lookup() {
    let lab = Lab::up();
    lab.create_vm("a", &["8M"], &["VM Network"]);
    lab.create_vm("b", &["8M", "4M"], &["VM Network", "DC0_DVPG0"]);
    lab.guest_write("a", 0, "0", "2M", Some(1));
    lab.guest_write("b", 1, "1M", "1M", Some(2));
    let j = lab.sk(&["--json", "repo", "init"]).ok().json();
    assert_eq!(j["exit_code"], 0);
    assert!(j["repository_id"].is_string());

    let log = lab.dir().join("backup.log");
    let l = log.to_string_lossy().into_owned();
    let j = lab
        .sk(&[
            "--json",
            "--log-file",
            &l,
            "backup",
            "vm:a",
            "vm:b",
            "--parallel",
            "2",
        ])
        .ok()
        .json();
    let targets = j["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    for (t, name) in targets.iter().zip(["vm:a", "vm:b"]) {
        assert_eq!(t["target"], name, "results keep the command line's order");
        assert_eq!(t["status"], "succeeded");
        assert_eq!(t["generation"], 1);
        assert_eq!(t["mode"], "full");
        for key in ["bytes_read", "bytes_new"] {
            assert!(t[key].as_u64().is_some(), "{key}");
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("snapshot created"), "{logged}");
    assert!(!logged.contains(
        &std::fs::read_to_string(lab.dir().join("password"))
            .unwrap()
            .trim()
            .to_string()
    ));

    let j = lab.sk(&["--json", "list"]).ok().json();
    assert_eq!(j["targets"].as_array().unwrap().len(), 2);
    let j = lab.sk(&["--json", "show", "vm:b"]).ok().json();
    assert_eq!(j["generation"], 1);
    assert_eq!(j["disks"].as_array().unwrap().len(), 2);
    assert_eq!(j["disks"][0]["capacity"], 8 << 20);
    let files: Vec<&str> = j["metadata_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in ["vm-config.xml", "vm.vmx", "vm.nvram", "vm.json"] {
        assert!(files.contains(&f), "{f} saved: {files:?}");
    }
    let j = lab.sk(&["--json", "check"]).ok().json();
    assert_eq!(j["exit_code"], 0);
    let r = lab.sk(&["--json", "show", "vm:nope"]);
    assert_eq!(r.code, 1);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("no backup of vm:nope"));

    // The configuration from SAFEKEEPING_CONFIG, and a clear error without any.
    let out = Command::new(binary("safekeeping"))
        .args(["list"])
        .env("SAFEKEEPING_CONFIG", lab.config())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm:b"));
    let out = Command::new(binary("safekeeping"))
        .args(["list"])
        .env_remove("SAFEKEEPING_CONFIG")
        .env("XDG_CONFIG_HOME", lab.dir().join("no-such-dir"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration file"));
}

#[test]
fn a_second_backup_of_the_same_vm_waits_for_the_lock_then_fails_clearly() {
    let lab = Lab::up();
    lab.create_vm("a", &["8M"], &["VM Network"]);
    lab.guest_write("a", 0, "0", "4M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    lab.vddk_conf_append("fake.read_latency_ms = 5000");
    let child = lab.sk_spawn(&["backup", "vm:a"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.snapshots("a").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let impatient = lab.config_variant(
        "impatient.toml",
        "lock_wait_seconds = 60",
        "lock_wait_seconds = 1",
    );
    let started = Instant::now();
    let r = lab.sk_with(&["--json", "backup", "vm:a"], &impatient, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = r.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("locked by another safekeeping process"),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn recovery_keeps_identity_and_macs() {
    let lab = Lab::up();
    lab.create_vm("a", &["8M"], &["VM Network"]);
    lab.guest_write("a", 0, "0", "1M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:a"]).ok();
    // A second generation, whose saved configuration has change tracking on.
    lab.sk(&["backup", "vm:a"]).ok();
    let original = lab.vm_info("a").unwrap();
    for mode in ["create", "import"] {
        let name = format!("a-{mode}");
        lab.sk(&[
            "restore",
            "vm:a",
            "--recovery",
            "--mode",
            mode,
            "--name",
            &name,
        ])
        .ok();
        let info = lab.vm_info(&name).unwrap();
        assert_eq!(info["uuid"], original["uuid"], "{mode}");
        assert_eq!(info["nics"][0]["mac"], original["nics"][0]["mac"], "{mode}");
        assert_eq!(lab.digests(&name, 1), lab.digests("a", 1));
    }
    // The recovered VM continues the original's history (same identity), but its disks are
    // new: the next backup reads them in full instead of trusting the old change ids.
    let j = lab.sk(&["--json", "backup", "vm:a-create"]).ok().json();
    let disk = &j["targets"][0]["disks"][0];
    assert_eq!(disk["mode"], "full", "{disk}");
    assert!(
        disk["reason"].as_str().unwrap().contains("replaced"),
        "{disk}"
    );
}
