//! Check finding every kind of damage, crash safety, prune and gc through the public API.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use repository_format::*;

/// Two generations of one VM (the second incremental, sharing most chunks) and one of another.
fn populated(dir: &std::path::Path) -> (Repository, Vec<u8>) {
    let repo = repo(dir);
    let data = disk_bytes(CS as usize * 8, 5);
    let (g1, _) = backup(&repo, "web", &data, None);
    let mut changed = data.clone();
    changed[..100].fill(0xAB);
    backup(&repo, "web", &changed, Some((g1, &[Area::new(0, 100)])));
    backup(&repo, "db", &data, None);
    (repo, data)
}

fn gen_dir(repo: &Repository, name: &str, g: u64) -> std::path::PathBuf {
    repo.root()
        .join("targets")
        .join(repo.target_key(&identity(name)).unwrap().as_str())
        .join(GenerationId(g).folder_name())
}

fn kinds(r: &CheckReport) -> Vec<ProblemKind> {
    r.problems.iter().map(|p| p.kind).collect()
}

#[test]
fn clean_repository_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!((r.targets, r.generations, r.indexes), (2, 3, 3));
    assert_eq!(r.chunks_verified, r.chunks_referenced);
    assert!(r.bytes_verified > 0);
    serde_json::to_string(&r).unwrap();
}

#[test]
fn flipped_byte_in_chunk_is_named_with_every_use() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    // Chunk 2 of the data (random bytes) is shared by all three generations.
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[2 * CS as usize..3 * CS as usize]);
    let path = repo.chunk_store().path(&digest);
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len() - 10;
    bytes[n] ^= 1;
    fs::write(&path, bytes).unwrap();

    assert!(
        repo.check(&CheckOptions { read_data: false }).unwrap().ok(),
        "structural check only stats chunks"
    );
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedChunk]);
    let p = &r.problems[0];
    assert_eq!(p.path, path);
    assert!(p.detail.contains("CRC32"), "{}", p.detail);
    let mut uses: Vec<(String, u64, i32, u64)> = p
        .used_by
        .iter()
        .map(|u| (u.target.clone(), u.generation, u.disk, u.offset))
        .collect();
    uses.sort();
    let off = 2 * CS as u64;
    let db = repo.target_key(&identity("db")).unwrap().to_string();
    let web = repo.target_key(&identity("web")).unwrap().to_string();
    let mut want: Vec<(String, u64, i32, u64)> = vec![
        (db, 1, 2000, off),
        (web.clone(), 1, 2000, off),
        (web, 2, 2000, off),
    ];
    want.sort();
    assert_eq!(uses, want);

    // A reader names chunk, target, generation, disk and offset.
    let key = repo.target_key(&identity("web")).unwrap();
    let mut rd = repo.disk_reader(&key, GenerationId(2), 2000).unwrap();
    let mut buf = vec![0u8; 10];
    let err = rd.read_at(off + 5, &mut buf).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&digest.to_hex())
            && msg.contains(key.as_str())
            && msg.contains("generation 2"),
        "{msg}"
    );
    assert!(
        msg.contains("disk 2000") && msg.contains(&format!("offset {off}")),
        "{msg}"
    );
    // Undamaged chunks still read.
    rd.read_at(0, &mut buf).unwrap();
    // The stream stops at the damaged chunk with the same naming.
    let results: Vec<_> = rd.stream(2).collect();
    assert!(results.last().unwrap().is_err());
    assert!(results[..results.len() - 1].iter().all(|r| r.is_ok()));
    let err = results.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(err.contains(&format!("offset {off}")), "{err}");
}

#[test]
fn missing_chunk_is_found_without_read_data() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[CS as usize..2 * CS as usize]);
    fs::remove_file(repo.chunk_store().path(&digest)).unwrap();
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::MissingChunk]);
    assert_eq!(r.problems[0].used_by.len(), 3);
}

#[test]
fn chunk_with_wrong_content_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[CS as usize..2 * CS as usize]);
    // A valid blob, but of other content: CRC passes, SHA-256 does not.
    let other = repo
        .chunk_store()
        .codec()
        .encode(BlobKind::Chunk, &vec![9u8; CS as usize]);
    fs::write(repo.chunk_store().path(&digest), other).unwrap();
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedChunk]);
    assert!(
        r.problems[0].detail.contains("hashes to"),
        "{}",
        r.problems[0].detail
    );
}

