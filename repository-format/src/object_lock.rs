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

/// What [`Repository::refresh_object_lock`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Objects (config, key files, manifests, indexes, metadata, chunks) whose retention
    /// ended too soon and that were written again (or would be, in a dry run).
    pub objects_rewritten: u64,
    /// Of those, chunks.
    pub chunks_rewritten: u64,
    /// Bytes written again.
    pub bytes_rewritten: u64,
    /// Objects whose retention already lasts long enough.
    pub objects_kept: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

impl Repository {
    /// Extends the object lock of everything the committed generations use (and the config
    /// and key files) whose retention ends within `within`: each such object is read,
    /// verified (chunks: envelope, length and id; the rest: its blob envelope or format), and
    /// written again with the same bytes, which makes a new version retained for the full
    /// period. Object stores offer `PutObjectRetention` for this, but `object_store` has no
    /// call for it; a rewrite costs one GET and one PUT per object, once per `within`.
    /// Deduplicated chunks are what needs this: a chunk keeps the retention of its first
    /// write while every later backup re-uses it. Holds the caller's shared lock (backups may
    /// run meanwhile; gc, which deletes, may not).
    ///
    /// # Errors
    /// [`crate::Error::InvalidOption`] without object lock; a damaged object (named) stops the
    /// refresh; storage errors.
    pub fn refresh_object_lock(
        &self,
        lock: &crate::lock::RepositoryLock,
        within: std::time::Duration,
        dry_run: bool,
    ) -> Result<RefreshReport> {
        use crate::blob::BlobKind;
        use crate::chunk_store::{ChunkFault, ChunkStore};
        use crate::error::{ChunkError, ChunkUse, Error};
        use crate::format::{CONFIG_FILE, INDEX_EXTENSION, KEYS_DIR, METADATA_DIR};
        use crate::storage::ObjectInfo;

        lock.require(self.config().repository_id, "refresh_object_lock", false)?;
        let be = self.backend().as_ref();
        if be.object_lock().is_none() {
            return Err(Error::InvalidOption(format!(
                "{} has no object lock (repo init --object-lock-days)",
                self.location().display()
            )));
        }
        let horizon = std::time::SystemTime::now() + within;
        let mut report = RefreshReport {
            dry_run,
            ..RefreshReport::default()
        };
        // Whether `info` needs a rewrite: retained, and its retention ends before the horizon.
        let due = |info: &ObjectInfo| -> bool {
            crate::storage::is_retained(&info.key)
                && be.locked_until(info).is_none_or(|until| until < horizon)
        };
        let rewrite = |key: &str, data: &[u8], chunk: bool, report: &mut RefreshReport| {
            report.objects_rewritten += 1;
            report.bytes_rewritten += data.len() as u64;
            if chunk {
                report.chunks_rewritten += 1;
            }
            if dry_run {
                return Ok(());
            }
            be.put(key, data).map_err(store_err(be, "rewrite", key))
        };
        let read = |info: &ObjectInfo| crate::error::read_object(be, &info.key, info.size);

        // The config and key files: without them nothing opens.
        let mut roots: Vec<ObjectInfo> = be
            .head(CONFIG_FILE)
            .map_err(store_err(be, "stat", CONFIG_FILE))?
            .into_iter()
            .collect();
        roots.extend(
            be.list(&format!("{KEYS_DIR}/"))
                .map_err(store_err(be, "list", KEYS_DIR))?,
        );
        for info in roots {
            if !due(&info) {
                report.objects_kept += 1;
                continue;
            }
            let data = read(&info)?;
            if info.key == CONFIG_FILE {
                // Read and checked the way every open reads it.
                Config::read(be)?;
            } else {
                crate::key_file::KeyFile::parse(&be.display_path(&info.key), &data)?;
            }
            rewrite(&info.key, &data, false, &mut report)?;
        }

        let mut seen = std::collections::HashSet::new();
        for key in self.target_keys()? {
            for g in self.generations(&key)? {
                let m = self.manifest(&key, g.id)?;
                let prefix = self.generation_prefix(&key, g.id);
                for info in be.list(&prefix).map_err(store_err(be, "list", &prefix))? {
                    if !due(&info) {
                        report.objects_kept += 1;
                        continue;
                    }
                    let name = &info.key[prefix.len()..];
                    let (kind, limit) = if name == MANIFEST_FILE {
                        (BlobKind::Manifest, crate::manifest::MANIFEST_LIMIT)
                    } else if name.starts_with(&format!("{METADATA_DIR}/")) {
                        (BlobKind::Metadata, crate::writer::METADATA_LIMIT)
                    } else if name.ends_with(&format!(".{INDEX_EXTENSION}")) {
                        (BlobKind::Index, crate::fixed_index::INDEX_LIMIT)
                    } else {
                        // Nothing else belongs in a committed generation folder.
                        report.objects_kept += 1;
                        continue;
                    };
                    let data = read(&info)?;
                    self.codec()
                        .decode(kind, &data, limit)
                        .map_err(|e| Error::Blob {
                            path: be.display_path(&info.key),
                            reason: e,
                        })?;
                    rewrite(&info.key, &data, false, &mut report)?;
                }
                for d in &m.disks {
                    let idx = self.index_of(&key, &m, d.disk.key)?;
                    for (slot, digest) in idx.stored_chunks() {
                        if !seen.insert(digest) {
                            continue;
                        }
                        let ck = ChunkStore::key(&digest);
                        let (offset, expected) = idx.chunk_range(slot);
                        let fail = |reason: ChunkFault| {
                            Error::Chunk(Box::new(ChunkError {
                                digest,
                                path: be.display_path(&ck),
                                used_by: ChunkUse {
                                    target: key.to_string(),
                                    generation: g.id.0,
                                    disk: d.disk.key,
                                    offset,
                                },
                                reason,
                            }))
                        };
                        let Some(info) = be.head(&ck).map_err(store_err(be, "stat", &ck))? else {
                            return Err(fail(ChunkFault::Missing));
                        };
                        if !due(&info) {
                            report.objects_kept += 1;
                            continue;
                        }
                        let raw = read(&info)?;
                        let data = self
                            .codec()
                            .decode(BlobKind::Chunk, &raw, self.config().chunk_size as usize)
                            .map_err(|e| fail(ChunkFault::Blob(e)))?;
                        if data.len() != expected {
                            return Err(fail(ChunkFault::Length {
                                actual: data.len(),
                                expected,
                            }));
                        }
                        let actual = self.codec().chunk_id(&data);
                        if actual != digest {
                            return Err(fail(ChunkFault::DigestMismatch(actual)));
                        }
                        rewrite(&ck, &raw, true, &mut report)?;
                    }
                }
            }
        }
        tracing::info!(
            rewritten = report.objects_rewritten,
            kept = report.objects_kept,
            "object lock refreshed"
        );
        Ok(report)
    }
}
