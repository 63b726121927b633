//! Corruption end to end: a flipped byte in a chunk, a truncated index, a deleted chunk and a
//! damaged manifest. For each, `check` (with `--read-data` for the flip) exits non-zero and names
//! the damaged file and every generation, disk and offset it affects; restoring an affected
//! generation fails naming the same object and destroys the VM it created; generations that do
//! not use the object still restore to their digests.

use std::path::{Path, PathBuf};

use safekeeping_e2e::{guest_bytes, Lab};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// The file of the (unencrypted) chunk holding `data`.
fn chunk_file(repo: &Path, data: &[u8]) -> PathBuf {
    let id = hex::encode(Sha256::digest(data));
    let p = repo.join("chunks").join(&id[..4]).join(&id);
    assert!(p.exists(), "{} exists", p.display());
    p
}

/// The single generation folder `gen-00000N` of the only target holding it.
fn generation_dir(repo: &Path, generation: u64) -> PathBuf {
    let name = format!("gen-{generation:06}");
    std::fs::read_dir(repo.join("targets"))
        .unwrap()
        .flatten()
        .map(|t| t.path().join(&name))
        .find(|g| g.join("manifest").exists() && g.join("metadata").exists())
        .unwrap_or_else(|| panic!("{name} of some target"))
}

/// `check` as JSON, asserting it failed.
fn failing_check(lab: &Lab, read_data: bool) -> serde_json::Value {
    let mut args = vec!["--json", "check"];
    if read_data {
        args.push("--read-data");
    }
    let r = lab.sk(&args);
    assert_eq!(r.code, 1, "check finds the damage:\n{}", r.all_output());
    r.json()
}

/// The one problem of `kind` in a check report.
fn problem<'a>(report: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let found: Vec<_> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} problem: {report}");
    found[0]
}

