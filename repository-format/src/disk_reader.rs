//! A disk of a generation as a random-access device for many readers at once: what `serve`
//! exports over NBD and what file-level restore reads file systems through.
//!
//! Unlike [`DiskReader`](crate::DiskReader) (one reader, one cached chunk) this is `Sync`:
//! chunks are loaded on demand, verified, decompressed and kept in a bounded LRU cache shared
//! by all callers; two callers wanting the same chunk wait for one load. A caller reading
//! chunk after chunk gets read-ahead: background threads load the next stored chunks into the
//! cache while it works on the current one. Nothing here writes to the repository.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::chunk_store::ChunkStore;
use crate::error::{ChunkError, ChunkUse, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::repository::Repository;
use crate::target::{GenerationId, TargetKey};

/// Cache and read-ahead sizes of a [`CachedDiskReader`].
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Bytes of decompressed chunks kept (at least two chunks are, whatever their length).
    pub cache_bytes: usize,
    /// Chunks loaded ahead of a sequential reader (0: no read-ahead).
    pub read_ahead: usize,
    /// Threads loading ahead.
    pub read_ahead_threads: usize,
}

impl Default for CacheOptions {
    /// 256 MiB of cache, 8 chunks ahead on 4 threads: enough to keep a client's sequential
    /// read busy while chunks are fetched from a slow store, small enough for a backup proxy.
    fn default() -> Self {
        CacheOptions {
            cache_bytes: 256 << 20,
            read_ahead: 8,
            read_ahead_threads: 4,
        }
    }
}

/// A run of the disk that is stored (data) or not (a hole: all zeros, never written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskExtent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// True for a run of zero chunks.
    pub hole: bool,
}

type Cell = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

/// Sequential streams tracked at once.
const STREAMS: usize = 8;

struct Slot {
    cell: Cell,
    used: u64,
    /// The chunk's length: what it costs the byte budget once loaded.
    bytes: usize,
}

/// The cached chunks by slot, and the bytes they hold (chunks of a content-defined index
/// differ in length, so the budget is kept in bytes, not chunks).
#[derive(Default)]
struct Cache {
    slots: HashMap<usize, Slot>,
    bytes: usize,
}

impl Cache {
    fn remove(&mut self, slot: usize) {
        if let Some(s) = self.slots.remove(&slot) {
            self.bytes -= s.bytes;
        }
    }
}

struct Inner {
    store: ChunkStore,
    index: FixedIndex,
    target: String,
    generation: u64,
    disk: i32,
    /// Byte budget of the cache.
    cache_bytes: usize,
    cache: Mutex<Cache>,
    tick: AtomicU64,
    loads: AtomicU64,
    /// The most recent sequential streams, most recent first: (one past the last slot read,
    /// slots below this already queued for read-ahead). Several, so that interleaved
    /// clients (nbdcopy's four connections) each get read-ahead.
    streams: Mutex<[(usize, usize); STREAMS]>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// The verified content of stored chunk `slot`, from the cache or the store.
    fn chunk(&self, slot: usize) -> Result<Arc<Vec<u8>>> {
        let cell = {
            let mut cache = lock(&self.cache);
            let cache = &mut *cache;
            let used = self.tick.fetch_add(1, Ordering::Relaxed);
            let cell = match cache.slots.get_mut(&slot) {
                Some(s) => {
                    s.used = used;
                    s.cell.clone()
                }
                None => {
                    let bytes = self.index.chunk_range(slot).1;
                    let cell: Cell = Arc::new(Mutex::new(None));
                    cache.slots.insert(
                        slot,
                        Slot {
                            cell: cell.clone(),
                            used,
                            bytes,
                        },
                    );
                    cache.bytes += bytes;
                    cell
                }
            };
            // Over the budget: drop the least recently used, keeping at least two chunks.
            while cache.bytes > self.cache_bytes && cache.slots.len() > 2 {
                let Some(oldest) = cache
                    .slots
                    .iter()
                    .filter(|(k, _)| **k != slot)
                    .min_by_key(|(_, s)| s.used)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                cache.remove(oldest);
            }
            cell
        };
        let mut content = lock(&cell);
        if let Some(d) = content.as_ref() {
            return Ok(d.clone());
        }
        match self.load(slot) {
            Ok(d) => {
                let d = Arc::new(d);
                *content = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                drop(content);
                // Not cached: the next read tries the store again and fails the same way.
                let mut cache = lock(&self.cache);
                if cache
                    .slots
                    .get(&slot)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, &cell))
                {
                    cache.remove(slot);
                }
                Err(e)
            }
        }
    }

    fn load(&self, slot: usize) -> Result<Vec<u8>> {
        let (offset, len) = self.index.chunk_range(slot);
        let Some(digest) = self.index.slot(slot) else {
            return Ok(vec![0; len]);
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.store.load(&digest, len).map_err(|reason| {
            Error::Chunk(Box::new(ChunkError {
                digest,
                path: self.store.path(&digest),
                used_by: ChunkUse {
                    target: self.target.clone(),
                    generation: self.generation,
                    disk: self.disk,
                    offset,
                },
                reason,
            }))
        })
    }
}

