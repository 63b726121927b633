//! Every file proves where it belongs, end to end (issue #11, items 5, 15 and 16):
//!
//! - generation 1's index copied over generation 3's: restore and export of generation 3 fail
//!   naming the file, `check` reports it, and the next backup reads that disk in full (saying
//!   why) instead of building on it; that new generation restores byte for byte;
//! - a damaged (CRC) index in the newest generation: the next backup succeeds with a full read
//!   of that disk, `check --repair` quarantines the index and reports the generation damaged;
//! - a read-only repository (a read-only bind mount: tests run as root, who ignores permission
//!   bits): list, show, check and restore work and warn that they could not lock.

use std::path::{Path, PathBuf};

use safekeeping_e2e::Lab;

/// The one target folder of the repository.
fn target_dir(repo: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo.join("targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// The index file of disk `key` in generation `g`.
fn index_file(repo: &Path, g: u64, key: i64) -> PathBuf {
    target_dir(repo)
        .join(format!("gen-{g:06}"))
        .join(format!("disk-{key}.fidx"))
}

/// A VM `name` with two 8 MiB disks and three generations (full, then two incrementals that
/// change disk 0); returns the disk keys and the VM's digests after each backup.
fn three_generations(lab: &Lab, name: &str) -> (Vec<i64>, Vec<Vec<String>>) {
    lab.create_vm(name, &["8M", "8M"], &["VM Network"]);
    lab.guest_write(name, 0, "0", "3M", Some(31));
    lab.guest_write(name, 1, "1M", "2M", Some(41));
    lab.sk(&["repo", "init"]).ok();
    let mut digests = Vec::new();
    let j = lab
        .sk(&["--json", "backup", &format!("vm:{name}")])
        .ok()
        .json();
    assert_eq!(j["targets"][0]["generation"], 1, "{j}");
    digests.push(lab.digests(name, 2));
    for (g, seed) in [(2u64, 32u64), (3, 33)] {
        lab.guest_write(name, 0, &format!("{}M", 2 * g), "1M", Some(seed));
        let j = lab
            .sk(&["--json", "backup", &format!("vm:{name}")])
            .ok()
            .json();
        assert_eq!(j["targets"][0]["generation"], g, "{j}");
        assert_eq!(j["targets"][0]["disks"][0]["mode"], "incremental", "{j}");
        digests.push(lab.digests(name, 2));
    }
    let keys = lab.vm_info(name).unwrap()["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_i64().unwrap())
        .collect();
    (keys, digests)
}

#[test]
fn a_swapped_index_fails_restore_and_check_and_the_next_backup_reads_that_disk_in_full() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    let (keys, digests) = three_generations(&lab, "sw");
    let swapped = index_file(&repo, 3, keys[0]);
    let swapped_s = swapped.to_str().unwrap();
    // Anyone with write access (no key needed) copies generation 1's index over 3's.
    std::fs::copy(index_file(&repo, 1, keys[0]), &swapped).unwrap();

    // Restore of generation 3 fails naming the file (before: it wrote generation 1's data).
    let r = lab.sk(&["restore", "vm:sw", "--generation", "3", "--name", "sw-3"]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains(swapped_s), "{}", r.all_output());
    assert!(
        r.all_output()
            .contains("is not the index generation 3 was committed with"),
        "{}",
        r.all_output()
    );
    // So does export.
    let out = lab.dir().join("sw-3-disk0.vmdk");
    let r = lab.sk(&[
        "export",
        "vm:sw",
        "--generation",
        "3",
        "--disk",
        "0",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains(swapped_s), "{}", r.all_output());
    assert!(!out.exists(), "no partial export is left");

    // check reports it, with generation and disk.
    let r = lab.sk(&["--json", "check"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let report = r.json();
    let problems = report["problems"].as_array().unwrap();
    let p = problems
        .iter()
        .find(|p| p["kind"] == "damaged-index")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(p["path"], swapped_s, "{report}");
    assert_eq!(p["generation"], 3, "{report}");
    assert_eq!(p["disk"], keys[0], "{report}");

    // The next backup refuses that base: disk 0 is read in full, and says why; disk 1 (whose
    // index is intact) stays incremental. The generation is committed.
    lab.guest_write("sw", 0, "7M", "512K", Some(34));
    let j = lab.sk(&["--json", "backup", "vm:sw"]).ok().json();
    let t = &j["targets"][0];
    assert_eq!(t["generation"], 4, "{j}");
    assert_eq!(t["disks"][0]["mode"], "full", "{j}");
    let reason = t["disks"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("generation 3") && reason.contains(swapped_s),
        "{reason}"
    );
    assert_eq!(t["disks"][1]["mode"], "incremental", "{j}");
    let now = lab.digests("sw", 2);
    lab.sk(&["restore", "vm:sw", "--generation", "4", "--name", "sw-4"])
        .ok();
    assert_eq!(
        lab.digests("sw-4", 2),
        now,
        "generation 4 restores byte for byte"
    );
    // The generations around the damage are intact.
    lab.sk(&["restore", "vm:sw", "--generation", "2", "--name", "sw-2"])
        .ok();
    assert_eq!(lab.digests("sw-2", 2), digests[1]);
}

#[test]
fn a_damaged_newest_index_does_not_block_the_next_incremental() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    let (keys, _) = three_generations(&lab, "dm");
    let idx = index_file(&repo, 3, keys[1]);
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len() - 7;
    bytes[n] ^= 0x08;
    std::fs::write(&idx, &bytes).unwrap();

    // Before: every incremental failed with "CRC32 mismatch" until --full. Now disk 1 is read
    // in full (the reason names the file), disk 0 stays incremental, and it commits.
    for (g, seed) in [(4u64, 35u64), (5, 36)] {
        lab.guest_write("dm", 1, "5M", "1M", Some(seed));
        let j = lab.sk(&["--json", "backup", "vm:dm"]).ok().json();
        let t = &j["targets"][0];
        assert_eq!(t["generation"], g, "{j}");
        assert_eq!(t["disks"][0]["mode"], "incremental", "{j}");
        if g == 4 {
            assert_eq!(t["disks"][1]["mode"], "full", "{j}");
            let reason = t["disks"][1]["reason"].as_str().unwrap();
            assert!(reason.contains("CRC32"), "{reason}");
            assert!(reason.contains(idx.to_str().unwrap()), "{reason}");
        } else {
            // Generation 4's index is good: incrementals resume.
            assert_eq!(t["disks"][1]["mode"], "incremental", "{j}");
        }
    }
    let now = lab.digests("dm", 2);
    lab.sk(&["restore", "vm:dm", "--name", "dm-5"]).ok();
    assert_eq!(lab.digests("dm-5", 2), now);

    // check --repair quarantines the index and reports generation 3 damaged.
    let r = lab.sk(&["--json", "check", "--repair"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let report = r.json();
    let q = report["quarantined_indexes"].as_array().unwrap();
    assert_eq!(q.len(), 1, "{report}");
    assert_eq!(q[0]["path"], idx.to_str().unwrap(), "{report}");
    assert_eq!(q[0]["generation"], 3, "{report}");
    assert!(!idx.exists());
    let damaged = report["damaged_generations"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report}");
    assert_eq!(damaged[0]["generation"], 3, "{report}");
    assert_eq!(damaged[0]["disks"][0], keys[1], "{report}");
    // Its restore fails clearly, naming the missing index.
    let r = lab.sk(&["restore", "vm:dm", "--generation", "3", "--name", "dm-3"]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(
        r.all_output().contains(idx.to_str().unwrap()),
        "{}",
        r.all_output()
    );
}

/// A read-only bind mount of `src` at `at`, unmounted on drop; `None` where this sandbox
/// cannot mount (then the test says so and checks nothing).
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(src: &Path, at: &Path) -> Option<Self> {
        let run = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        std::fs::create_dir_all(at).unwrap();
        let at_s = at.to_str().unwrap();
        if !run(&["--bind", src.to_str().unwrap(), at_s]) {
            eprintln!("SKIPPED: cannot bind-mount here; the read-only test needs it");
            return None;
        }
        let m = ReadOnlyMount(at.to_path_buf());
        assert!(run(&["-o", "remount,bind,ro", at_s]), "remount read-only");
        Some(m)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_repository_lists_shows_checks_and_restores() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    lab.create_vm("ro", &["8M"], &["VM Network"]);
    lab.guest_write("ro", 0, "0", "2M", Some(51));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:ro"]).ok();
    let g1 = lab.digests("ro", 1);
    let ro = lab.dir().join("ro-mount");
    let Some(_mount) = ReadOnlyMount::new(&repo, &ro) else {
        return;
    };
    let config = lab.config_variant(
        "readonly.toml",
        repo.to_str().unwrap(),
        ro.to_str().unwrap(),
    );
    let sk = |args: &[&str]| lab.sk_with(args, &config, &[]);
    // A backup cannot write there: it fails, and leaves no snapshot.
    let r = sk(&["backup", "vm:ro"]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(lab.snapshots("ro").is_empty(), "{:?}", lab.snapshots("ro"));

    let r = sk(&["--json", "list"]).ok();
    assert!(r.stdout.contains("\"ro\""), "{}", r.stdout);
    sk(&["show", "vm:ro"]).ok();
    let r = sk(&["check", "--read-data"]).ok();
    assert!(
        r.stderr.contains("could not lock the repository"),
        "check warns: {}",
        r.all_output()
    );
    let r = sk(&["restore", "vm:ro", "--name", "ro-1"]).ok();
    assert!(
        r.stderr.contains("could not lock the repository"),
        "restore warns: {}",
        r.all_output()
    );
    assert_eq!(lab.digests("ro-1", 1), g1);
    let out = lab.dir().join("ro-disk0.vmdk");
    sk(&[
        "export",
        "vm:ro",
        "--disk",
        "0",
        "--output",
        out.to_str().unwrap(),
    ])
    .ok();
    assert!(out.exists());
    // --repair needs to write: refused with an error, not a crash.
    let r = sk(&["check", "--repair"]);
    assert_ne!(r.code, 0, "{}", r.all_output());
}
