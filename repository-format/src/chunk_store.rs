//! The chunk store: `chunks/<first 4 hex digits>/<64 hex digits>`, one `C` blob per chunk.
//!
//! Insertion is atomic (temp file, fsync, rename, fsync folder). Re-use of an existing chunk
//! *touches* it (sets its mtime to now, by path) and then stats it; garbage collection only
//! deletes chunks whose mtime is older than its cutoff, using a rename-recheck protocol
//! (see [`crate::gc`]) so a touch can never be lost.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::blob::{BlobError, BlobKind, Codec};
use crate::digest::ChunkDigest;
use crate::error::{io_err, Result};
use crate::format::{BLOB_HEADER_LEN, TEMP_PREFIX};
use crate::fsutil;

/// Folder at the repository root holding chunks that `check --repair` found damaged and moved
/// out of `chunks/` (`quarantine/<first 4 hex>/<64 hex>`). Never read by backup, restore or gc;
/// kept for forensic recovery and removed only by hand.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What is wrong with a chunk that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFault {
    /// The chunk file does not exist.
    #[error("missing")]
    Missing,
    /// The chunk file could not be read.
    #[error("unreadable: {0}")]
    Io(String),
    /// The envelope is damaged.
    #[error("{0}")]
    Blob(BlobError),
    /// The content does not hash to the chunk's name.
    #[error("content hashes to {0}")]
    DigestMismatch(ChunkDigest),
    /// The content has the wrong length for its position.
    #[error("content is {actual} bytes, expected {expected}")]
    Length {
        /// Bytes decoded.
        actual: usize,
        /// Bytes expected at this position.
        expected: usize,
    },
}

/// The folder of chunks of one repository.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    codec: Codec,
    chunk_size: u32,
}

impl ChunkStore {
    pub(crate) fn new(dir: PathBuf, codec: Codec, chunk_size: u32) -> Self {
        Self {
            dir,
            codec,
            chunk_size,
        }
    }

    /// The `chunks/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The codec used for chunk blobs.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Path of the chunk file for `digest`.
    pub fn path(&self, digest: &ChunkDigest) -> PathBuf {
        let hex = digest.to_hex();
        self.dir.join(&hex[..4]).join(hex)
    }

