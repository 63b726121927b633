//! `check --repair` end to end: a chunk with a flipped byte is found by `check --read-data`,
//! moved to `quarantine/` by `check --repair` (which still exits 1 and names the generation
//! that stays damaged), stored again by the next backup (an incremental), after which `check --read-data`
//! is clean and the first generation restores to the VM's digests again.

use std::path::{Path, PathBuf};

use safekeeping_e2e::{files_under, guest_bytes, Lab};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// The id of the (unencrypted) chunk holding `data`, and its file under `chunks/`.
fn chunk_file(repo: &Path, data: &[u8]) -> (String, PathBuf) {
    let id = hex::encode(Sha256::digest(data));
    let p = repo.join("chunks").join(&id[..4]).join(&id);
    (id, p)
}

/// An offset as the text output says it (safekeeping's `human_bytes`): `0 B`, `1.5 MiB`.
fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Fixed 1 MiB chunks (format 3): the chunk at offset 0 is the SHA-256 of the first 1 MiB.
#[test]
fn repair_quarantines_a_damaged_chunk_and_the_next_backup_heals_it() {
    repair_heals("fixed");
}

/// Content-defined chunks (format 4, the default): the damaged chunk is one from `chunks/`,
/// wherever the seeded hash cut it; the incremental must cut its area again into the same
/// chunk to heal it.
#[test]
fn repair_and_the_next_backup_heal_a_content_defined_chunk() {
    repair_heals("content-defined");
}

fn repair_heals(chunking: &str) {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    lab.create_vm("r", &["8M"], &["VM Network"]);
    lab.guest_write("r", 0, "0", "2M", Some(21));
    lab.sk(&["repo", "init", "--chunking", chunking]).ok();
    lab.sk(&["backup", "vm:r"]).ok();
    let g1 = lab.digests("r", 1);
    let disk0 = lab.vm_info("r").unwrap()["disks"][0]["key"]
        .as_i64()
        .unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // A flipped byte in the chunk at offset 0 (fixed), or in the last chunk file by name
    // (content-defined: 2 MiB of data make at least one chunk besides the one at 0).
    let (id, chunk) = if chunking == "fixed" {
        chunk_file(&repo, &guest_bytes(21, MIB))
    } else {
        let mut all = files_under(&repo.join("chunks"));
        all.sort();
        let p = all.pop().expect("a chunk file");
        (p.file_name().unwrap().to_string_lossy().into_owned(), p)
    };
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
    // Where the chunk is used: offset 0 for fixed chunks; some 4 KiB multiple inside the
    // 2 MiB written for content-defined ones.
    let offset = report["problems"][0]["used_by"][0]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("{report}"));
    if chunking == "fixed" {
        assert_eq!(offset, 0, "{report}");
    } else {
        assert!(offset % 4096 == 0 && offset < 2 * MIB as u64, "{report}");
    }
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
    assert_eq!(q[0]["used_by"][0]["offset"], offset, "{report}");
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
            && r.stdout
                .contains(&format!("at offset {} of disk 0 (device", human(offset)))
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
