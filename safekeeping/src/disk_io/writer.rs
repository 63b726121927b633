//! The last step of a restore: chunks written into a new VM's disk through VDDK, with up to
//! `depth` asynchronous writes in flight (a synchronous write waits a network round trip), then
//! flushed. Every completion is checked; the first failure ends the restore.

use std::time::Duration;

use vddk::{Disk, SECTOR_SIZE};

use crate::cancel::Cancel;
use crate::error::{Error, Result};

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
    /// fails with [`Error::Interrupted`] instead of submitting.
    pub fn with_cancel(mut self, cancel: Cancel) -> VddkSink {
        self.cancel = Some(cancel);
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Writes `data` (a whole number of sectors) at byte `offset`.
    ///
    /// # Errors
    /// Misaligned data, or a VDDK failure of this or an earlier asynchronous write.
    pub fn write(&mut self, offset: u64, data: Vec<u8>) -> Result<()> {
        if offset % SECTOR_SIZE != 0 || data.len() as u64 % SECTOR_SIZE != 0 {
            return Err(Error::Other(format!(
                "write of {} bytes at {offset} to {} is not sector-aligned",
                data.len(),
                self.path
            )));
        }
        if self.depth == 0 {
            return self
                .disk
                .write(offset / SECTOR_SIZE, &data)
                .map_err(|e| self.error("write", offset, e));
        }
        while self.in_flight >= self.depth {
            self.collect()?;
        }
        if self.cancelled() {
            return Err(Error::Interrupted);
        }
        self.disk
            .write_async(offset / SECTOR_SIZE, data)
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
            c.result.map_err(|e| {
                Error::vddk(
                    format!(
                        "write of {} bytes at {offset} to {}",
                        c.buffer.len(),
                        self.path
                    ),
                    e.into(),
                )
            })?;
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