    /// Stores an encoded chunk blob under `digest` atomically; returns the bytes written.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the file.
    pub(crate) fn insert(&self, digest: &ChunkDigest, blob: &[u8]) -> Result<u64> {
        let hex = digest.to_hex();
        let sub = self.dir.join(&hex[..4]);
        match fs::metadata(&sub) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => match fs::create_dir(&sub) {
                Ok(()) => fsutil::sync_dir(&self.dir)?,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create folder", &sub)(e)),
            },
            Err(e) => return Err(io_err("stat", &sub)(e)),
        }
        fsutil::write_atomic(&sub, &hex, blob)?;
        Ok(blob.len() as u64)
    }

    /// If the chunk exists, marks it as in use now (mtime, set by path) and returns true.
    /// The set-then-stat order is what makes concurrent garbage collection safe.
    ///
    /// # Errors
    /// [`crate::Error::Io`] for failures other than "not found".
    pub(crate) fn touch(&self, digest: &ChunkDigest) -> Result<bool> {
        let path = self.path(digest);
        match filetime::set_file_mtime(&path, filetime::FileTime::now()) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("touch", &path)(e)),
        }
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len() >= BLOB_HEADER_LEN as u64),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    /// The `quarantine/` folder beside `chunks/`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir
            .parent()
            .map_or_else(|| PathBuf::from(QUARANTINE_DIR), |p| p.join(QUARANTINE_DIR))
    }

    /// Moves the chunk file of `digest` out of `chunks/` to
    /// `quarantine/<first 4 hex>/<64 hex>` (or `<64 hex>.N` if a chunk of that name was
    /// quarantined before: an earlier copy is never replaced), then fsyncs both folders. Once it
    /// is gone from `chunks/`, the next ingest of the same data finds it absent and stores a
    /// good copy. Returns the new path. The caller holds the exclusive repository lock.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the file or folder.
    pub(crate) fn quarantine(&self, digest: &ChunkDigest) -> Result<PathBuf> {
        let from = self.path(digest);
        let hex = digest.to_hex();
        let qroot = self.quarantine_dir();
        let sub = qroot.join(&hex[..4]);
        fsutil::create_dir_durable(&qroot)?;
        fsutil::create_dir_durable(&sub)?;
        let mut to = sub.join(&hex);
        let mut n = 1u32;
        while fs::symlink_metadata(&to).is_ok() {
            to = sub.join(format!("{hex}.{n}"));
            n += 1;
        }
        fs::rename(&from, &to).map_err(io_err("move to quarantine", &from))?;
        fsutil::sync_dir(&sub)?;
        fsutil::sync_dir(from.parent().unwrap_or(&self.dir))?;
        Ok(to)
    }

    /// The largest chunk blob: a full chunk stored uncompressed, plus the header and, when
    /// encrypted, the nonce and tag.
    fn max_blob_len(&self) -> usize {
        let crypto = if self.codec.key().is_some() {
            crate::key::NONCE_LEN + crate::key::TAG_LEN
        } else {
            0
        };
        self.chunk_size as usize + BLOB_HEADER_LEN + crypto
    }

    /// Reads, decodes and verifies a chunk that must hold `expected_len` bytes.
    pub fn load(&self, digest: &ChunkDigest, expected_len: usize) -> Result<Vec<u8>, ChunkFault> {
        let path = self.path(digest);
        let limit = self.max_blob_len();
        let bytes = match read_bounded(&path, limit as u64) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(ChunkFault::Missing),
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return Err(ChunkFault::Blob(BlobError::TooLarge { limit }))
            }
            Err(e) => return Err(ChunkFault::Io(e.to_string())),
        };
        let data = self
            .codec
            .decode(BlobKind::Chunk, &bytes, self.chunk_size as usize)
            .map_err(ChunkFault::Blob)?;
        if data.len() != expected_len {
            return Err(ChunkFault::Length {
                actual: data.len(),
                expected: expected_len,
            });
        }
        let actual = self.codec.chunk_id(&data);
        if actual != *digest {
            return Err(ChunkFault::DigestMismatch(actual));
        }
        Ok(data)
    }

    /// Every file under `chunks/`, classified.
    /// Visits every file under `chunks/`, classified, one prefix folder at a time (memory does
    /// not grow with the number of chunks).
    pub(crate) fn scan(&self, mut visit: impl FnMut(ChunkEntry) -> Result<()>) -> Result<()> {
        for (sub_name, sub) in fsutil::list_dir(&self.dir)? {
            let is_prefix = sub_name.len() == 4
                && sub_name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !is_prefix || !sub.is_dir() {
                visit(ChunkEntry::Foreign(sub))?;
                continue;
            }
            for (name, path) in fsutil::list_dir(&sub)? {
                let entry = if name.starts_with(TEMP_PREFIX) {
                    ChunkEntry::Temp(path)
                } else {
                    match ChunkDigest::from_hex(&name) {
                        Some(d) if name.starts_with(&sub_name) && name == d.to_hex() => {
                            ChunkEntry::Chunk(d, path)
                        }
                        _ => ChunkEntry::Foreign(path),
                    }
                };
                visit(entry)?;
            }
        }
        Ok(())
    }
}

/// Reads a file of at most `limit` bytes (a chunk blob is never larger than its chunk plus the
/// header, since compression is only kept when it shrinks); larger files are `InvalidData`.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = fs::File::open(path)?;
    let mut buf = Vec::with_capacity(f.metadata()?.len().min(limit) as usize);
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::new(ErrorKind::InvalidData, "too large"));
    }
    Ok(buf)
}

/// A file found under `chunks/`.
#[derive(Debug, Clone)]
pub(crate) enum ChunkEntry {
    /// A correctly named chunk file.
    Chunk(ChunkDigest, PathBuf),
    /// A leftover temporary file.
    Temp(PathBuf),
    /// Anything else.
    Foreign(PathBuf),
}