/// A verified, cached, `Sync` random-access reader of one disk of one generation (see the
/// module docs).
pub struct CachedDiskReader {
    inner: Arc<Inner>,
    read_ahead: usize,
    jobs: Option<crossbeam_channel::Sender<usize>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for CachedDiskReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDiskReader")
            .field("target", &self.inner.target)
            .field("generation", &self.inner.generation)
            .field("disk", &self.inner.disk)
            .finish_non_exhaustive()
    }
}

impl CachedDiskReader {
    /// Opens disk `disk` (device key) of generation `id` of `key`, verifying its index.
    ///
    /// # Errors
    /// As [`Repository::fixed_index`].
    pub fn open(
        repo: &Repository,
        key: &TargetKey,
        id: GenerationId,
        disk: i32,
        options: CacheOptions,
    ) -> Result<CachedDiskReader> {
        let index = repo.fixed_index(key, id, disk)?;
        Ok(Self::new(
            repo.chunk_store().clone(),
            index,
            key,
            id,
            disk,
            options,
        ))
    }

    /// A reader over an index already read (and verified) by the caller.
    pub fn new(
        store: ChunkStore,
        index: FixedIndex,
        key: &TargetKey,
        id: GenerationId,
        disk: i32,
        options: CacheOptions,
    ) -> CachedDiskReader {
        // The cache holds at least this many chunks of the largest size.
        let capacity_chunks = (options.cache_bytes / index.chunk_size().max(1) as usize).max(2);
        let inner = Arc::new(Inner {
            store,
            index,
            target: key.to_string(),
            generation: id.0,
            disk,
            cache_bytes: options.cache_bytes,
            cache: Mutex::new(Cache::default()),
            tick: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            streams: Mutex::new([(usize::MAX, 0); STREAMS]),
        });
        let (read_ahead, jobs, threads) =
            if options.read_ahead > 0 && options.read_ahead_threads > 0 {
                // Room for every tracked stream's window: one busy stream must not starve the
                // others' read-ahead.
                let (tx, rx) = crossbeam_channel::bounded::<usize>(options.read_ahead * STREAMS);
                let threads = (0..options.read_ahead_threads)
                    .map(|_| {
                        let (rx, inner) = (rx.clone(), inner.clone());
                        std::thread::spawn(move || {
                            for slot in rx.iter() {
                                // A failure here is met again, and reported, by the reader.
                                let _ = inner.chunk(slot);
                            }
                        })
                    })
                    .collect();
                // Never more ahead than the cache holds, or read-ahead evicts itself.
                let ahead = options.read_ahead.min(capacity_chunks / 2).max(1);
                (ahead, Some(tx), threads)
            } else {
                (0, None, Vec::new())
            };
        CachedDiskReader {
            inner,
            read_ahead,
            jobs,
            threads,
        }
    }

