//! Content-defined chunks (format 4) through the public API: full backups find copies at other
//! 4 KiB-aligned offsets, and a CBT incremental cuts exactly as a full backup of the same bytes
//! would, whatever it changed, while reading little more than the change.

mod common;

use std::time::Duration;

use common::{identity, PASSPHRASE};
use repository_format::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn cdc_repo(root: &std::path::Path) -> Repository {
    Repository::init(root, &InitOptions::content_defined()).unwrap()
}

fn encrypted_cdc_repo(root: &std::path::Path) -> Repository {
    Repository::init_with(
        root,
        &InitOptions {
            encryption: Encryption::Aes256Gcm,
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::content_defined()
        },
        Some(&Passphrase::from(PASSPHRASE)),
    )
    .unwrap()
}

/// xorshift bytes: incompressible, and no two blocks alike.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A guest-like disk: files of random and text-like bytes at 4 KiB-aligned offsets, a copy of
/// one of them at an offset that no fixed chunk size lines up with, and never-written zeros.
fn guest_disk(len: usize, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; len];
    let file = random(3 * MIB, seed);
    d[MIB..4 * MIB].copy_from_slice(&file);
    for (i, b) in d[5 * MIB..7 * MIB].iter_mut().enumerate() {
        *b = b"the quick brown fox jumps over the lazy dog\n"[i % 44] ^ ((i / 4096) as u8);
    }
    let copy_at = 9 * MIB + 12 * KIB;
    d[copy_at..copy_at + 3 * MIB].copy_from_slice(&file);
    d[14 * MIB..16 * MIB].copy_from_slice(&random(2 * MIB, seed + 1));
    d
}

/// One generation of `name` with disk 2000 holding `data`: a full backup reading `areas`, or an
/// incremental on `base` reading the changed `areas`.
fn backup(
    repo: &Repository,
    name: &str,
    data: &[u8],
    base: Option<GenerationId>,
    areas: &[Area],
) -> Result<(GenerationId, DiskStats)> {
    let lock = repo.lock_shared(Duration::from_secs(5))?;
    let id = identity(name);
    let key = repo.target_key(&id)?;
    let tl = repo.lock_target(&key, Duration::from_secs(5))?;
    let mode = if base.is_some() {
        BackupMode::Incremental
    } else {
        BackupMode::Full
    };
    let w = repo.begin_generation(&lock, tl, id, mode, base)?;
    let base_index = match base {
        Some(g) => Some(repo.fixed_index(&key, g, 2000)?),
        None => None,
    };
    let mut src = MemorySource::new(data.to_vec());
    let stats = w.ingest_disk(
        DiskDescriptor::new(2000, data.len() as u64),
        base_index.as_ref(),
        areas,
        &mut src,
        &|_| {},
    )?;
    let g = w.commit(GenerationStatus::Succeeded, Default::default())?;
    Ok((g, stats))
}

fn whole(data: &[u8]) -> Vec<Area> {
    vec![Area::new(0, data.len() as u64)]
}

/// Every stored chunk of a generation's disk 2000: (offset, length, id).
fn chunks(repo: &Repository, name: &str, g: GenerationId) -> Vec<(u64, usize, ChunkDigest)> {
    let key = repo.target_key(&identity(name)).unwrap();
    let idx = repo.fixed_index(&key, g, 2000).unwrap();
    assert!(idx.is_variable());
    idx.stored_chunks()
        .map(|(slot, d)| {
            let (o, l) = idx.chunk_range(slot);
            (o, l, d)
        })
        .collect()
}

fn restore(repo: &Repository, name: &str, g: GenerationId) -> Vec<u8> {
    let key = repo.target_key(&identity(name)).unwrap();
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    let mut out = vec![0u8; r.capacity() as usize];
    r.read_at(0, &mut out).unwrap();
    out
}

