//! A generation's disk as an NBD block device: reads through the repository's cached,
//! verified reader; never writes.

use std::io;

use nbd_server::{BlockDevice, Extent};
use repository_format::CachedDiskReader;

/// The read-only export of one disk of one generation.
#[derive(Debug)]
pub struct RepositoryDisk {
    reader: CachedDiskReader,
}

impl RepositoryDisk {
    /// Wraps an open reader.
    pub fn new(reader: CachedDiskReader) -> RepositoryDisk {
        RepositoryDisk { reader }
    }

    /// The reader (for statistics).
    pub fn reader(&self) -> &CachedDiskReader {
        &self.reader
    }
}

/// A repository error as the I/O error a client sees; damaged or missing chunks are logged
/// here because the client only gets `EIO` and a short message.
pub(crate) fn to_io(e: repository_format::Error) -> io::Error {
    tracing::error!(error = %e, "a served read failed");
    match e {
        repository_format::Error::OutOfRange { .. } => {
            io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
        }
        other => io::Error::other(other.to_string()),
    }
}

impl BlockDevice for RepositoryDisk {
    fn size(&self) -> u64 {
        self.reader.capacity()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_at(offset, buf).map_err(to_io)
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(self
            .reader
            .extents(offset, len)
            .into_iter()
            .map(|e| Extent {
                len: e.len,
                hole: e.hole,
            })
            .collect())
    }
}
