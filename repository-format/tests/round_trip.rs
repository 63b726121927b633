//! Backup, incremental and restore round trips through the public API.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use repository_format::*;

#[test]
fn full_backup_restores_byte_for_byte_with_short_tail() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 9 + 1234, 1);
    let (g, stats) = backup(&repo, "web01", &data, None);
    assert_eq!(g, GenerationId(1));
    assert_eq!(stats.logical_bytes, data.len() as u64);
    assert_eq!(stats.read_bytes, data.len() as u64);
    assert!(stats.zero_bytes >= 2 * CS as u64, "{stats:?}");
    assert_eq!(restore(&repo, "web01", g), data);

    // random access across chunk borders and at the tail
    let key = repo.target_key(&identity("web01")).unwrap();
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    for (off, len) in [
        (0u64, 1usize),
        (CS as u64 - 3, 10),
        (data.len() as u64 - 5, 5),
        (12345, 3 * CS as usize),
    ] {
        let mut buf = vec![0u8; len];
        r.read_at(off, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[off as usize..off as usize + len]);
    }
    let mut one = [0u8; 1];
    assert!(matches!(
        r.read_at(data.len() as u64, &mut one),
        Err(Error::OutOfRange { .. })
    ));

    // the chunk walk yields exactly the non-zero chunks
    let mut rebuilt = vec![0u8; data.len()];
    let mut n = 0;
    for c in r.chunks() {
        let c = c.unwrap();
        assert!(c.data.iter().any(|&b| b != 0));
        rebuilt[c.offset as usize..c.offset as usize + c.data.len()].copy_from_slice(&c.data);
        n += 1;
    }
    assert_eq!(rebuilt, data);
    assert_eq!(n, r.index().stored_chunks().count());
    // The parallel stream yields the same chunks in the same order.
    for threads in [1, 3] {
        let streamed: Vec<DiskChunk> = r.stream(threads).map(|c| c.unwrap()).collect();
        let walked: Vec<DiskChunk> = r.chunks().map(|c| c.unwrap()).collect();
        assert_eq!(streamed, walked);
        // Every chunk arrives page-aligned, for direct I/O without a copy.
        assert!(streamed.iter().chain(&walked).all(|c| c.data.is_aligned()));
    }
    // Dropping a stream part-way stops its threads.
    let mut s = r.stream(2);
    assert!(s.next().is_some());
    drop(s);

    let m = repo.manifest(&key, g).unwrap();
    assert_eq!(m.metadata_files, vec!["vm.vmx".to_string()]);
    assert_eq!(
        repo.read_metadata(&key, g, "vm.vmx").unwrap(),
        b"displayName = \"x\""
    );
    assert_eq!(repo.latest_successful(&key).unwrap().unwrap().id, g);
    let targets = repo.targets().unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].name, "web01");
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
}

/// A disk holding the same chunk at several offsets: the distinct stream reads it once and
/// names every other offset, and offsets plus copies rebuild the disk.
#[test]
fn distinct_stream_reads_each_duplicated_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let cs = CS as usize;
    let pieces = disk_bytes(4 * cs, 8);
    let piece = |i: usize| pieces[i * cs..(i + 1) * cs].to_vec();
    let (a, b, c) = (piece(1), piece(2), piece(3));
    assert!(a != b && b != c && a != c);
    // a b 0 a c b a, then a short tail equal to the start of `a` (another length: its own
    // chunk).
    let mut data = Vec::new();
    for p in [&a, &b, &vec![0u8; cs], &a, &c, &b, &a] {
        data.extend_from_slice(p);
    }
    data.extend_from_slice(&a[..4096]);
    let (g, _) = backup(&repo, "dups", &data, None);
    let key = repo.target_key(&identity("dups")).unwrap();
    let r = repo.disk_reader(&key, g, 2000).unwrap();
    for threads in [1, 3] {
        let chunks: Vec<DiskChunk> = r.stream_distinct(threads).map(|c| c.unwrap()).collect();
        let firsts: Vec<u64> = chunks.iter().map(|c| c.offset).collect();
        let at = |n: usize| (n * cs) as u64;
        assert_eq!(
            firsts,
            vec![at(0), at(1), at(4), at(7)],
            "in first-offset order"
        );
        assert_eq!(chunks[0].copies, vec![at(3), at(6)]);
        assert_eq!(chunks[1].copies, vec![at(5)]);
        assert!(chunks[2].copies.is_empty() && chunks[3].copies.is_empty());
        let mut rebuilt = vec![0u8; data.len()];
        for c in &chunks {
            assert!(c.data.is_aligned());
            for &off in std::iter::once(&c.offset).chain(&c.copies) {
                rebuilt[off as usize..off as usize + c.data.len()].copy_from_slice(&c.data);
            }
        }
        assert_eq!(rebuilt, data);
    }
    // The ordered stream still yields every stored chunk at its own offset, with no copies.
    let all: Vec<DiskChunk> = r.stream(2).map(|c| c.unwrap()).collect();
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|c| c.copies.is_empty()));
}

