//! Every reader of an index against a content-defined (variable) one: a format-4 repository
//! with one committed generation whose disk has chunks of different lengths, holes between
//! them and one chunk stored twice. The generation is written with an all-zero disk, then its
//! chunks are stored through the chunk store and its index replaced by one built with
//! `splice` (and the manifest told), so these tests depend on the index and the readers only,
//! not on the content-defined ingest.

use std::time::Duration;

use crate::fixed_index::IndexBinding;
use crate::format::MANIFEST_FILE;
use crate::*;

const K: u64 = 1024;
const DISK: i32 = 2000;
/// Not a multiple of 4096: the last chunk is short.
const SIZE: u64 = 3080 * K + 1000;

/// (offset, length) of the chunks; the one at 2816 KiB holds the same bytes as the first.
const CHUNKS: [(u64, u64); 7] = [
    (0, 128 * K),
    (128 * K, 200 * K),
    // hole 328 KiB..512 KiB
    (512 * K, 64 * K),
    (576 * K, 2048 * K),
    // hole 2624 KiB..2816 KiB
    (2816 * K, 128 * K),
    // hole 2944 KiB..3072 KiB
    (3072 * K, 8 * K),
    (3080 * K, 1000),
];

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
    key: TargetKey,
    generation: GenerationId,
    /// The disk's bytes.
    disk: Vec<u8>,
    /// The index the generation was committed with.
    index: FixedIndex,
}

/// The bytes of chunk `i` (chunk 4 repeats chunk 0).
fn content(i: usize, len: u64) -> Vec<u8> {
    let seed = if i == 4 { 0 } else { i };
    (0..len)
        .map(|j| (j as usize * (seed * 2 + 7) + seed * 13 + (j as usize >> 9)) as u8 | 1)
        .collect()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("repo"), &InitOptions::content_defined()).unwrap();
    assert_eq!(repo.config().format_version, 4);
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let id = TargetIdentity::new(TargetKind::Vm, "web01");
    let key = repo.target_key(&id).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            id,
            BackupMode::Full,
            None,
        )
        .unwrap();
    // Nothing read: an all-zero disk, whose index is replaced below.
    w.ingest_disk(
        DiskDescriptor::new(DISK, SIZE),
        None,
        &[],
        &mut MemorySource::new(vec![0; SIZE as usize]),
        &|_| {},
    )
    .unwrap();
    let generation = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    drop(lock);

    let mut disk = vec![0u8; SIZE as usize];
    let mut chunks = Vec::new();
    for (i, &(offset, len)) in CHUNKS.iter().enumerate() {
        let data = content(i, len);
        disk[offset as usize..(offset + len) as usize].copy_from_slice(&data);
        let id = repo.codec().chunk_id(&data);
        let blob = repo.codec().encode(BlobKind::Chunk, &data);
        repo.chunk_store().insert(&id, &blob).unwrap();
        chunks.push((offset, len as u32, id));
    }
    let mut index = FixedIndex::new_variable(SIZE, repo.config().chunk_size).unwrap();
    index.splice(0, SIZE, &chunks).unwrap();
    index.bind(IndexBinding::new(key.clone(), generation, DISK));
    let blob = index.try_encode(repo.codec()).unwrap();
    let prefix = repo.generation_prefix(&key, generation);
    let mut m = repo.manifest(&key, generation).unwrap();
    let rec = &mut m.disks[0];
    repo.backend()
        .put(&format!("{prefix}{}", rec.index_file), &blob)
        .unwrap();
    rec.set_index_identity(index.uuid(), &blob);
    repo.backend()
        .put(
            &format!("{prefix}{MANIFEST_FILE}"),
            &m.encode(repo.codec()).unwrap(),
        )
        .unwrap();
    Fixture {
        dir,
        repo,
        key,
        generation,
        disk,
        index,
    }
}

/// Ranges that start and end inside chunks, at chunk and hole boundaries, inside holes, and
/// at the disk's end.
fn ranges() -> Vec<(u64, usize)> {
    vec![
        (0, 10),
        (128 * K - 5, 10),
        (100 * K, 300 * K as usize),
        (328 * K, 184 * K as usize),
        (330 * K, 10),
        (500 * K, 100 * K as usize),
        (576 * K + 1, 2 * (K * K) as usize),
        (2600 * K, 450 * K as usize),
        (3070 * K, (SIZE - 3070 * K) as usize),
        (SIZE - 1, 1),
        (0, SIZE as usize),
    ]
}

