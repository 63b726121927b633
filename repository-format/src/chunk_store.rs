//! The chunk store: `chunks/<first 4 hex digits>/<64 hex digits>`, one `C` blob per chunk.
//!
//! Insertion is an atomic put through the storage layer. Re-use of an existing chunk is checked
//! with [`crate::storage::Backend::touch`]: locally it sets the mtime to now and stats the file,
//! so garbage collection's rename-recheck sweep (see [`crate::gc`]) never loses a touch; on an
//! object store it is a HEAD, and the exclusive lock plus the commit's verification keep gc
//! away from chunks in use. On an object store with a valid chunk cache a chunk the cache does
//! not list is stored without a HEAD first (see `ChunkStore::touch`).

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;

use crate::aligned_buf::{AlignedBuf, BufPool};
use crate::blob::{BlobError, BlobKind, Codec, Decoded};
use crate::chunk_cache::ChunkCache;
use crate::digest::ChunkDigest;
use crate::error::{store_err, Result};
use crate::format::{BLOB_HEADER_LEN, CHUNKS_DIR, TEMP_PREFIX};
use crate::storage::Backend;

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

/// The chunks of one repository.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    backend: Arc<dyn Backend>,
    codec: Codec,
    chunk_size: u32,
    /// Known chunk ids of an object store (see [`crate::chunk_cache`]).
    cache: Option<Arc<ChunkCache>>,
}

