//! Reading a disk of a generation back: random access, a walk over the stored chunks, and a
//! parallel, ordered, bounded stream of them for restore and export.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::aligned_buf::AlignedBuf;
use crate::chunk_store::{ChunkLoader, ChunkStore};
use crate::error::{ChunkError, ChunkUse, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::target::{GenerationId, TargetKey};

/// A stored (non-zero) chunk of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChunk {
    /// Byte offset in the disk.
    pub offset: u64,
    /// The verified content, page-aligned (see [`crate::aligned_buf`]); its length is the
    /// index's for this chunk. Dropping it returns the buffer to the stream's pool.
    pub data: AlignedBuf,
    /// Further byte offsets of the disk whose chunk has the same digest and length, in order:
    /// the same content, read and verified once ([`DiskReader::stream_distinct`]). Always
    /// empty from the other walks, which yield every stored chunk at its own offset.
    pub copies: Vec<u64>,
}

/// Names used in chunk errors.
#[derive(Debug, Clone)]
struct Context {
    target: String,
    generation: u64,
    disk: i32,
}

impl Context {
    /// A chunk that failed to load, named with the disk, generation and offset using it.
    fn chunk_error(
        &self,
        store: &ChunkStore,
        digest: crate::digest::ChunkDigest,
        offset: u64,
        reason: crate::chunk_store::ChunkFault,
    ) -> Error {
        Error::Chunk(Box::new(ChunkError {
            digest,
            path: store.path(&digest),
            used_by: ChunkUse {
                target: self.target.clone(),
                generation: self.generation,
                disk: self.disk,
                offset,
            },
            reason,
        }))
    }
}

fn load_slot(
    store: &ChunkStore,
    index: &FixedIndex,
    ctx: &Context,
    slot: usize,
) -> Result<Vec<u8>> {
    let (offset, len) = index.chunk_range(slot);
    let Some(digest) = index.slot(slot) else {
        return Ok(vec![0; len]);
    };
    store
        .load(&digest, len)
        .map_err(|reason| ctx.chunk_error(store, digest, offset, reason))
}

/// [`load_slot`] of a stored chunk into an aligned buffer from `loader`'s pool (the stream's
/// and the walk's path), with the same checks and the same error naming.
fn load_slot_aligned(
    store: &ChunkStore,
    index: &FixedIndex,
    ctx: &Context,
    slot: usize,
    loader: &mut ChunkLoader,
) -> Result<DiskChunk> {
    let (offset, len) = index.chunk_range(slot);
    let Some(digest) = index.slot(slot) else {
        return Ok(DiskChunk {
            offset,
            data: AlignedBuf::zeroed(len),
            copies: Vec::new(),
        });
    };
    store
        .load_aligned(&digest, len, loader)
        .map(|data| DiskChunk {
            offset,
            data,
            copies: Vec::new(),
        })
        .map_err(|reason| ctx.chunk_error(store, digest, offset, reason))
}

/// Chunks a stream keeps in its ordered window per reading thread: enough that a thread that
/// finished early keeps working while a slower chunk ahead of it in offset order is still being
/// decoded, and that the consumer (a writer with its own requests in flight) finds the next
/// chunk ready.
const WINDOW_PER_THREAD: usize = 4;

/// Buffers a stream's consumer may hold at once beyond the window (its writes in flight): the
/// pool keeps that many spare, so a steady restore allocates nothing.
const CONSUMER_HELD: usize = 16;

/// Verified reader of one disk of one generation. `Send`, not shared between threads.
#[derive(Debug)]
pub struct DiskReader {
    store: ChunkStore,
    index: Arc<FixedIndex>,
    ctx: Context,
    cached: Option<(usize, Vec<u8>)>,
}

impl DiskReader {
    pub(crate) fn new(
        store: ChunkStore,
        index: FixedIndex,
        target: TargetKey,
        generation: GenerationId,
        disk: i32,
    ) -> Self {
        Self {
            store,
            index: Arc::new(index),
            ctx: Context {
                target: target.to_string(),
                generation: generation.0,
                disk,
            },
            cached: None,
        }
    }

