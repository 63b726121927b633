//! Copying generations between two repositories (a local folder to a bucket, one bucket to
//! another, …): only the chunks the destination lacks travel, every chunk is verified on the
//! way, and a generation is committed in the destination only once all its chunks are there.
//!
//! - **Same key material** (both unencrypted, or both encrypted with the same master keys): chunk
//!   ids are the same, so a chunk blob travels as it is, after it was decoded and its id checked
//!   with the source's keys.
//! - **Different keys**: each chunk is decoded, re-identified and re-encoded with the
//!   destination's keys, and the index is rewritten with the new ids.
//! - **Resumable**: a copied generation records where it came from
//!   (`"copied_from": {"repository_id", "target", "generation"}` in its manifest) and is skipped
//!   the next time; chunks already in the destination are not sent again. An interrupted copy
//!   leaves at most unreferenced chunks and an abandoned generation folder (removed by gc).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::blob::BlobKind;
use crate::chunk_store::ChunkStore;
use crate::digest::ChunkDigest;
use crate::error::{store_err, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::format::{INCOMPLETE_MARKER, MANIFEST_FILE, METADATA_DIR};
use crate::lock::RepositoryLock;
use crate::repository::Repository;
use crate::target::{GenerationId, TargetKey};

/// What [`Repository::copy_to`] copies.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Source target keys to copy; all targets when empty.
    pub targets: Vec<TargetKey>,
    /// Only generations with status `succeeded`.
    pub only_succeeded: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Generations committed in the destination: (source target, source generation,
    /// destination target, destination generation).
    pub copied: Vec<(String, u64, String, u64)>,
    /// Generations skipped because the destination already has a copy.
    pub already_there: u64,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Bytes of chunk blobs sent.
    pub bytes_sent: u64,
    /// Chunks the destination already had.
    pub chunks_present: u64,
}

const COPIED_FROM: &str = "copied_from";

impl Repository {
    /// Copies committed generations of this repository into `dest`. Holds the caller's shared
    /// lock on this repository (`src_lock`) and the shared lock of `dest` (`dest_lock`), and
    /// takes each destination target's lock while it writes there.
    ///
    /// # Errors
    /// [`Error::LockRequired`] for locks of other repositories; [`Error::InvalidOption`] if the
    /// chunk sizes differ; a damaged source chunk, index or manifest (named) stops the copy of
    /// its generation before anything of it is committed; storage errors of either side.
    pub fn copy_to(
        &self,
        src_lock: &RepositoryLock,
        dest: &Repository,
        dest_lock: &RepositoryLock,
        opts: &CopyOptions,
    ) -> Result<CopyReport> {
        src_lock.require_for_reading(self.config().repository_id, "copy")?;
        dest_lock.require(dest.config().repository_id, "copy", false)?;
        if self.config().chunk_size != dest.config().chunk_size {
            return Err(Error::InvalidOption(format!(
                "the repositories have different chunk sizes ({} and {}): a copy would need \
                 to cut every disk again",
                self.config().chunk_size,
                dest.config().chunk_size
            )));
        }
        let same_keys = self.key_fingerprint() == dest.key_fingerprint();
        let mut report = CopyReport::default();
        // Generations already copied, by (source target, source generation).
        let mut done: HashSet<(String, u64)> = HashSet::new();
        for key in dest.target_keys()? {
            for g in dest.generations(&key).unwrap_or_default() {
                if let Ok(m) = dest.manifest(&key, g.id) {
                    if let Some(from) = m.extra.get(COPIED_FROM) {
                        let same_repo = from["repository_id"].as_str()
                            == Some(self.config().repository_id.to_string().as_str());
                        if let (true, Some(t), Some(n)) = (
                            same_repo,
                            from["target"].as_str(),
                            from["generation"].as_u64(),
                        ) {
                            done.insert((t.to_string(), n));
                        }
                    }
                }
            }
        }
        let targets = if opts.targets.is_empty() {
            self.target_keys()?
        } else {
            opts.targets.clone()
        };
        for key in targets {
            for g in self.generations(&key)? {
                if opts.only_succeeded && g.status != crate::manifest::GenerationStatus::Succeeded {
                    continue;
                }
                if done.contains(&(key.to_string(), g.id.0)) {
                    report.already_there += 1;
                    continue;
                }
                let (dkey, did) = self.copy_generation(dest, &key, g.id, same_keys, &mut report)?;
                report
                    .copied
                    .push((key.to_string(), g.id.0, dkey.to_string(), did.0));
            }
        }
        Ok(report)
    }

    fn copy_generation(
        &self,
        dest: &Repository,
        key: &TargetKey,
        id: GenerationId,
        same_keys: bool,
        report: &mut CopyReport,
    ) -> Result<(TargetKey, GenerationId)> {
        let m = self.manifest(key, id)?;
        let dkey = dest.target_key(&m.target)?;
        let dlock = dest.lock_target(&dkey, std::time::Duration::from_secs(600))?;
        let dbe = dest.backend().clone();
        // Claim a generation number in the destination first (as a writer does): while the
        // claim exists and the target lock is held, gc keeps every chunk newer than it.
        let mut next = match dest.generation_dirs(&dkey)?.last() {
            Some(g) => g.id.next(&dkey)?.0,
            None => 1,
        };
        let marker = serde_json::to_vec_pretty(&crate::writer::WriterRecord {
            pid: std::process::id(),
            host: crate::lock::host_name(),
            started: time::OffsetDateTime::now_utc(),
        })
        .expect("record serialises");
        let prefix = loop {
            let prefix = dest.generation_prefix(&dkey, GenerationId(next));
            let mk = format!("{prefix}{INCOMPLETE_MARKER}");
            match dbe.create_new(&mk, &marker) {
                Ok(()) => break prefix,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    next = GenerationId(next).next(&dkey)?.0
                }
                Err(e) => return Err(store_err(dbe.as_ref(), "create", &mk)(e)),
            }
        };
        let did = GenerationId(next);
        let result = (|| -> Result<()> {
            // Chunks first: every index's chunks must be in the destination before the manifest.
            let mut translated: HashMap<ChunkDigest, ChunkDigest> = HashMap::new();
            let mut indexes: Vec<(String, Vec<u8>, uuid::Uuid)> = Vec::new();
            for d in &m.disks {
                let idx = self.index_of(key, &m, d.disk.key)?;
                let mut out = FixedIndex::derive(&idx);
                for (slot, digest) in idx.stored_chunks() {
                    let new = match translated.get(&digest) {
                        Some(n) => *n,
                        None => {
                            let used_by = crate::error::ChunkUse {
                                target: key.to_string(),
                                generation: id.0,
                                disk: d.disk.key,
                                offset: idx.chunk_range(slot).0,
                            };
                            let expected = idx.chunk_range(slot).1;
                            let n = self
                                .copy_chunk(dest, digest, expected, used_by, same_keys, report)?;
                            translated.insert(digest, n);
                            n
                        }
                    };
                    out.set(slot, Some(new));
                }
                // Bound to its place in the destination (target folder and generation
                // differ); the manifest records the new index's identity below.
                out.bind(crate::fixed_index::IndexBinding::new(
                    dkey.clone(),
                    did,
                    d.disk.key,
                ));
                let blob = out.try_encode(dest.codec())?;
                indexes.push((d.index_file.clone(), blob, out.uuid()));
            }
            for name in &m.metadata_files {
                let data = self.read_metadata(key, id, name)?;
                let blob = dest.codec().try_encode(BlobKind::Metadata, &data)?;
                let k = format!("{prefix}{METADATA_DIR}/{}", dest.metadata_file_name(name));
                dbe.put(&k, &blob)
                    .map_err(store_err(dbe.as_ref(), "write", &k))?;
            }
            for (file, blob, _) in &indexes {
                let k = format!("{prefix}{file}");
                dbe.put(&k, blob)
                    .map_err(store_err(dbe.as_ref(), "write", &k))?;
            }
            let mut dm = m.clone();
            for (rec, (_, blob, id)) in dm.disks.iter_mut().zip(&indexes) {
                rec.set_index_identity(*id, blob);
            }
            dm.repository_id = dest.config().repository_id;
            dm.generation = did;
            // The parent is a generation of the source; in the destination it has another
            // number (or none): keep the number only as information in `copied_from`.
            dm.parent = None;
            dm.extra.remove("key_fingerprint");
            if let Some(fp) = dest.key_fingerprint() {
                dm.extra
                    .insert("key_fingerprint".into(), fp.0.clone().into());
            }
            dm.extra.insert(
                COPIED_FROM.into(),
                serde_json::json!({
                    "repository_id": self.config().repository_id.to_string(),
                    "target": key.to_string(),
                    "generation": id.0,
                    "parent": m.parent.map(|p| p.0),
                }),
            );
            let blob = dm.encode(dest.codec())?;
            let mk = format!("{prefix}{MANIFEST_FILE}");
            dbe.create_new(&mk, &blob)
                .map_err(store_err(dbe.as_ref(), "commit", &mk))?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                let mk = format!("{prefix}{INCOMPLETE_MARKER}");
                dbe.delete(&mk)
                    .map_err(store_err(dbe.as_ref(), "remove", &mk))?;
                drop(dlock);
                tracing::info!(target_key = %key, generation = %id, dest_generation = %did, "generation copied");
                Ok((dkey, did))
            }
            Err(e) => {
                let committed = dbe
                    .head(&format!("{prefix}{MANIFEST_FILE}"))
                    .map(|h| h.is_some())
                    .unwrap_or(true);
                if !committed {
                    let _ = dest.remove_generation_dir(&prefix);
                }
                Err(e)
            }
        }
    }

    /// Makes the chunk `digest` (`expected` bytes, used at `used_by`) present in `dest`;
    /// returns its id there.
    fn copy_chunk(
        &self,
        dest: &Repository,
        digest: ChunkDigest,
        expected: usize,
        used_by: crate::error::ChunkUse,
        same_keys: bool,
        report: &mut CopyReport,
    ) -> Result<ChunkDigest> {
        let dstore = dest.chunk_store();
        if same_keys && dstore.touch(&digest)? {
            report.chunks_present += 1;
            return Ok(digest);
        }
        let key = ChunkStore::key(&digest);
        let be = self.backend().as_ref();
        let fail = |reason: crate::chunk_store::ChunkFault| {
            Error::Chunk(Box::new(crate::error::ChunkError {
                digest,
                path: be.display_path(&key),
                used_by: used_by.clone(),
                reason,
            }))
        };
        // Verified with the source's keys: envelope, length, and the content's id.
        let limit = self.config().chunk_size as u64 + 4096;
        let raw = match be.get(&key, limit) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(crate::chunk_store::ChunkFault::Missing))
            }
            Err(e) => return Err(store_err(be, "read", &key)(e)),
        };
        let data = self
            .codec()
            .decode(BlobKind::Chunk, &raw, self.config().chunk_size as usize)
            .map_err(|e| fail(crate::chunk_store::ChunkFault::Blob(e)))?;
        if data.len() != expected {
            return Err(fail(crate::chunk_store::ChunkFault::Length {
                actual: data.len(),
                expected,
            }));
        }
        let actual = self.codec().chunk_id(&data);
        if actual != digest {
            return Err(fail(crate::chunk_store::ChunkFault::DigestMismatch(actual)));
        }
        if same_keys {
            report.bytes_sent += dstore.insert(&digest, &raw)?;
            report.chunks_sent += 1;
            return Ok(digest);
        }
        let new = dest.codec().chunk_id(&data);
        if dstore.touch(&new)? {
            report.chunks_present += 1;
            return Ok(new);
        }
        let blob = dest.codec().try_encode(BlobKind::Chunk, &data)?;
        report.bytes_sent += dstore.insert(&new, &blob)?;
        report.chunks_sent += 1;
        Ok(new)
    }
}