#[test]
fn the_fixture_index_has_chunks_and_maximal_holes() {
    let f = fixture();
    let idx = &f.index;
    assert!(idx.is_variable());
    // 7 chunks and 3 holes (the last two chunks are adjacent).
    assert_eq!(idx.chunk_count(), 10);
    assert_eq!(idx.stored_chunk_count(), 7);
    assert_eq!(idx.slot_at(330 * K), 2);
    assert_eq!(idx.chunk_range(2), (328 * K, 184 * K as usize));
    assert_eq!(idx.slot(2), None);
    assert_eq!(idx.slot_at(SIZE - 1), 9);
    assert_eq!(idx.chunk_range(9), (3080 * K, 1000));
    assert_eq!(
        idx.slot(0),
        idx.slot(6),
        "the repeated chunk has the first one's id"
    );
    let read = f.repo.fixed_index(&f.key, f.generation, DISK).unwrap();
    assert_eq!(&read, idx);
}

#[test]
fn disk_reader_reads_across_chunks_and_holes_and_streams_in_order() {
    let f = fixture();
    let mut r = f.repo.disk_reader(&f.key, f.generation, DISK).unwrap();
    for (off, len) in ranges() {
        let mut buf = vec![0xEEu8; len];
        r.read_at(off, &mut buf).unwrap();
        assert!(
            buf == f.disk[off as usize..off as usize + len],
            "read at {off}+{len}"
        );
    }
    assert!(matches!(
        r.read_at(SIZE - 1, &mut [0u8; 2]),
        Err(Error::OutOfRange { .. })
    ));
    let want: Vec<(u64, Vec<u8>)> = CHUNKS
        .iter()
        .map(|&(o, l)| (o, f.disk[o as usize..(o + l) as usize].to_vec()))
        .collect();
    let streamed: Vec<(u64, Vec<u8>)> = r
        .stream(3)
        .map(|c| c.map(|c| (c.offset, c.data.to_vec())).unwrap())
        .collect();
    assert_eq!(streamed, want);
    let walked: Vec<(u64, Vec<u8>)> = r
        .chunks()
        .map(|c| c.map(|c| (c.offset, c.data.to_vec())).unwrap())
        .collect();
    assert_eq!(walked, want);
}

#[test]
fn cached_reader_reads_under_a_byte_budget_and_reports_extents() {
    let f = fixture();
    // Room for about 300 KiB: the 2 MiB chunk alone exceeds it, yet every read is right.
    let opts = CacheOptions {
        cache_bytes: 300 * K as usize,
        read_ahead: 2,
        read_ahead_threads: 1,
    };
    let r = CachedDiskReader::open(&f.repo, &f.key, f.generation, DISK, opts).unwrap();
    for _ in 0..2 {
        for (off, len) in ranges() {
            let mut buf = vec![0xEEu8; len];
            r.read_at(off, &mut buf).unwrap();
            assert!(
                buf == f.disk[off as usize..off as usize + len],
                "read at {off}+{len}"
            );
        }
    }
    let ext = |offset, len, hole| DiskExtent { offset, len, hole };
    assert_eq!(
        r.extents(0, SIZE),
        vec![
            ext(0, 328 * K, false),
            ext(328 * K, 184 * K, true),
            ext(512 * K, 2112 * K, false),
            ext(2624 * K, 192 * K, true),
            ext(2816 * K, 128 * K, false),
            ext(2944 * K, 128 * K, true),
            ext(3072 * K, SIZE - 3072 * K, false),
        ]
    );
    // Cut inside chunks and holes; a stored run stops at the range's end.
    assert_eq!(
        r.extents(100 * K, 500 * K),
        vec![
            ext(100 * K, 228 * K, false),
            ext(328 * K, 184 * K, true),
            ext(512 * K, 88 * K, false),
        ]
    );
    assert_eq!(r.extents(400 * K, 10), vec![ext(400 * K, 10, true)]);
    assert_eq!(
        r.extents(SIZE - 10, u64::MAX),
        vec![ext(SIZE - 10, 10, false)]
    );
}

#[test]
fn check_passes_then_names_a_damaged_chunk_at_its_offset() {
    let f = fixture();
    let report = f.repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.indexes, 1);
    assert_eq!(
        report.chunks_referenced, 6,
        "the repeated chunk counts once"
    );
    assert_eq!(report.chunks_verified, 6);
    assert_eq!(
        report.bytes_verified,
        CHUNKS.iter().map(|c| c.1).sum::<u64>() - 128 * K
    );

    // Damage the 64 KiB chunk at 512 KiB.
    let id = f.index.slot(f.index.slot_at(512 * K)).unwrap();
    let path = f.repo.chunk_store().path(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let report = f.repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(!report.ok());
    let p = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::DamagedChunk)
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_eq!(p.used_by.len(), 1);
    assert_eq!(p.used_by[0].offset, 512 * K);
    let _ = &f.dir;
}

