//! The last step of a restore: chunks written into a new VM's disk through VDDK, with up to
//! `depth` asynchronous writes in flight (a synchronous write waits a network round trip), then
//! flushed. Every completion is checked; the first failure ends the restore.
//!
//! [`VddkSink::write_data_at`] leaves the all-zero [`HOLE_BLOCK`]s of a chunk unwritten: a new
//! thin disk already reads zeros there, so writing them would only cost bandwidth and
//! allocate space the source disk did not use. The runs of data that remain are gathered
//! with their neighbours into writes of up to [`GATHER_BYTES`], in up to [`GATHERS`] places
//! of the disk at once (by default; see [`Gathering`]).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use repository_format::digest::is_all_zero;
use repository_format::{AlignedBuf, BufPool};
use vddk::{Disk, SharedBuffer, SECTOR_SIZE};

use crate::cancel::Cancel;
use crate::error::{Error, Result};

/// The granularity at which [`VddkSink::write_data_at`] skips zeros inside a chunk: 64 KiB, the
/// sub-block VMFS allocates a thin disk in, so a skipped block is one the restored disk does
/// not allocate, and the writes that remain stay large.
pub const HOLE_BLOCK: usize = 64 * 1024;

/// The byte ranges of `data` to write: every [`HOLE_BLOCK`]-aligned block holding a non-zero
/// byte, adjacent blocks merged into one range, in order. Empty when `data` is all zero.
pub fn data_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        if is_all_zero(block) {
            continue;
        }
        let start = i * HOLE_BLOCK;
        let end = start + block.len();
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

/// The largest write [`VddkSink::write_data_at`] gathers from adjacent runs of data: 4 MiB.
/// A restore's runs are a chunk's data between 64 KiB zero blocks, often a few hundred KiB;
/// one large write costs a transport one request instead of many (an NBD round trip each),
/// and storage that writes a thin disk's new blocks one request at a time takes larger ones
/// faster (this machine's disk: 1.8 GB/s in 4 MiB direct writes, 1.2 GB/s in 1 MiB ones).
pub const GATHER_BYTES: usize = 4 << 20;

/// Gathered writes open at once: the disk in order, and the copies of duplicated chunks,
/// which recur in runs (a duplicate file's chunks follow each other in both places).
pub const GATHERS: usize = 4;

/// How a sink gathers runs of data into writes: how many it builds at once and how large each
/// may grow. Smaller for a disk that shares the run's memory with others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathering {
    /// Writes being built at once (at least one).
    pub writes: usize,
    /// The largest gathered write; a longer run is written as it is.
    pub bytes: usize,
}

impl Gathering {
    /// [`GATHERS`] writes of up to [`GATHER_BYTES`].
    pub const DEFAULT: Gathering = Gathering {
        writes: GATHERS,
        bytes: GATHER_BYTES,
    };

    /// The most memory a sink with `depth` writes in flight holds in gather buffers: those
    /// being built, those in flight, and one spare, each with its alignment slack.
    pub fn memory_bytes(&self, depth: usize) -> u64 {
        let each = repository_format::aligned_buf::footprint(self.bytes);
        ((self.writes.max(1) + depth + 1) * each) as u64
    }
}

/// Adjacent runs copied into one buffer, to be written as one request.
struct Gather {
    /// Disk byte offset of the buffer's first byte.
    offset: u64,
    buf: AlignedBuf,
    /// When a run was last appended (the sink's clock): the least recent goes first.
    used: u64,
}

impl Gather {
    /// The disk byte offset just past the gathered bytes.
    fn end(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Whether `len` more bytes fit, within `max` and without a reallocation.
    fn fits(&self, len: usize, max: usize) -> bool {
        self.buf.len() + len <= max.min(self.buf.capacity())
    }
}

/// Writes chunks into an open VDDK disk.
pub struct VddkSink {
    disk: Disk,
    path: String,
    in_flight: usize,
    depth: usize,
    cancel: Option<Cancel>,
    /// Runs gathered so far, not yet submitted (at most `gathering.writes`).
    gathers: Vec<Gather>,
    gathering: Gathering,
    /// Counts appended runs, to find the least recently extended gather.
    gather_clock: u64,
    /// Gather buffers, back from their completed writes.
    pool: BufPool,
}

impl VddkSink {
    /// Wraps a disk opened read-write; `depth` 0 writes synchronously.
    pub fn new(disk: Disk, path: impl Into<String>, depth: usize) -> VddkSink {
        VddkSink {
            disk,
            path: path.into(),
            in_flight: 0,
            depth,
            cancel: None,
            gathers: Vec::new(),
            gathering: Gathering::DEFAULT,
            gather_clock: 0,
            pool: Self::gather_pool(depth, Gathering::DEFAULT),
        }
    }