/// (generation, disk, offset) of every use a chunk problem lists, sorted.
fn uses(p: &serde_json::Value) -> Vec<(u64, i64, u64)> {
    let mut u: Vec<_> = p["used_by"]
        .as_array()
        .unwrap_or_else(|| panic!("used_by: {p}"))
        .iter()
        .map(|u| {
            (
                u["generation"].as_u64().unwrap(),
                u["disk"].as_i64().unwrap(),
                u["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    u.sort_unstable();
    u
}

/// Restores generation `g` of `vm:c` as `name`, asserting it fails mentioning every `needle`
/// and leaves no VM behind.
fn failing_restore(lab: &Lab, g: u64, name: &str, needles: &[&str]) {
    let r = lab.sk(&[
        "restore",
        "vm:c",
        "--generation",
        &g.to_string(),
        "--name",
        name,
    ]);
    assert_eq!(
        r.code,
        1,
        "restore of generation {g} fails:\n{}",
        r.all_output()
    );
    for n in needles {
        assert!(r.stderr.contains(n), "the error names `{n}`:\n{}", r.stderr);
    }
    assert!(lab.vm_info(name).is_none(), "{name} was destroyed");
}

fn restores(lab: &Lab, vm: &str, g: u64, name: &str, digests: &[String]) {
    lab.sk(&[
        "restore",
        &format!("vm:{vm}"),
        "--generation",
        &g.to_string(),
        "--name",
        name,
    ])
    .ok();
    assert_eq!(
        lab.digests(name, digests.len()),
        digests,
        "{vm} generation {g}"
    );
}

#[test]
fn damage_is_named_with_every_use_and_never_restored() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    lab.create_vm("c", &["8M", "8M"], &["VM Network"]);
    lab.create_vm("other", &["8M"], &["VM Network"]);
    lab.guest_write("c", 0, "0", "2M", Some(1));
    lab.guest_write("c", 1, "0", "1M", Some(2));
    lab.guest_write("other", 0, "0", "1M", Some(50));
    // Fixed 1 MiB chunks (format 3): the test finds the chunk to damage by the SHA-256 of the
    // 1 MiB the lab wrote at a chunk-aligned offset, and expects its uses at those offsets;
    // content-defined chunks cut where the seeded hash says, so no chunk id is known ahead.
    lab.sk(&["repo", "init", "--chunking", "fixed"]).ok();
    lab.sk(&["backup", "vm:c", "vm:other"]).ok();
    let g1 = lab.digests("c", 2);
    lab.guest_write("c", 0, "4M", "1M", Some(3));
    lab.sk(&["backup", "vm:c"]).ok();
    let g2 = lab.digests("c", 2);
    lab.guest_write("c", 1, "2M", "1M", Some(4));
    lab.sk(&["backup", "vm:c"]).ok();
    let g3 = lab.digests("c", 2);
    let other = lab.digests("other", 1);
    let info = lab.vm_info("c").unwrap();
    let disk0 = info["disks"][0]["key"].as_i64().unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // 1. A flipped byte in the chunk at disk 0 offset 0 (seed 1), used by all three.
    let flipped = chunk_file(&repo, &guest_bytes(1, MIB as usize));
    let original = std::fs::read(&flipped).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&flipped, &bad).unwrap();
    let id = flipped.file_name().unwrap().to_string_lossy().into_owned();
    let report = failing_check(&lab, true);
    let p = problem(&report, "damaged-chunk");
    assert!(p["path"].as_str().unwrap().contains(&id), "{p}");
    assert_eq!(
        uses(p),
        vec![(1, disk0, 0), (2, disk0, 0), (3, disk0, 0)],
        "{p}"
    );
    for g in [1, 3] {
        failing_restore(
            &lab,
            g,
            &format!("flip-g{g}"),
            &[&id, &format!("generation {g} disk {disk0} offset 0")],
        );
    }
    restores(&lab, "other", 1, "other-1", &other);
    std::fs::write(&flipped, &original).unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // 2. The index of disk 0 in generation 2 cut short.
    let fidx = generation_dir(&repo, 2).join(format!("disk-{disk0}.fidx"));
    let original = std::fs::read(&fidx).unwrap();
    std::fs::write(&fidx, &original[..original.len() / 2]).unwrap();
    let report = failing_check(&lab, false);
    let p = problem(&report, "damaged-index");
    assert!(
        p["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("gen-000002/disk-{disk0}.fidx")),
        "{p}"
    );
    assert_eq!(p["generation"], 2, "{p}");
    assert_eq!(p["disk"], disk0, "{p}");
    failing_restore(&lab, 2, "short-index", &[&format!("disk-{disk0}.fidx")]);
    restores(&lab, "c", 3, "c-3", &g3);
    restores(&lab, "c", 1, "c-1", &g1);
    std::fs::write(&fidx, &original).unwrap();
    lab.sk(&["check"]).ok();

    // 3. The chunk at disk 0 offset 4 MiB (seed 3) deleted: used by generations 2 and 3.
    let deleted = chunk_file(&repo, &guest_bytes(3, MIB as usize));
    let original = std::fs::read(&deleted).unwrap();
    std::fs::remove_file(&deleted).unwrap();
    let id = deleted.file_name().unwrap().to_string_lossy().into_owned();
    let report = failing_check(&lab, false);
    let p = problem(&report, "missing-chunk");
    assert!(p["path"].as_str().unwrap().contains(&id), "{p}");
    assert_eq!(
        uses(p),
        vec![(2, disk0, 4 * MIB), (3, disk0, 4 * MIB)],
        "{p}"
    );
    failing_restore(
        &lab,
        3,
        "missing-chunk",
        &[
            &id,
            &format!("generation 3 disk {disk0} offset {}", 4 * MIB),
        ],
    );
    restores(&lab, "c", 1, "c-1b", &g1);
    std::fs::write(&deleted, &original).unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // 4. A damaged manifest (generation 1).
    let manifest = generation_dir(&repo, 1).join("manifest");
    let original = std::fs::read(&manifest).unwrap();
    let mut bad = original.clone();
    let at = bad.len() - 10;
    bad[at] ^= 0x20;
    std::fs::write(&manifest, &bad).unwrap();
    let report = failing_check(&lab, false);
    let p = problem(&report, "damaged-manifest");
    assert!(
        p["path"].as_str().unwrap().ends_with("gen-000001/manifest"),
        "{p}"
    );
    assert_eq!(p["generation"], 1, "{p}");
    failing_restore(&lab, 1, "bad-manifest", &["gen-000001/manifest"]);
    restores(&lab, "c", 2, "c-2", &g2);
    std::fs::write(&manifest, &original).unwrap();
    lab.sk(&["check", "--read-data"]).ok();
}

/// The chunk files in `repo/chunks/`.
fn chunk_files(repo: &Path) -> std::collections::BTreeSet<PathBuf> {
    safekeeping_e2e::files_under(&repo.join("chunks"))
        .into_iter()
        .collect()
}

/// Content-defined chunks (format 4, the default) are cut where the repository's seeded hash
/// says, so the chunks to damage are told apart by which backup stored them: those of the 1 MiB
/// written between holes before generation 2 are new in it. A damaged or missing one is
/// named with every use (taken from check's report, then checked against where the data is)
/// and no generation using it restores; one that does not use it still does.
#[test]
fn content_defined_damage_is_named_with_every_use_and_never_restored() {
    let lab = Lab::up();
    let repo = lab.dir().join("repo");
    lab.create_vm("c", &["8M"], &["VM Network"]);
    lab.guest_write("c", 0, "0", "2M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:c"]).ok();
    let g1 = lab.digests("c", 1);
    let first = chunk_files(&repo);
    lab.guest_write("c", 0, "4M", "1M", Some(3));
    lab.sk(&["backup", "vm:c"]).ok();
    let second: Vec<PathBuf> = chunk_files(&repo).difference(&first).cloned().collect();
    assert!(!second.is_empty(), "generation 2 stored new chunks");
    lab.sk(&["backup", "vm:c"]).ok();
    assert_eq!(
        chunk_files(&repo).len(),
        first.len() + second.len(),
        "nothing changed for generation 3: it stores nothing"
    );
    let disk0 = lab.vm_info("c").unwrap()["disks"][0]["key"]
        .as_i64()
        .unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // 1. A flipped byte in a chunk of the data written at 4 MiB: used by generations 2 and 3,
    //    at the same offset inside that 1 MiB.
    let flipped = &second[0];
    let original = std::fs::read(flipped).unwrap();
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(flipped, &bad).unwrap();
    let id = flipped.file_name().unwrap().to_string_lossy().into_owned();
    let report = failing_check(&lab, true);
    let p = problem(&report, "damaged-chunk");
    assert!(p["path"].as_str().unwrap().contains(&id), "{p}");
    let u = uses(p);
    let at = u[0].2;
    assert!((4 * MIB..5 * MIB).contains(&at) && at % 4096 == 0, "{p}");
    assert_eq!(u, vec![(2, disk0, at), (3, disk0, at)], "{p}");
    failing_restore(
        &lab,
        3,
        "flip-g3",
        &[&id, &format!("generation 3 disk {disk0} offset {at}")],
    );
    restores(&lab, "c", 1, "c-1", &g1);
    std::fs::write(flipped, &original).unwrap();
    lab.sk(&["check", "--read-data"]).ok();

    // 2. A chunk of the first backup deleted: used by all three generations, inside the
    //    2 MiB written at 0.
    let deleted = first.iter().next().unwrap();
    let original = std::fs::read(deleted).unwrap();
    std::fs::remove_file(deleted).unwrap();
    let id = deleted.file_name().unwrap().to_string_lossy().into_owned();
    let report = failing_check(&lab, false);
    let p = problem(&report, "missing-chunk");
    assert!(p["path"].as_str().unwrap().contains(&id), "{p}");
    let u = uses(p);
    let at = u[0].2;
    assert!(at < 2 * MIB && at % 4096 == 0, "{p}");
    assert_eq!(
        u,
        vec![(1, disk0, at), (2, disk0, at), (3, disk0, at)],
        "{p}"
    );
    for g in [1, 2] {
        failing_restore(
            &lab,
            g,
            &format!("missing-g{g}"),
            &[&id, &format!("generation {g} disk {disk0} offset {at}")],
        );
    }
    std::fs::write(deleted, &original).unwrap();
    lab.sk(&["check", "--read-data"]).ok();
    restores(&lab, "c", 3, "c-3", &lab.digests("c", 1));
}