#[test]
fn oversized_file_under_a_chunk_name_is_damage_not_a_memory_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    let digest = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[CS as usize..2 * CS as usize]);
    fs::write(
        repo.chunk_store().path(&digest),
        vec![0u8; CS as usize + 1000],
    )
    .unwrap();
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedChunk]);
    assert!(
        r.problems[0].detail.contains("exceeds"),
        "{}",
        r.problems[0].detail
    );
}

#[test]
fn truncated_index_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    let idx = gen_dir(&repo, "web", 2).join("disk-2000.fidx");
    let bytes = fs::read(&idx).unwrap();
    fs::write(&idx, &bytes[..bytes.len() - 7]).unwrap();
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedIndex]);
    let p = &r.problems[0];
    assert_eq!(
        (p.path.clone(), p.generation, p.disk),
        (idx.clone(), Some(2), Some(2000))
    );
    assert!(p.detail.contains("truncated"), "{}", p.detail);
    let key = repo.target_key(&identity("web")).unwrap();
    let err = repo
        .disk_reader(&key, GenerationId(2), 2000)
        .unwrap_err()
        .to_string();
    assert!(err.contains(idx.to_str().unwrap()), "{err}");
    // The other generations are untouched and still restore.
    assert!(repo.disk_reader(&key, GenerationId(1), 2000).is_ok());
}

#[test]
fn damaged_manifest_is_named_and_listing_survives() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    let m = gen_dir(&repo, "web", 1).join("manifest");
    let mut bytes = fs::read(&m).unwrap();
    bytes[40] ^= 0x20;
    fs::write(&m, bytes).unwrap();
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(kinds(&r), vec![ProblemKind::DamagedManifest]);
    assert_eq!(r.problems[0].path, m);
    assert_eq!(r.problems[0].generation, Some(1));
    let key = repo.target_key(&identity("web")).unwrap();
    assert!(matches!(
        repo.manifest(&key, GenerationId(1)),
        Err(Error::Blob { .. })
    ));
    let gens: Vec<u64> = repo
        .generations(&key)
        .unwrap()
        .iter()
        .map(|g| g.id.0)
        .collect();
    assert_eq!(gens, vec![2]);
    // gc refuses to run with an unreadable manifest: its mark would be incomplete.
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let err = repo.gc(&x, &GcOptions::default()).unwrap_err();
    assert!(err.to_string().contains("manifest"), "{err}");
}

#[test]
fn foreign_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    let f1 = repo.root().join("chunks").join("zz");
    let f2 = repo.root().join("chunks").join("abcd");
    fs::create_dir_all(&f2).unwrap();
    let f2 = f2.join("hello.txt");
    let f3 = gen_dir(&repo, "db", 1).join("notes.txt");
    let f4 = repo.root().join("README");
    let f5 = repo.root().join("targets").join("Bad Name");
    for f in [&f1, &f2, &f3, &f4, &f5] {
        fs::write(f, b"x").unwrap();
    }
    let r = repo.check(&CheckOptions::default()).unwrap();
    let mut paths: Vec<_> = r
        .problems
        .iter()
        .map(|p| (p.kind, p.path.clone()))
        .collect();
    paths.sort();
    let mut want: Vec<_> = [f1, f2, f3, f4, f5]
        .into_iter()
        .map(|p| (ProblemKind::ForeignFile, p))
        .collect();
    want.sort();
    assert_eq!(paths, want);
}