    /// Disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.inner.index.size()
    }

    /// Chunk size in bytes; the largest chunk of a content-defined index.
    pub fn chunk_size(&self) -> u32 {
        self.inner.index.chunk_size()
    }

    /// How many chunks were loaded from the store so far (cache misses and read-ahead).
    pub fn chunks_loaded(&self) -> u64 {
        self.inner.loads.load(Ordering::Relaxed)
    }

    /// The slot (chunk or hole) holding disk offset `offset`.
    fn slot_of(&self, offset: u64) -> usize {
        self.inner.index.slot_at(offset)
    }

    /// Fills `buf` with the disk's bytes at `offset`, verifying every chunk it loads.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; [`Error::Chunk`] naming the chunk, target,
    /// generation, disk and offset for a missing or damaged chunk.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let size = self.capacity();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= size)
            .ok_or(Error::OutOfRange {
                what: "read",
                offset,
                len: buf.len() as u64,
                capacity: size,
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let first = self.slot_of(offset);
        let last = self.slot_of(end - 1);
        self.read_ahead_after(first, last);
        let mut pos = offset;
        while pos < end {
            // A hole's length is never allocated: only its part inside `buf` is filled.
            let slot = self.slot_of(pos);
            let (start, len) = self.inner.index.chunk_range(slot);
            let within = (pos - start) as usize;
            let take = (end - pos).min(len as u64 - within as u64) as usize;
            let out = &mut buf[(pos - offset) as usize..][..take];
            if self.inner.index.slot(slot).is_none() {
                out.fill(0);
            } else {
                let data = self.inner.chunk(slot)?;
                out.copy_from_slice(&data[within..within + take]);
            }
            pos += take as u64;
        }
        Ok(())
    }

    /// Queues the stored chunks after `last` for loading when the reader is sequential.
    fn read_ahead_after(&self, first: usize, last: usize) {
        let Some(jobs) = &self.jobs else { return };
        // Sequential: this read starts where one of the recent streams ended (or in the same
        // chunk). That stream (or a new one, replacing the least recent) moves to the front.
        let queued = {
            let mut streams = lock(&self.inner.streams);
            let hit = streams
                .iter()
                .position(|&(next, _)| first == next || first + 1 == next);
            let i = hit.unwrap_or(STREAMS - 1);
            let queued = if hit.is_some() { streams[i].1 } else { 0 };
            streams[..=i].rotate_right(1);
            streams[0] = (last + 1, queued);
            if hit.is_none() {
                return;
            }
            queued
        };
        let count = self.inner.index.chunk_count();
        let from = (last + 1).max(queued);
        let to = (last + 1 + self.read_ahead).min(count);
        let mut reached = to;
        for slot in from..to {
            if self.inner.index.slot(slot).is_some() && jobs.try_send(slot).is_err() {
                // The loaders are busy: stop here, the next read queues the rest.
                reached = slot;
                break;
            }
        }
        let mut streams = lock(&self.inner.streams);
        if streams[0].0 == last + 1 {
            streams[0].1 = streams[0].1.max(reached);
        }
    }

    /// The stored runs and holes of `len` bytes from `offset`, merged, in order. Costs the
    /// stored chunks in the range, not its length: a client asking for the block status of a
    /// 16 TiB disk with little written gets its answer at once.
    pub fn extents(&self, offset: u64, len: u64) -> Vec<DiskExtent> {
        let index = &self.inner.index;
        let end = offset.saturating_add(len).min(self.capacity());
        let mut out: Vec<DiskExtent> = Vec::new();
        let mut pos = offset;
        while pos < end {
            let slot = index.slot_at(pos);
            // The end (in bytes) of the run of equal kind that `slot` starts, cut at `end`.
            let (hole, run_end) = if index.slot(slot).is_some() {
                let mut e = slot + 1;
                for (s, _) in index.stored_from(e) {
                    if s != e || index.chunk_range(e).0 >= end {
                        break;
                    }
                    e += 1;
                }
                let (last, last_len) = index.chunk_range(e - 1);
                (false, last + last_len as u64)
            } else {
                let next = index
                    .next_stored(slot)
                    .map_or(index.size(), |n| index.chunk_range(n).0);
                (true, next)
            };
            let l = run_end.min(end) - pos;
            match out.last_mut() {
                Some(e) if e.hole == hole => e.len += l,
                _ => out.push(DiskExtent {
                    offset: pos,
                    len: l,
                    hole,
                }),
            }
            pos += l;
        }
        out
    }
}