    /// Gathers as `gathering` says instead of [`Gathering::DEFAULT`].
    pub fn with_gathering(mut self, gathering: Gathering) -> VddkSink {
        let gathering = Gathering {
            writes: gathering.writes.max(1),
            bytes: gathering.bytes.max(SECTOR_SIZE as usize),
        };
        self.pool = Self::gather_pool(self.depth, gathering);
        self.gathering = gathering;
        self
    }

    /// One buffer per write in flight, those being filled, and one spare.
    fn gather_pool(depth: usize, gathering: Gathering) -> BufPool {
        BufPool::new(depth + gathering.writes + 1, gathering.bytes)
    }

    /// Stops submitting writes once `cancel` fires: a write waiting for room in flight then
    /// fails with [`Error::Interrupted`] instead of submitting. A failed write fires `cancel`
    /// itself, so every sink sharing it stops.
    pub fn with_cancel(mut self, cancel: Cancel) -> VddkSink {
        self.cancel = Some(cancel);
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Writes the non-zero [`HOLE_BLOCK`]s of `data` (a whole number of sectors) at each of
    /// the byte `offsets` (one chunk, and the other places the disk holds it), for a disk that
    /// reads zeros where nothing was written (a new disk); returns the bytes written over all
    /// offsets. The zero blocks are found once. A run of data blocks shorter than the
    /// gathering's largest write is copied into the gathered write it continues (or a new
    /// one); a longer run is a write straight from `data`, which the writes share and release
    /// when the last completes, so a page-aligned buffer (a restored chunk's) reaches VDDK
    /// aligned. Gathered writes are page-aligned too.
    ///
    /// # Errors
    /// Misaligned data, or a VDDK failure of this or an earlier asynchronous write.
    pub fn write_data_at<B>(&mut self, offsets: &[u64], data: B) -> Result<u64>
    where
        B: AsRef<[u8]> + Send + Sync + 'static,
    {
        let runs = data_runs(data.as_ref());
        let mut written = 0u64;
        let mut direct = Vec::new();
        for &offset in offsets {
            for &(start, end) in &runs {
                let len = end - start;
                written += len as u64;
                if len >= self.gathering.bytes || self.depth == 0 {
                    direct.push((offset, start, end));
                } else {
                    self.gather_run(offset + start as u64, &data.as_ref()[start..end])?;
                }
            }
        }
        if !direct.is_empty() {
            let data: SharedBuffer = Arc::new(data);
            for (offset, start, end) in direct {
                self.submit(offset + start as u64, &data, start..end)?;
            }
        }
        Ok(written)
    }

    /// Appends `bytes` (for disk byte `offset`) to the gathered write it continues, when it
    /// fits; otherwise submits that write, or the least recently extended one when all
    /// `gathering.writes` are open, and starts a new one with `bytes`.
    fn gather_run(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.gather_clock += 1;
        let next = self.gathers.iter().position(|g| g.end() == offset);
        let at = match next {
            Some(i) if self.gathers[i].fits(bytes.len(), self.gathering.bytes) => i,
            _ => {
                let full = match next {
                    Some(i) => Some(i),
                    None if self.gathers.len() >= self.gathering.writes => self
                        .gathers
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, g)| g.used)
                        .map(|(i, _)| i),
                    None => None,
                };
                if let Some(i) = full {
                    let g = self.gathers.swap_remove(i);
                    self.submit_gather(g)?;
                }
                self.gathers.push(Gather {
                    offset,
                    buf: self.pool.get(0),
                    used: 0,
                });
                self.gathers.len() - 1
            }
        };
        let g = &mut self.gathers[at];
        g.used = self.gather_clock;
        let len = g.buf.len();
        if !g.fits(bytes.len(), self.gathering.bytes) {
            // Only a run longer than the pool's buffers (never, below GATHER_BYTES) gets here:
            // a resize past the capacity would reallocate and lose the gathered bytes.
            return Err(Error::Other(format!(
                "a run of {} bytes does not fit a gathered write",
                bytes.len()
            )));
        }
        g.buf.resize(len + bytes.len());
        g.buf[len..].copy_from_slice(bytes);
        Ok(())
    }

    /// Submits a gathered write.
    fn submit_gather(&mut self, g: Gather) -> Result<()> {
        let len = g.buf.len();
        self.submit(g.offset, &(Arc::new(g.buf) as SharedBuffer), 0..len)
    }