impl ChunkStore {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        codec: Codec,
        chunk_size: u32,
        cache: Option<Arc<ChunkCache>>,
    ) -> Self {
        Self {
            backend,
            codec,
            chunk_size,
            cache,
        }
    }

    pub(crate) fn cache(&self) -> Option<&ChunkCache> {
        self.cache.as_deref()
    }

    /// The `chunks/` folder (its display path for an object store).
    pub fn dir(&self) -> PathBuf {
        self.backend.display_path(CHUNKS_DIR)
    }

    /// The codec used for chunk blobs.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The same store writing new chunks compressed at zstd `level` (a target's
    /// `compression_level`); reads are unaffected.
    pub fn with_compression_level(&self, level: i32) -> Self {
        Self {
            codec: self.codec.with_level(level),
            ..self.clone()
        }
    }

    /// Object key of the chunk `digest`: `chunks/<first 4 hex>/<64 hex>`.
    pub fn key(digest: &ChunkDigest) -> String {
        let hex = digest.to_hex();
        format!("{CHUNKS_DIR}/{}/{hex}", &hex[..4])
    }

    /// Path (display path for an object store) of the chunk for `digest`.
    pub fn path(&self, digest: &ChunkDigest) -> PathBuf {
        self.backend.display_path(&Self::key(digest))
    }

    /// Stores an encoded chunk blob under `digest` atomically; returns the bytes written.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the object.
    pub(crate) fn insert(&self, digest: &ChunkDigest, blob: &[u8]) -> Result<u64> {
        let key = Self::key(digest);
        self.backend
            .put(&key, blob)
            .map_err(store_err(self.backend.as_ref(), "write", &key))?;
        if let Some(c) = &self.cache {
            c.add(digest);
        }
        Ok(blob.len() as u64)
    }

    /// [`ChunkStore::insert`] for the ingest: the chunk has its name, durably, after the next
    /// [`ChunkStore::sync_names`], which the end of each disk's ingest and the generation's
    /// commit call (see [`Backend::put_name_deferred`]); before that it may not be found.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the object.
    pub(crate) fn insert_name_deferred(&self, digest: &ChunkDigest, blob: &[u8]) -> Result<u64> {
        let key = Self::key(digest);
        self.backend
            .put_name_deferred(&key, blob)
            .map_err(store_err(self.backend.as_ref(), "write", &key))?;
        if let Some(c) = &self.cache {
            c.add(digest);
        }
        Ok(blob.len() as u64)
    }

    /// Names, durably, the chunks stored with [`ChunkStore::insert_name_deferred`], and makes
    /// the names of those found by [`ChunkStore::touch`] durable; before anything relies on
    /// them (the next disk's checks, a commit).
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the chunk folder.
    pub(crate) fn sync_names(&self) -> Result<()> {
        self.backend
            .sync_names()
            .map_err(store_err(self.backend.as_ref(), "sync", CHUNKS_DIR))
    }

    /// If the chunk exists, marks it as in use now (locally: mtime, set by path) and returns
    /// true. The set-then-stat order is what makes concurrent local garbage collection safe.
    ///
    /// # Errors
    /// [`crate::Error::Io`] for failures other than "not found".
    pub(crate) fn touch(&self, digest: &ChunkDigest) -> Result<bool> {
        match self.cache.as_ref().and_then(|c| c.lookup(digest)) {
            Some(true) => return Ok(true),
            // A valid cache (a listing of the store plus what was stored since) that does not
            // list the chunk: no `HEAD` before the `PUT`. If another proxy stored the same
            // chunk since the listing, the `PUT` writes the same content under the same name
            // again (content addressing makes that harmless; under object lock it is a new
            // version with its own retention, the old one stays locked).
            Some(false) => return Ok(false),
            None => {}
        }
        let key = Self::key(digest);
        let present = self
            .backend
            .touch(&key, BLOB_HEADER_LEN as u64)
            .map_err(store_err(self.backend.as_ref(), "touch", &key))?;
        if present {
            if let Some(c) = &self.cache {
                c.add(digest);
            }
        }
        Ok(present)
    }

    /// Like [`ChunkStore::exists`], but answered by the cache of known chunks when it lists
    /// the chunk (for chunks an incremental inherits from its committed parent).
    pub(crate) fn exists_cached(&self, digest: &ChunkDigest) -> Result<bool> {
        if self.cache.as_ref().is_some_and(|c| c.contains(digest)) {
            return Ok(true);
        }
        self.exists(digest)
    }

    /// Whether the chunk exists (a stat or HEAD; nothing is read).
    ///
    /// # Errors
    /// [`crate::Error::Io`] for failures other than "not found".
    pub(crate) fn exists(&self, digest: &ChunkDigest) -> Result<bool> {
        let key = Self::key(digest);
        Ok(self
            .backend
            .head(&key)
            .map_err(store_err(self.backend.as_ref(), "stat", &key))?
            .is_some_and(|i| i.size >= BLOB_HEADER_LEN as u64))
    }

    /// The `quarantine/` folder beside `chunks/`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.backend.display_path(QUARANTINE_DIR)
    }

    /// Moves the chunk of `digest` out of `chunks/` to `quarantine/<first 4 hex>/<64 hex>`
    /// (or `<64 hex>.N` if a chunk of that name was quarantined before: an earlier copy is
    /// never replaced). Once it is gone from `chunks/`, the next ingest of the same data finds
    /// it absent and stores a good copy. Returns the new path. The caller holds the exclusive
    /// repository lock.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the object.
    pub(crate) fn quarantine(&self, digest: &ChunkDigest) -> Result<PathBuf> {
        let from = Self::key(digest);
        let hex = digest.to_hex();
        let be = self.backend.as_ref();
        let mut n = 0u32;
        loop {
            let to = if n == 0 {
                format!("{QUARANTINE_DIR}/{}/{hex}", &hex[..4])
            } else {
                format!("{QUARANTINE_DIR}/{}/{hex}.{n}", &hex[..4])
            };
            // Damaged chunks may be larger than a good one; allow for that when copying.
            match be.move_new(&from, &to, self.max_blob_len() as u64 * 4 + (1 << 20)) {
                Ok(()) => return Ok(be.display_path(&to)),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(store_err(be, "move to quarantine", &from)(e)),
            }
        }
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
        let limit = self.max_blob_len();
        let bytes = match self.backend.get(&Self::key(digest), limit as u64) {
            Ok(b) => b,
            Err(e) => return Err(read_fault(e, limit)),
        };
        let data = self
            .codec
            .decode(BlobKind::Chunk, &bytes, self.chunk_size as usize)
            .map_err(ChunkFault::Blob)?;
        self.verify(digest, expected_len, &data)?;
        Ok(data)
    }

    /// The data capacity of each buffer of [`ChunkStore::buffer_pool`]: the largest chunk
    /// blob.
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.max_blob_len()
    }

    /// Spare read and output buffers enough for `in_use` chunks held at once (read ahead,
    /// queued and being written), each sized for the largest chunk blob so none ever grows.
    pub fn buffer_pool(&self, in_use: usize) -> BufPool {
        BufPool::new(in_use, self.max_blob_len())
    }

    /// [`ChunkStore::load`] for a restore: the same checks (blob, length, id), into a
    /// page-aligned buffer from `loader`'s pool without the copies `load` makes (see
    /// [`crate::aligned_buf`]). The returned buffer goes back to the pool when dropped.
    pub fn load_aligned(
        &self,
        digest: &ChunkDigest,
        expected_len: usize,
        loader: &mut ChunkLoader,
    ) -> Result<AlignedBuf, ChunkFault> {
        let limit = self.max_blob_len();
        let mut blob = loader.read.take().unwrap_or_else(|| loader.pool.get(0));
        let n = match self.backend.get_into(
            &Self::key(digest),
            limit as u64,
            BLOB_HEADER_LEN,
            &mut blob,
        ) {
            Ok(n) => n,
            Err(e) => return Err(read_fault(e, limit)),
        };
        let mut out = loader.pool.get(0);
        let decoded = self
            .codec
            .decode_chunk_into(
                blob.prefixed(BLOB_HEADER_LEN.min(n)),
                self.chunk_size as usize,
                expected_len,
                &mut loader.dctx,
                &mut out,
            )
            .map_err(ChunkFault::Blob)?;
        let data = match decoded {
            // The payload is the read buffer's data: it is the chunk; `out` goes back unused.
            Decoded::InPlace => std::mem::replace(&mut blob, out),
            Decoded::Into => out,
        };
        loader.read = Some(blob);
        self.verify(digest, expected_len, &data)?;
        Ok(data)
    }

    /// The checks every load makes after decoding: the chunk is as long as its index entry
    /// says and its content has the id it was read under.
    fn verify(
        &self,
        digest: &ChunkDigest,
        expected_len: usize,
        data: &[u8],
    ) -> Result<(), ChunkFault> {
        if data.len() != expected_len {
            return Err(ChunkFault::Length {
                actual: data.len(),
                expected: expected_len,
            });
        }
        let actual = self.codec.chunk_id(data);
        if actual != *digest {
            return Err(ChunkFault::DigestMismatch(actual));
        }
        Ok(())
    }

    /// Visits every object under `chunks/`, classified.
    pub(crate) fn scan(&self, mut visit: impl FnMut(ChunkEntry) -> Result<()>) -> Result<()> {
        let be = self.backend.as_ref();
        let prefix = format!("{CHUNKS_DIR}/");
        let top = be
            .list_dir(&prefix)
            .map_err(store_err(be, "list", CHUNKS_DIR))?;
        for o in top.objects {
            visit(ChunkEntry::Foreign(o))?;
        }
        // One prefix folder at a time, so memory does not grow with the number of chunks.
        for sub_name in top.dirs {
            let is_prefix = sub_name.len() == 4
                && sub_name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            let sub = format!("{prefix}{sub_name}/");
            for o in be.list(&sub).map_err(store_err(be, "list", &sub))? {
                let name = o.key[sub.len()..].to_string();
                let entry = if name.starts_with(TEMP_PREFIX) {
                    ChunkEntry::Temp(o)
                } else {
                    match ChunkDigest::from_hex(&name) {
                        Some(d)
                            if is_prefix && name.starts_with(&sub_name) && name == d.to_hex() =>
                        {
                            ChunkEntry::Chunk(d, o)
                        }
                        _ => ChunkEntry::Foreign(o),
                    }
                };
                visit(entry)?;
            }
        }
        Ok(())
    }
}

