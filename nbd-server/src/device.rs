//! What an export is backed by.

use std::io;

/// A run of bytes with one allocation state, as `NBD_CMD_BLOCK_STATUS` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes (never 0).
    pub len: u64,
    /// Not stored: reads as zeros and costs nothing (`NBD_STATE_HOLE | NBD_STATE_ZERO`).
    pub hole: bool,
}

/// A disk the server exports. The methods block (they read a repository or a file); the
/// server calls them from `tokio::task::spawn_blocking`, several at once, so implementations
/// are `Sync`.
///
/// Errors are `io::Error`s; the server maps their kind to the NBD error value
/// (`PermissionDenied` → `EPERM`, `InvalidInput` → `EINVAL`, `StorageFull` → `ENOSPC`,
/// `Unsupported` → `ENOTSUP`, anything else → `EIO`) and sends the message to clients that
/// negotiated structured replies.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Whether writes, trims and write-zeroes are accepted.
    fn writable(&self) -> bool {
        false
    }

    /// Fills `buf` from `offset` (the server checks the range first).
    ///
    /// # Errors
    /// When the data cannot be read or verified.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The allocation of `len` bytes from `offset`, in order, covering at least the first
    /// byte. The default says everything is data.
    ///
    /// # Errors
    /// When the map cannot be read.
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let _ = offset;
        Ok(vec![Extent { len, hole: false }])
    }

    /// Writes `data` at `offset`; `fua` asks for it to be durable before the reply.
    ///
    /// # Errors
    /// Read-only devices refuse with `PermissionDenied`.
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let _ = (offset, data, fua);
        Err(read_only())
    }

    /// Makes `len` bytes from `offset` read as zeros.
    ///
    /// # Errors
    /// Read-only devices refuse with `PermissionDenied`.
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let _ = (offset, len, fua);
        Err(read_only())
    }

    /// Discards `len` bytes from `offset`; they read as zeros afterwards.
    ///
    /// # Errors
    /// Read-only devices refuse with `PermissionDenied`.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(read_only())
    }

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// When the backing store cannot be synced.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "the export is read-only")
}

/// The NBD error value for an I/O error.
pub fn errno_of(e: &io::Error) -> u32 {
    use crate::protocol::errno;
    match e.kind() {
        io::ErrorKind::PermissionDenied => errno::EPERM,
        io::ErrorKind::InvalidInput => errno::EINVAL,
        io::ErrorKind::StorageFull => errno::ENOSPC,
        io::ErrorKind::Unsupported => errno::ENOTSUP,
        io::ErrorKind::OutOfMemory => errno::ENOMEM,
        _ => errno::EIO,
    }
}
