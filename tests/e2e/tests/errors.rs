//! Error paths against the lab: each fails clearly, with the right exit code, and leaves
//! nothing behind (no generation, no snapshot, no half-restored VM).

use std::time::{Duration, Instant};

use safekeeping_e2e::Lab;

/// A lab with one backed-up VM `src` (two disks, two NICs).
fn lab_with_backup() -> Lab {
    let lab = Lab::up();
    lab.create_vm("src", &["16M", "8M"], &["VM Network", "DC0_DVPG0"]);
    lab.guest_write("src", 0, "0", "3M", Some(7));
    lab.guest_write("src", 1, "1M", "1M", Some(8));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:src"]).ok();
    lab
}

fn generations(lab: &Lab) -> usize {
    let j = lab.sk(&["--json", "list", "vm:src"]).ok().json();
    j["targets"][0]["generations"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn login_and_certificate_failures_stop_the_run() {
    let lab = lab_with_backup();
    let wrong = lab.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let pw = lab.dir().join("password");
    let cfg = lab.config_variant(
        "wrong-password.toml",
        &pw.to_string_lossy(),
        &wrong.to_string_lossy(),
    );
    let r = lab.sk_with(&["--json", "backup", "vm:src"], &cfg, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("rejected the login"), "{}", r.stderr);
    assert_eq!(r.json()["exit_code"], 1);
    assert!(
        !r.all_output().contains("not-the-password"),
        "password leaked"
    );

    let toml = std::fs::read_to_string(lab.config()).unwrap();
    let pin = toml
        .lines()
        .find_map(|l| l.strip_prefix("thumbprint_sha256 = "))
        .expect("lab config pins the certificate")
        .trim_matches('"')
        .to_string();
    let other = vec!["AB"; 32].join(":");
    let cfg = lab.config_variant("wrong-pin.toml", &pin, &other);
    let r = lab.sk_with(&["backup", "vm:src"], &cfg, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("does not match the pinned"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&pin),
        "the error names the presented fingerprint: {}",
        r.stderr
    );
    assert_eq!(generations(&lab), 1);

    // vCenter down: the run cannot start.
    let url = toml
        .lines()
        .find_map(|l| l.strip_prefix("url = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let cfg = lab.config_variant("down.toml", &url, "https://127.0.0.1:1/sdk");
    let r = lab.sk_with(&["--json", "backup", "vm:src"], &cfg, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    assert_eq!(r.json()["exit_code"], 1);
}

#[test]
fn target_errors_and_exit_codes() {
    let lab = lab_with_backup();
    let r = lab.sk(&["--json", "backup", "vm:nope"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["exit_code"], 1);
    assert_eq!(j["targets"][0]["status"], "failed");
    assert!(j["targets"][0]["error"]
        .as_str()
        .unwrap()
        .contains("no VM matches vm:nope"));

    // One good and one bad target: exit 3, both reported.
    let r = lab.sk(&["--json", "backup", "vm:src", "vm:nope"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["targets"][0]["status"], "succeeded");
    assert_eq!(j["targets"][0]["generation"], 2);
    assert_eq!(j["targets"][1]["status"], "failed");

    // Same VM by moref and by uuid.
    let info = lab.vm_info("src").unwrap();
    let moref = format!("vm:{}", info["moref"].as_str().unwrap());
    let j = lab.sk(&["--json", "backup", &moref]).ok().json();
    assert_eq!(j["targets"][0]["generation"], 3);
    let uuid = format!("vm:{}", info["uuid"].as_str().unwrap());
    lab.sk(&["backup", &uuid]).ok();
    assert_eq!(generations(&lab), 4);

    let r = lab.sk(&["backup", "ivd:disk-1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.all_output()
            .contains("no first class disk matches ivd:disk-1"),
        "{}",
        r.all_output()
    );

    let r = lab.sk(&["backup", "src"]);
    assert_eq!(r.code, 2, "usage errors exit 2: {}", r.stderr);

    // By inventory path; and a password file others can read gets a warning.
    let pw = lab.dir().join("password");
    let mut perms = std::fs::metadata(&pw).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&pw, perms).unwrap();
    let r = lab.sk(&["--json", "backup", "vm:DC0/vm/src"]).ok();
    assert_eq!(r.json()["targets"][0]["generation"], 5);
    assert!(
        r.stderr.contains("readable by group or others"),
        "{}",
        r.stderr
    );
}

#[test]
fn unknown_mappings_are_refused_before_anything_is_created() {
    let lab = lab_with_backup();
    let r = lab.sk(&["restore", "vm:src", "--name", "m1", "--datastore", "nope"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("unknown datastore `nope`; candidates: datastore1, datastore2"),
        "{}",
        r.stderr
    );
    assert!(lab.vm_info("m1").is_none());
    let r = lab.sk(&[
        "restore",
        "vm:src",
        "--name",
        "m2",
        "--network",
        "VM Network=nope",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown network `nope`"), "{}", r.stderr);
    assert!(
        r.stderr.contains("Lab Network 2"),
        "candidates listed: {}",
        r.stderr
    );
    assert!(lab.vm_info("m2").is_none());
    let r = lab.sk(&[
        "restore",
        "vm:src",
        "--name",
        "m3",
        "--network",
        "Other=VM Network",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("has no NIC on network `Other`"),
        "{}",
        r.stderr
    );
    let r = lab.sk(&["restore", "vm:src", "--name", "m4", "--folder", "nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown folder"), "{}", r.stderr);
    let r = lab.sk(&[
        "restore",
        "vm:src",
        "--name",
        "m5",
        "--disk-datastore",
        "1=datastore2",
    ]);
    r.ok();
    let info = lab.vm_info("m5").unwrap();
    assert_eq!(info["disks"][1]["datastore"], "datastore2");
    assert_eq!(info["disks"][0]["datastore"], "datastore1");
}

#[test]
fn vddk_read_failure_commits_nothing_and_the_next_backup_works() {
    let lab = lab_with_backup();
    lab.guest_write("src", 0, "5M", "6M", Some(9));
    lab.vddk_conf_append("fake.fail_read_nth = 3");
    let r = lab.sk(&["--json", "backup", "vm:src"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = r.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("VDDK read"), "{err}");
    assert_eq!(generations(&lab), 1, "no generation committed");
    assert!(
        lab.snapshots("src").is_empty(),
        "snapshot removed after the failure"
    );
    lab.vddk_conf_remove("fake.fail_read_nth");
    let j = lab.sk(&["--json", "backup", "vm:src"]).ok().json();
    assert_eq!(j["targets"][0]["generation"], 2);
    assert_eq!(j["targets"][0]["mode"], "incremental");
    let digests = lab.digests("src", 2);
    lab.sk(&["restore", "vm:src", "--name", "after-failure"])
        .ok();
    assert_eq!(lab.digests("after-failure", 2), digests);
    lab.sk(&["check", "--read-data"]).ok();
}

#[test]
fn overwrite_refuses_a_running_vm_without_force() {
    let lab = lab_with_backup();
    let digests = lab.digests("src", 2);
    lab.create_vm("victim", &["4M"], &["VM Network"]);
    let r = lab.sk(&["restore", "vm:src", "--name", "victim"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let r = lab.sk(&["restore", "vm:src", "--name", "victim", "--overwrite"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("powered on"), "{}", r.stderr);
    assert_eq!(lab.vm_info("victim").unwrap()["power_state"], "poweredOn");
    lab.sk(&[
        "restore",
        "vm:src",
        "--name",
        "victim",
        "--overwrite",
        "--force",
    ])
    .ok();
    assert_eq!(lab.digests("victim", 2), digests);
}

#[test]
fn quiesce_failure_falls_back_and_interrupts_clean_up() {
    let lab = lab_with_backup();
    lab.lab(&["knobs", "--fail-quiesced-snapshots", "true"])
        .ok();
    let r = lab.sk(&["backup", "vm:src"]).ok();
    assert!(r.stderr.contains("without quiescing"), "{}", r.stderr);
    lab.lab(&["knobs", "--fail-quiesced-snapshots", "false"])
        .ok();

    // SIGTERM during the read: the run stops, removes its snapshot, commits nothing.
    lab.vddk_conf_append("fake.read_latency_ms = 3000");
    let before = generations(&lab);
    let child = lab.sk_spawn(&["backup", "vm:src", "--full"]);
    wait_for_snapshot(&lab);
    let (code, stderr) = safekeeping_e2e::stop_with("TERM", child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        lab.snapshots("src").is_empty(),
        "snapshot removed on SIGTERM: {stderr}"
    );
    assert_eq!(generations(&lab), before);

    // SIGKILL leaves the snapshot; the next backup removes it.
    let mut child = lab.sk_spawn(&["backup", "vm:src", "--full"]);
    wait_for_snapshot(&lab);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(lab.snapshots("src").len(), 1);
    lab.vddk_conf_remove("fake.read_latency_ms");
    let r = lab.sk(&["backup", "vm:src"]).ok();
    assert!(r.stderr.contains("left by an earlier"), "{}", r.stderr);
    assert!(lab.snapshots("src").is_empty());
    assert_eq!(generations(&lab), before + 1);
}

fn wait_for_snapshot(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.snapshots("src").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the read start.
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn an_interrupted_restore_destroys_the_vm_it_created() {
    let lab = lab_with_backup();
    lab.vddk_conf_append("fake.write_latency_ms = 3000");
    let child = lab.sk_spawn(&["restore", "vm:src", "--name", "half"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.vm_info("half").is_none() {
        assert!(Instant::now() < deadline, "the VM never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, stderr) = safekeeping_e2e::stop_with("INT", child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("was destroyed"), "{stderr}");
    assert!(lab.vm_info("half").is_none(), "the partial VM is gone");
    lab.vddk_conf_remove("fake.write_latency_ms");
    lab.sk(&["check"]).ok();
}
