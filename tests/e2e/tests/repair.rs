//! `check --repair` end to end: a chunk with a flipped byte is found by `check --read-data`,
//! moved to `quarantine/` by `check --repair` (which still exits 1 and names the generation
//! that stays damaged), stored again by the next backup (an incremental), after which `check --read-data`
//! is clean and the first generation restores to the VM's digests again.

use safekeeping_e2e::{chunk_starting_with, guest_bytes, Lab};

const MIB: usize = 1 << 20;

#[test]
fn repair_quarantines_a_damaged_chunk_and_the_next_backup_heals_it() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    lab.create_vm("r", &["8M"], &["VM Network"]);
    lab.guest_write("r", 0, "0", "2M", Some(21));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:r"]).ok();
    let g1 = lab.digests("r", 1);
    let disk0 = lab.vm_info("r").unwrap()["disks"][0]["key"]
        .as_i64()
        .unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // A flipped byte in the chunk at offset 0.
    let chunk = chunk_starting_with(&repo, &guest_bytes(21, MIB)[..4096]);
    let id = chunk.file_name().unwrap().to_string_lossy().into_owned();
    assert!(chunk.exists(), "{} exists", chunk.display());
    let original = std::fs::read(&chunk).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&chunk, &bad).unwrap();

    let r = lab.sk(&["--json", "check", "--read-data"]);
    assert_eq!(r.code, 1, "check finds the damage:\n{}", r.all_output());
    let report = r.json();
    assert_eq!(report["problems"][0]["kind"], "damaged-chunk", "{report}");
    assert!(chunk.exists(), "a plain check moves nothing");

    // --repair quarantines it, lists it, and still exits 1: generation 1 stays damaged.
    let r = lab.sk(&["--json", "check", "--repair"]);
    assert_eq!(
        r.code,
        1,
        "repair still reports damage:\n{}",
        r.all_output()
    );
    let report = r.json();
    assert_eq!(report["repair"], true, "{report}");
    assert_eq!(report["read_data"], true, "--repair implies --read-data");
    let q = report["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 1, "{report}");
    assert_eq!(q[0]["chunk"], id.as_str(), "{report}");
    let moved = repo.join("quarantine").join(&id[..4]).join(&id);
    assert_eq!(q[0]["quarantine_path"], moved.to_str().unwrap(), "{report}");
    assert_eq!(q[0]["used_by"][0]["generation"], 1, "{report}");
    assert_eq!(q[0]["used_by"][0]["disk"], disk0, "{report}");
    assert_eq!(q[0]["used_by"][0]["offset"], 0, "{report}");
    let damaged = report["damaged_generations"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{report}");
    assert_eq!(damaged[0]["generation"], 1, "{report}");
    assert!(report["repair_note"]
        .as_str()
        .unwrap()
        .contains("next backup"));
    assert!(!chunk.exists(), "gone from chunks/");
    assert_eq!(std::fs::read(&moved).unwrap(), bad, "kept as it was");

    // A second repair has nothing left to move: the chunk is missing now.
    let r = lab.sk(&["check", "--repair"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    // Said for people: the kind in words, the VM by name, the disk by its position.
    assert!(
        r.stdout.contains("PROBLEM: missing chunk, used by vm:")
            && r.stdout.contains("at offset 0 B of disk 0 (device")
            && !r.stdout.contains("Problem {"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("1 files kept in quarantine/"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("QUARANTINED:"), "{}", r.stdout);

    // Plain check: a missing chunk, quarantine/ is not a foreign file.
    let r = lab.sk(&["--json", "check"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let report = r.json();
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["missing-chunk"], "{report}");
    assert_eq!(report["quarantine_files"], 1, "{report}");

    // gc leaves quarantine/ alone.
    lab.sk(&["gc"]).ok();
    assert_eq!(std::fs::read(&moved).unwrap(), bad);

    // The next backup of the same VM, an incremental (nothing changed), reads the chunk it
    // would inherit again because it is missing, stores it, and heals generation 1.
    let j = lab.sk(&["--json", "backup", "vm:r"]).ok().json();
    assert_eq!(j["targets"][0]["mode"], "incremental", "{j}");
    assert_eq!(
        std::fs::read(&chunk).map(|b| b.len()).ok(),
        Some(original.len()),
        "stored again"
    );
    lab.sk(&["check", "--read-data"]).ok();
    lab.sk(&["restore", "vm:r", "--generation", "1", "--name", "r-1"])
        .ok();
    assert_eq!(lab.digests("r-1", 1), g1, "generation 1 restores again");
    lab.sk(&["restore", "vm:r", "--generation", "2", "--name", "r-2"])
        .ok();
    assert_eq!(lab.digests("r-2", 1), g1, "generation 2 restores");
    assert!(moved.exists(), "the quarantined copy stays");
}