/// What one thread keeps between [`ChunkStore::load_aligned`] calls: its zstd context, the
/// buffer it reads chunk files into, and the pool both come from.
pub struct ChunkLoader {
    pool: BufPool,
    dctx: zstd::bulk::Decompressor<'static>,
    read: Option<AlignedBuf>,
}

impl ChunkLoader {
    /// A loader taking its buffers from `pool` (see [`ChunkStore::buffer_pool`]).
    ///
    /// # Errors
    /// [`ChunkFault::Blob`] if zstd cannot make a decompression context (out of memory).
    pub fn new(pool: BufPool) -> Result<Self, ChunkFault> {
        let dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| ChunkFault::Blob(BlobError::Decompress(e.to_string())))?;
        Ok(Self {
            pool,
            dctx,
            read: None,
        })
    }
}

impl std::fmt::Debug for ChunkLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkLoader")
            .field("pool", &self.pool)
            .finish()
    }
}

/// An object found under `chunks/`.
#[derive(Debug, Clone)]
pub(crate) enum ChunkEntry {
    /// A correctly named chunk.
    Chunk(ChunkDigest, crate::storage::ObjectInfo),
    /// A leftover temporary file (local only).
    Temp(crate::storage::ObjectInfo),
    /// Anything else.
    Foreign(crate::storage::ObjectInfo),
}

/// What a failed read of a chunk object means for the chunk.
fn read_fault(e: std::io::Error, limit: usize) -> ChunkFault {
    match e.kind() {
        ErrorKind::NotFound => ChunkFault::Missing,
        ErrorKind::FileTooLarge => ChunkFault::Blob(BlobError::TooLarge { limit }),
        _ => ChunkFault::Io(e.to_string()),
    }
}
