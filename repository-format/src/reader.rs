//! Reading a disk of a generation back: random access, a walk over the stored chunks, and a
//! parallel, ordered, bounded stream of them for restore and export.

use std::collections::BTreeMap;
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
        });
    };
    store
        .load_aligned(&digest, len, loader)
        .map(|data| DiskChunk { offset, data })
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
        ChunkStream::new(
            self.store.clone(),
            self.index.clone(),
            self.ctx.clone(),
            threads.max(1),
        )
    }
}

type Loaded = (usize, Result<DiskChunk>);

/// Ordered, bounded, parallel iterator over the stored chunks of a disk
/// (see [`DiskReader::stream`]).
#[derive(Debug)]
pub struct ChunkStream {
    slots: Vec<usize>,
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
    fn new(store: ChunkStore, index: Arc<FixedIndex>, ctx: Context, threads: usize) -> Self {
        let slots: Vec<usize> = index.stored_chunks().map(|(s, _)| s).collect();
        let window = threads * WINDOW_PER_THREAD;
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
                        let r = match &mut loader {
                            Ok(l) => load_slot_aligned(&store, &index, &ctx, slots[pos], l),
                            Err(e) => Err(Error::Worker(e.to_string())),
                        };
                        if res_tx.send((pos, r)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        let mut s = Self {
            slots,
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
            if let Some(r) = self.ready.remove(&self.next_out) {
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