#[test]
fn damaged_or_foreign_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let cfg = repo.root().join("config");
    let mut b = fs::read(&cfg).unwrap();
    b[30] ^= 4;
    fs::write(&cfg, b).unwrap();
    let err = Repository::open(repo.root()).unwrap_err().to_string();
    assert!(err.contains("config") && err.contains("CRC32"), "{err}");
    fs::write(&cfg, b"[repository]\nversion = 2\n").unwrap();
    let err = Repository::open(repo.root()).unwrap_err().to_string();
    assert!(
        err.contains("not a safekeeping object") || err.contains("truncated"),
        "{err}"
    );
    assert!(Repository::open(dir.path())
        .unwrap_err()
        .to_string()
        .contains("not a safekeeping repository"));
    assert!(matches!(
        Repository::init(repo.root(), &InitOptions::default()),
        Err(Error::NotEmpty { .. })
    ));
    assert!(Repository::init(
        dir.path().join("x"),
        &InitOptions {
            chunk_size: 100_000,
            compression_level: 1,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn writer_abandoned_mid_way_leaves_repository_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    let before = repo.check(&CheckOptions { read_data: true }).unwrap();
    let key = repo.target_key(&identity("web")).unwrap();

    // Dropped: the folder goes at once.
    {
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let mut w = repo
            .begin_generation(
                &lock,
                repo.lock_target(&key, Duration::ZERO).unwrap(),
                identity("web"),
                BackupMode::Full,
                None,
            )
            .unwrap();
        let mut other = disk_bytes(CS as usize * 4, 77);
        other[0] = 1;
        w.ingest_disk(
            DiskDescriptor::new(2000, other.len() as u64),
            None,
            &[Area::new(0, other.len() as u64)],
            &mut MemorySource::new(other),
            &|_| {},
        )
        .unwrap();
        w.put_metadata("vm.nvram", b"nv").unwrap();
    }
    let after = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(after.ok(), "{:#?}", after.problems);
    assert!(after.incomplete_generations.is_empty());
    assert!(after.chunks_unreferenced > before.chunks_unreferenced);
    assert_eq!(repo.generations(&key).unwrap().len(), 2);

    // Crashed: a child process dies mid-backup. The folder stays, marked incomplete; check
    // stays clean; gc removes it (its writer is dead).
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SAFEKEEPING_TEST_CRASH_CHILD", repo.root())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.incomplete_generations, vec![format!("{key}/gen-000003")]);
    assert_eq!(repo.generations(&key).unwrap().len(), 2);
    assert!(repo.manifest(&key, GenerationId(3)).is_err());
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let g = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(g.incomplete_removed, vec![format!("{key}/gen-000003")]);
    drop(x);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok() && r.incomplete_generations.is_empty(), "{r:#?}");
    // The next backup gets number 3.
    let (g, _) = backup(&repo, "web", &data, None);
    assert_eq!(g, GenerationId(3));
}

/// Child side of the crash test: begins a generation, ingests a disk, and aborts.
#[test]
fn crash_child_helper() {
    let Ok(root) = std::env::var("SAFEKEEPING_TEST_CRASH_CHILD") else {
        return;
    };
    let repo = reopen(root.as_ref());
    let key = repo.target_key(&identity("web")).unwrap();
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::from_secs(5)).unwrap(),
            identity("web"),
            BackupMode::Full,
            None,
        )
        .unwrap();
    let data = disk_bytes(CS as usize * 4, 99);
    w.ingest_disk(
        DiskDescriptor::new(2000, data.len() as u64),
        None,
        &[Area::new(0, data.len() as u64)],
        &mut MemorySource::new(data),
        &|_| {},
    )
    .unwrap();
    // Exit without running destructors, like a crash (without leaving a core file).
    std::process::exit(3);
}

#[test]
fn reindex_removes_abandoned_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    let key = repo.target_key(&identity("web")).unwrap();
    let abandoned = repo
        .root()
        .join("targets")
        .join(key.as_str())
        .join("gen-000009");
    fs::create_dir(&abandoned).unwrap();
    fs::write(
        abandoned.join("incomplete.json"),
        br#"{"pid": 4000000000, "host": "nowhere", "started": "2020-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert!(r.ok());
    assert_eq!(r.incomplete_generations.len(), 1);
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let ri = repo.reindex(&x).unwrap();
    assert_eq!(ri.incomplete_removed, vec![format!("{key}/gen-000009")]);
    assert_eq!((ri.targets, ri.generations), (2, 3));
    assert!(!abandoned.exists());
}