    /// Disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.index.size()
    }

    /// The disk's fixed index.
    pub fn index(&self) -> &FixedIndex {
        &self.index
    }

    /// Fills `buf` with the disk's bytes at `offset`, verifying every chunk it touches.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] past the end; [`Error::Chunk`] naming the chunk, target,
    /// generation, disk and offset for a missing or damaged chunk.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.index.size())
            .ok_or(Error::OutOfRange {
                what: "read",
                offset,
                len: buf.len() as u64,
                capacity: self.index.size(),
            })?;
        let mut pos = offset;
        while pos < end {
            // Fixed chunks: a division; content-defined ones: a binary search. A hole's
            // length is never allocated: only the part of it inside `buf` is filled.
            let slot = self.index.slot_at(pos);
            let (start, len) = self.index.chunk_range(slot);
            let within = (pos - start) as usize;
            let take = (end - pos).min(len as u64 - within as u64) as usize;
            let out = &mut buf[(pos - offset) as usize..][..take];
            if self.index.slot(slot).is_none() {
                out.fill(0);
            } else {
                if self.cached.as_ref().map(|c| c.0) != Some(slot) {
                    let data = load_slot(&self.store, &self.index, &self.ctx, slot)?;
                    self.cached = Some((slot, data));
                }
                let data = &self.cached.as_ref().expect("just cached").1;
                out.copy_from_slice(&data[within..within + take]);
            }
            pos += take as u64;
        }
        Ok(())
    }

    /// Walks the stored (non-zero) chunks in offset order on this thread, verifying each. Zero
    /// chunks are skipped: a restore leaves them unwritten, an export leaves holes.
    pub fn chunks(&self) -> impl Iterator<Item = Result<DiskChunk>> + '_ {
        let mut loader = ChunkLoader::new(self.store.buffer_pool(2))
            .map_err(|reason| Error::Worker(format!("cannot start reading chunks: {reason}")));
        self.index
            .stored_chunks()
            .map(move |(slot, _)| match &mut loader {
                Ok(l) => load_slot_aligned(&self.store, &self.index, &self.ctx, slot, l),
                Err(e) => Err(Error::Worker(e.to_string())),
            })
    }

    /// Like [`DiskReader::chunks`], but `threads` background threads read, decompress and
    /// verify ahead. Chunks still come in offset order; at most `4 × threads` are held in
    /// memory ahead of the consumer. Stops after the first error. Dropping the stream stops
    /// the threads.
    pub fn stream(&self, threads: usize) -> ChunkStream {
        let slots = self.index.stored_chunks().map(|(s, _)| s).collect();
        let threads = threads.max(1);
        self.stream_of(threads, threads * WINDOW_PER_THREAD, slots, HashMap::new())
    }

    /// Like [`DiskReader::stream`], but each distinct stored chunk (digest and length) is
    /// read, decompressed and verified once, at its first offset, with the later offsets
    /// holding it in [`DiskChunk::copies`]. For a consumer that can write anywhere (a restore
    /// into a disk): a guest disk's duplicate files and blocks then cost one chunk's reading
    /// and verification, not one per copy. Chunks come in order of their first offsets.
    ///
    /// Finding the duplicates takes 20 bytes per stored chunk (an 8-byte sort key, the slot
    /// number and the position of its first occurrence: 40 MiB for a disk of two million
    /// stored chunks), freed before the first chunk is read, and keeps 8 bytes per later copy
    /// (a disk of one chunk repeated two million times: 16 MiB more).
    pub fn stream_distinct(&self, threads: usize) -> ChunkStream {
        self.stream_distinct_ahead(threads, threads.max(1) * WINDOW_PER_THREAD)
    }

    /// [`DiskReader::stream_distinct`] holding at most `ahead` chunks (at least one per
    /// thread) read ahead of the consumer: for a consumer that shares a memory budget with
    /// others. The stream's buffers are then at most
    /// [`DiskReader::stream_buffers`]`(threads, ahead, held)` for a consumer holding `held`.
    pub fn stream_distinct_ahead(&self, threads: usize, ahead: usize) -> ChunkStream {
        let (slots, copies) = distinct_slots(&self.index);
        let threads = threads.max(1);
        self.stream_of(threads, ahead.max(threads), slots, copies)
    }

    /// The most buffers a stream of `threads` threads reading `ahead` chunks ahead allocates
    /// while its consumer holds up to `held` chunks: one per thread being read into, one per
    /// chunk ahead, one per chunk held. Each is [`DiskReader::buffer_bytes`] long.
    pub fn stream_buffers(threads: usize, ahead: usize, held: usize) -> usize {
        let threads = threads.max(1);
        threads + ahead.max(threads) + held
    }

    /// The capacity of each of a stream's buffers: the largest chunk of this disk's
    /// repository with its blob header, alignment and headroom.
    pub fn buffer_bytes(&self) -> u64 {
        crate::aligned_buf::footprint(self.store.buffer_capacity()) as u64
    }

    /// The reading threads for `slots` (positions of the stream), with `copies` by position,
    /// `window` chunks ahead.
    fn stream_of(
        &self,
        threads: usize,
        window: usize,
        slots: Vec<usize>,
        copies: HashMap<usize, Vec<u64>>,
    ) -> ChunkStream {
        ChunkStream::new(
            self.store.clone(),
            self.index.clone(),
            self.ctx.clone(),
            (threads.max(1), window.max(1)),
            slots,
            copies,
        )
    }
}