/// A damaged chunk that the disk holds twice fails the distinct stream, naming its first
/// offset: reading it once does not skip its verification.
#[test]
fn distinct_stream_verifies_a_duplicated_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let cs = CS as usize;
    let a = disk_bytes(2 * cs, 8)[cs..].to_vec();
    let data = [a.clone(), a].concat();
    let (g, _) = backup(&repo, "dups", &data, None);
    let key = repo.target_key(&identity("dups")).unwrap();
    let r = repo.disk_reader(&key, g, 2000).unwrap();
    let digest = r.index().slot(0).unwrap();
    let chunk = repo.chunk_store().path(&digest);
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&chunk, bytes).unwrap();
    let results: Vec<_> = r.stream_distinct(2).collect();
    assert_eq!(results.len(), 1);
    match &results[0] {
        Err(Error::Chunk(e)) => assert_eq!(e.used_by.offset, 0),
        other => panic!("expected a chunk error, got {other:?}"),
    }
}

#[test]
fn second_ingest_stores_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 16, 2);
    let (_, first) = backup(&repo, "a", &data, None);
    assert!(first.new_chunks > 0);
    let (g2, second) = backup(&repo, "b", &data, None);
    assert_eq!(second.new_chunks, 0);
    assert_eq!(second.stored_bytes, 0);
    assert_eq!(second.reused_bytes, first.reused_bytes + first.new_bytes);
    assert_eq!(g2, GenerationId(1), "generation numbers are per target");
    assert_eq!(restore(&repo, "b", g2), data);
}

#[test]
fn areas_outside_the_disk_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, _key, w) = begin_full(&repo, "x");
    let mut src = MemorySource::new(vec![1u8; 1000]);
    let err = w
        .ingest_disk(
            DiskDescriptor::new(1, 1000),
            None,
            &[Area::new(900, 101)],
            &mut src,
            &|_| {},
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                offset: 900,
                len: 101,
                capacity: 1000,
                ..
            }
        ),
        "{err}"
    );
    let err = w
        .ingest_disk(DiskDescriptor::new(1, 999), None, &[], &mut src, &|_| {})
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[test]
fn source_errors_name_disk_and_offset() {
    struct Failing;
    impl DiskSource for Failing {
        fn read_at(&mut self, offset: u64, _buf: &mut [u8]) -> Result<(), SourceError> {
            if offset >= 3 * CS as u64 {
                Err(SourceError::new("VixDiskLib_Read failed: 13"))
            } else {
                Ok(())
            }
        }
        fn capacity(&self) -> u64 {
            10 * CS as u64
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, key, w) = begin_full(&repo, "x");
    let err = w
        .ingest_disk(
            DiskDescriptor::new(7, 10 * CS as u64),
            None,
            &[Area::new(0, 10 * CS as u64)],
            &mut Failing,
            &|_| {},
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Source { disk: 7, offset, .. } if offset == 3 * CS as u64),
        "{msg}"
    );
    assert!(msg.contains("VixDiskLib_Read failed"), "{msg}");
    drop(w);
    assert!(repo.check(&CheckOptions::default()).unwrap().ok());
    assert!(repo.generations(&key).is_err() || repo.generations(&key).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// An incremental generation equals the parent with the changed areas overwritten, and the
    /// parent still restores unchanged.
    #[test]
    fn incremental_generation_semantics(
        chunks in 1usize..12,
        tail in 0usize..1000,
        changes in proptest::collection::vec((any::<prop::sample::Index>(), 1usize..100_000, any::<u8>()), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let len = chunks * CS as usize + tail;
        let parent = disk_bytes(len, 3);
        let (g1, _) = backup(&repo, "vm", &parent, None);
        let mut child = parent.clone();
        let mut areas = Vec::new();
        for (pos, n, v) in &changes {
            let off = pos.index(len);
            let n = (*n).min(len - off);
            child[off..off + n].fill(*v);
            areas.push(Area::new(off as u64, n as u64));
        }
        let (g2, stats) = backup(&repo, "vm", &child, Some((g1, &areas)));
        prop_assert_eq!(g2, GenerationId(2));
        prop_assert!(stats.read_bytes <= len as u64);
        if areas.is_empty() {
            prop_assert_eq!(stats.read_bytes, 0);
        }
        prop_assert_eq!(restore(&repo, "vm", g2), child);
        prop_assert_eq!(restore(&repo, "vm", g1), parent);
        let key = repo.target_key(&identity("vm")).unwrap();
        let m = repo.manifest(&key, g2).unwrap();
        prop_assert_eq!(m.parent, Some(g1));
        prop_assert_eq!(m.mode, BackupMode::Incremental);
    }
}

#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<Repository>();
    send::<GenerationWriter>();
    send::<DiskReader>();
    send::<ChunkStream>();
    send::<RepositoryLock>();
    send::<TargetLock>();
}

#[test]
fn targets_resolve_by_key_or_current_name() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize, 1);
    backup(&repo, "web01", &data, None);
    backup(&repo, "db01", &data, None);
    let key = repo.target_key(&identity("web01")).unwrap();
    assert_eq!(repo.resolve_target(TargetKind::Vm, "web01").unwrap(), key);
    assert_eq!(
        repo.resolve_target(TargetKind::Vm, key.as_str()).unwrap(),
        key
    );
    assert!(matches!(
        repo.resolve_target(TargetKind::Ivd, "web01"),
        Err(Error::TargetNotFound(_))
    ));
    // Two VMs now called the same: ambiguous, the error names both keys.
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let mut other = identity("db01");
    other.name = "web01".into();
    let k2 = repo.target_key(&other).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&k2, Duration::ZERO).unwrap(),
            other,
            BackupMode::Full,
            None,
        )
        .unwrap();
    w.commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    let err = repo
        .resolve_target(TargetKind::Vm, "web01")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(key.as_str()) && err.contains(k2.as_str()),
        "{err}"
    );
}

