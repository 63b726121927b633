//! Checked reads of local files (public readers that take a path).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{io_err, Error, Result};

/// Reads a whole file, refusing files larger than `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let len = f.metadata().map_err(io_err("stat", path))?.len();
    if len > limit {
        return Err(Error::Blob {
            path: path.to_path_buf(),
            reason: crate::blob::BlobError::TooLarge {
                limit: limit as usize,
            },
        });
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    Ok(buf)
}
