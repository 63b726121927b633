//! The ingest pipeline: read chunks on the caller's thread, hash / detect zeros / compress /
//! store on worker threads, with a bounded number of chunk buffers in flight.
//!
//! ```text
//!  caller thread            workers (one per core)              writers (4)
//!  take a free buffer       zero? ──────────────────────────┐
//!  read_at ─► work queue ─► SHA-256                         │
//!                           known this run? ────────────────┤
//!                           touch+stat finds it? ───────────┤
//!                           zstd ─► store queue ─► write, syncfs, rename
//!  record digest ◄──────────────── done queue ◄─────────────┴──────────┘
//! ```
//!
//! New chunks go from the workers to a few writer threads, so storage latency overlaps with
//! hashing. Locally a writer only writes the chunk's temporary file; batches of them are made
//! durable with one `syncfs` on a thread of their own and then renamed, and the folders holding
//! them are synced once at the end of the disk
//! ([`crate::storage::Backend::put_name_deferred`]). The source is only ever called from the
//! caller's thread.
//!
//! Memory: every chunk in flight is a slot, its buffer and the blob made of it
//! ([`slot_bytes`]), and all slots come from one [`MemoryBudget`] shared by every ingest of the
//! process, so concurrent disks and VMs share one limit instead of multiplying a per-disk one.
//! An ingest takes [`IngestTuning::min_buffers`] slots (and its source's read-ahead buffers)
//! in one step when it starts, waiting for them if needed, then more up to
//! [`IngestTuning::buffers`] while the budget has room and nobody waits, and gives the extra
//! back as they come free while another ingest waits. Alone, an ingest gets all its buffers,
//! whatever the disk size.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use crate::aligned_buf::{AlignedBuf, BufPool};
use crate::blob::BlobKind;
use crate::chunk_store::ChunkStore;
use crate::digest::{is_all_zero, ChunkDigest};
use crate::error::{Error, Result, SourceError};
use crate::fixed_index::FixedIndex;
use crate::manifest::DiskStats;
use crate::memory_budget::{MemoryBudget, Reservation};

/// Where the bytes of a disk come from (a VDDK handle, a file, a test pattern).
///
/// Called from one thread only, so it needs to be `Send` but not `Sync`.
pub trait DiskSource: Send {
    /// Fills `buf` with the bytes at `offset`. `offset + buf.len()` never exceeds
    /// [`DiskSource::capacity`]; offsets are chunk-aligned.
    ///
    /// # Errors
    /// Any read failure; the ingest stops and reports it with the disk and offset.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError>;

    /// Like [`DiskSource::read_at`] with `buf.len()` bytes, but the source may replace `buf`
    /// with a buffer of its own holding the same bytes (of the same length) instead of copying
    /// into it: a source that reads into buffers it owns (asynchronous VDDK reads) hands them
    /// over and keeps `buf` for a later read. The ingest reads through this.
    ///
    /// # Errors
    /// As [`DiskSource::read_at`].
    fn read_owned(&mut self, offset: u64, buf: &mut Vec<u8>) -> Result<(), SourceError> {
        self.read_at(offset, buf)
    }

    /// Size of the disk in bytes.
    fn capacity(&self) -> u64;

    /// How many chunk-sized buffers the source holds of its own at most (reads ahead in
    /// flight and done, a spare), which the ingest pays for from the memory budget beside its
    /// own. Default 0: a source that reads into the caller's buffer.
    fn buffers_held(&self) -> usize {
        0
    }
}

/// A byte range of a disk to read (allocated or changed area).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Area {
    /// Start, in bytes.
    pub offset: u64,
    /// Length, in bytes.
    pub len: u64,
}

impl Area {
    /// The area `offset .. offset + len`.
    pub fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// The area's end, checked against a disk of `capacity` bytes.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an area that overflows or extends past `capacity`.
    pub fn end_within(&self, capacity: u64) -> Result<u64> {
        self.offset
            .checked_add(self.len)
            .filter(|&e| e <= capacity)
            .ok_or(Error::OutOfRange {
                what: "ingest area",
                offset: self.offset,
                len: self.len,
                capacity,
            })
    }
}

/// Pipeline sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestTuning {
    /// Worker threads (hash, compress, store).
    pub workers: usize,
    /// Threads writing new chunks (write, fsync, rename). Several, so that fsync
    /// latency overlaps with hashing and compression and with other fsyncs.
    pub writers: usize,
    /// The most chunk buffers in flight (reading + queued + being processed + being
    /// written), when the memory budget has room for them.
    pub buffers: usize,
    /// Chunk buffers taken from the memory budget when the ingest starts (waiting for them if
    /// needed): enough to keep it moving however many ingests share the budget.
    pub min_buffers: usize,
}

/// What one chunk in flight may take from the memory budget: its buffer and the blob made of
/// it (a blob is never larger than its chunk plus a header and, encrypted, a nonce and tag).
pub fn slot_bytes(chunk_size: u32) -> u64 {
    2 * u64::from(chunk_size) + BLOB_SLACK
}

