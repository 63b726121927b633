//! Disk exclusion end to end: an independent disk (which snapshots do not freeze) is skipped
//! with a note, `--exclude-disk N` and `[targets."vm:NAME"] exclude_disks` leave more out, and
//! the fake VDDK's statistics show that no left-out disk is opened or read. A restore
//! recreates every left-out disk empty with its original capacity and writes the others
//! byte-correct (by create and by import); `--drop-excluded-disks` leaves them out. `--exclude-disk` with anything but
//! one vm: target is a usage error.

use safekeeping_e2e::Lab;

const MIB: usize = 1 << 20;

/// SHA-256 of `len` zero bytes: the digest of an empty disk of that capacity.
fn zeros_digest(len: usize) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(vec![0u8; len]))
}

/// The `open` events of the fake VDDK from `from` on.
fn opens(lab: &Lab, from: usize) -> Vec<serde_json::Value> {
    lab.vddk_stats()
        .into_iter()
        .skip(from)
        .filter(|e| e["event"] == "open")
        .collect()
}

/// Sectors read by the disks closed from `from` on.
fn sectors_read(lab: &Lab, from: usize) -> u64 {
    lab.vddk_stats()
        .into_iter()
        .skip(from)
        .filter(|e| e["event"] == "close")
        .map(|e| e["sectors_read"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn excluded_and_independent_disks_are_not_read_and_restore_empty() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    // Disk 0 is backed up, disk 1 is excluded, disk 2 is independent.
    lab.lab(&[
        "create-vm",
        "--name",
        "w",
        "--disk",
        "8M",
        "--disk",
        "4M",
        "--disk",
        "6M",
        "--independent-disk",
        "2",
    ])
    .ok();
    for (disk, seed) in [(0, 11), (1, 12), (2, 13)] {
        lab.guest_write("w", disk, "0", "2M", Some(seed));
    }
    let original = lab.digest("w", 0);
    let info = lab.vm_info("w").unwrap();
    let base_name = |i: usize| {
        let p = info["disks"][i]["path"].as_str().unwrap().to_string();
        // "[datastore1] w/w_1.vmdk" → "w_1": its snapshot deltas start with it too.
        p.rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".vmdk")
            .to_string()
    };
    let (kept, excluded, independent) = (base_name(0), base_name(1), base_name(2));

    // Usage errors: disk numbers belong to exactly one VM.
    lab.create_vm("other", &["1M"], &[]);
    let r = lab
        .sk(&["backup", "vm:w", "vm:other", "--exclude-disk", "1"])
        .expect_code(2);
    assert!(r.stderr.contains("exactly one vm: target"), "{}", r.stderr);
    let r = lab
        .sk(&["backup", "--all", "vm", "--exclude-disk", "1"])
        .expect_code(2);
    assert!(r.stderr.contains("exactly one vm: target"), "{}", r.stderr);
    let r = lab
        .sk(&["backup", "vm:w", "--exclude-disk", "7"])
        .expect_code(1);
    assert!(
        r.all_output().contains("has 3 disk(s)"),
        "{}",
        r.all_output()
    );
    assert!(lab.snapshots("w").is_empty(), "no snapshot left behind");

    let before = lab.vddk_stats().len();
    let r = lab
        .sk(&["--json", "backup", "vm:w", "--exclude-disk", "1"])
        .ok();
    let t = &r.json()["targets"][0];
    assert_eq!(t["status"], "succeeded", "{t}");
    let disks = t["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{t}");
    assert_eq!(disks[0]["index"], 0);
    let x = t["excluded_disks"].as_array().unwrap();
    assert_eq!(x.len(), 2, "{t}");
    assert_eq!(
        (x[0]["index"].as_u64(), x[0]["reason"].as_str()),
        (Some(1), Some("command_line"))
    );
    assert_eq!(x[0]["capacity"], 4 * MIB as u64);
    assert_eq!(
        (x[1]["index"].as_u64(), x[1]["reason"].as_str()),
        (Some(2), Some("independent"))
    );
    assert_eq!(x[1]["capacity"], 6 * MIB as u64);
    assert!(
        x[1]["note"]
            .as_str()
            .unwrap()
            .contains("independent_persistent"),
        "{t}"
    );
    assert!(
        r.stderr
            .contains("snapshots do not freeze independent disks"),
        "{}",
        r.stderr
    );
    // Only disk 0 was opened, and no more than its capacity was read.
    let opened = opens(&lab, before);
    assert_eq!(opened.len(), 1, "{opened:?}");
    let path = opened[0]["path"].as_str().unwrap();
    assert!(path.contains(&format!("/{kept}")), "{path}");
    for left_out in [&excluded, &independent] {
        assert!(
            !path.contains(&format!("/{left_out}")),
            "{path} read a left-out disk"
        );
    }
    assert!(sectors_read(&lab, before) <= (8 * MIB / 512) as u64);

    // The configuration excludes disk 1 as well; the text report has a note per disk.
    let config = lab.dir().join("excluding.toml");
    let text = std::fs::read_to_string(lab.config()).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[targets.\"vm:w\"]\nexclude_disks = [1]\n"),
    )
    .unwrap();
    let before = lab.vddk_stats().len();
    let r = lab.sk_with(&["backup", "vm:w"], &config, &[]).ok();
    assert!(
        r.stdout
            .contains("excluded by exclude_disks in the configuration"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("disk mode independent_persistent"),
        "{}",
        r.stdout
    );
    assert_eq!(opens(&lab, before).len(), 1);
    // An unknown key in a target's section is refused.
    std::fs::write(
        &config,
        format!("{text}\n[targets.\"vm:w\"]\nexclude_disk = [1]\n"),
    )
    .unwrap();
    let r = lab.sk_with(&["backup", "vm:w"], &config, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("exclude_disk"), "{}", r.stderr);

    // Restore: disk 0 byte-correct, the other two recreated empty with their capacities.
    let r = lab.sk(&["--json", "restore", "vm:w", "--name", "r1"]).ok();
    let j = r.json();
    assert_eq!(j["excluded_disks"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["excluded_disks_recreated"], true);
    let restored = lab.vm_info("r1").unwrap();
    let caps: Vec<u64> = restored["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["capacity"].as_u64().unwrap())
        .collect();
    assert_eq!(caps, [8, 4, 6].map(|m| (m * MIB) as u64));
    assert_eq!(lab.digest("r1", 0), original);
    assert_eq!(lab.digest("r1", 1), zeros_digest(4 * MIB));
    assert_eq!(lab.digest("r1", 2), zeros_digest(6 * MIB));
    let r = lab.sk(&["restore", "vm:w", "--name", "r1text"]).ok();
    assert!(r.stdout.contains("recreated empty"), "{}", r.stdout);

    // Restore by import (the .vmx registered, then the disks added back) does the same.
    lab.sk(&["restore", "vm:w", "--name", "r3", "--mode", "import"])
        .ok();
    let restored = lab.vm_info("r3").unwrap();
    let caps: Vec<u64> = restored["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["capacity"].as_u64().unwrap())
        .collect();
    assert_eq!(caps, [8, 4, 6].map(|m| (m * MIB) as u64));
    assert_eq!(lab.digest("r3", 0), original);
    assert_eq!(lab.digest("r3", 1), zeros_digest(4 * MIB));

    // --drop-excluded-disks: only the backed-up disk.
    lab.sk(&["restore", "vm:w", "--name", "r2", "--drop-excluded-disks"])
        .ok();
    let restored = lab.vm_info("r2").unwrap();
    assert_eq!(restored["disks"].as_array().unwrap().len(), 1, "{restored}");
    assert_eq!(lab.digest("r2", 0), original);
}
