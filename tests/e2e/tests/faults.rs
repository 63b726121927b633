//! Faults under a running backup: VDDK read errors on a range and slow reads, a full file
//! system under the repository, and backups, a restore and a gc running at the same time; and
//! under a restore, a disk whose close fails.
//! A fault fails the run clearly (safekeeping does not retry a failed read: docs/user-guide.md),
//! never commits a generation with wrong data, and leaves a repository that checks clean.

use std::path::{Path, PathBuf};
use std::process::Command;

use safekeeping_e2e::Lab;

/// Committed generation numbers of `vm`.
fn generations(lab: &Lab, vm: &str) -> Vec<u64> {
    let j = lab.sk(&["--json", "list"]).ok().json();
    j["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == vm)
        .flat_map(|t| t["generations"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g["id"].as_u64())
        .collect()
}

fn check_clean(lab: &Lab, config: &Path) {
    let r = lab.sk_with(&["--json", "check", "--read-data"], config, &[]);
    let j = r.json();
    assert_eq!(r.code, 0, "{j}");
    assert_eq!(j["problems"].as_array().map_or(1, Vec::len), 0, "{j}");
}

#[test]
fn a_failing_range_fails_the_run_and_latency_only_slows_it() {
    let lab = Lab::up();
    lab.create_vm("f", &["16M", "16M"], &["VM Network"]);
    lab.guest_write("f", 0, "0", "3M", Some(1));
    lab.guest_write("f", 1, "2M", "3M", Some(2));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:f"]).ok();
    let gen1 = lab.digests("f", 2);

    // New data on disk 1 whose sectors 8192.. (4 MiB..) cannot be read.
    lab.guest_write("f", 1, "4M", "2M", Some(3));
    lab.vddk_conf_append("fake.fail_read_sectors = 9000-9001");
    let r = lab.sk(&["--json", "backup", "vm:f"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = r.json()["targets"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("VDDK read"), "{err}");
    assert_eq!(generations(&lab, "f"), vec![1], "nothing committed");
    assert!(lab.snapshots("f").is_empty(), "snapshot removed");
    check_clean(&lab, &lab.config());

    // A full backup fails the same way: the range is unreadable whatever the mode.
    let r = lab.sk(&["--json", "backup", "vm:f", "--full"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(generations(&lab, "f"), vec![1]);
    lab.vddk_conf_remove("fake.fail_read_sectors");

    // Slow reads: the run takes longer and the data is right.
    lab.vddk_conf_append("fake.read_latency_ms = 100");
    let gen2 = lab.digests("f", 2);
    let j = lab.sk(&["--json", "backup", "vm:f"]).ok().json();
    assert_eq!(j["targets"][0]["generation"], 2);
    assert_eq!(j["targets"][0]["mode"], "incremental");
    lab.vddk_conf_remove("fake.read_latency_ms");
    for (g, digests) in [(1, &gen1), (2, &gen2)] {
        let name = format!("f-g{g}");
        lab.sk(&[
            "restore",
            "vm:f",
            "--generation",
            &g.to_string(),
            "--name",
            &name,
        ])
        .ok();
        assert_eq!(&lab.digests(&name, 2), digests, "generation {g}");
    }
    check_clean(&lab, &lab.config());
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`6m`) at `dir`, or `None` where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot mount a tmpfs here ({}); the full-disk test does not apply",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_file_system_under_the_repository_commits_nothing() {
    let lab = Lab::up();
    let mnt = lab.dir().join("small-fs");
    let Some(_fs) = Tmpfs::mount(&mnt, "6m") else {
        return;
    };
    let repo = mnt.join("repo");
    let cfg = lab.config_variant(
        "small.toml",
        &format!("path = \"{}\"", lab.dir().join("repo").display()),
        &format!("path = \"{}\"", repo.display()),
    );
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);
    lab.create_vm("small", &["8M"], &["VM Network"]);
    lab.guest_write("small", 0, "0", "1M", Some(1));
    lab.create_vm("big", &["16M"], &["VM Network"]);
    lab.guest_write("big", 0, "0", "12M", Some(2));
    sk(&["repo", "init"]).ok();
    sk(&["backup", "vm:small"]).ok();
    let small1 = lab.digests("small", 1);

    let r = sk(&["--json", "backup", "vm:big"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = r.json()["targets"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("No space left on device"),
        "the cause is named: {err}"
    );
    assert!(
        err.contains(&repo.display().to_string()),
        "the path is named: {err}"
    );
    assert!(lab.snapshots("big").is_empty(), "snapshot removed");
    let j = sk(&["--json", "list"]).ok().json();
    let names: Vec<&str> = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["generations"].as_array().is_some_and(|g| !g.is_empty()))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["small"], "no generation of big committed");
    check_clean(&lab, &cfg);

    // gc frees the abandoned chunks once they are older than its grace period (5 minutes;
    // aged here by hand); a small backup fits again and everything restores.
    let aged = Command::new("find")
        .arg(repo.join("chunks"))
        .args([
            "-type",
            "f",
            "-exec",
            "touch",
            "-m",
            "-d",
            "10 minutes ago",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(aged.success());
    let j = sk(&["--json", "gc"]).ok().json();
    assert!(j["bytes_removed"].as_u64().unwrap_or(0) > 0, "{j}");
    let j = sk(&["--json", "check"]).ok().json();
    assert_eq!(
        j["incomplete_generations"].as_array().map(Vec::len),
        Some(0),
        "{j}"
    );
    assert_eq!(j["temp_files"], 0, "{j}");
    lab.guest_write("small", 0, "2M", "1M", Some(3));
    let small2 = lab.digests("small", 1);
    sk(&["backup", "vm:small"]).ok();
    check_clean(&lab, &cfg);
    for (g, d) in [(1, &small1), (2, &small2)] {
        let name = format!("small-g{g}");
        sk(&[
            "restore",
            "vm:small",
            "--generation",
            &g.to_string(),
            "--name",
            &name,
        ])
        .ok();
        assert_eq!(&lab.digests(&name, 1), d, "generation {g}");
    }
}

#[test]
fn backups_restore_and_gc_at_the_same_time_lose_nothing() {
    let lab = Lab::up();
    lab.create_vm("a", &["8M"], &["VM Network"]);
    lab.create_vm("b", &["8M"], &["VM Network"]);
    lab.guest_write("a", 0, "0", "2M", Some(1));
    lab.guest_write("b", 0, "0", "2M", Some(2));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:a", "vm:b"]).ok();
    let mut expected: Vec<(&str, u64, String)> =
        vec![("a", 1, lab.digest("a", 0)), ("b", 1, lab.digest("b", 0))];
    for round in 0..3u64 {
        let off = format!("{}M", 3 + round);
        lab.guest_write("a", 0, &off, "1M", Some(10 + round));
        lab.guest_write("b", 0, &off, "1M", Some(20 + round));
        // Shared data between the two VMs, so gc and both backups touch the same chunks.
        lab.guest_write("a", 0, "6M", "1M", Some(99 + round));
        lab.guest_write("b", 0, "6M", "1M", Some(99 + round));
        let (da, db) = (lab.digest("a", 0), lab.digest("b", 0));
        let restored = format!("a-r{round}");
        let runs = std::thread::scope(|s| {
            let ba = s.spawn(|| lab.sk(&["--json", "backup", "vm:a"]));
            let bb = s.spawn(|| lab.sk(&["--json", "backup", "vm:b"]));
            let re =
                s.spawn(|| lab.sk(&["restore", "vm:a", "--generation", "1", "--name", &restored]));
            let gc = s.spawn(|| lab.sk(&["gc"]));
            [ba, bb, re, gc].map(|h| h.join().unwrap())
        });
        let [ba, bb, re, gc] = runs;
        for r in [&re, &gc] {
            assert_eq!(
                r.code,
                0,
                "round {round}: {}\n{}",
                r.command,
                r.all_output()
            );
        }
        for (vm, r, d) in [("a", ba, &da), ("b", bb, &db)] {
            let r = r.ok();
            let g = r.json()["targets"][0]["generation"].as_u64().unwrap();
            expected.push((vm, g, d.clone()));
        }
        assert_eq!(lab.digest(&restored, 0), expected[0].2, "round {round}");
    }
    let j = lab.sk(&["--json", "check", "--read-data"]).ok().json();
    assert_eq!(j["generations"], 8, "{j}");
    for (vm, g, d) in &expected {
        let name = format!("{vm}-g{g}");
        lab.sk(&[
            "restore",
            &format!("vm:{vm}"),
            "--generation",
            &g.to_string(),
            "--name",
            &name,
        ])
        .ok();
        assert_eq!(&lab.digest(&name, 0), d, "{vm} generation {g}");
    }
}

/// VDDK may report at `VixDiskLib_Close` what a transport could not write back. A restore whose
/// disk fails to close must fail (exit 1, the close named) and leave no VM behind, never report
/// success over a disk nobody knows to be incomplete; the same restore without the fault
/// succeeds and matches the source.
#[test]
fn a_restore_whose_disk_fails_to_close_fails_and_leaves_no_vm() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("cl", &["8M"], &[]);
    lab.guest_write("cl", 0, "0", "3M", Some(21));
    lab.sk(&["backup", "vm:cl"]).ok();

    lab.vddk_conf_append("fake.fail_close = true");
    let r = lab.sk(&["restore", "vm:cl", "--name", "cl-back"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.stderr.contains("close") && r.stderr.contains("cl-back"),
        "the failed close is named: {}",
        r.stderr
    );
    assert!(lab.vm_info("cl-back").is_none(), "the partial VM is gone");

    lab.vddk_conf_remove("fake.fail_close");
    lab.sk(&["restore", "vm:cl", "--name", "cl-back"]).ok();
    assert_eq!(lab.digest("cl-back", 0), lab.digest("cl", 0));
}