#[test]
fn a_full_backup_restores_and_stores_a_copy_at_another_offset_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = cdc_repo(&dir.path().join("repo"));
    let data = guest_disk(20 * MIB, 1);
    let (g, stats) = backup(&repo, "vm", &data, None, &whole(&data)).unwrap();
    assert_eq!(restore(&repo, "vm", g), data);
    let written = (3 + 2 + 3 + 2) * MIB as u64;
    // The 3 MiB copy is found but for the chunks around its two ends.
    assert!(
        stats.new_bytes <= written - 2 * MIB as u64,
        "new {} of {written} written bytes",
        stats.new_bytes
    );
    assert_eq!(stats.new_bytes + stats.reused_bytes, written);
    let chunks = chunks(&repo, "vm", g);
    for &(o, l, _) in &chunks {
        assert_eq!(o % 4096, 0);
        assert!(l % 4096 == 0 && l <= 2 * MIB && l > 0, "chunk of {l} bytes");
    }
    // Never-written space is holes, not chunks.
    let stored: usize = chunks.iter().map(|c| c.1).sum();
    assert_eq!(stored as u64, written);
    // The repository checks clean.
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

/// Applies a change to `data` and returns the area CBT would report for it.
fn change(data: &mut [u8], offset: usize, len: usize, kind: u64, seed: u64) -> Area {
    let len = len.min(data.len() - offset);
    match kind % 4 {
        0 => data[offset..offset + len].fill(0),
        1 => {
            let src = (offset + 7 * MIB + 8 * KIB) % (data.len() - len);
            let src = src / 4096 * 4096;
            let copy = data[src..src + len].to_vec();
            data[offset..offset + len].copy_from_slice(&copy);
        }
        _ => data[offset..offset + len].copy_from_slice(&random(len, seed)),
    }
    Area::new(offset as u64, len as u64)
}

#[test]
fn an_incremental_cuts_as_a_full_backup_of_the_same_bytes_would() {
    let dir = tempfile::tempdir().unwrap();
    let repo = cdc_repo(&dir.path().join("repo"));
    let mut data = guest_disk(20 * MIB, 2);
    let (mut parent, _) = backup(&repo, "vm", &data, None, &whole(&data)).unwrap();
    let mut x = 99u64;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for round in 0..10u64 {
        // A few changes of any size and alignment: new data, zeros, copies, into holes too.
        let mut areas = Vec::new();
        for _ in 0..=next(4) {
            let offset = next(data.len() as u64) as usize;
            let len = 1 + next(if round % 3 == 0 {
                3 * MIB as u64
            } else {
                80_000
            }) as usize;
            areas.push(change(&mut data, offset, len, next(4), round * 10 + 1));
        }
        let (g, stats) = backup(&repo, "vm", &data, Some(parent), &areas).unwrap();
        let changed: u64 = areas.iter().map(|a| a.len).sum();
        let (full, _) = backup(&repo, &format!("full{round}"), &data, None, &whole(&data)).unwrap();
        assert_eq!(
            chunks(&repo, "vm", g),
            chunks(&repo, &format!("full{round}"), full),
            "round {round}: areas {areas:?}"
        );
        assert_eq!(restore(&repo, "vm", g), data, "round {round}");
        // Little more than the change is read: the old chunk before each area (at most 2 MiB)
        // and on until the cuts meet (about one mean chunk, 0.6 MiB). Measured: 0.2-0.9 MiB
        // more per area.
        assert!(
            stats.read_bytes <= changed + areas.len() as u64 * 4 * MIB as u64,
            "round {round}: read {} for {changed} changed",
            stats.read_bytes
        );
        parent = g;
    }
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

#[test]
fn an_incremental_of_a_small_change_reads_about_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let repo = cdc_repo(&dir.path().join("repo"));
    let mut data = random(32 * MIB, 5);
    let (parent, _) = backup(&repo, "vm", &data, None, &whole(&data)).unwrap();
    let area = change(&mut data, 17 * MIB + 4096, 8192, 2, 6);
    let (g, stats) = backup(&repo, "vm", &data, Some(parent), &[area]).unwrap();
    assert_eq!(restore(&repo, "vm", g), data);
    // The chunk holding the change, maybe its neighbours: never the disk.
    assert!(
        stats.read_bytes <= 5 * MIB as u64,
        "read {}",
        stats.read_bytes
    );
    assert!(stats.new_chunks <= 3, "{stats:?}");
}