/// Room for a blob's header, nonce and tag beyond its chunk.
const BLOB_SLACK: u64 = 4096;

impl IngestTuning {
    /// What the ingest's slot number `i` (from 0) costs: [`slot_bytes`], and for the first
    /// `workers` slots a chunk more, the compressor's output beside the blob while a worker
    /// assembles it (each worker compresses one slot's chunk at a time, so there are never
    /// more of them than slots or workers).
    pub fn slot_cost(&self, i: usize, chunk_size: u32) -> u64 {
        let scratch = if i < self.workers.max(1) {
            u64::from(chunk_size)
        } else {
            0
        };
        slot_bytes(chunk_size) + scratch
    }

    /// What the ingest takes from the memory budget when it starts: its minimum slots.
    pub fn min_bytes(&self, chunk_size: u32) -> u64 {
        (0..self.min_buffers.max(1))
            .map(|i| self.slot_cost(i, chunk_size))
            .sum()
    }

    /// The most the ingest takes from the memory budget: every buffer in flight.
    pub fn max_bytes(&self, chunk_size: u32) -> u64 {
        (0..self.buffers.max(self.min_buffers.max(1)))
            .map(|i| self.slot_cost(i, chunk_size))
            .sum()
    }
}

/// Memory the chunk buffers of one ingest may take (blobs being written come on top).
const BUFFER_BUDGET: u64 = 128 << 20;

impl IngestTuning {
    /// Sizing for `chunk_size`: one worker per core (fewer for very large chunks), four writers (two for chunks of 8 MiB and
    /// more), and as many buffers as keep everyone busy within 128 MiB; two of them taken at
    /// the start. What it takes from the process's memory
    /// budget is between [`IngestTuning::min_bytes`] and [`IngestTuning::max_bytes`].
    pub fn for_chunk_size(chunk_size: u32) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 16)
            .min((BUFFER_BUDGET / chunk_size.max(1) as u64 / 3).max(1) as usize);
        let writers = if chunk_size >= 8 << 20 { 2 } else { 4 };
        let wanted = workers * 2 + writers * 2 + 2;
        let minimum = workers + writers + 1;
        let affordable = (BUFFER_BUDGET / chunk_size.max(1) as u64) as usize;
        Self {
            workers,
            writers,
            buffers: wanted.min(affordable).max(minimum),
            // One chunk being read and one being hashed and compressed keep an ingest moving;
            // small, so that many ingests fit in the budget at once whatever the core count.
            min_buffers: 2,
        }
    }
}

impl IngestTuning {
    /// The same sizing with `writers` writer threads (chunk uploads in flight), buffers grown
    /// to keep every writer busy.
    pub fn with_writers(mut self, writers: usize) -> Self {
        let writers = writers.max(1);
        let extra = writers.saturating_sub(self.writers);
        self.writers = writers;
        // One more read buffer per extra writer keeps the workers fed while uploads wait.
        self.buffers += extra;
        self
    }
}

impl Default for IngestTuning {
    fn default() -> Self {
        Self::for_chunk_size(crate::format::DEFAULT_CHUNK_SIZE)
    }
}

/// The `(offset, length)` chunk reads an ingest of `areas` asks for, in order: every chunk slot
/// the areas touch, the last chunk of the disk cut at `capacity`.
///
/// # Errors
/// [`Error::OutOfRange`] for an area that extends past `capacity`.
pub fn chunk_reads(areas: &[Area], capacity: u64, chunk_size: u32) -> Result<Vec<(u64, usize)>> {
    let chunk = u64::from(chunk_size);
    Ok(chunk_ranges(areas, capacity, chunk_size)?
        .into_iter()
        .flat_map(|(first, end)| first..end)
        .map(|slot| {
            let offset = slot * chunk;
            (offset, (capacity - offset).min(chunk) as usize)
        })
        .collect())
}

/// Rounds areas out to chunk boundaries, merges overlaps and returns sorted chunk ranges
/// `[first, end)`.
///
/// # Errors
/// [`Error::OutOfRange`] for an area that extends past `capacity`.
pub fn chunk_ranges(areas: &[Area], capacity: u64, chunk_size: u32) -> Result<Vec<(u64, u64)>> {
    let cs = chunk_size as u64;
    let mut ranges = Vec::with_capacity(areas.len());
    for a in areas {
        let end = a.end_within(capacity)?;
        if a.len == 0 {
            continue;
        }
        ranges.push((a.offset / cs, end.div_ceil(cs)));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    Ok(merged)
}

enum Outcome {
    Zero,
    Known(ChunkDigest),
    New { digest: ChunkDigest, stored: u64 },
}

struct Job {
    at: ChunkAt,
    buf: Vec<u8>,
}

struct Done {
    at: ChunkAt,
    buf: Vec<u8>,
    outcome: Result<Outcome>,
}

/// What an ingest needs besides the index, areas and source.
pub(crate) struct IngestContext<'a> {
    pub store: &'a ChunkStore,
    pub disk_key: i32,
    pub known: &'a Mutex<HashSet<ChunkDigest>>,
    pub tuning: IngestTuning,
    /// Where the chunk buffers' memory comes from (shared with every other ingest).
    pub budget: &'a Arc<MemoryBudget>,
    /// Content-defined chunking (format 4); `None` for a fixed index.
    pub cut: Option<&'a crate::chunker::CutRule>,
}