impl Drop for CachedDiskReader {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::time::Duration;

    const CS: usize = 64 * 1024;

    /// A repository with one generation of a 16-chunk disk: chunks 0..8 data, 8..12 zero,
    /// 12..16 data, each chunk a distinct pattern.
    fn fixture() -> (
        tempfile::TempDir,
        Repository,
        TargetKey,
        GenerationId,
        Vec<u8>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            dir.path().join("repo"),
            &InitOptions {
                chunk_size: CS as u32,
                ..Default::default()
            },
        )
        .unwrap();
        let mut disk = vec![0u8; 16 * CS];
        for (i, c) in disk.chunks_mut(CS).enumerate() {
            if !(8..12).contains(&i) {
                c.iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (i * 31 + j) as u8);
            }
        }
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
        let mut src = MemorySource::new(disk.clone());
        w.ingest_disk(
            DiskDescriptor::new(2000, disk.len() as u64),
            None,
            &[Area::new(0, disk.len() as u64)],
            &mut src,
            &|_| {},
        )
        .unwrap();
        let gen = w
            .commit(GenerationStatus::Succeeded, Default::default())
            .unwrap();
        drop(lock);
        (dir, repo, key, gen, disk)
    }

    #[test]
    fn reads_match_across_chunks_with_a_small_cache_and_holes_are_extents() {
        let (_d, repo, key, gen, disk) = fixture();
        let opts = CacheOptions {
            cache_bytes: 2 * CS,
            read_ahead: 0,
            read_ahead_threads: 0,
        };
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, opts).unwrap();
        for (off, len) in [
            (0, 10),
            (CS as u64 - 5, 10),
            (7 * CS as u64, 6 * CS),
            (15 * CS as u64, CS),
            (3, 16 * CS - 3),
        ] {
            let mut buf = vec![1u8; len];
            r.read_at(off, &mut buf).unwrap();
            assert_eq!(
                buf,
                disk[off as usize..off as usize + len],
                "read at {off}+{len}"
            );
        }
        assert!(r.read_at(16 * CS as u64 - 1, &mut [0u8; 2]).is_err());
        assert_eq!(
            r.extents(CS as u64, 15 * CS as u64),
            vec![
                DiskExtent {
                    offset: CS as u64,
                    len: 7 * CS as u64,
                    hole: false
                },
                DiskExtent {
                    offset: 8 * CS as u64,
                    len: 4 * CS as u64,
                    hole: true
                },
                DiskExtent {
                    offset: 12 * CS as u64,
                    len: 4 * CS as u64,
                    hole: false
                },
            ]
        );
    }

    /// Extents start and end where asked (inside chunks too), are cut at the disk's end, and
    /// stored runs stop at the range's end.
    #[test]
    fn extents_of_unaligned_and_overlong_ranges() {
        let (_d, repo, key, gen, _disk) = fixture();
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, CacheOptions::default()).unwrap();
        let cs = CS as u64;
        let ext = |offset, len, hole| DiskExtent { offset, len, hole };
        assert_eq!(
            r.extents(3, 9 * cs),
            vec![ext(3, 8 * cs - 3, false), ext(8 * cs, cs + 3, true)]
        );
        assert_eq!(
            r.extents(9 * cs + 1, 2 * cs),
            vec![ext(9 * cs + 1, 2 * cs, true)]
        );
        assert_eq!(
            r.extents(2 * cs, 3 * cs + 7),
            vec![ext(2 * cs, 3 * cs + 7, false)]
        );
        assert_eq!(
            r.extents(13 * cs + 5, u64::MAX),
            vec![ext(13 * cs + 5, 3 * cs - 5, false)]
        );
        assert_eq!(
            r.extents(10 * cs, 100 * cs),
            vec![ext(10 * cs, 2 * cs, true), ext(12 * cs, 4 * cs, false)]
        );
        assert!(r.extents(16 * cs, 10).is_empty());
    }

    #[test]
    fn the_cache_serves_repeated_reads_and_read_ahead_loads_the_next_chunks() {
        let (_d, repo, key, gen, _disk) = fixture();
        let opts = CacheOptions {
            cache_bytes: 16 * CS,
            read_ahead: 0,
            read_ahead_threads: 0,
        };
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, opts).unwrap();
        let mut b = [0u8; 100];
        for _ in 0..5 {
            r.read_at(10, &mut b).unwrap();
        }
        assert_eq!(r.chunks_loaded(), 1, "one load for five reads of a chunk");

        let opts = CacheOptions {
            cache_bytes: 16 * CS,
            read_ahead: 4,
            read_ahead_threads: 2,
        };
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, opts).unwrap();
        r.read_at(0, &mut b).unwrap();
        r.read_at(CS as u64, &mut b).unwrap();
        // Sequential: chunks 2..6 are queued; wait for the loaders.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.chunks_loaded() < 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.chunks_loaded(), 6);
        let before = r.chunks_loaded();
        let mut big = vec![0u8; 4 * CS];
        r.read_at(2 * CS as u64, &mut big).unwrap();
        assert!(
            r.chunks_loaded() <= before + 4,
            "read-ahead chunks came from the cache"
        );
    }

    /// The budget is in bytes: a 3.5-chunk budget keeps the three most recent chunks, and
    /// the cache's byte count is the sum of what it holds.
    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let (_d, repo, key, gen, disk) = fixture();
        let opts = CacheOptions {
            cache_bytes: 3 * CS + CS / 2,
            read_ahead: 0,
            read_ahead_threads: 0,
        };
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, opts).unwrap();
        let mut all = vec![0u8; 16 * CS];
        r.read_at(0, &mut all).unwrap();
        assert!(all == disk);
        assert_eq!(r.chunks_loaded(), 12);
        let cache = lock(&r.inner.cache);
        assert_eq!(cache.slots.len(), 3);
        assert_eq!(cache.bytes, 3 * CS);
        assert_eq!(
            cache.bytes,
            cache.slots.values().map(|s| s.bytes).sum::<usize>()
        );
        let mut kept: Vec<usize> = cache.slots.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![13, 14, 15]);
    }

    #[test]
    fn interleaved_sequential_readers_each_get_read_ahead() {
        let (_d, repo, key, gen, _disk) = fixture();
        let opts = CacheOptions {
            cache_bytes: 16 * CS,
            read_ahead: 2,
            read_ahead_threads: 1,
        };
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, opts).unwrap();
        let mut b = [0u8; 100];
        // Two clients: one at chunk 0, one at chunk 12, reading in turns.
        for off in [0, 12, 1, 13] {
            r.read_at(off * CS as u64, &mut b).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.chunks_loaded() < 8 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.chunks_loaded(), 8, "chunks 2, 3 and 14, 15 loaded ahead");
        let before = r.chunks_loaded();
        for off in [2, 14, 3, 15] {
            r.read_at(off * CS as u64, &mut b).unwrap();
        }
        // Cache hits: at most the next read-ahead (4, 5, 16, 17) was loaded meanwhile.
        assert!(
            r.chunks_loaded() <= before + 4,
            "the next reads come from the cache"
        );
    }

    #[test]
    fn a_damaged_chunk_is_an_error_naming_its_offset_and_is_not_cached() {
        let (d, repo, key, gen, disk) = fixture();
        // Damage the chunk at slot 3 (its content is unique in the fixture).
        let id = ChunkDigest::of(&disk[3 * CS..4 * CS]);
        let path = d
            .path()
            .join("repo")
            .join("chunks")
            .join(&id.to_hex()[..4])
            .join(id.to_hex());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let r = CachedDiskReader::open(&repo, &key, gen, 2000, CacheOptions::default()).unwrap();
        let mut b = [0u8; 10];
        let e = r.read_at(3 * CS as u64 + 5, &mut b).unwrap_err();
        let Error::Chunk(c) = &e else { panic!("{e}") };
        assert_eq!(c.used_by.offset, 3 * CS as u64);
        assert!(
            r.read_at(3 * CS as u64, &mut b).is_err(),
            "still an error on the next read"
        );
        r.read_at(2 * CS as u64, &mut b).unwrap();
    }
}
