//! The last step of a restore: chunks written into a new VM's disk through VDDK, with up to
//! `depth` asynchronous writes in flight (a synchronous write waits a network round trip), then
//! flushed. Every completion is checked; the first failure ends the restore.
//!
//! [`VddkSink::write_data`] leaves the all-zero [`HOLE_BLOCK`]s of a chunk unwritten: a new
//! thin disk already reads zeros there, so writing them would only cost bandwidth and
//! allocate space the source disk did not use.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use repository_format::digest::is_all_zero;
use vddk::{Disk, SharedBuffer, SECTOR_SIZE};

use crate::cancel::Cancel;
use crate::error::{Error, Result};

/// The granularity at which [`VddkSink::write_data`] skips zeros inside a chunk: 64 KiB, the
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

/// Writes chunks into an open VDDK disk.
pub struct VddkSink {
    disk: Disk,
    path: String,
    in_flight: usize,
    depth: usize,
    cancel: Option<Cancel>,
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
        }
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

    /// Writes the non-zero [`HOLE_BLOCK`]s of `data` (a whole number of sectors) at byte
    /// `offset`, for a disk that reads zeros where nothing was written (a new disk); returns
    /// the bytes written. Each run of data blocks is a write straight from `data`, which the
    /// writes share and release when the last completes: no run is copied, and a page-aligned
    /// buffer (a restored chunk's) reaches VDDK aligned.
    ///
    /// # Errors
    /// As [`VddkSink::write`].
    pub fn write_data<B>(&mut self, offset: u64, data: B) -> Result<u64>
    where
        B: AsRef<[u8]> + Send + Sync + 'static,
    {
        let runs = data_runs(data.as_ref());
        let data: SharedBuffer = Arc::new(data);
        let mut written = 0u64;
        for (start, end) in runs {
            self.submit(offset + start as u64, &data, start..end)?;
            written += (end - start) as u64;
        }
        Ok(written)
    }

    /// Writes `data` (a whole number of sectors) at byte `offset`.
    ///
    /// # Errors
    /// Misaligned data, or a VDDK failure of this or an earlier asynchronous write.
    pub fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        let len = data.len();
        self.submit(offset, &(Arc::new(data) as SharedBuffer), 0..len)
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
        let done = self
            .disk
            .wait_any(Duration::from_millis(200))
            .map_err(|e| self.error("wait for writes", 0, e))?;
        for c in done {
            self.in_flight = self.in_flight.saturating_sub(1);
            let offset = c.start_sector * SECTOR_SIZE;
            if let Err(e) = c.result {
                // Stop the writers sharing the token (the VM's other disks) at the failure
                // itself, not once this disk's other writes in flight have completed.
                if let Some(cancel) = &self.cancel {
                    cancel.cancel();
                }
                return Err(Error::vddk(
                    format!("write of {} bytes at {offset} to {}", c.len, self.path),
                    e.into(),
                ));
            }
        }
        Ok(())
    }

    /// Waits for every write and flushes the disk.
    ///
    /// # Errors
    /// The first failed write, or the flush.
    pub fn finish(mut self) -> Result<()> {
        while self.in_flight > 0 {
            self.collect()?;
        }
        self.disk
            .flush()
            .map_err(|e| Error::vddk(format!("flush {}", self.path), e))
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
