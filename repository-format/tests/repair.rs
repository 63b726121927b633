//! `check_and_repair`: damaged chunks move to `quarantine/`, the next backup of the same data
//! stores them again, and every generation that used them restores again.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use repository_format::*;

fn kinds(r: &CheckReport) -> Vec<ProblemKind> {
    r.problems.iter().map(|p| p.kind).collect()
}

fn repair(repo: &Repository) -> CheckReport {
    let lock = repo.lock_exclusive(Duration::from_secs(5)).unwrap();
    repo.check_and_repair(&lock).unwrap()
}

fn flip_byte(path: &Path) -> Vec<u8> {
    let mut bytes = fs::read(path).unwrap();
    let n = bytes.len() - 10;
    bytes[n] ^= 1;
    fs::write(path, &bytes).unwrap();
    bytes
}

fn quarantine_path(repo: &Repository, d: &ChunkDigest) -> PathBuf {
    let hex = d.to_hex();
    repo.root().join(QUARANTINE_DIR).join(&hex[..4]).join(&hex)
}

/// Every file of the repository except locks and the catalog: (length, mtime, content hash).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, ChunkDigest)> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime, ChunkDigest)>,
    ) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with("locks") || rel.starts_with("catalog") {
                continue;
            }
            let m = fs::metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(rel, (0, m.modified().unwrap(), ChunkDigest::of(b"")));
                walk(root, &p, out);
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    (m.len(), m.modified().unwrap(), ChunkDigest::of(&bytes)),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The whole cycle on `repo`: damage, detect, quarantine, re-backup, heal.
fn damaged_chunk_is_quarantined_and_healed(repo: &Repository) {
    let data = disk_bytes(CS as usize * 8, 5);
    let (g1, _) = backup(repo, "web", &data, None);
    let key = repo.target_key(&identity("web")).unwrap().to_string();
    // Chunk 2 of the data holds random bytes.
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[2 * CS as usize..3 * CS as usize]);
    let path = repo.chunk_store().path(&digest);
    let damaged = flip_byte(&path);

    // check --read-data finds it, and changes nothing.
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedChunk], "{r:#?}");
    assert!(r.quarantined.is_empty() && !r.repair);
    assert!(path.exists());

    // Repair needs the exclusive lock.
    {
        let shared = repo.lock_shared(Duration::from_secs(5)).unwrap();
        assert!(matches!(
            repo.check_and_repair(&shared),
            Err(Error::LockRequired { .. })
        ));
    }
    assert!(path.exists(), "nothing moved without the exclusive lock");

    // Repair moves it to quarantine/ and names the generation that stays damaged.
    let r = repair(repo);
    assert!(r.repair && r.read_data);
    assert!(!r.ok(), "the generation using the chunk is still damaged");
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedChunk], "{r:#?}");
    assert!(
        r.problems[0].detail.contains("moved to"),
        "{}",
        r.problems[0].detail
    );
    assert_eq!(r.quarantined.len(), 1, "{r:#?}");
    let q = &r.quarantined[0];
    assert_eq!(q.chunk, digest.to_hex());
    assert_eq!(q.path, path);
    assert_eq!(q.quarantine_path, quarantine_path(repo, &digest));
    assert_eq!(
        q.used_by,
        vec![ChunkUse {
            target: key.clone(),
            generation: g1.0,
            disk: 2000,
            offset: 2 * CS as u64,
        }]
    );
    assert_eq!(
        r.damaged_generations,
        vec![DamagedGeneration {
            target: key.clone(),
            generation: g1.0,
            disks: vec![2000],
        }]
    );
    assert_eq!(r.repair_note.as_deref(), Some(REPAIR_NOTE));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["quarantined"][0]["chunk"], digest.to_hex());
    assert_eq!(json["damaged_generations"][0]["generation"], g1.0);
    assert!(!path.exists(), "gone from chunks/");
    assert_eq!(
        fs::read(q.quarantine_path.clone()).unwrap(),
        damaged,
        "kept byte for byte"
    );

    // A plain check now sees a missing chunk, and no foreign file for quarantine/.
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::MissingChunk], "{r:#?}");
    assert_eq!(r.quarantine_files, 1);
    assert!(r.quarantined.is_empty() && r.damaged_generations.is_empty());

    // The next backup of the same data stores the chunk again...
    let (g2, stats) = backup(repo, "web", &data, None);
    assert!(stats.new_chunks >= 1, "{stats:?}");
    assert!(path.exists(), "stored again under the same name");
    // ...so the new generation restores, and so does the old one.
    assert_eq!(restore(repo, "web", g2), data);
    assert_eq!(restore(repo, "web", g1), data);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.quarantine_files, 1, "the quarantined copy stays");
    assert!(q.quarantine_path.exists());

    // The same chunk damaged again: the earlier quarantined copy is kept beside the new one.
    let damaged_again = flip_byte(&path);
    let r = repair(repo);
    assert_eq!(r.quarantined.len(), 1);
    let again = &r.quarantined[0];
    assert_ne!(again.quarantine_path, q.quarantine_path);
    assert_eq!(fs::read(&again.quarantine_path).unwrap(), damaged_again);
    assert_eq!(fs::read(&q.quarantine_path).unwrap(), damaged);
    let gens: Vec<u64> = r.damaged_generations.iter().map(|g| g.generation).collect();
    assert_eq!(gens, vec![g1.0, g2.0]);
    backup(repo, "web", &data, None);
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
}