/// The chunk buffers of one ingest and the share of the memory budget that pays for them.
struct ChunkSlots {
    reservation: Reservation,
    /// Buffers not in flight.
    free: Vec<Vec<u8>>,
    /// Buffers that exist (free or in flight); never more than `paid`.
    made: usize,
    /// Buffers the reservation pays for.
    paid: usize,
    min: usize,
    max: usize,
    chunk_size: u32,
    tuning: IngestTuning,
    /// The pool of the blobs of new chunks, bounded by the paid slots (see
    /// [`ChunkSlots::share_blobs`]).
    blobs: Option<BufPool>,
}

impl ChunkSlots {
    /// Takes the ingest's minimum from `budget`, and `source_bytes` for the source's own
    /// buffers, waiting for them if needed.
    fn reserve(
        budget: &Arc<MemoryBudget>,
        tuning: &IngestTuning,
        chunk_size: u32,
        source_bytes: u64,
    ) -> Self {
        let min = tuning.min_buffers.max(1);
        let source = source_bytes;
        Self {
            reservation: budget.reserve(tuning.min_bytes(chunk_size) + source),
            free: Vec::new(),
            made: 0,
            paid: min,
            min,
            max: tuning.buffers.max(min),
            chunk_size,
            tuning: *tuning,
            blobs: None,
        }
    }

    /// The same slots, also bounding the blobs `blobs` holds (see [`ChunkSlots::share_blobs`]).
    fn with_blobs(mut self, blobs: BufPool) -> Self {
        self.blobs = Some(blobs);
        self.share_blobs();
        self
    }

    /// Each slot pays for a chunk buffer and the blob made of it ([`slot_bytes`]), so the blob
    /// pool (a [`BufPool::bounded`] one) keeps blobs in use and spares together to the paid
    /// slots, also after the ingest gives slots back to another one. A blob exists only while
    /// its chunk is in flight, so blobs in use never outnumber the slots.
    fn share_blobs(&self) {
        if let Some(blobs) = &self.blobs {
            blobs.set_keep(self.paid);
        }
    }

    /// A buffer to read into: a free one, a new one the reservation already pays for, or one
    /// more if the budget has room and nobody waits; `None` means wait for one to come back.
    fn take(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.free.pop() {
            return Some(b);
        }
        if self.made == self.paid
            && self.paid < self.max
            && self
                .reservation
                .try_grow(self.tuning.slot_cost(self.paid, self.chunk_size))
        {
            self.paid += 1;
            self.share_blobs();
        }
        if self.made < self.paid {
            self.made += 1;
            // A spare another ingest gave back, else capacity only: pages are touched (and
            // resident) once a chunk is read into it.
            return Some(self.reservation.budget().buffer(self.chunk_size as usize));
        }
        None
    }

    /// A buffer back from the pipeline: kept for the next read, or, beyond the minimum while
    /// another ingest waits for memory, freed and its share given back.
    fn give_back(&mut self, buf: Vec<u8>) {
        if self.paid > self.min && self.reservation.budget().has_waiters() {
            self.made -= 1;
            self.paid -= 1;
            self.reservation
                .shrink(self.tuning.slot_cost(self.paid, self.chunk_size));
            self.share_blobs();
            // The waiter may well take this very buffer.
            self.reservation.budget().recycle(buf);
        } else {
            self.free.push(buf);
        }
    }
}

impl Drop for ChunkSlots {
    fn drop(&mut self) {
        // Give the share back first, so that the buffers fit as spares for the next ingest.
        self.reservation.shrink(self.reservation.bytes());
        for buf in self.free.drain(..) {
            self.reservation.budget().recycle(buf);
        }
    }
}

