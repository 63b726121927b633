//! S3 object lock: a repository initialised with `object_lock_days` in an S3 bucket that has
//! object lock enabled writes every object but lock records and in-progress markers with a
//! `COMPLIANCE` retention of that many days ([`crate::storage::is_retained`]), so nobody, not
//! even someone holding the repository's credentials, can delete or overwrite a stored
//! version before then. The number is recorded in the config (`"object_lock_days"`), and every
//! handle that opens the repository writes with it.
//!
//! A plain S3 `DELETE` of a locked object still "succeeds": the bucket is versioned, and a
//! delete marker hides the retained version. The repository would then lose sight of data it
//! still pays for, so deletes of locked objects are refused by the backend, gc keeps locked
//! chunks (`chunks_kept_locked`) and prune keeps locked generations (reason `object lock
//! until …`), until the retention ends.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{store_err, Result};
use crate::format::MANIFEST_FILE;
use crate::repository::Repository;
use crate::storage::{Backend, RepositoryLocation};
use crate::target::{GenerationId, TargetKey};

/// The config field holding the retention in days.
pub(crate) const OBJECT_LOCK_DAYS: &str = "object_lock_days";

/// The object lock days recorded in `config`.
pub(crate) fn recorded_days(config: &Config) -> Option<u32> {
    config
        .extra
        .get(OBJECT_LOCK_DAYS)
        .and_then(serde_json::Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
}

/// The location and backend to use for a repository whose config was read through
/// `backend`: the same, unless the config asks for object lock that the location does not
/// carry yet (then a backend that writes with it).
pub(crate) fn with_recorded_lock(
    location: &RepositoryLocation,
    backend: Arc<dyn Backend>,
    config: &Config,
) -> Result<(RepositoryLocation, Arc<dyn Backend>)> {
    match (location, recorded_days(config)) {
        (RepositoryLocation::S3(s3), Some(days)) if s3.object_lock_days != Some(days) => {
            let mut s3 = s3.clone();
            s3.object_lock_days = Some(days);
            let location = RepositoryLocation::S3(s3);
            let backend = location.backend()?;
            Ok((location, backend))
        }
        _ => Ok((location.clone(), backend)),
    }
}

impl Repository {
    /// The object lock retention in days, when the repository was initialised with one.
    pub fn object_lock_days(&self) -> Option<u32> {
        recorded_days(self.config())
    }

    /// Until when generation `id` of `key` cannot be deleted: its manifest, written last,
    /// is the object whose retention ends last. `None` without object lock, or once it ended.
    ///
    /// # Errors
    /// Storage errors reading the manifest's metadata.
    pub fn generation_locked_until(
        &self,
        key: &TargetKey,
        id: GenerationId,
    ) -> Result<Option<OffsetDateTime>> {
        let be = self.backend().as_ref();
        if be.object_lock().is_none() {
            return Ok(None);
        }
        let mkey = format!("{}{MANIFEST_FILE}", self.generation_prefix(key, id));
        let info = be.head(&mkey).map_err(store_err(be, "stat", &mkey))?;
        Ok(info
            .and_then(|i| be.locked_until(&i))
            .map(OffsetDateTime::from))
    }
}
