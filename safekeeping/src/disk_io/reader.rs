//! Step 5 of a backup: a VDDK disk as the repository's [`DiskSource`]. VDDK calls block, so
//! the ingest runs on a blocking thread that owns its own connection and disk (VDDK handles are
//! used by one thread at a time). A stop request (Ctrl-C, SIGTERM) fails the next read, which
//! ends the ingest cleanly.
//!
//! Over the network every synchronous read waits a round trip; with a read plan (the chunks
//! the ingest will ask for, in order) the source keeps up to `depth` asynchronous reads in
//! flight ahead of the ingest, as VMware recommends for NBD transports.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use repository_format::{DiskSource, SourceError};
use vddk::{Disk, SECTOR_SIZE};

use crate::cancel::Cancel;

/// Reads a VDDK disk for the ingest pipeline.
pub struct VddkSource {
    disk: Disk,
    capacity: u64,
    cancel: Cancel,
    plan: VecDeque<(u64, usize)>,
    ready: HashMap<u64, Vec<u8>>,
    /// Buffers handed back by the ingest, reused for the next asynchronous reads (a fresh
    /// zeroed 1 MiB buffer per read costs page faults and a memset for nothing).
    spare: Vec<Vec<u8>>,
    in_flight: usize,
    depth: usize,
}

impl VddkSource {
    /// Wraps an open disk; every read is synchronous.
    pub fn new(disk: Disk, cancel: Cancel) -> VddkSource {
        let capacity = disk.info().capacity_sectors * SECTOR_SIZE;
        VddkSource {
            disk,
            capacity,
            cancel,
            plan: VecDeque::new(),
            ready: HashMap::new(),
            spare: Vec::new(),
            in_flight: 0,
            depth: 0,
        }
    }

    /// Reads ahead: `reads` are the `(offset, length)` the ingest will ask for, in order; up to
    /// `depth` of them are kept in flight. A read outside the plan is still served
    /// (synchronously).
    pub fn with_read_ahead(mut self, reads: Vec<(u64, usize)>, depth: usize) -> VddkSource {
        self.plan = reads.into();
        self.depth = depth;
        self
    }

    fn submit_ahead(&mut self) -> Result<(), SourceError> {
        // After a stop request nothing new is asked of VDDK; the next read is refused. Reads
        // done out of order count too: the source never holds more than `depth` reads.
        while self.in_flight + self.ready.len() < self.depth && !self.cancel.is_cancelled() {
            let Some((offset, len)) = self.plan.pop_front() else {
                break;
            };
            let mut buffer = self.spare.pop().unwrap_or_default();
            // Every byte is overwritten by the read; resizing only zeroes a buffer's growth.
            buffer.resize(len, 0);
            self.disk
                .read_async(offset / SECTOR_SIZE, buffer)
                .map_err(|e| vddk_error("asynchronous read", offset, len, e))?;
            self.in_flight += 1;
        }
        Ok(())
    }

    fn collect(&mut self) -> Result<(), SourceError> {
        for c in self
            .disk
            .wait_any(Duration::from_millis(200))
            .map_err(|e| vddk_error("wait for reads", 0, 0, e))?
        {
            self.in_flight = self.in_flight.saturating_sub(1);
            let offset = c.start_sector * SECTOR_SIZE;
            c.result.map_err(|e| SourceError {
                message: format!(
                    "VDDK read of {} bytes at offset {offset}: {e}",
                    c.buffer.len()
                ),
                cause: Some(Box::new(e)),
            })?;
            self.ready.insert(offset, c.buffer);
        }
        Ok(())
    }

    fn read_sync(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.disk
            .read(offset / SECTOR_SIZE, buf)
            .map_err(|e| vddk_error("read", offset, buf.len(), e))
    }
}

fn vddk_error(what: &str, offset: u64, len: usize, e: vddk::Error) -> SourceError {
    SourceError {
        message: format!("VDDK {what} of {len} bytes at offset {offset}: {e}"),
        cause: Some(Box::new(e)),
    }
}

impl VddkSource {
    /// Waits for the planned read at `offset` of `len` bytes and returns its buffer; `None`
    /// when it is not in flight (not planned, or planned with another length).
    fn take_ahead(&mut self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, SourceError> {
        self.submit_ahead()?;
        loop {
            if let Some(data) = self.ready.remove(&offset) {
                if data.len() == len {
                    return Ok(Some(data));
                }
                self.spare.push(data);
            }
            if self.cancel.is_cancelled() {
                return Err(SourceError::new("interrupted"));
            }
            if self.in_flight == 0 {
                return Ok(None);
            }
            self.collect()?;
        }
    }

    fn check_read(&self, offset: u64, len: usize) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::new("interrupted"));
        }
        if offset % SECTOR_SIZE != 0 || len as u64 % SECTOR_SIZE != 0 {
            return Err(SourceError::new(format!(
                "read of {len} bytes at {offset} is not sector-aligned"
            )));
        }
        Ok(())
    }
}

impl DiskSource for VddkSource {
    fn buffers_held(&self) -> usize {
        // `depth` reads in flight or done, and the caller's buffer kept for the next read.
        if self.depth == 0 {
            0
        } else {
            self.depth + 1
        }
    }

    fn read_owned(&mut self, offset: u64, buf: &mut Vec<u8>) -> Result<(), SourceError> {
        self.check_read(offset, buf.len())?;
        if self.depth == 0 {
            return self.read_sync(offset, buf);
        }
        match self.take_ahead(offset, buf.len())? {
            Some(data) => {
                // Hand the read's buffer over and keep the caller's for a later read: no copy.
                let old = std::mem::replace(buf, data);
                self.spare.push(old);
                self.submit_ahead()
            }
            None => self.read_sync(offset, buf),
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.check_read(offset, buf.len())?;
        if self.depth == 0 {
            return self.read_sync(offset, buf);
        }
        match self.take_ahead(offset, buf.len())? {
            Some(data) => {
                buf.copy_from_slice(&data);
                self.spare.push(data);
                self.submit_ahead()
            }
            // Not in the plan (or planned with another length): read it directly.
            None => self.read_sync(offset, buf),
        }
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