    /// Writes `range` of `data` (a whole number of sectors) at byte `offset`: synchronously
    /// at depth 0, else as an asynchronous write holding a handle to `data`.
    fn submit(&mut self, offset: u64, data: &SharedBuffer, range: Range<usize>) -> Result<()> {
        let len = range.len();
        if offset % SECTOR_SIZE != 0 || len as u64 % SECTOR_SIZE != 0 {
            return Err(Error::Other(format!(
                "write of {len} bytes at {offset} to {} is not sector-aligned",
                self.path
            )));
        }
        if self.depth == 0 {
            let bytes = (**data).as_ref().get(range).ok_or_else(|| {
                Error::Other(format!("write of {len} bytes past the end of its buffer"))
            })?;
            return self
                .disk
                .write(offset / SECTOR_SIZE, bytes)
                .map_err(|e| self.error("write", offset, e));
        }
        while self.in_flight >= self.depth {
            self.collect()?;
        }
        if self.cancelled() {
            return Err(Error::Interrupted);
        }
        self.disk
            .write_async_shared(offset / SECTOR_SIZE, data.clone(), range)
            .map_err(|e| self.error("asynchronous write", offset, e))?;
        self.in_flight += 1;
        Ok(())
    }

    fn collect(&mut self) -> Result<()> {
        let done = match self.disk.wait_any(Duration::from_millis(200)) {
            Ok(done) => done,
            Err(e) => {
                // As for a failed write: this disk's restore is over, so its siblings stop too.
                self.cancel_siblings();
                return Err(self.error("wait for writes", 0, e));
            }
        };
        for c in done {
            self.in_flight = self.in_flight.saturating_sub(1);
            let offset = c.start_sector * SECTOR_SIZE;
            if let Err(e) = c.result {
                // Stop the writers sharing the token (the VM's other disks) at the failure
                // itself, not once this disk's other writes in flight have completed.
                self.cancel_siblings();
                return Err(Error::vddk(
                    format!("write of {} bytes at {offset} to {}", c.len, self.path),
                    e.into(),
                ));
            }
        }
        Ok(())
    }

    /// Waits for every write, flushes the disk and closes it.
    ///
    /// The close is checked too: VDDK may report there what it could not write back (a
    /// transport's last buffered writes), and a restore that reported success over a failed
    /// close would leave a disk nobody knows to be incomplete.
    ///
    /// # Errors
    /// The first failed write, the flush, or the close.
    pub fn finish(mut self) -> Result<()> {
        while let Some(g) = self.gathers.pop() {
            self.submit_gather(g)?;
        }
        while self.in_flight > 0 {
            self.collect()?;
        }
        self.disk
            .flush()
            .map_err(|e| Error::vddk(format!("flush {}", self.path), e))?;
        let Self { disk, path, .. } = self;
        disk.close()
            .map_err(|e| Error::vddk(format!("close {path}"), e))
    }

    /// Fires the cancel token shared with the other disks of the same restore, if any.
    fn cancel_siblings(&self) {
        if let Some(cancel) = &self.cancel {
            cancel.cancel();
        }
    }

    fn error(&self, what: &str, offset: u64, e: vddk::Error) -> Error {
        Error::vddk(format!("{what} at {offset} to {}", self.path), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_left_out_and_data_blocks_merged() {
        let mut chunk = vec![0u8; 16 * HOLE_BLOCK];
        // Block 0: one byte at its end; blocks 1-2: data; 3-5 zero; block 6: its first byte;
        // block 15 (the last): data.
        chunk[HOLE_BLOCK - 1] = 1;
        chunk[HOLE_BLOCK..3 * HOLE_BLOCK].fill(7);
        chunk[6 * HOLE_BLOCK] = 9;
        chunk[15 * HOLE_BLOCK + 100] = 3;
        assert_eq!(
            data_runs(&chunk),
            vec![
                (0, 3 * HOLE_BLOCK),
                (6 * HOLE_BLOCK, 7 * HOLE_BLOCK),
                (15 * HOLE_BLOCK, 16 * HOLE_BLOCK)
            ]
        );
    }

    #[test]
    fn an_all_zero_chunk_has_no_runs_and_a_full_one_has_one() {
        assert!(data_runs(&vec![0u8; 4 * HOLE_BLOCK]).is_empty());
        let full = vec![1u8; 4 * HOLE_BLOCK];
        assert_eq!(data_runs(&full), vec![(0, 4 * HOLE_BLOCK)]);
    }

    #[test]
    fn a_short_last_block_ends_the_run_at_the_data_end() {
        // The disk's last chunk may be shorter than a block multiple (whole sectors).
        let mut tail = vec![0u8; HOLE_BLOCK + 3 * 512];
        tail[HOLE_BLOCK + 512] = 5;
        assert_eq!(data_runs(&tail), vec![(HOLE_BLOCK, HOLE_BLOCK + 3 * 512)]);
    }
}
