//! Step 5 of a backup: a VDDK disk as the repository's [`DiskSource`]. VDDK calls block, so
//! the ingest runs on a blocking thread that owns its own connection and disk (VDDK handles are
//! used by one thread at a time). A stop request (Ctrl-C, SIGTERM) fails the next read, which
//! ends the ingest cleanly.

use repository_format::{DiskSource, SourceError};
use vddk::{Disk, SECTOR_SIZE};

use crate::cancel::Cancel;

/// Reads a VDDK disk for the ingest pipeline.
pub struct VddkSource {
    disk: Disk,
    capacity: u64,
    cancel: Cancel,
}

impl VddkSource {
    /// Wraps an open disk.
    pub fn new(disk: Disk, cancel: Cancel) -> VddkSource {
        let capacity = disk.info().capacity_sectors * SECTOR_SIZE;
        VddkSource {
            disk,
            capacity,
            cancel,
        }
    }
}

impl DiskSource for VddkSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        if self.cancel.is_cancelled() {
            return Err(SourceError::new("interrupted"));
        }
        let sector = SECTOR_SIZE;
        if offset % sector != 0 || buf.len() as u64 % sector != 0 {
            return Err(SourceError::new(format!(
                "read of {} bytes at {offset} is not sector-aligned",
                buf.len()
            )));
        }
        self.disk
            .read(offset / sector, buf)
            .map_err(|e| SourceError {
                message: format!("VDDK read of {} bytes at offset {offset}: {e}", buf.len()),
                cause: Some(Box::new(e)),
            })
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}