#[test]
fn writer_rejects_bad_input_with_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 4, 9);
    let (g1, _) = backup(&repo, "vm", &data, None);
    let key = repo.target_key(&identity("vm")).unwrap();
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let mut w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            identity("vm"),
            BackupMode::Incremental,
            Some(g1),
        )
        .unwrap();
    for bad in ["", "../x", "a/b", ".hidden", "manifest"] {
        assert!(
            matches!(
                w.put_metadata(bad, b"x"),
                Err(Error::InvalidMetadataName(_))
            ),
            "{bad:?}"
        );
    }
    w.put_metadata("vm.vmx", b"a").unwrap();
    assert!(matches!(
        w.put_metadata("vm.vmx", b"b"),
        Err(Error::Duplicate(_))
    ));
    // A base index of another size is refused (a resized disk needs a full backup).
    let base = repo.fixed_index(&key, g1, 2000).unwrap();
    let bigger = disk_bytes(CS as usize * 5, 9);
    let err = w
        .ingest_disk(
            DiskDescriptor::new(2000, bigger.len() as u64),
            Some(&base),
            &[],
            &mut MemorySource::new(bigger.clone()),
            &|_| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::BaseIndex { disk: 2000, .. }), "{err}");
    // The same disk cannot be ingested twice.
    let progress = std::cell::Cell::new(0u64);
    w.ingest_disk(
        DiskDescriptor::new(2000, bigger.len() as u64),
        None,
        &[Area::new(0, bigger.len() as u64)],
        &mut MemorySource::new(bigger.clone()),
        &|n| progress.set(progress.get() + n),
    )
    .unwrap();
    assert_eq!(
        progress.get(),
        bigger.len() as u64,
        "progress reports every byte read"
    );
    let err = w
        .ingest_disk(
            DiskDescriptor::new(2000, bigger.len() as u64),
            None,
            &[],
            &mut MemorySource::new(bigger),
            &|_| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate(_)), "{err}");
    // A parent that does not exist is refused at begin.
    drop(w);
    let err = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            identity("vm"),
            BackupMode::Incremental,
            Some(GenerationId(42)),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::GenerationNotFound { generation: 42, .. }),
        "{err}"
    );
    // Gc, prune, reindex and delete need the exclusive lock.
    assert!(matches!(
        repo.reindex(&lock),
        Err(Error::LockRequired { .. })
    ));
    assert!(matches!(
        repo.delete_generation(&lock, &key, g1),
        Err(Error::LockRequired { .. })
    ));
}