/// Reads `areas` of `source` into `index`, storing new chunks; returns what it did.
///
/// A fixed index is read slot by slot over the areas rounded out to chunks. With
/// [`IngestContext::cut`] (format 4) the areas are read in extents and cut into
/// content-defined chunks ([`crate::chunker`]); `incremental` says `index` holds the base's
/// chunks, whose cuts tell where re-chunking may stop.
pub(crate) fn ingest(
    ctx: &IngestContext<'_>,
    index: &mut FixedIndex,
    areas: &[Area],
    incremental: bool,
    source: &mut dyn DiskSource,
    progress: &dyn Fn(u64),
) -> Result<DiskStats> {
    let IngestContext {
        store,
        disk_key,
        known,
        tuning,
        budget,
        cut,
    } = *ctx;
    let capacity = index.size();
    let chunk_size = index.chunk_size();
    let workers = tuning.workers.max(1);
    let writers = tuning.writers.max(1);
    let buffers = tuning.buffers.max(workers + writers + 1);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Job>(buffers);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let (store_tx, store_rx) = crossbeam_channel::bounded::<StoreJob>(writers);
    // The blobs of new chunks, reused: each is written from where it was encoded, and a reused
    // buffer's pages are already resident (see `Codec::encode_into`). In use and spare, they
    // stay within the ingest's paid slots (`ChunkSlots::share_blobs`), which the memory budget
    // pays for (`slot_bytes`).
    let blobs = BufPool::bounded(buffers, chunk_size as usize + BLOB_SLACK as usize);
    let blobs = &blobs;
    let level = store.codec().level();
    // What is read, decided before any reading: slots of a fixed index, spans of a
    // content-defined one (planned against the base's cuts, which stay in `index` until the
    // new chunks are spliced in at the end).
    let plan = match cut {
        None => ReadOrder::Slots(chunk_ranges(areas, capacity, chunk_size)?),
        Some(_) => ReadOrder::Spans(crate::chunker::plan_spans(
            areas,
            capacity,
            incremental.then_some(&*index as &dyn crate::chunker::OldChunks),
        )?),
    };

    let (stats, placed, spans_done) = std::thread::scope(|scope| -> Result<_> {
        let mut handles = Vec::with_capacity(workers + writers);
        for _ in 0..workers {
            let work_rx = work_rx.clone();
            let done_tx = done_tx.clone();
            let store_tx = store_tx.clone();
            handles.push(scope.spawn(move || {
                let mut compressor = zstd::bulk::Compressor::new(level).ok();
                for job in work_rx.iter() {
                    let stage = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        process(store, known, compressor.as_mut(), blobs, &job.buf)
                    }))
                    .unwrap_or_else(|_| {
                        Stage::Done(Err(Error::Worker("a worker panicked".into())))
                    });
                    let sent = match stage {
                        Stage::Done(outcome) => done_tx
                            .send(Done {
                                at: job.at,
                                buf: job.buf,
                                outcome,
                            })
                            .is_ok(),
                        Stage::Store { digest, blob } => store_tx
                            .send(StoreJob {
                                at: job.at,
                                buf: job.buf,
                                digest,
                                blob,
                            })
                            .is_ok(),
                    };
                    if !sent {
                        break;
                    }
                }
            }));
        }
        for _ in 0..writers {
            let store_rx = store_rx.clone();
            let done_tx = done_tx.clone();
            handles.push(scope.spawn(move || {
                for job in store_rx.iter() {
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        store.insert_name_deferred(&job.digest, &job.blob)
                    }))
                    .unwrap_or_else(|_| Err(Error::Worker("a writer panicked".into())))
                    .map(|stored| Outcome::New {
                        digest: job.digest,
                        stored,
                    });
                    if outcome.is_err() {
                        lock(known).remove(&job.digest);
                    }
                    let done = Done {
                        at: job.at,
                        buf: job.buf,
                        outcome,
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(store_tx);
        drop(store_rx);
        drop(work_rx);
        drop(done_tx);

        let tuning = IngestTuning { buffers, ..tuning };
        // The source's buffers hold one read each: a chunk for a fixed index, an extent for a
        // content-defined one, which also reads into one extent buffer of its own and copies
        // each chunk out of it (chunks do not line up with reads).
        let source_bytes = match cut {
            None => source.buffers_held() as u64 * u64::from(chunk_size),
            Some(_) => (source.buffers_held() as u64 + 1) * CDC_READ_EXTENT,
        };
        let slots = ChunkSlots::reserve(budget, &tuning, chunk_size, source_bytes)
            .with_blobs(blobs.clone());
        let mut feed = Feed {
            work_tx: Some(work_tx),
            done_rx,
            slots,
            in_flight: 0,
            first_error: None,
            stats: DiskStats {
                logical_bytes: capacity,
                ..Default::default()
            },
            disk_key,
            progress,
        };
        let mut spans_done = Vec::new();
        let mut sink = match &plan {
            ReadOrder::Slots(ranges) => {
                let mut sink = Sink::Slots(&mut *index);
                read_slots(&mut feed, &mut sink, ranges, capacity, chunk_size, source);
                feed.finish(&mut sink);
                sink
            }
            ReadOrder::Spans(spans) => {
                let rule = cut.expect("spans are planned only with a cut rule");
                let mut sink = Sink::Placed(Vec::new());
                let old = incremental.then_some(&*index);
                spans_done = read_spans(&mut feed, &mut sink, rule, spans, old, capacity, source);
                feed.finish(&mut sink);
                sink
            }
        };
        for h in handles {
            if h.join().is_err() {
                feed.fail(Error::Worker("a worker panicked".into()));
            }
        }
        if let Some(e) = feed.first_error.take() {
            return Err(e);
        }
        let placed = match &mut sink {
            Sink::Placed(p) => std::mem::take(p),
            Sink::Slots(_) => Vec::new(),
        };
        Ok((feed.stats, placed, spans_done))
    })?;
    let mut stats = stats;
    if cut.is_some() {
        splice_spans(index, placed, &spans_done)?;
        stats.chunks_not_read =
            (index.stored_chunk_count() as u64).saturating_sub(stats.chunks_read);
    } else {
        stats.chunks_not_read = index.chunk_count() as u64 - stats.chunks_read;
    }
    Ok(stats)
}

