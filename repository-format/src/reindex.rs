//! Reindex: rebuild what can be derived from the files, and clear leftovers of crashed writers.

use std::time::SystemTime;

use serde::Serialize;

use crate::error::Result;
use crate::format::{DEFAULT_GC_GRACE, TEMP_PREFIX};
use crate::lock::RepositoryLock;
use crate::repository::Repository;

/// What reindex found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Target folders.
    pub targets: u64,
    /// Committed generations.
    pub generations: u64,
    /// Abandoned generation folders removed.
    pub incomplete_removed: Vec<String>,
    /// Leftover temporary files removed from generation folders.
    pub temp_files_removed: u64,
    /// Whether the catalog cache was available and rebuilt (another process may hold it).
    pub catalog_rebuilt: bool,
    /// Generations in the rebuilt catalog.
    pub catalog_entries: u64,
}

impl Repository {
    /// Lists every target and generation from the files, removes abandoned generation folders
    /// (their writer is gone: under the exclusive lock no backup runs) and old temporary files,
    /// and rebuilds the catalog cache from the manifests.
    ///
    /// # Errors
    /// [`crate::Error::LockRequired`] without the exclusive lock; [`crate::Error::Io`].
    pub fn reindex(&self, lock: &RepositoryLock) -> Result<ReindexReport> {
        lock.require(self.config().repository_id, "reindex", true)?;
        let mut report = ReindexReport::default();
        let old = SystemTime::now() - DEFAULT_GC_GRACE;
        for key in self.target_keys()? {
            report.targets += 1;
            for g in self.generation_dirs(&key)? {
                if g.committed {
                    report.generations += 1;
                    // Temporary files exist only in local folders (object stores have none).
                    if let Some(root) = self.backend().local_root() {
                        for o in &g.objects {
                            if o.name().starts_with(TEMP_PREFIX)
                                && o.modified < old
                                && std::fs::remove_file(root.join(&o.key)).is_ok()
                            {
                                report.temp_files_removed += 1;
                            }
                        }
                    }
                    continue;
                }
                // A writer holds its target's lock until it commits or gives up; one of
                // this process (the caller's own writer) counts as live too.
                let live = crate::lock::is_held(self.backend().as_ref(), &format!("target-{key}"))?;
                if !live {
                    self.remove_generation_dir(&g.prefix)?;
                    report
                        .incomplete_removed
                        .push(format!("{key}/{}", g.id.folder_name()));
                }
            }
        }
        if let Some(cat) = self.catalog() {
            if cat.clear() {
                // Listing every target refills the catalog from the manifests.
                self.targets()?;
                cat.flush();
                report.catalog_rebuilt = true;
                report.catalog_entries = cat.len() as u64;
            }
        }
        Ok(report)
    }
}