#[test]
fn partial_generation_is_not_latest_successful() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 2, 3);
    let (g1, _) = backup(&repo, "vm", &data, None);
    let key = repo.target_key(&identity("vm")).unwrap();
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            identity("vm"),
            BackupMode::Full,
            None,
        )
        .unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert(
        "failed_disks".into(),
        serde_json::json!([{"key": 2001, "error": "VixDiskLib_Open: 13"}]),
    );
    let g2 = w.commit(GenerationStatus::Partial, extra).unwrap();
    assert_eq!(repo.latest_successful(&key).unwrap().unwrap().id, g1);
    let m = repo.manifest(&key, g2).unwrap();
    assert_eq!(m.status, GenerationStatus::Partial);
    assert_eq!(m.extra["failed_disks"][0]["key"], 2001);
    let t = &repo.targets().unwrap()[0];
    assert_eq!((t.latest, t.latest_successful), (Some(g2), Some(g1)));
}

#[test]
fn disks_ingested_concurrently_restore_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, key, mut w) = begin_full(&repo, "multi");
    // Four disks, the first two sharing content (dedup across concurrent ingests), read by four
    // threads that start together. A barrier in the first read makes every ingest overlap.
    let keys = [2000, 2001, 2002, 2016];
    let datas: Vec<Vec<u8>> = [1, 1, 2, 3]
        .iter()
        .map(|&seed| disk_bytes(CS as usize * 12 + 77, seed))
        .collect();
    // The VM's device order, which the manifest must keep whatever order the ingests finish in.
    let declared = [2016, 2000, 2002, 2001];
    assert!(matches!(
        w.declare_disk_order(&[2000, 2001, 2000]),
        Err(Error::Duplicate(_))
    ));
    w.declare_disk_order(&declared).unwrap();
    let barrier = std::sync::Barrier::new(keys.len());
    struct Gated<'a> {
        inner: MemorySource,
        barrier: &'a std::sync::Barrier,
        waited: bool,
    }
    impl DiskSource for Gated<'_> {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            if !std::mem::replace(&mut self.waited, true) {
                self.barrier.wait();
            }
            self.inner.read_at(offset, buf)
        }
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
    }
    let totals: Vec<DiskStats> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .zip(&datas)
            .map(|(&k, data)| {
                let (w, barrier) = (&w, &barrier);
                s.spawn(move || {
                    let mut src = Gated {
                        inner: MemorySource::new(data.clone()),
                        barrier,
                        waited: false,
                    };
                    let len = data.len() as u64;
                    w.ingest_disk(
                        DiskDescriptor::new(k, len),
                        None,
                        &[Area::new(0, len)],
                        &mut src,
                        &|_| {},
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The same disk twice is refused even while the first ingest of it ran concurrently.
    let mut again = MemorySource::new(datas[0].clone());
    let len = datas[0].len() as u64;
    let err = w
        .ingest_disk(
            DiskDescriptor::new(2000, len),
            None,
            &[Area::new(0, len)],
            &mut again,
            &|_| {},
        )
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate(_)), "{err}");
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();

    // Each disk restores to its own bytes; identical disks stored their chunks once between them.
    for (&k, data) in keys.iter().zip(&datas) {
        let mut r = repo.disk_reader(&key, g, k).unwrap();
        let mut out = vec![0u8; r.capacity() as usize];
        r.read_at(0, &mut out).unwrap();
        assert!(out == *data, "disk {k} differs");
    }
    // Every distinct non-zero chunk was stored exactly once between the four ingests.
    let distinct: std::collections::HashSet<&[u8]> = datas
        .iter()
        .flat_map(|d| d.chunks(CS as usize))
        .filter(|c| c.iter().any(|&b| b != 0))
        .collect();
    let new_chunks: u64 = totals.iter().map(|t| t.new_chunks).sum();
    assert_eq!(new_chunks, distinct.len() as u64, "{totals:?}");
    // The manifest lists every disk once, in the declared order.
    let m = repo.manifest(&key, g).unwrap();
    let listed: Vec<i32> = m.disks.iter().map(|d| d.disk.key).collect();
    assert_eq!(listed, declared);
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
}

#[test]
fn a_failed_disk_may_be_ingested_again_and_the_manifest_keeps_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, key, w) = begin_full(&repo, "order");
    let data = disk_bytes(CS as usize * 3, 5);
    let len = data.len() as u64;
    let ingest = |k: i32, area: Area| {
        let mut src = MemorySource::new(data.clone());
        w.ingest_disk(
            DiskDescriptor::new(k, len),
            None,
            &[area],
            &mut src,
            &|_| {},
        )
    };
    ingest(3000, Area::new(0, len)).unwrap();
    // Disk 2000 fails (an area past its end), then succeeds.
    assert!(ingest(2000, Area::new(0, len + 1)).is_err());
    ingest(2000, Area::new(0, len)).unwrap();
    ingest(2500, Area::new(0, len)).unwrap();
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    let m = repo.manifest(&key, g).unwrap();
    let order: Vec<i32> = m.disks.iter().map(|d| d.disk.key).collect();
    assert_eq!(order, vec![3000, 2000, 2500]);
}

