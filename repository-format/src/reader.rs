//! Reading a disk of a generation back: random access, a walk over the stored chunks, and a
//! parallel, ordered, bounded stream of them for restore and export.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::chunk_store::ChunkStore;
use crate::error::{ChunkError, ChunkUse, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::target::{GenerationId, TargetKey};

/// A stored (non-zero) chunk of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChunk {
    /// Byte offset in the disk.
    pub offset: u64,
    /// The verified content (shorter than the chunk size only at the end of the disk).
    pub data: Vec<u8>,
}

/// Names used in chunk errors.
#[derive(Debug, Clone)]
struct Context {
    target: String,
    generation: u64,
    disk: i32,
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
    store.load(&digest, len).map_err(|reason| {
        Error::Chunk(Box::new(ChunkError {
            digest,
            path: store.path(&digest),
            used_by: ChunkUse {
                target: ctx.target.clone(),
                generation: ctx.generation,
                disk: ctx.disk,
                offset,
            },
            reason,
        }))
    })
}

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
        self.index.stored_chunks().map(move |(slot, _)| {
            let (offset, _) = self.index.chunk_range(slot);
            load_slot(&self.store, &self.index, &self.ctx, slot)
                .map(|data| DiskChunk { offset, data })
        })
    }

    /// Like [`DiskReader::chunks`], but `threads` background threads read, decompress and
    /// verify ahead. Chunks still come in offset order; at most `2 × threads` are held in
    /// memory. Stops after the first error. Dropping the stream stops the threads.
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
        let window = threads * 2;
        let (job_tx, job_rx) = crossbeam_channel::bounded::<usize>(window);
        let (res_tx, res_rx) = crossbeam_channel::bounded::<Loaded>(window);
        let slots_arc: Arc<Vec<usize>> = Arc::new(slots.clone());
        let handles = (0..threads)
            .map(|_| {
                let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
                let (store, index, ctx, slots) =
                    (store.clone(), index.clone(), ctx.clone(), slots_arc.clone());
                std::thread::spawn(move || {
                    for pos in job_rx.iter() {
                        let slot = slots[pos];
                        let offset = index.chunk_range(slot).0;
                        let r = load_slot(&store, &index, &ctx, slot)
                            .map(|data| DiskChunk { offset, data });
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
