//! The catalog: a local sled cache of generation listings.
//!
//! Listing a target's generations needs one manifest per generation; the catalog keeps the
//! summary of each, keyed by `<target>/<generation folder>`, together with the manifest file's
//! length and modification time. An entry is used only while the file still has that length and
//! time (manifests are write-once, so a changed file is a different manifest). The folder
//! listing always decides which generations exist; the catalog only saves reading and parsing.
//! Nothing else uses it: check, gc, restore and the dedup check always read the files.
//!
//! If the catalog cannot be opened (another process holds sled's lock, or it is damaged) the
//! repository works without it. `reindex` clears and rebuilds it. It lives in `catalog/` at the
//! repository root, is never part of the format, and may be deleted at any time.

use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::repository::GenerationSummary;
use crate::target::TargetKind;

/// Folder of the catalog under the repository root.
pub const CATALOG_DIR: &str = "catalog";

/// What the catalog remembers about one committed generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CatalogEntry {
    pub summary: GenerationSummary,
    pub kind: TargetKind,
    pub name: String,
    pub manifest_len: u64,
    pub manifest_mtime_ns: u128,
}

/// The manifest object's (length, store time in ns) used to validate an entry.
pub(crate) fn manifest_stamp(info: &crate::storage::ObjectInfo) -> Option<(u64, u128)> {
    let t = info.modified.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some((info.size, t))
}

/// An open catalog.
pub(crate) struct Catalog {
    db: sled::Db,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens (or creates) the catalog; `None` if it is locked by another process or unusable.
    /// Opens the catalog in the folder `path` (`<root>/catalog` for a local repository, the
    /// cache folder for an object store).
    pub(crate) fn open(path: &Path) -> Option<Catalog> {
        match sled::Config::new()
            .path(path)
            .cache_capacity(8 << 20)
            .flush_every_ms(Some(500))
            .open()
        {
            Ok(db) => Some(Catalog { db }),
            Err(e) => {
                tracing::debug!(catalog = %path.display(), error = %e, "working without the catalog");
                None
            }
        }
    }

    pub(crate) fn get(&self, key: &str, stamp: (u64, u128)) -> Option<CatalogEntry> {
        let bytes = self.db.get(key.as_bytes()).ok()??;
        let e: CatalogEntry = serde_json::from_slice(&bytes).ok()?;
        (e.manifest_len == stamp.0 && e.manifest_mtime_ns == stamp.1).then_some(e)
    }

    pub(crate) fn put(&self, key: &str, entry: &CatalogEntry) {
        if let Ok(json) = serde_json::to_vec(entry) {
            let _ = self.db.insert(key.as_bytes(), json);
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        let _ = self.db.remove(key.as_bytes());
    }

    pub(crate) fn clear(&self) -> bool {
        self.db.clear().is_ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.db.len()
    }

    pub(crate) fn flush(&self) {
        let _ = self.db.flush();
    }
}