#[test]
fn after_a_failed_disk_commit_refuses_an_index_whose_chunk_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, key, w) = begin_full(&repo, "lost");
    let data = disk_bytes(CS as usize * 4, 6);
    let len = data.len() as u64;
    let mut src = MemorySource::new(data.clone());
    w.ingest_disk(
        DiskDescriptor::new(2000, len),
        None,
        &[Area::new(0, len)],
        &mut src,
        &|_| {},
    )
    .unwrap();
    // A second disk fails, as a concurrent ingest whose chunk write failed would; one chunk the
    // first disk references is gone (the failed write it was waiting for).
    let mut src = MemorySource::new(data.clone());
    assert!(w
        .ingest_disk(
            DiskDescriptor::new(2001, len),
            None,
            &[Area::new(0, len + 1)],
            &mut src,
            &|_| {},
        )
        .is_err());
    let chunks = dir.path().join("repo/chunks");
    let victim = walk_files(&chunks)
        .into_iter()
        .next()
        .expect("a stored chunk");
    std::fs::remove_file(&victim).unwrap();
    let err = w
        .commit(GenerationStatus::Partial, Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("was not stored"), "{err}");
    assert!(repo.latest_successful(&key).unwrap_or(None).is_none());
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A source that hands over buffers of its own (as the VDDK source does with its read-ahead)
/// instead of filling the ingest's: the generation restores byte for byte and the buffers the
/// ingest handed back are reused, so no read loses or mixes data.
#[test]
fn a_source_handing_over_its_own_buffers_restores_byte_for_byte() {
    struct Handing {
        data: Vec<u8>,
        spare: Vec<Vec<u8>>,
        handed: usize,
    }
    impl DiskSource for Handing {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            let o = offset as usize;
            buf.copy_from_slice(&self.data[o..o + buf.len()]);
            Ok(())
        }
        fn read_owned(&mut self, offset: u64, buf: &mut Vec<u8>) -> Result<(), SourceError> {
            let o = offset as usize;
            let mut mine = self.spare.pop().unwrap_or_default();
            mine.clear();
            mine.extend_from_slice(&self.data[o..o + buf.len()]);
            // Poison the buffer handed back: if the ingest used it after the swap, the
            // restored data would differ.
            buf.fill(0xA5);
            self.spare.push(std::mem::replace(buf, mine));
            self.handed += 1;
            Ok(())
        }
        fn capacity(&self) -> u64 {
            self.data.len() as u64
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let data = disk_bytes(CS as usize * 12 + 777, 5);
    let (_lock, key, w) = begin_full(&repo, "handing");
    let mut src = Handing {
        data: data.clone(),
        spare: Vec::new(),
        handed: 0,
    };
    w.ingest_disk(
        DiskDescriptor::new(2000, data.len() as u64),
        None,
        &[Area::new(0, data.len() as u64)],
        &mut src,
        &|_| {},
    )
    .unwrap();
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    assert_eq!(src.handed, 13, "every chunk read through read_owned");
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    let mut out = vec![0u8; data.len()];
    r.read_at(0, &mut out).unwrap();
    assert_eq!(out, data);
}

/// A source whose handed-over buffer has the wrong length fails the disk with an error naming
/// the disk and offset (no panic, nothing half-written).
#[test]
fn a_source_handing_over_a_short_buffer_fails_the_disk() {
    struct Short;
    impl DiskSource for Short {
        fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
            buf.fill(1);
            Ok(())
        }
        fn read_owned(&mut self, offset: u64, buf: &mut Vec<u8>) -> Result<(), SourceError> {
            *buf = vec![
                1u8;
                if offset == 2 * CS as u64 {
                    100
                } else {
                    buf.len()
                }
            ];
            Ok(())
        }
        fn capacity(&self) -> u64 {
            5 * CS as u64
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let (_lock, _key, w) = begin_full(&repo, "short");
    let err = w
        .ingest_disk(
            DiskDescriptor::new(3, 5 * CS as u64),
            None,
            &[Area::new(0, 5 * CS as u64)],
            &mut Short,
            &|_| {},
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Source { disk: 3, offset, .. } if offset == 2 * CS as u64),
        "{err}"
    );
    assert!(err.to_string().contains("100 bytes"), "{err}");
    drop(w);
    assert!(repo.check(&CheckOptions::default()).unwrap().ok());
}
