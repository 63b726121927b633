//! Copying generations between two repositories (a local folder to a bucket, one bucket to
//! another, …): only the chunks the destination lacks travel, every chunk is verified on the
//! way, and a generation is committed in the destination only once all its chunks are there.
//!
//! - **Same key material** (both unencrypted, or both encrypted with the same master keys, e.g.
//!   a destination created with [`Repository::init_location_sharing_keys`]): chunk ids are the
//!   same, so a chunk blob travels as it is, after it was decoded and its id checked with the
//!   source's keys.
//! - **Different keys**: each chunk is decoded, re-identified and re-encoded with the
//!   destination's keys, and the index is rewritten with the new ids.
//! - **Resumable**: a copied generation records where it came from
//!   (`"copied_from": {"repository_id", "target", "generation"}` in its manifest) and is skipped
//!   the next time; chunks already in the destination are not sent again. An interrupted copy
//!   leaves at most unreferenced chunks and an abandoned generation folder (removed by gc).
//! - **Numbers**: a copied generation keeps its source number when the destination has no
//!   committed generation of that number (the folder of an interrupted copy is cleared and
//!   reused), so copying older generations after newer ones does not make an older one the
//!   newest; otherwise it gets the next number after the destination's last, with a warning
//!   when that is above newer generations.
//! - **Plan, then copy**: [`Repository::copies_in`] says which source generations a
//!   destination already holds; [`Repository::copy_generation_to`] copies one generation, so a
//!   caller can report (and fail) generation by generation. [`Repository::copy_to`] does both.
//!
//! Presence in the destination is always asked of the store itself (a `HEAD`, or a stat that
//! also refreshes the modification time locally), never answered by the destination's chunk
//! cache alone: a copy must not commit a generation whose chunk was deleted behind the cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::blob::BlobKind;
use crate::chunk_store::{ChunkFault, ChunkStore};
use crate::digest::ChunkDigest;
use crate::error::{store_err, ChunkError, ChunkUse, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::format::{BLOB_HEADER_LEN, INCOMPLETE_MARKER, MANIFEST_FILE, METADATA_DIR};
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
    /// True when both repositories have the same key material, so chunk blobs travelled as
    /// they are (same ids, same bytes); false when they were re-encoded for the destination.
    pub as_is: bool,
}

/// One generation copied by [`Repository::copy_generation_to`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationCopy {
    /// The source target.
    pub source_target: TargetKey,
    /// The source generation.
    pub source_generation: GenerationId,
    /// The target's key in the destination (differs when the keys differ).
    pub target: TargetKey,
    /// The generation's number in the destination.
    pub generation: GenerationId,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Bytes of chunk blobs sent.
    pub bytes_sent: u64,
    /// Chunks the destination already had.
    pub chunks_present: u64,
    /// Chunk blobs travelled unchanged (same key material).
    pub as_is: bool,
}

/// What a copy of one generation reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyProgress {
    /// The generation's indexes are read: `bytes` of stored (non-zero) disk data to go through.
    Started {
        /// Disk bytes the stored chunks cover.
        bytes: u64,
    },
    /// A chunk covering `bytes` of disk is in the destination (sent or already there).
    Chunk {
        /// Disk bytes the chunk covers.
        bytes: u64,
    },
}

/// The source generations a destination already holds a copy of.
#[derive(Debug, Clone, Default)]
pub struct CopiedSet(HashSet<(String, u64)>);

impl CopiedSet {
    /// Whether generation `id` of source target `key` has been copied already.
    pub fn contains(&self, key: &TargetKey, id: GenerationId) -> bool {
        self.0.contains(&(key.to_string(), id.0))
    }
}

const COPIED_FROM: &str = "copied_from";

/// One distinct chunk of a generation to bring into the destination.
struct ChunkJob {
    digest: ChunkDigest,
    expected: usize,
    used_by: ChunkUse,
}