#[test]
fn stats_count_variable_lengths_once() {
    let f = fixture();
    let s = f.repo.stats(None).unwrap();
    assert_eq!(s.total.unique_chunks, 6);
    assert_eq!(
        s.total.unique_bytes,
        CHUNKS.iter().map(|c| c.1).sum::<u64>() - 128 * K
    );
    assert_eq!(s.total.logical_bytes, SIZE);
    assert_eq!(s.chunk_objects, 6);
}

#[test]
fn a_variable_index_in_a_fixed_chunk_repository_is_refused() {
    let f = fixture();
    // The config rewritten to say version 3, fixed chunks: the index no longer fits.
    let mut cfg = f.repo.config().clone();
    cfg.format_version = 3;
    cfg.chunking = Chunking::Fixed;
    let json = serde_json::to_vec_pretty(&cfg).unwrap();
    let blob = Codec::new(0, None).encode(BlobKind::Config, &json);
    f.repo
        .backend()
        .put(crate::format::CONFIG_FILE, &blob)
        .unwrap();
    let fixed = Repository::open(f.dir.path().join("repo")).unwrap();
    let e = fixed.fixed_index(&f.key, f.generation, DISK).unwrap_err();
    assert!(
        matches!(&e, Error::IndexKind { reason, .. }
            if reason.contains("content-defined (version 4) index")),
        "{e}"
    );
    // check reports it; a repair moves nothing, since the config may be the wrong one.
    let lock = fixed.lock_exclusive(Duration::from_secs(5)).unwrap();
    let report = fixed.check_and_repair(&lock).unwrap();
    assert!(!report.ok());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::DamagedIndex && p.detail.contains("fixed chunks")),
        "{:#?}",
        report.problems
    );
    assert!(report.quarantined_indexes.is_empty());
    drop(lock);
    assert!(f.repo.fixed_index(&f.key, f.generation, DISK).is_ok());
}

#[test]
fn copy_translates_a_variable_index_and_refuses_a_fixed_chunk_destination() {
    let f = fixture();
    // Encrypted destination: other chunk ids, so the index is translated, not copied as is.
    let dest = Repository::init_with(
        f.dir.path().join("dest"),
        &InitOptions {
            encryption: EncryptionMode::Aes256Gcm,
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::content_defined()
        },
        Some(&Passphrase::from("copy test")),
    )
    .unwrap();
    let src_lock = f.repo.lock_shared(Duration::ZERO).unwrap();
    let dest_lock = dest.lock_shared(Duration::ZERO).unwrap();
    let c = f
        .repo
        .copy_generation_to(
            &src_lock,
            &dest,
            &dest_lock,
            &f.key,
            f.generation,
            &mut |_| {},
        )
        .unwrap();
    assert!(!c.as_is, "other keys: chunks re-encrypted under other ids");
    let copied = dest.fixed_index(&c.target, c.generation, DISK).unwrap();
    assert!(copied.is_variable());
    assert_eq!(copied.chunk_count(), f.index.chunk_count());
    for i in 0..copied.chunk_count() {
        assert_eq!(copied.chunk_range(i), f.index.chunk_range(i));
        match (copied.slot(i), f.index.slot(i)) {
            (Some(to), Some(from)) => assert_ne!(to, from, "slot {i} keeps its plain id"),
            (None, None) => {}
            other => panic!("slot {i}: {other:?}"),
        }
    }
    let mut r = dest.disk_reader(&c.target, c.generation, DISK).unwrap();
    let mut all = vec![0u8; SIZE as usize];
    r.read_at(0, &mut all).unwrap();
    assert!(all == f.disk, "the copy reads back the same disk");

    // Same chunk size, fixed chunks.
    let fixed = Repository::init(
        f.dir.path().join("fixed"),
        &InitOptions {
            chunk_size: 2 << 20,
            ..InitOptions::default()
        },
    )
    .unwrap();
    let fixed_lock = fixed.lock_shared(Duration::ZERO).unwrap();
    let e = f
        .repo
        .copy_generation_to(
            &src_lock,
            &fixed,
            &fixed_lock,
            &f.key,
            f.generation,
            &mut |_| {},
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("content-defined chunks and the destination fixed"),
        "{e}"
    );
}