#[test]
fn prune_then_gc_frees_only_unreferenced_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let a = disk_bytes(CS as usize * 6, 11);
    let b = disk_bytes(CS as usize * 6, 12);
    backup(&repo, "web", &a, None);
    let (g2, _) = backup(&repo, "web", &b, None);
    let key = repo.target_key(&identity("web")).unwrap();
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let policy = RetentionPolicy {
        keep_last: 1,
        ..Default::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let dry = repo.prune(&x, &policy, None, now, true).unwrap();
    assert_eq!(dry.removed, vec![(key.clone(), GenerationId(1))]);
    assert_eq!(repo.generations(&key).unwrap().len(), 2);
    assert!(repo
        .prune(&x, &RetentionPolicy::default(), None, now, false)
        .is_err());
    let done = repo.prune(&x, &policy, None, now, false).unwrap();
    assert_eq!(done.removed, dry.removed);
    assert_eq!(
        repo.generations(&key)
            .unwrap()
            .iter()
            .map(|g| g.id)
            .collect::<Vec<_>>(),
        vec![g2]
    );
    // Chunks of generation 1 are recent: while gc can see a writer alive (here a live
    // target lock), a gc with the default grace keeps them (with none alive they go at once:
    // tests/integrity.rs)...
    let busy = repo
        .lock_target(&TargetKey::new("vm-busy").unwrap(), Duration::ZERO)
        .unwrap();
    let r = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(r.chunks_removed, 0);
    assert!(r.chunks_kept_recent > 0);
    // ...and frees them once they are older than the cutoff.
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    for e in walk(&repo.chunk_store().dir()) {
        filetime::set_file_mtime(&e, old).unwrap();
    }
    let r = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(r.chunks_removed, r.chunks_found - r.chunks_referenced);
    assert!(r.chunks_removed > 0);
    drop((x, busy));
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
    assert_eq!(restore(&repo, "web", g2), b);
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    repo.delete_generation(&x, &key, g2).unwrap();
    assert!(repo.targets().unwrap().is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

mod any_damage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever committed file is flipped or truncated, and wherever, check finds it, and
        /// nothing panics.
        #[test]
        fn any_flip_or_truncation_is_found(pick in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(), truncate in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let (repo, _) = populated(dir.path());
            let mut files = walk(&repo.root().join("chunks"));
            files.extend(walk(&repo.root().join("targets")));
            files.sort();
            let f = pick.get(&files);
            let mut bytes = fs::read(f).unwrap();
            let at = pos.index(bytes.len());
            if truncate {
                bytes.truncate(at);
            } else {
                bytes[at] ^= 0x01;
            }
            fs::write(f, &bytes).unwrap();
            let r = repo.check(&CheckOptions { read_data: true }).unwrap();
            prop_assert!(!r.ok(), "damage to {} at {} ({}) not found", f.display(), at, if truncate { "truncated" } else { "flipped" });
            prop_assert!(
                r.problems.iter().any(|p| &p.path == f || p.path.starts_with(f)),
                "problems name other files: {:#?}", r.problems
            );
        }
    }
}

#[test]
fn catalog_is_a_cache_only() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, data) = populated(dir.path());
    if repo.is_encrypted() {
        // The catalog would hold names in plain text: encrypted repositories go without it.
        assert!(!repo.has_catalog());
        assert!(!repo.root().join("catalog").exists());
        return;
    }
    assert!(repo.has_catalog());
    let listing = repo.targets().unwrap();
    let key = repo.target_key(&identity("web")).unwrap();
    let gens = repo.generations(&key).unwrap();
    assert_eq!(gens.len(), 2);
    // A second handle finds the catalog locked and works without it, with the same answers.
    let other = reopen(repo.root());
    assert!(!other.has_catalog());
    assert_eq!(other.targets().unwrap(), listing);
    assert_eq!(other.generations(&key).unwrap(), gens);
    // Changes made through the other handle are seen through the cached one: the folder listing
    // decides what exists, and a deleted generation's entry is never used.
    let x = other.lock_exclusive(Duration::ZERO).unwrap();
    other.delete_generation(&x, &key, GenerationId(2)).unwrap();
    drop(x);
    backup(&other, "web", &data[..CS as usize * 2], None);
    let now = repo.generations(&key).unwrap();
    assert_eq!(now.len(), 2);
    assert_eq!(
        now[1].stats.logical_bytes,
        CS as u64 * 2,
        "gen 2 is the new one"
    );
    drop(other);
    // Reindex rebuilds it.
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let r = repo.reindex(&x).unwrap();
    assert!(r.catalog_rebuilt);
    assert_eq!(r.catalog_entries, 3);
    assert!(
        repo.check(&CheckOptions::default()).unwrap().ok(),
        "the catalog folder is not foreign"
    );
}