/// Counters the copy workers share.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    bytes: AtomicU64,
    present: AtomicU64,
}

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
        let done = self.copies_in(dest)?;
        let mut report = CopyReport {
            as_is: self.same_key_material(dest),
            ..CopyReport::default()
        };
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
                if done.contains(&key, g.id) {
                    report.already_there += 1;
                    continue;
                }
                let c =
                    self.copy_generation_to(src_lock, dest, dest_lock, &key, g.id, &mut |_| {})?;
                report.chunks_sent += c.chunks_sent;
                report.bytes_sent += c.bytes_sent;
                report.chunks_present += c.chunks_present;
                report.copied.push((
                    key.to_string(),
                    g.id.0,
                    c.target.to_string(),
                    c.generation.0,
                ));
            }
        }
        Ok(report)
    }

    /// Whether chunk blobs of this repository are valid, with the same ids, in `dest`: both
    /// unencrypted, or both encrypted with the same master keys.
    pub fn same_key_material(&self, dest: &Repository) -> bool {
        self.key_fingerprint() == dest.key_fingerprint()
    }

    /// The generations of this repository that `dest` holds a copy of (by the `copied_from`
    /// record of its manifests). Reads every manifest of `dest`.
    ///
    /// # Errors
    /// Storage errors listing `dest`.
    pub fn copies_in(&self, dest: &Repository) -> Result<CopiedSet> {
        let me = self.config().repository_id.to_string();
        let mut done = HashSet::new();
        for key in dest.target_keys()? {
            for g in dest.generations(&key)? {
                // A manifest that cannot be read is not a copy we can rely on: copy again.
                let Ok(m) = dest.manifest(&key, g.id) else {
                    continue;
                };
                let Some(from) = m.extra.get(COPIED_FROM) else {
                    continue;
                };
                if let (true, Some(t), Some(n)) = (
                    from["repository_id"].as_str() == Some(me.as_str()),
                    from["target"].as_str(),
                    from["generation"].as_u64(),
                ) {
                    done.insert((t.to_string(), n));
                }
            }
        }
        Ok(CopiedSet(done))
    }

    /// Copies generation `id` of target `key` into `dest` and commits it there; `progress`
    /// hears about every chunk. Does not look whether `dest` has it already (see
    /// [`Repository::copies_in`]).
    ///
    /// # Errors
    /// As [`Repository::copy_to`]; nothing of the generation is committed on error.
    pub fn copy_generation_to(
        &self,
        src_lock: &RepositoryLock,
        dest: &Repository,
        dest_lock: &RepositoryLock,
        key: &TargetKey,
        id: GenerationId,
        progress: &mut (dyn FnMut(CopyProgress) + Send),
    ) -> Result<GenerationCopy> {
        src_lock.require_for_reading(self.config().repository_id, "copy")?;
        dest_lock.require(dest.config().repository_id, "copy", false)?;
        if self.config().repository_id == dest.config().repository_id {
            return Err(Error::InvalidOption(
                "source and destination are the same repository".into(),
            ));
        }
        if self.config().chunk_size != dest.config().chunk_size {
            return Err(Error::InvalidOption(format!(
                "the repositories have different chunk sizes ({} and {}): a copy would need \
                 to cut every disk again",
                self.config().chunk_size,
                dest.config().chunk_size
            )));
        }
        // Chunks and indexes are copied as they are: a content-defined index has no place in
        // a fixed-chunk repository, nor the reverse. (Other cut parameters or seeds only make
        // the destination's own later backups cut elsewhere: less deduplication, not damage.)
        let kind = |fixed: bool| if fixed { "fixed" } else { "content-defined" };
        let (from, to) = (
            self.config().chunking.is_fixed(),
            dest.config().chunking.is_fixed(),
        );
        if from != to {
            return Err(Error::InvalidOption(format!(
                "the source has {} chunks and the destination {} chunks: a copy would need to \
                 cut every disk again",
                kind(from),
                kind(to)
            )));
        }
        let same_keys = self.same_key_material(dest);
        let m = self.manifest(key, id)?;
        let dkey = dest.target_key(&m.target)?;
        let dlock = dest.lock_target(&dkey, std::time::Duration::from_secs(600))?;
        let dbe = dest.backend().clone();
        // Claim a generation number in the destination first (as a writer does): while the
        // claim exists and the target lock is held, gc keeps every chunk newer than it. The
        // source's number when it is free, so that generations copied in any order keep their
        // order (an older generation copied later must not become the newest); else the next
        // after the last.
        let dirs = dest.generation_dirs(&dkey)?;
        // Checked: a planted `gen-18446744073709551615` must be an error, not a wrap.
        let after_last = match dirs.last() {
            Some(g) => g.id.next(&dkey)?.0,
            None => 1,
        };
        let mut next = match dirs.iter().find(|g| g.id == id) {
            None => id.0,
            // Under the target lock no writer is in a folder without a manifest (writers hold
            // it from their first object to their commit): an interrupted copy or backup left
            // it. Cleared and taken again, so a retried copy keeps the source's number.
            Some(g) if !g.committed => {
                dest.remove_generation_dir(&g.prefix)?;
                id.0
            }
            Some(_) => after_last,
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
                    next = GenerationId(next).next(&dkey)?.0.max(after_last)
                }
                Err(e) => return Err(store_err(dbe.as_ref(), "create", &mk)(e)),
            }
        };
        let did = GenerationId(next);
        if did != id {
            let newer: Vec<u64> = dest
                .generations(&dkey)?
                .iter()
                .filter(|g| g.time > m.started)
                .map(|g| g.id.0)
                .collect();
            if !newer.is_empty() {
                tracing::warn!(
                    target_key = %key,
                    generation = %id,
                    dest_generation = %did,
                    ?newer,
                    "the destination already has a generation {id} of its own: this copy gets \
                     number {did}, above generations that are newer than it (restore without \
                     --generation picks the highest number)"
                );
            }
        }
        let tally = Tally::default();
        let result = (|| -> Result<()> {
            // Every index first: the progress total, and the distinct chunks to bring over.
            let mut sources = Vec::with_capacity(m.disks.len());
            for d in &m.disks {
                sources.push(self.index_of(key, &m, d.disk.key)?);
            }
            let mut jobs = Vec::new();
            let mut seen = HashSet::new();
            let mut total = 0u64;
            for (d, idx) in m.disks.iter().zip(&sources) {
                for (slot, digest) in idx.stored_chunks() {
                    let (offset, expected) = idx.chunk_range(slot);
                    total += expected as u64;
                    if seen.insert(digest) {
                        jobs.push(ChunkJob {
                            digest,
                            expected,
                            used_by: ChunkUse {
                                target: key.to_string(),
                                generation: id.0,
                                disk: d.disk.key,
                                offset,
                            },
                        });
                    }
                }
            }
            progress(CopyProgress::Started { bytes: total });
            // Chunks before anything else: every index's chunks must be in the destination
            // before the manifest.
            let translated = self.copy_chunks(dest, &jobs, same_keys, &tally, progress)?;
            let mut indexes: Vec<(String, Vec<u8>, uuid::Uuid)> = Vec::new();
            for (d, idx) in m.disks.iter().zip(&sources) {
                let mut out = FixedIndex::derive(idx);
                // Every stored id was copied above, so it has a translation.
                out.translate_ids(|digest| translated[&digest])?;
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
                Ok(GenerationCopy {
                    source_target: key.clone(),
                    source_generation: id,
                    target: dkey,
                    generation: did,
                    chunks_sent: tally.sent.into_inner(),
                    bytes_sent: tally.bytes.into_inner(),
                    chunks_present: tally.present.into_inner(),
                    as_is: same_keys,
                })
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

    /// Brings every chunk of `jobs` into `dest` with as many requests in flight as the
    /// destination's upload concurrency (4 for a folder); returns each source id's id in
    /// `dest`. The first error stops the workers.
    fn copy_chunks(
        &self,
        dest: &Repository,
        jobs: &[ChunkJob],
        same_keys: bool,
        tally: &Tally,
        progress: &mut (dyn FnMut(CopyProgress) + Send),
    ) -> Result<HashMap<ChunkDigest, ChunkDigest>> {
        let workers = dest
            .ingest_writers()
            .unwrap_or(4)
            .clamp(1, jobs.len().max(1));
        let next = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let out = Mutex::new(HashMap::with_capacity(jobs.len()));
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let progress = Mutex::new(progress);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(job) = jobs.get(i) else { return };
                    match self.copy_chunk(dest, job, same_keys, tally) {
                        Ok(new) => {
                            out.lock().expect("map lock").insert(job.digest, new);
                            (progress.lock().expect("progress lock"))(CopyProgress::Chunk {
                                bytes: job.expected as u64,
                            });
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().expect("error lock").get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().expect("error lock") {
            return Err(e);
        }
        Ok(out.into_inner().expect("map lock"))
    }

    /// Makes the chunk `job.digest` present in `dest`; returns its id there.
    fn copy_chunk(
        &self,
        dest: &Repository,
        job: &ChunkJob,
        same_keys: bool,
        tally: &Tally,
    ) -> Result<ChunkDigest> {
        let digest = job.digest;
        let dstore = dest.chunk_store();
        if same_keys && stored_in(dest, &digest)? {
            tally.present.fetch_add(1, Ordering::Relaxed);
            return Ok(digest);
        }
        let key = ChunkStore::key(&digest);
        let be = self.backend().as_ref();
        let fail = |reason: ChunkFault| {
            Error::Chunk(Box::new(ChunkError {
                digest,
                path: be.display_path(&key),
                used_by: job.used_by.clone(),
                reason,
            }))
        };
        // Verified with the source's keys: envelope, length, and the content's id.
        let limit = self.config().chunk_size as u64 + 4096;
        let raw = match be.get(&key, limit) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(ChunkFault::Missing))
            }
            Err(e) => return Err(store_err(be, "read", &key)(e)),
        };
        let data = self
            .codec()
            .decode(BlobKind::Chunk, &raw, self.config().chunk_size as usize)
            .map_err(|e| fail(ChunkFault::Blob(e)))?;
        if data.len() != job.expected {
            return Err(fail(ChunkFault::Length {
                actual: data.len(),
                expected: job.expected,
            }));
        }
        let actual = self.codec().chunk_id(&data);
        if actual != digest {
            return Err(fail(ChunkFault::DigestMismatch(actual)));
        }
        if same_keys {
            tally
                .bytes
                .fetch_add(dstore.insert(&digest, &raw)?, Ordering::Relaxed);
            tally.sent.fetch_add(1, Ordering::Relaxed);
            return Ok(digest);
        }
        let new = dest.codec().chunk_id(&data);
        if stored_in(dest, &new)? {
            tally.present.fetch_add(1, Ordering::Relaxed);
            return Ok(new);
        }
        let blob = dest.codec().try_encode(BlobKind::Chunk, &data)?;
        tally
            .bytes
            .fetch_add(dstore.insert(&new, &blob)?, Ordering::Relaxed);
        tally.sent.fetch_add(1, Ordering::Relaxed);
        Ok(new)
    }
}

/// Whether `dest` stores the chunk, asked of the store (a `HEAD`; locally a stat that also
/// refreshes the modification time, which keeps a concurrent local gc off it), never of the
/// chunk cache alone. A chunk found is added to the cache.
fn stored_in(dest: &Repository, digest: &ChunkDigest) -> Result<bool> {
    let key = ChunkStore::key(digest);
    let be = dest.backend();
    let present =
        be.touch(&key, BLOB_HEADER_LEN as u64)
            .map_err(store_err(be.as_ref(), "touch", &key))?;
    if present {
        if let Some(c) = dest.chunk_store().cache() {
            c.add(digest);
        }
    }
    Ok(present)
}
