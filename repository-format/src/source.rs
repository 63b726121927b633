//! Ready-made [`DiskSource`]s: a file (or block device) and a byte vector.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::SourceError;
use crate::ingest::DiskSource;

/// A disk image file or block device read with `pread`.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    capacity: u64,
}

impl FileSource {
    /// Opens `path` read-only; its size is the capacity.
    ///
    /// # Errors
    /// The open or stat failure.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let capacity = file.metadata()?.len();
        Ok(Self { file, capacity })
    }
}

impl DiskSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(SourceError::from)
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// A disk held in memory (tests, examples).
#[derive(Debug, Clone)]
pub struct MemorySource {
    data: Vec<u8>,
}

impl MemorySource {
    /// A disk with exactly these bytes.
    pub fn new(data: Vec<u8>) -> Self {
        Self { data }
    }
}

impl DiskSource for MemorySource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        let start = usize::try_from(offset).map_err(|_| SourceError::new("offset too large"))?;
        let src = self
            .data
            .get(start..start + buf.len())
            .ok_or_else(|| SourceError::new(format!("read past the end at {offset}")))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
}