#[test]
fn the_read_plan_is_what_the_ingest_reads_first() {
    /// A source that records every read.
    struct Recording {
        inner: MemorySource,
        reads: Vec<(u64, usize)>,
    }
    impl DiskSource for Recording {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            self.reads.push((offset, buf.len()));
            self.inner.read_at(offset, buf)
        }
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = cdc_repo(&dir.path().join("repo"));
    let mut data = guest_disk(20 * MIB, 3);
    let (parent, _) = backup(&repo, "vm", &data, None, &whole(&data)).unwrap();
    let areas = [
        change(&mut data, 2 * MIB + 100, 5000, 2, 1),
        change(&mut data, 10 * MIB, 300 * KIB, 2, 2),
        change(&mut data, 18 * MIB, 4096, 2, 3),
    ];
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let id = identity("vm");
    let key = repo.target_key(&id).unwrap();
    let base = repo.fixed_index(&key, parent, 2000).unwrap();
    let tl = repo.lock_target(&key, Duration::from_secs(5)).unwrap();
    let w = repo
        .begin_generation(&lock, tl, id, BackupMode::Incremental, Some(parent))
        .unwrap();
    let plan = w
        .plan_reads(data.len() as u64, Some(&base), &areas)
        .unwrap();
    let mut src = Recording {
        inner: MemorySource::new(data.clone()),
        reads: Vec::new(),
    };
    w.ingest_planned_disk(
        DiskDescriptor::new(2000, data.len() as u64),
        Some(&base),
        &plan,
        &mut src,
        &|_| {},
    )
    .unwrap();
    // Every planned read happens, in order (a read-ahead source has them in flight); reads
    // past the plan only continue a span until its cuts meet the old ones.
    let mut planned = plan.reads.iter().peekable();
    for r in &src.reads {
        if planned.peek() == Some(&r) {
            planned.next();
        }
    }
    assert!(
        planned.next().is_none(),
        "planned reads skipped: {:?}",
        src.reads
    );
    let extra: usize = src.reads.len() - plan.reads.len();
    assert!(extra <= 3 * 8, "{extra} reads beyond the plan");
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    drop(lock);
    assert_eq!(restore(&repo, "vm", g), data);
}

#[test]
fn cut_points_depend_on_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let data = random(12 * MIB, 4);
    let cuts = |repo: &Repository| {
        let (g, _) = backup(repo, "vm", &data, None, &whole(&data)).unwrap();
        chunks(repo, "vm", g)
            .into_iter()
            .map(|c| c.0)
            .collect::<Vec<_>>()
    };
    let a = cdc_repo(&dir.path().join("a"));
    let b = cdc_repo(&dir.path().join("b"));
    let e = encrypted_cdc_repo(&dir.path().join("e"));
    let (ca, cb, ce) = (cuts(&a), cuts(&b), cuts(&e));
    assert_ne!(ca, cb, "two plain repositories cut alike");
    assert_ne!(ca, ce);
    // The encrypted repository's seed comes from its key, not from its config.
    assert!(matches!(
        e.config().chunking,
        repository_format::config::Chunking::AlignedCdc { seed: None, .. }
    ));
    let reopened =
        Repository::open_with(dir.path().join("e"), Some(&Passphrase::from(PASSPHRASE))).unwrap();
    assert_eq!(cuts(&reopened), ce);
}

#[test]
fn a_base_in_the_other_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = Repository::init(dir.path().join("fixed"), &InitOptions::default()).unwrap();
    let data = random(4 * MIB, 7);
    let (g, _) = backup(&fixed, "vm", &data, None, &whole(&data)).unwrap();
    let key = fixed.target_key(&identity("vm")).unwrap();
    let fixed_index = fixed.fixed_index(&key, g, 2000).unwrap();
    let repo = cdc_repo(&dir.path().join("cdc"));
    let (parent, _) = backup(&repo, "vm", &data, None, &whole(&data)).unwrap();
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let key = repo.target_key(&identity("vm")).unwrap();
    let tl = repo.lock_target(&key, Duration::from_secs(5)).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            tl,
            identity("vm"),
            BackupMode::Incremental,
            Some(parent),
        )
        .unwrap();
    let err = w
        .ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            Some(&fixed_index),
            &[Area::new(0, 4096)],
            &mut MemorySource::new(data.clone()),
            &|_| {},
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("fixed chunks in a repository of content-defined chunks")
            || matches!(err, Error::BaseIndex { .. }),
        "{err}"
    );
}