/// What an ingest reads, in order.
enum ReadOrder {
    /// Slot ranges `first..end` of a fixed index.
    Slots(Vec<(u64, u64)>),
    /// Spans of a content-defined disk.
    Spans(Vec<crate::chunker::Span>),
}

/// Where a chunk is, for the index: a fixed slot, or a content-defined chunk's offset.
#[derive(Debug, Clone, Copy)]
enum ChunkAt {
    Slot(usize),
    Offset(u64),
}

/// Where chunk outcomes go: the slots of a fixed index, or the content-defined chunks placed
/// so far, spliced into the index once all are back (they come back in any order).
enum Sink<'i> {
    Slots(&'i mut FixedIndex),
    Placed(Vec<(u64, u32, ChunkDigest)>),
}

/// The reading side of the pipeline: chunk buffers, the work queue and what comes back.
struct Feed<'a> {
    work_tx: Option<crossbeam_channel::Sender<Job>>,
    done_rx: crossbeam_channel::Receiver<Done>,
    slots: ChunkSlots,
    in_flight: usize,
    first_error: Option<Error>,
    stats: DiskStats,
    disk_key: i32,
    progress: &'a dyn Fn(u64),
}

impl Feed<'_> {
    /// A chunk buffer, waiting for chunks to come back while none is free; `None` once the
    /// ingest is failing (the caller stops reading).
    fn take(&mut self, sink: &mut Sink<'_>) -> Option<Vec<u8>> {
        loop {
            if self.first_error.is_some() {
                return None;
            }
            if let Some(b) = self.slots.take() {
                return Some(b);
            }
            match self.done_rx.recv() {
                Ok(d) => {
                    self.in_flight -= 1;
                    self.record(d, sink);
                }
                Err(_) => {
                    self.fail(Error::Worker("all workers stopped".into()));
                    return None;
                }
            }
        }
    }

    /// Keeps the first error; reading stops at the next step.
    fn fail(&mut self, e: Error) {
        self.first_error.get_or_insert(e);
    }

    /// Hands a chunk to the workers; false if they are gone.
    fn send(&mut self, at: ChunkAt, buf: Vec<u8>) -> bool {
        let sent = match &self.work_tx {
            Some(tx) => tx.send(Job { at, buf }).is_ok(),
            None => false,
        };
        if sent {
            self.in_flight += 1;
            self.stats.chunks_read += 1;
        } else {
            self.fail(Error::Worker("all workers stopped".into()));
        }
        sent
    }

    /// Reads `len` bytes at `offset` into `buf`; false (and the error kept) on failure.
    fn read(
        &mut self,
        source: &mut dyn DiskSource,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> bool {
        buf.resize(len, 0);
        let disk = self.disk_key;
        let result = source
            .read_owned(offset, buf)
            .map_err(|source| Error::Source {
                disk,
                offset,
                source,
            })
            .and_then(|()| {
                if buf.len() == len {
                    Ok(())
                } else {
                    Err(Error::Source {
                        disk,
                        offset,
                        source: SourceError::new(format!(
                            "the source returned {} bytes for a read of {len}",
                            buf.len()
                        )),
                    })
                }
            });
        match result {
            Ok(()) => {
                self.stats.read_bytes += len as u64;
                (self.progress)(len as u64);
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    /// Closes the work queue and waits for every chunk in flight.
    fn finish(&mut self, sink: &mut Sink<'_>) {
        self.work_tx = None;
        while self.in_flight > 0 {
            match self.done_rx.recv() {
                Ok(d) => {
                    self.in_flight -= 1;
                    self.record(d, sink);
                }
                Err(_) => break,
            }
        }
    }

    /// Books a chunk that came back: its buffer is free again, its id goes to the sink.
    fn record(&mut self, d: Done, sink: &mut Sink<'_>) {
        let len = d.buf.len() as u64;
        self.slots.give_back(d.buf);
        let digest = match d.outcome {
            Ok(Outcome::Zero) => {
                self.stats.zero_bytes += len;
                None
            }
            Ok(Outcome::Known(digest)) => {
                self.stats.reused_bytes += len;
                Some(digest)
            }
            Ok(Outcome::New { digest, stored }) => {
                self.stats.new_bytes += len;
                self.stats.stored_bytes += stored;
                self.stats.new_chunks += 1;
                Some(digest)
            }
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        match (sink, d.at) {
            (Sink::Slots(index), ChunkAt::Slot(slot)) => index.set(slot, digest),
            (Sink::Placed(placed), ChunkAt::Offset(offset)) => {
                // Content-defined chunks are never all zeros (zero blocks are cut out before);
                // one that were would simply stay a hole.
                if let Some(d) = digest {
                    placed.push((offset, len as u32, d));
                }
            }
            _ => self.fail(Error::Worker(
                "a chunk came back in the other index layout".into(),
            )),
        }
    }
}

/// Reads the slots of a fixed index, one chunk per read.
fn read_slots(
    feed: &mut Feed<'_>,
    sink: &mut Sink<'_>,
    ranges: &[(u64, u64)],
    capacity: u64,
    chunk_size: u32,
    source: &mut dyn DiskSource,
) {
    let cs = u64::from(chunk_size);
    for &(first, end) in ranges {
        for slot in first..end {
            let Some(mut buf) = feed.take(sink) else {
                return;
            };
            let offset = slot * cs;
            let len = (capacity - offset).min(cs) as usize;
            if !feed.read(source, offset, len, &mut buf) {
                feed.slots.give_back(buf);
                return;
            }
            if !feed.send(ChunkAt::Slot(slot as usize), buf) {
                return;
            }
        }
    }
}

/// Planned reads of a content-defined ingest are this long (a source reading ahead keeps
/// several in flight).
pub(crate) const CDC_READ_EXTENT: u64 = 1 << 20;

/// Reads past a span's planned end, until the cuts meet the old ones, go in steps this long:
/// the expected distance is about one mean chunk.
const CDC_CONTINUE_EXTENT: u64 = 256 << 10;

/// Reads `spans` and cuts them into content-defined chunks; returns the byte ranges whose
/// chunks are now the new ones (each span's start to where its cuts met the old ones).
fn read_spans(
    feed: &mut Feed<'_>,
    sink: &mut Sink<'_>,
    rule: &crate::chunker::CutRule,
    spans: &[crate::chunker::Span],
    old: Option<&FixedIndex>,
    capacity: u64,
    source: &mut dyn DiskSource,
) -> Vec<(u64, u64)> {
    use crate::chunker::{CutState, OldChunks, Piece};
    let mut done = Vec::with_capacity(spans.len());
    let mut extent: Vec<u8> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut next = 0usize;
    while let Some(&span) = spans.get(next) {
        next += 1;
        let mut planned_end = span.end;
        let mut changed_end = span.changed_end;
        let mut state = CutState::default();
        // The chunk being assembled: its offset and bytes so far.
        let mut open: Option<(u64, Vec<u8>)> = None;
        let mut at = span.start;
        let stop = 'span: loop {
            // How far this read goes: the planned extents first (a read-ahead source has them
            // in flight), then, for an incremental whose cuts have not met the old ones, on
            // in short steps, never into the next span's planned reads.
            let read_end = if at < planned_end {
                planned_end.min(at + CDC_READ_EXTENT)
            } else {
                let Some(old) = old.filter(|_| at < capacity) else {
                    break 'span at;
                };
                if open.is_none() && old.is_boundary(at) {
                    break 'span at;
                }
                if old.chunk_at(at).is_none() {
                    // An old hole after every change: zeros still, which end the open chunk
                    // here; no need to read them to see it.
                    if let Some((o, buf)) = open.take() {
                        feed.send(ChunkAt::Offset(o), buf);
                    }
                    break 'span at;
                }
                match spans.get(next) {
                    Some(n) if at >= n.start => {
                        planned_end = n.end;
                        changed_end = changed_end.max(n.changed_end);
                        next += 1;
                        continue 'span;
                    }
                    Some(n) => n.start.min(at + CDC_CONTINUE_EXTENT),
                    None => capacity.min(at + CDC_CONTINUE_EXTENT),
                }
            };
            let len = (read_end - at) as usize;
            if !feed.read(source, at, len, &mut extent) {
                break 'span at;
            }
            pieces.clear();
            rule.scan(&mut state, at, &extent, &mut pieces);
            for &piece in &pieces {
                match piece {
                    Piece::Zero { offset, len } => {
                        feed.stats.zero_bytes += len;
                        if let Some((o, buf)) = open.take() {
                            if !feed.send(ChunkAt::Offset(o), buf) {
                                break 'span at;
                            }
                        }
                        // Unchanged zeros after every change: the old chunking has a hole
                        // here too, so the rest is the old chunks.
                        let zero_end = offset + len;
                        if old.is_some() && offset >= changed_end && zero_end > planned_end {
                            break 'span offset.max(planned_end);
                        }
                    }
                    Piece::Data {
                        offset,
                        len,
                        ends_chunk,
                    } => {
                        if open.is_none() {
                            let Some(mut buf) = feed.take(sink) else {
                                break 'span at;
                            };
                            buf.clear();
                            open = Some((offset, buf));
                        }
                        let from = (offset - at) as usize;
                        if let Some((_, buf)) = open.as_mut() {
                            buf.extend_from_slice(&extent[from..from + len as usize]);
                        }
                        if ends_chunk {
                            if let Some((o, buf)) = open.take() {
                                if !feed.send(ChunkAt::Offset(o), buf) {
                                    break 'span at;
                                }
                            }
                            let cut = offset + len;
                            if old.is_some_and(|old| cut >= planned_end && old.is_boundary(cut)) {
                                break 'span cut;
                            }
                        }
                    }
                }
            }
            at = read_end;
            if at >= capacity || (old.is_none() && at >= planned_end) {
                // The end of the disk, or of an allocated area of a full backup (what follows
                // reads as zeros): the open chunk ends here.
                if let Some((o, buf)) = open.take() {
                    feed.send(ChunkAt::Offset(o), buf);
                }
                state.end_chunk();
                if at >= capacity || old.is_none() {
                    break 'span at;
                }
            }
        };
        if let Some((_, buf)) = open.take() {
            // Only after a failure: the ingest is stopping.
            feed.slots.give_back(buf);
        }
        if feed.first_error.is_some() {
            break;
        }
        done.push((span.start, stop));
    }
    done
}

/// Replaces each re-chunked range of `index` with the chunks placed in it.
fn splice_spans(
    index: &mut FixedIndex,
    mut placed: Vec<(u64, u32, ChunkDigest)>,
    ranges: &[(u64, u64)],
) -> Result<()> {
    placed.sort_unstable_by_key(|c| c.0);
    let mut rest = placed.as_slice();
    for &(start, end) in ranges {
        let inside = rest.partition_point(|c| c.0 < end);
        let (these, later) = rest.split_at(inside);
        index.splice(start, end, these)?;
        rest = later;
    }
    if !rest.is_empty() {
        return Err(Error::Worker(format!(
            "{} content-defined chunks fell outside the ranges read",
            rest.len()
        )));
    }
    Ok(())
}

enum Stage {
    Done(Result<Outcome>),
    Store {
        digest: ChunkDigest,
        blob: AlignedBuf,
    },
}

struct StoreJob {
    at: ChunkAt,
    buf: Vec<u8>,
    digest: ChunkDigest,
    blob: AlignedBuf,
}

fn process(
    store: &ChunkStore,
    known: &Mutex<HashSet<ChunkDigest>>,
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
    blobs: &BufPool,
    data: &[u8],
) -> Stage {
    if is_all_zero(data) {
        return Stage::Done(Ok(Outcome::Zero));
    }
    // The chunk was copied on the reading thread: fetch its lines before the hash needs them.
    crate::digest::warm(data);
    let digest = store.codec().chunk_id(data);
    // Claim the digest; a second occurrence in this generation is known without touching disk.
    // If storing it fails, the claim is dropped again (and the ingest fails).
    if !lock(known).insert(digest) {
        return Stage::Done(Ok(Outcome::Known(digest)));
    }
    match store.touch(&digest) {
        Ok(true) => Stage::Done(Ok(Outcome::Known(digest))),
        Ok(false) => {
            let mut out = blobs.get(0);
            let blob = match compressor {
                Some(c) => store
                    .codec()
                    .encode_into(c, BlobKind::Chunk, data, &mut out)
                    .map(|()| out),
                None => store.codec().try_encode(BlobKind::Chunk, data).map(|b| {
                    out.resize(b.len());
                    out.copy_from_slice(&b);
                    out
                }),
            };
            match blob {
                Ok(blob) => Stage::Store { digest, blob },
                Err(e) => {
                    lock(known).remove(&digest);
                    Stage::Done(Err(e))
                }
            }
        }
        Err(e) => {
            lock(known).remove(&digest);
            Stage::Done(Err(e))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned set is still a valid set: entries are only added after a full check.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_out_and_merge() {
        let cs = 1024;
        let r = chunk_ranges(
            &[
                Area::new(5000, 10),
                Area::new(0, 1),
                Area::new(1023, 2),
                Area::new(5100, 2000),
            ],
            10_000,
            cs,
        )
        .unwrap();
        assert_eq!(r, vec![(0, 2), (4, 7)]);
        assert!(chunk_ranges(&[Area::new(9_999, 2)], 10_000, cs).is_err());
        assert!(chunk_ranges(&[Area::new(u64::MAX, 2)], 10_000, cs).is_err());
        assert_eq!(
            chunk_ranges(&[Area::new(10_000, 0)], 10_000, cs).unwrap(),
            vec![]
        );
        assert_eq!(
            chunk_ranges(&[Area::new(9_500, 500)], 10_000, cs).unwrap(),
            vec![(9, 10)]
        );
    }
}

#[cfg(test)]
mod tuning_tests {
    use super::*;

    #[test]
    fn buffers_fit_the_budget_for_large_chunks() {
        for shift in 16..=24 {
            let cs = 1u32 << shift;
            let t = IngestTuning::for_chunk_size(cs);
            assert!(t.buffers > t.workers + t.writers, "{t:?}");
            assert!(t.min_buffers >= 1 && t.min_buffers <= t.buffers, "{t:?}");
            let worst = (t.buffers + t.workers + 2 * t.writers) as u64 * cs as u64;
            if cs >= 1 << 20 {
                assert!(
                    worst <= 256 << 20,
                    "chunk {cs}: {t:?} may hold {worst} bytes"
                );
            }
        }
    }
}

#[cfg(test)]
mod slots_tests {
    use super::*;

    const CS: u32 = 1 << 20;

    fn tuning(min: usize, max: usize) -> IngestTuning {
        IngestTuning {
            workers: 2,
            writers: 2,
            buffers: max,
            min_buffers: min,
        }
    }

    #[test]
    fn an_ingest_grows_to_its_buffers_when_the_budget_has_room() {
        let budget = MemoryBudget::new(1 << 30);
        let t = tuning(3, 8);
        let mut slots = ChunkSlots::reserve(&budget, &t, CS, 0);
        assert_eq!(budget.in_use(), t.min_bytes(CS));
        let taken: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken.len(), 8);
        assert_eq!(budget.in_use(), t.max_bytes(CS));
        for b in taken {
            slots.give_back(b);
        }
        // Nobody waits: the buffers stay for the next reads.
        assert_eq!(budget.in_use(), t.max_bytes(CS));
        drop(slots);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn an_ingest_stops_growing_at_the_limit() {
        let t = tuning(3, 8);
        let budget = MemoryBudget::new(t.min_bytes(CS) + 2 * slot_bytes(CS));
        let mut slots = ChunkSlots::reserve(&budget, &t, CS, 0);
        let taken: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken.len(), 5);
        assert!(budget.in_use() <= budget.limit());
    }

    /// Another ingest asking `budget` for `wanted` bytes, returned once it waits for them; it
    /// answers the bytes it got.
    fn another_ingest_waits(
        budget: &Arc<MemoryBudget>,
        wanted: u64,
    ) -> std::thread::JoinHandle<u64> {
        let other = Arc::clone(budget);
        let waiter = std::thread::spawn(move || other.reserve(wanted).bytes());
        while !budget.has_waiters() {
            std::thread::yield_now();
        }
        waiter
    }

    #[test]
    fn extra_buffers_go_back_while_another_ingest_waits() {
        let t = tuning(2, 6);
        let budget = MemoryBudget::new(t.max_bytes(CS));
        let mut slots = ChunkSlots::reserve(&budget, &t, CS, 0);
        let taken: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken.len(), 6);
        // The waiter needs every extra buffer back.
        let wanted = t.max_bytes(CS) - t.min_bytes(CS);
        let waiter = another_ingest_waits(&budget, wanted);
        // Returned buffers beyond the minimum are freed until the waiter fits.
        for b in taken {
            slots.give_back(b);
        }
        assert_eq!(waiter.join().unwrap(), wanted);
        assert_eq!(slots.paid, 2);
        // The minimum stays: the ingest keeps going with its own buffers.
        assert!(slots.take().is_some() && slots.take().is_some());
    }

    /// The blob pool holds, in use and spare together, no more blobs than the ingest's paid
    /// slots: also after slots go back to another ingest.
    #[test]
    fn the_blob_pool_follows_the_paid_slots() {
        let t = tuning(2, 6);
        let budget = MemoryBudget::new(t.max_bytes(CS));
        let blobs = BufPool::bounded(usize::MAX, 0);
        let mut slots = ChunkSlots::reserve(&budget, &t, CS, 0).with_blobs(blobs.clone());
        let taken: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(taken.len(), 6);
        // Every slot in flight, each with a blob being written; they stay for the next ones.
        drop((0..6).map(|_| blobs.get(100)).collect::<Vec<_>>());
        assert_eq!(blobs.spare(), 6);
        // Another ingest waits: the extra slots go back, and their blobs with them.
        let wanted = t.max_bytes(CS) - t.min_bytes(CS);
        let waiter = another_ingest_waits(&budget, wanted);
        for b in taken {
            slots.give_back(b);
        }
        assert_eq!(waiter.join().unwrap(), wanted);
        assert_eq!(slots.paid, 2);
        assert_eq!(blobs.spare(), 2);
        // Three blobs at once are made when asked for; only two stay.
        drop((blobs.get(1), blobs.get(1), blobs.get(1)));
        assert_eq!(blobs.spare(), 2);
    }
}

#[cfg(test)]
mod chunk_reads_tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn chunk_reads_covers_touched_chunks_and_cuts_the_last_one() {
        // 2.5 chunks of 1 MiB; one area in chunk 0 and one spanning into the short tail.
        let capacity = 2 * MIB + MIB / 2;
        let areas = [Area::new(4096, 4096), Area::new(2 * MIB - 512, 1024)];
        let plan = chunk_reads(&areas, capacity, MIB as u32).unwrap();
        assert_eq!(
            plan,
            vec![
                (0, MIB as usize),
                (MIB, MIB as usize),
                (2 * MIB, (MIB / 2) as usize)
            ]
        );
    }

    #[test]
    fn chunk_reads_refuses_an_area_past_the_end() {
        assert!(chunk_reads(&[Area::new(3 * MIB, 2 * MIB)], 4 * MIB, MIB as u32).is_err());
    }

    #[test]
    fn chunk_reads_of_no_areas_reads_nothing() {
        assert!(chunk_reads(&[], 4 * MIB, MIB as u32).unwrap().is_empty());
    }
}