#[test]
fn damaged_catalog_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = populated(dir.path());
    if repo.is_encrypted() {
        return; // no catalog (see catalog_is_a_cache_only)
    }
    let want = repo.targets().unwrap();
    let root = repo.root().to_path_buf();
    drop(repo);
    for f in walk(&root.join("catalog")) {
        fs::write(&f, b"garbage garbage garbage").unwrap();
    }
    let repo = reopen(&root);
    assert_eq!(repo.targets().unwrap(), want);
}

#[test]
fn incremental_reads_again_a_chunk_it_would_inherit_but_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 8, 21);
    let (g1, _) = backup(&repo, "vm", &data, None);
    // Chunk 2 (random data) disappears from the repository (lost, or quarantined by repair).
    let lost = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[2 * CS as usize..3 * CS as usize]);
    fs::remove_file(repo.chunk_store().path(&lost)).unwrap();
    assert!(!repo.check(&CheckOptions { read_data: false }).unwrap().ok());
    let key = repo.target_key(&identity("vm")).unwrap();
    let base = repo.fixed_index(&key, g1, 2000).unwrap();
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            identity("vm"),
            BackupMode::Incremental,
            Some(g1),
        )
        .unwrap();
    // Only chunk 0 changed, so chunk 2 would be inherited: it is read again instead, and only
    // it (and chunk 0) is read.
    let stats = w
        .ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            Some(&base),
            &[Area::new(0, 10)],
            &mut MemorySource::new(data.clone()),
            &|_| {},
        )
        .unwrap();
    assert_eq!(stats.read_bytes, 2 * CS as u64, "{stats:?}");
    assert_eq!(stats.new_chunks, 1, "{stats:?}");
    let g2 = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    assert_eq!(restore(&repo, "vm", g2), data);
    // The chunk is back under its name, so the first generation is whole again too.
    assert!(repo.chunk_store().path(&lost).is_file());
    assert_eq!(restore(&repo, "vm", g1), data);
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
}

#[test]
fn the_read_plan_includes_the_chunks_an_incremental_heals_and_the_ingest_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 8, 22);
    let (g1, _) = backup(&repo, "vm", &data, None);
    let lost = repo
        .chunk_store()
        .codec()
        .chunk_id(&data[5 * CS as usize..6 * CS as usize]);
    fs::remove_file(repo.chunk_store().path(&lost)).unwrap();
    let key = repo.target_key(&identity("vm")).unwrap();
    let base = repo.fixed_index(&key, g1, 2000).unwrap();
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            identity("vm"),
            BackupMode::Incremental,
            Some(g1),
        )
        .unwrap();
    let capacity = data.len() as u64;
    let plan = w
        .plan_reads(capacity, Some(&base), &[Area::new(10, 10)])
        .unwrap();
    // The changed chunk 0 and the missing chunk 5, in disk order: what a read-ahead source
    // is told to fetch.
    assert_eq!(plan.healed_chunks, 1);
    assert_eq!(
        plan.reads,
        vec![(0, CS as usize), (5 * CS as u64, CS as usize)]
    );
    // The ingest asks the source for exactly the planned reads.
    struct Recording {
        inner: MemorySource,
        asked: Vec<(u64, usize)>,
    }
    impl DiskSource for Recording {
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            self.asked.push((offset, buf.len()));
            self.inner.read_at(offset, buf)
        }
    }
    let mut source = Recording {
        inner: MemorySource::new(data.clone()),
        asked: Vec::new(),
    };
    let stats = w
        .ingest_planned_disk(
            DiskDescriptor::new(2000, capacity),
            Some(&base),
            &plan,
            &mut source,
            &|_| {},
        )
        .unwrap();
    assert_eq!(source.asked, plan.reads);
    assert_eq!(stats.read_bytes, 2 * CS as u64, "{stats:?}");
    let g2 = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    assert_eq!(restore(&repo, "vm", g2), data);
    assert!(repo.chunk_store().path(&lost).is_file());
}