#[test]
fn damaged_chunk_is_quarantined_and_healed_plain() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(
        dir.path().join("repo"),
        &InitOptions {
            chunk_size: CS,
            compression_level: 1,
            ..Default::default()
        },
    )
    .unwrap();
    damaged_chunk_is_quarantined_and_healed(&repo);
}

#[test]
fn damaged_chunk_is_quarantined_and_healed_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(&dir.path().join("repo"));
    assert!(repo.is_encrypted());
    damaged_chunk_is_quarantined_and_healed(&repo);
    let reopened = reopen(repo.root());
    assert!(reopened
        .check(&CheckOptions { read_data: true })
        .unwrap()
        .ok());
}

#[test]
fn gc_leaves_quarantine_alone() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 8, 7);
    backup(&repo, "web", &data, None);
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[2 * CS as usize..3 * CS as usize]);
    let damaged = flip_byte(&repo.chunk_store().path(&digest));
    assert_eq!(repair(&repo).quarantined.len(), 1);
    let q = quarantine_path(&repo, &digest);
    // Old enough for any sweep, and a stray temporary-looking name beside it.
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(&q, old).unwrap();
    let stray = q.parent().unwrap().join(".tmp-left-by-hand");
    fs::write(&stray, b"x").unwrap();
    filetime::set_file_mtime(&stray, old).unwrap();
    let before = snapshot(&repo.root().join(QUARANTINE_DIR));

    let lock = repo.lock_exclusive(Duration::from_secs(5)).unwrap();
    let g = repo
        .gc(
            &lock,
            &GcOptions {
                dry_run: false,
                grace: Duration::from_secs(1),
            },
        )
        .unwrap();
    assert!(g.foreign_files.is_empty(), "{g:?}");
    drop(lock);
    assert_eq!(
        snapshot(&repo.root().join(QUARANTINE_DIR)),
        before,
        "gc left quarantine/ untouched"
    );
    assert_eq!(fs::read(&q).unwrap(), damaged);
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::MissingChunk], "{r:#?}");
    assert_eq!(r.quarantine_files, 2);
}

#[test]
fn repair_of_a_clean_repository_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 8, 9);
    let (g1, _) = backup(&repo, "web", &data, None);
    backup(&repo, "db", &disk_bytes(CS as usize * 5 + 123, 3), None);
    let before = snapshot(repo.root());
    let r = repair(&repo);
    assert!(r.ok(), "{r:#?}");
    assert!(r.repair && r.read_data);
    assert_eq!(r.chunks_verified, r.chunks_referenced);
    assert!(r.quarantined.is_empty() && r.damaged_generations.is_empty());
    assert!(r.repair_note.is_none());
    assert_eq!(snapshot(repo.root()), before, "nothing changed");
    assert!(!repo.root().join(QUARANTINE_DIR).exists());
    assert_eq!(restore(&repo, "web", g1), data);
}

/// A missing chunk has nothing to move: reported only. A damaged index is quarantined (issue
/// #11 item 15) and its generation reported damaged; nothing else moves.
#[test]
fn missing_chunks_are_reported_and_damaged_indexes_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 8, 5);
    backup(&repo, "web", &data, None);
    let (g2, _) = backup(&repo, "db", &disk_bytes(CS as usize * 4, 11), None);
    // A chunk of web's disk deleted, db's index cut short.
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[2 * CS as usize..3 * CS as usize]);
    fs::remove_file(repo.chunk_store().path(&digest)).unwrap();
    let db = repo.target_key(&identity("db")).unwrap();
    let fidx = repo
        .root()
        .join("targets")
        .join(db.as_str())
        .join(g2.folder_name())
        .join("disk-2000.fidx");
    let bytes = fs::read(&fidx).unwrap();
    fs::write(&fidx, &bytes[..bytes.len() / 2]).unwrap();
    let before = snapshot(repo.root());

    let r = repair(&repo);
    let mut k = kinds(&r);
    k.sort();
    assert_eq!(
        k,
        vec![ProblemKind::DamagedIndex, ProblemKind::MissingChunk],
        "{r:#?}"
    );
    assert!(r.quarantined.is_empty(), "{r:#?}");
    assert_eq!(r.quarantined_indexes.len(), 1, "{r:#?}");
    let q = &r.quarantined_indexes[0];
    assert_eq!((&q.path, q.generation, q.disk), (&fidx, g2.0, 2000));
    assert_eq!(
        r.damaged_generations,
        vec![DamagedGeneration {
            target: db.to_string(),
            generation: g2.0,
            disks: vec![2000]
        }]
    );
    assert!(r.repair_note.is_some());
    assert_eq!(
        fs::read(&q.quarantine_path).unwrap(),
        bytes[..bytes.len() / 2]
    );
    // Nothing else moved: the index left its folder, the quarantine folder appeared.
    let after = snapshot(repo.root());
    let rel = |p: &Path| p.strip_prefix(repo.root()).unwrap().to_path_buf();
    for (p, v) in &before {
        if *p != rel(&fidx) && !p.starts_with(rel(fidx.parent().unwrap())) {
            assert_eq!(after.get(p), Some(v), "{}", p.display());
        }
    }
    assert!(!after.contains_key(&rel(&fidx)));
    assert!(after.contains_key(&rel(&q.quarantine_path)));
}