/// The stored slots of `index` whose chunk (digest and length) no earlier slot holds, in
/// offset order, and for each of those that recur (by position in that list) the offsets of
/// the later slots holding the same chunk, in order.
fn distinct_slots(index: &FixedIndex) -> (Vec<usize>, HashMap<usize, Vec<u64>>) {
    let stored: Vec<usize> = index.stored_chunks().map(|(s, _)| s).collect();
    // Sort positions by the digest's first 32 bits (position second, so that each group is in
    // offset order), then compare whole digests and lengths inside each group: two different
    // chunks may share the prefix, and a hostile index may hold one digest at two lengths.
    // Positions fit the key's low 32 bits: an index holds at most MAX_CHUNKS (2^27) chunks.
    let mut keys: Vec<u64> = index
        .stored_chunks()
        .enumerate()
        .map(|(pos, (_, d))| {
            let prefix = u32::from_be_bytes([d.0[0], d.0[1], d.0[2], d.0[3]]);
            (u64::from(prefix) << 32) | pos as u64
        })
        .collect();
    keys.sort_unstable();
    let chunk_at = |pos: usize| (index.slot(stored[pos]), index.chunk_range(stored[pos]).1);
    // Position → the first position holding the same chunk (itself for a first occurrence,
    // flagged when later positions hold it too): 4 bytes per stored chunk, however many are
    // duplicates. Positions stay below 2^27, so the top bit is free for the flag.
    const HAS_COPIES: u32 = 1 << 31;
    let mut first_of: Vec<u32> = (0..stored.len() as u32).collect();
    let mut duplicates = 0usize;
    for group in keys.chunk_by(|a, b| a >> 32 == b >> 32) {
        if group.len() == 1 {
            continue;
        }
        // Sorted by whole digest and length (n log n, however many chunks of a hostile index
        // share the prefix): equal chunks are neighbours. The group is in position order and
        // the sort is stable, so each run's first is the chunk's first occurrence. No cached
        // keys: a disk of one chunk repeated is one group as large as the disk.
        let mut same: Vec<u32> = group.iter().map(|&k| k as u32).collect();
        same.sort_by_key(|&pos| chunk_at(pos as usize));
        for run in same.chunk_by(|&a, &b| chunk_at(a as usize) == chunk_at(b as usize)) {
            if run.len() > 1 {
                first_of[run[0] as usize] |= HAS_COPIES;
            }
            for &later in &run[1..] {
                first_of[later as usize] = run[0];
                duplicates += 1;
            }
        }
    }
    drop(keys);
    let mut slots = Vec::with_capacity(stored.len() - duplicates);
    // First position of a duplicated chunk → its position in `slots`.
    let mut job_of: HashMap<u32, usize> = HashMap::new();
    let mut copies: HashMap<usize, Vec<u64>> = HashMap::new();
    for (pos, &slot) in stored.iter().enumerate() {
        let first = first_of[pos];
        if first & HAS_COPIES != 0 {
            job_of.insert(pos as u32, slots.len());
            slots.push(slot);
        } else if first as usize == pos {
            slots.push(slot);
        } else {
            // A copy's first occurrence has a smaller position: its job is known by now.
            copies
                .entry(job_of[&first])
                .or_default()
                .push(index.chunk_range(slot).0);
        }
    }
    (slots, copies)
}

