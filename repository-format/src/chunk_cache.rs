//! A local cache of the chunk ids known to be in an object store, so a backup does not send a
//! `HEAD` for every chunk it finds again.
//!
//! It is only a cache (a sled database in the repository's local cache folder, never part of
//! the format), trusted under three rules:
//!
//! - **Epoch.** The repository has an object `cache-epoch` holding a random id. Whatever deletes
//!   chunks (gc, `check --repair`) replaces it afterwards. The cache records the epoch it was
//!   built under and is rebuilt from a listing of `chunks/` when that differs, when it is
//!   missing or incomplete, or when the epoch changed while it was being listed.
//! - **Commit verification.** Every chunk a generation re-used only because the cache listed it
//!   is checked in the store (`HEAD`, in parallel) before the manifest is written. A missing one
//!   fails the commit and is dropped from the cache, so the next backup stores it again.
//! - **`check`** always lists the store itself and reports missing chunks.
//!
//! If the cache cannot be opened (another process holds sled's lock, or it is damaged) or the
//! epoch cannot be read, every check goes to the store, as without a cache.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::digest::ChunkDigest;
use crate::format::CHUNKS_DIR;
use crate::storage::Backend;

/// The object holding the current cache epoch.
pub const CACHE_EPOCH: &str = "cache-epoch";

const META_EPOCH: &[u8] = b"\0epoch";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet compared with the store's epoch.
    Unchecked,
    /// Valid for this handle.
    Fresh,
    /// Not used (epoch unreadable, or changed during a rebuild).
    Off,
}

/// See the module docs.
pub(crate) struct ChunkCache {
    db: sled::Db,
    backend: Arc<dyn Backend>,
    state: Mutex<State>,
    /// Digests this process treated as present on the cache's word alone.
    vouched: Mutex<HashSet<ChunkDigest>>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the repository's cache epoch, creating one if there is none yet.
fn read_epoch(backend: &dyn Backend) -> std::io::Result<Vec<u8>> {
    match backend.get(CACHE_EPOCH, 1024) {
        Ok(e) => Ok(e),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = uuid::Uuid::new_v4().simple().to_string().into_bytes();
            match backend.create_new(CACHE_EPOCH, &fresh) {
                Ok(()) => Ok(fresh),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    backend.get(CACHE_EPOCH, 1024)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Replaces the cache epoch: every cache of this repository is rebuilt before it is trusted
/// again. Called after chunks were deleted or moved.
pub(crate) fn bump_epoch(backend: &dyn Backend) -> std::io::Result<()> {
    backend.put(
        CACHE_EPOCH,
        uuid::Uuid::new_v4().simple().to_string().as_bytes(),
    )
}

impl ChunkCache {
    /// Opens the cache in the folder `dir`; `None` if it cannot be opened.
    pub(crate) fn open(dir: &Path, backend: Arc<dyn Backend>) -> Option<ChunkCache> {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(1000))
            .open()
        {
            Ok(db) => Some(ChunkCache {
                db,
                backend,
                state: Mutex::new(State::Unchecked),
                vouched: Mutex::new(HashSet::new()),
            }),
            Err(e) => {
                tracing::debug!(cache = %dir.display(), error = %e, "working without the chunk cache");
                None
            }
        }
    }

    /// Makes sure the cache matches the store's epoch (rebuilding it if not); false if it is
    /// not to be used.
    fn fresh(&self) -> bool {
        let mut state = lock(&self.state);
        if *state == State::Unchecked {
            *state = match self.validate() {
                Ok(true) => State::Fresh,
                Ok(false) => State::Off,
                Err(e) => {
                    tracing::warn!(error = %e, "chunk cache not usable; asking the store for every chunk");
                    State::Off
                }
            };
        }
        *state == State::Fresh
    }

    fn validate(&self) -> std::io::Result<bool> {
        let be = self.backend.as_ref();
        let epoch = read_epoch(be)?;
        let mine = self.db.get(META_EPOCH).map_err(std::io::Error::other)?;
        if mine.as_deref() == Some(epoch.as_slice()) {
            return Ok(true);
        }
        let n = self.rebuild(&epoch)?;
        // Chunks deleted while we listed would be in the cache: then do without it this time.
        if read_epoch(be)? != epoch {
            self.db.clear().map_err(std::io::Error::other)?;
            return Ok(false);
        }
        tracing::info!(
            chunks = n,
            "chunk cache rebuilt from a listing of the store"
        );
        Ok(true)
    }

    fn rebuild(&self, epoch: &[u8]) -> std::io::Result<u64> {
        self.db.clear().map_err(std::io::Error::other)?;
        let mut n = 0;
        let mut batch = sled::Batch::default();
        for o in self.backend.list(&format!("{CHUNKS_DIR}/"))? {
            if let Some(d) = ChunkDigest::from_hex(o.name()).filter(|d| d.to_hex() == o.name()) {
                if o.size >= crate::format::BLOB_HEADER_LEN as u64 {
                    batch.insert(d.0.to_vec(), &[][..]);
                    n += 1;
                }
            }
        }
        // The epoch goes in last, with the entries: a cache interrupted here has none.
        batch.insert(META_EPOCH, epoch);
        self.db.apply_batch(batch).map_err(std::io::Error::other)?;
        let _ = self.db.flush();
        Ok(n)
    }

    /// True if the cache lists `d` (the caller then skips asking the store; the digest is
    /// remembered for the commit's verification).
    pub(crate) fn contains(&self, d: &ChunkDigest) -> bool {
        if !self.fresh() {
            return false;
        }
        let hit = self.db.contains_key(d.0).unwrap_or(false);
        if hit {
            lock(&self.vouched).insert(*d);
        }
        hit
    }

    /// Whether `d` is stored as far as the cache knows: `Some(true)` as [`ChunkCache::contains`];
    /// `Some(false)` when the cache is valid and does not list it (it was not in the store's
    /// listing and this process has not stored it since); `None` when the cache is not in use.
    pub(crate) fn lookup(&self, d: &ChunkDigest) -> Option<bool> {
        if !self.fresh() {
            return None;
        }
        Some(self.contains(d))
    }

    /// Records a chunk known to be stored (just written, or found by a `HEAD`).
    pub(crate) fn add(&self, d: &ChunkDigest) {
        if *lock(&self.state) != State::Off {
            let _ = self.db.insert(d.0, &[][..]);
        }
    }

    /// Forgets a chunk the store does not have.
    pub(crate) fn remove(&self, d: &ChunkDigest) {
        let _ = self.db.remove(d.0);
        lock(&self.vouched).remove(d);
    }

    /// Whether `d` was treated as present on the cache's word alone.
    pub(crate) fn vouched(&self, d: &ChunkDigest) -> bool {
        lock(&self.vouched).contains(d)
    }

    /// After this process deleted chunks (and replaced the epoch): validate again before the
    /// next use.
    pub(crate) fn invalidate(&self) {
        *lock(&self.state) = State::Unchecked;
        lock(&self.vouched).clear();
    }

    /// Number of chunk ids cached (after validating against the store).
    pub(crate) fn len(&self) -> Option<u64> {
        self.fresh().then(|| self.db.len().saturating_sub(1) as u64)
    }
}