type Loaded = (usize, Result<DiskChunk>);

/// Ordered, bounded, parallel iterator over the stored chunks of a disk
/// (see [`DiskReader::stream`] and [`DiskReader::stream_distinct`]).
#[derive(Debug)]
pub struct ChunkStream {
    slots: Vec<usize>,
    /// The other offsets of the chunk at a position of `slots` (see
    /// [`DiskReader::stream_distinct`]); empty for [`DiskReader::stream`].
    copies: HashMap<usize, Vec<u64>>,
    next_job: usize,
    next_out: usize,
    window: usize,
    jobs: Option<crossbeam_channel::Sender<usize>>,
    results: crossbeam_channel::Receiver<Loaded>,
    ready: BTreeMap<usize, Result<DiskChunk>>,
    threads: Vec<JoinHandle<()>>,
    failed: bool,
}

impl ChunkStream {
    fn new(
        store: ChunkStore,
        index: Arc<FixedIndex>,
        ctx: Context,
        (threads, window): (usize, usize),
        slots: Vec<usize>,
        copies: HashMap<usize, Vec<u64>>,
    ) -> Self {
        // Each thread's read buffer, the window, and what the consumer holds.
        let pool = store.buffer_pool(threads + window + CONSUMER_HELD);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<usize>(window);
        let (res_tx, res_rx) = crossbeam_channel::bounded::<Loaded>(window);
        let slots_arc: Arc<Vec<usize>> = Arc::new(slots.clone());
        let handles = (0..threads)
            .map(|_| {
                let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
                let (store, index, ctx, slots, pool) = (
                    store.clone(),
                    index.clone(),
                    ctx.clone(),
                    slots_arc.clone(),
                    pool.clone(),
                );
                std::thread::spawn(move || {
                    let mut loader = ChunkLoader::new(pool).map_err(|reason| {
                        Error::Worker(format!("cannot start a chunk reader: {reason}"))
                    });
                    for pos in job_rx.iter() {
                        // A panic must come back as this position's error: the consumer waits
                        // for every position in order, and would wait for this one forever.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            match &mut loader {
                                Ok(l) => load_slot_aligned(&store, &index, &ctx, slots[pos], l),
                                Err(e) => Err(Error::Worker(e.to_string())),
                            }
                        }))
                        .unwrap_or_else(|_| Err(Error::Worker("a chunk reader panicked".into())));
                        if res_tx.send((pos, r)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        let mut s = Self {
            slots,
            copies,
            next_job: 0,
            next_out: 0,
            window,
            jobs: Some(job_tx),
            results: res_rx,
            ready: BTreeMap::new(),
            threads: handles,
            failed: false,
        };
        s.refill();
        s
    }

    fn refill(&mut self) {
        while self.next_job < self.slots.len() && self.next_job < self.next_out + self.window {
            match self.jobs.as_ref().map(|j| j.send(self.next_job)) {
                Some(Ok(())) => self.next_job += 1,
                _ => break,
            }
        }
    }
}

impl Iterator for ChunkStream {
    type Item = Result<DiskChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next_out >= self.slots.len() {
            return None;
        }
        loop {
            if let Some(mut r) = self.ready.remove(&self.next_out) {
                if let (Ok(chunk), Some(copies)) = (&mut r, self.copies.remove(&self.next_out)) {
                    chunk.copies = copies;
                }
                self.next_out += 1;
                self.refill();
                if r.is_err() {
                    self.failed = true;
                }
                return Some(r);
            }
            match self.results.recv() {
                Ok((pos, r)) => {
                    self.ready.insert(pos, r);
                }
                Err(_) => {
                    self.failed = true;
                    return Some(Err(Error::Worker("chunk reader threads stopped".into())));
                }
            }
        }
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock threads waiting to send results, then wait for them.
        while self.results.try_recv().is_ok() {}
        for h in self.threads.drain(..) {
            while !h.is_finished() {
                while self.results.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::ChunkDigest;

    /// Two digests sharing their first four bytes (the sort key) stay apart, and a slot with a
    /// duplicated digest but another length (the short last chunk) is read on its own.
    #[test]
    fn distinct_slots_compare_whole_digests_and_lengths() {
        let cs = 64 * 1024u64;
        let mut index = FixedIndex::new(4 * cs + 4096, cs as u32).unwrap();
        let d1 = ChunkDigest([7; 32]);
        let mut d2 = d1;
        d2.0[31] = 8;
        for (slot, d) in [(0, d1), (1, d2), (2, d1), (3, d2), (4, d1)] {
            index.set(slot, Some(d));
        }
        let (slots, copies) = distinct_slots(&index);
        assert_eq!(slots, vec![0, 1, 4]);
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[&0], vec![2 * cs]);
        assert_eq!(copies[&1], vec![3 * cs]);
    }

    /// Many different digests sharing the sort key's prefix, each twice, in an interleaved
    /// order: every copy still finds its own first occurrence.
    #[test]
    fn distinct_slots_with_many_digests_under_one_prefix() {
        let cs = 64 * 1024u64;
        let n = 40;
        let mut index = FixedIndex::new(2 * n as u64 * cs, cs as u32).unwrap();
        let digest = |i: usize| {
            let mut d = [9u8; 32];
            d[31] = i as u8;
            ChunkDigest(d)
        };
        for i in 0..n {
            index.set(i, Some(digest(n - 1 - i)));
            index.set(n + i, Some(digest(i)));
        }
        let (slots, copies) = distinct_slots(&index);
        assert_eq!(slots, (0..n).collect::<Vec<_>>());
        for (job, &slot) in slots.iter().enumerate() {
            // Slot `slot` holds digest n-1-slot; its copy is at n + (n-1-slot).
            assert_eq!(copies[&job], vec![(2 * n - 1 - slot) as u64 * cs]);
        }
    }

    /// Without duplicates the distinct walk is the ordered one and keeps no copies.
    #[test]
    fn distinct_slots_without_duplicates() {
        let cs = 64 * 1024u64;
        let mut index = FixedIndex::new(3 * cs, cs as u32).unwrap();
        index.set(0, Some(ChunkDigest([1; 32])));
        index.set(2, Some(ChunkDigest([2; 32])));
        let (slots, copies) = distinct_slots(&index);
        assert_eq!(slots, vec![0, 2]);
        assert!(copies.is_empty());
    }

    proptest::proptest! {
        /// `distinct_slots` against the obvious quadratic search, on indexes with holes, a short
        /// last chunk, four digests sharing the sort key's prefix and one that does not.
        #[test]
        fn distinct_slots_match_a_naive_search(
            ids in proptest::collection::vec(0u8..6, 1..60),
            tail in 1u64..4,
        ) {
            let cs = 64 * 1024u64;
            let n = ids.len() as u64;
            let mut index = FixedIndex::new((n - 1) * cs + tail * 512, cs as u32).unwrap();
            for (i, &id) in ids.iter().enumerate() {
                if id == 0 {
                    continue;
                }
                let mut d = [0xAB; 32];
                d[31] = id;
                if id == 5 {
                    d[0] = 1;
                }
                index.set(i, Some(ChunkDigest(d)));
            }
            let (slots, copies) = distinct_slots(&index);
            // (digest, length, position in the expected slots) of each chunk seen so far.
            let mut seen: Vec<(Option<ChunkDigest>, usize, usize)> = Vec::new();
            let mut want_slots = Vec::new();
            let mut want_copies: HashMap<usize, Vec<u64>> = HashMap::new();
            for (s, _) in index.stored_chunks() {
                let (offset, len) = index.chunk_range(s);
                let chunk = (index.slot(s), len);
                match seen.iter().find(|(d, l, _)| (*d, *l) == chunk) {
                    Some(&(_, _, job)) => want_copies.entry(job).or_default().push(offset),
                    None => {
                        seen.push((chunk.0, chunk.1, want_slots.len()));
                        want_slots.push(s);
                    }
                }
            }
            proptest::prop_assert_eq!(slots, want_slots);
            proptest::prop_assert_eq!(copies, want_copies);
        }
    }
}
