//! Writing one generation: metadata files, one fixed index per disk, then the manifest.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::blob::BlobKind;
use crate::chunk_store::ChunkStore;
use crate::digest::ChunkDigest;
use crate::error::{store_err, Error, Result};
use crate::fixed_index::{FixedIndex, IndexBinding};
use crate::format::{INCOMPLETE_MARKER, INDEX_EXTENSION, MANIFEST_FILE, METADATA_DIR};
use crate::ingest::{ingest, Area, DiskSource, IngestContext, IngestTuning};
use crate::lock::TargetLock;
use crate::manifest::{
    BackupMode, DiskDescriptor, DiskRecord, DiskStats, GenerationStats, GenerationStatus, Manifest,
    MANIFEST_VERSION,
};
use crate::repository::Repository;
use crate::target::{GenerationId, TargetIdentity, TargetKey};

/// Largest metadata file accepted (64 MiB).
pub const METADATA_LIMIT: usize = 64 << 20;

/// Contents of the `incomplete.json` marker of a generation being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRecord {
    /// Writer process id.
    pub pid: u32,
    /// Writer host.
    pub host: String,
    /// When the writer began; garbage collection never deletes chunks touched after this.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
}

/// The disks of a generation being written.
#[derive(Debug, Default)]
struct Disks {
    /// The manifest's order: declared up front, then each new key as its ingest begins.
    order: Vec<i32>,
    /// Keys being ingested or done.
    claimed: HashSet<i32>,
    /// Finished disks.
    done: Vec<DiskRecord>,
    /// An ingest failed. Its chunks that were still being written may already be referenced by
    /// a disk ingested concurrently (as known to this generation), so [`GenerationWriter::commit`]
    /// then checks that every referenced chunk exists before writing the manifest.
    failed: bool,
}

/// What one disk's ingest will read, decided before reading: see
/// [`GenerationWriter::plan_reads`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    /// The areas to read: the changed ones plus the inherited chunks to heal.
    pub areas: Vec<Area>,
    /// How many inherited chunks were missing and are read again.
    pub healed_chunks: usize,
    /// The `(offset, length)` chunk reads the ingest asks for, in order (the last chunk of the
    /// disk cut at its capacity).
    pub reads: Vec<(u64, usize)>,
}

/// A generation being written. Commit it with [`GenerationWriter::commit`]; dropping it
/// uncommitted removes its folder (a crash leaves the folder marked incomplete, and `gc` or
/// `reindex` removes it). Either way only unreferenced chunks remain.
///
/// Disks may be ingested concurrently: [`GenerationWriter::ingest_disk`] takes `&self`, so
/// several threads can each read one disk into the same generation (share it in an `Arc`). The
/// manifest lists the disks in the order [`GenerationWriter::declare_disk_order`] gave, then
/// any others in the order their ingests began.
#[derive(Debug)]
pub struct GenerationWriter {
    repo: Repository,
    _target_lock: TargetLock,
    identity: TargetIdentity,
    key: TargetKey,
    id: GenerationId,
    /// `targets/<key>/gen-NNNNNN/`.
    prefix: String,
    started: OffsetDateTime,
    mode: BackupMode,
    parent: Option<GenerationId>,
    disks: Mutex<Disks>,
    metadata: Vec<String>,
    metadata_bytes: u64,
    known: Mutex<HashSet<ChunkDigest>>,
    tuning: IngestTuning,
    /// The chunk store at a target's own compression level, when it has one.
    leveled_store: Option<ChunkStore>,
    /// How disks are cut (format 4: content-defined chunks); `None` for fixed chunks.
    cut: Option<crate::chunker::CutRule>,
    done: bool,
}

impl GenerationWriter {
    pub(crate) fn begin(
        repo: Repository,
        target_lock: TargetLock,
        identity: TargetIdentity,
        key: TargetKey,
        mode: BackupMode,
        parent: Option<GenerationId>,
    ) -> Result<Self> {
        let cut = repo.cut_rule()?;
        // The highest number of any folder plus one; a planted `gen-18446744073709551615`
        // is an error, not a wrap to 0 (or a panic).
        let mut next = match repo.generation_dirs(&key)?.last() {
            Some(g) => g.id.next(&key)?,
            None => GenerationId(1),
        };
        let started = OffsetDateTime::now_utc();
        let record = WriterRecord {
            pid: std::process::id(),
            host: crate::lock::host_name(),
            started,
        };
        let json = serde_json::to_vec_pretty(&record).expect("record serialises");
        // Claim the number by creating its marker conditionally: if another writer got there
        // first (it should hold the target lock, but the claim does not rely on that), take
        // the next number.
        let be = repo.backend().clone();
        let prefix = loop {
            let prefix = repo.generation_prefix(&key, next);
            let marker = format!("{prefix}{INCOMPLETE_MARKER}");
            match be.create_new(&marker, &json) {
                Ok(()) => break prefix,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    next = next.next(&key)?
                }
                Err(e) => return Err(store_err(be.as_ref(), "create", &marker)(e)),
            }
        };
        let mut tuning = IngestTuning::for_chunk_size(repo.config().chunk_size);
        if let Some(writers) = repo.ingest_writers() {
            tuning = tuning.with_writers(writers);
        }
        Ok(Self {
            repo,
            _target_lock: target_lock,
            identity,
            key,
            id: next,
            prefix,
            started,
            mode,
            parent,
            disks: Mutex::new(Disks::default()),
            metadata: Vec::new(),
            metadata_bytes: 0,
            known: Mutex::new(HashSet::new()),
            tuning,
            leveled_store: None,
            cut,
            done: false,
        })
    }

    /// The number this generation will have.
    pub fn id(&self) -> GenerationId {
        self.id
    }

    /// The target's key.
    pub fn key(&self) -> &TargetKey {
        &self.key
    }

    /// Overrides the pipeline sizing (workers, buffers in flight).
    pub fn set_tuning(&mut self, tuning: IngestTuning) {
        self.tuning = tuning;
    }

    /// Compresses this generation's new chunks at zstd `level` instead of the repository's
    /// (a target's `compression_level`).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] outside zstd's -7..=22.
    pub fn set_compression_level(&mut self, level: i32) -> Result<()> {
        if !(-7..=22).contains(&level) {
            return Err(Error::InvalidOption(format!(
                "compression level {level} is outside zstd's -7..=22"
            )));
        }
        self.leveled_store = Some(self.repo.chunk_store().with_compression_level(level));
        Ok(())
    }

    /// Stores a metadata file (vm config XML, .vmx, .nvram, JSON) with the generation.
    ///
    /// # Errors
    /// [`Error::InvalidMetadataName`] unless `name` is a plain file name,
    /// [`Error::Duplicate`], [`Error::InvalidOption`] above 64 MiB, [`Error::Io`].
    pub fn put_metadata(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if !crate::manifest::is_plain_file_name(name) || name == crate::format::MANIFEST_FILE {
            return Err(Error::InvalidMetadataName(name.to_string()));
        }
        if self.metadata.iter().any(|n| n == name) {
            return Err(Error::Duplicate(format!("metadata file {name}")));
        }
        if data.len() > METADATA_LIMIT {
            return Err(Error::InvalidOption(format!(
                "metadata file {name} is {} bytes, more than {METADATA_LIMIT}",
                data.len()
            )));
        }
        let blob = self.repo.codec().try_encode(BlobKind::Metadata, data)?;
        let mkey = format!(
            "{}{METADATA_DIR}/{}",
            self.prefix,
            self.repo.metadata_file_name(name)
        );
        let be = self.repo.backend();
        be.put(&mkey, &blob)
            .map_err(store_err(be.as_ref(), "write", &mkey))?;
        self.metadata.push(name.to_string());
        self.metadata_bytes += data.len() as u64;
        Ok(())
    }

    /// Fixes the order of the manifest's disk list (the VM's device order, which restore
    /// relies on) before disks are ingested concurrently and finish in any order. Keys not
    /// ingested are left out; keys ingested but not named here follow.
    ///
    /// # Errors
    /// [`Error::Duplicate`] for a key named twice.
    pub fn declare_disk_order(&mut self, keys: &[i32]) -> Result<()> {
        let mut seen = HashSet::new();
        if let Some(k) = keys.iter().find(|&&k| !seen.insert(k)) {
            return Err(Error::Duplicate(format!("disk {k}")));
        }
        let disks = self.disks.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut order = keys.to_vec();
        order.extend(disks.order.iter().filter(|k| !seen.contains(k)));
        disks.order = order;
        Ok(())
    }

    /// Reads `areas` of `source` into this generation as disk `disk.key`.
    ///
    /// With `base` (the parent's index of the same disk) the new index starts as a copy of it and
    /// only the chunks covering `areas` are re-read; without, every other chunk is zero. Areas are
    /// rounded out to chunk boundaries. `progress` receives the bytes just read, on this thread.
    ///
    /// # Errors
    /// [`Error::Duplicate`] for a disk key already ingested, [`Error::InvalidOption`] if the
    /// source's capacity differs from `disk.capacity`, [`Error::BaseIndex`] if `base` does not fit,
    /// [`Error::OutOfRange`] for an area past the end, [`Error::Source`] for read failures,
    /// [`Error::Io`] for repository writes. The generation stays uncommitted on error; the
    /// caller may continue with other disks and commit as `Partial`. A disk whose ingest failed
    /// may be ingested again.
    pub fn ingest_disk(
        &self,
        disk: DiskDescriptor,
        base: Option<&FixedIndex>,
        areas: &[Area],
        source: &mut dyn DiskSource,
        progress: &dyn Fn(u64),
    ) -> Result<DiskStats> {
        self.ingest_with(disk, base, areas, true, source, progress)
    }

    /// Claims the disk key and ingests; `heal`: check inherited chunks and read missing ones.
    fn ingest_with(
        &self,
        disk: DiskDescriptor,
        base: Option<&FixedIndex>,
        areas: &[Area],
        heal: bool,
        source: &mut dyn DiskSource,
        progress: &dyn Fn(u64),
    ) -> Result<DiskStats> {
        let key = disk.key;
        {
            let mut disks = self.lock_disks();
            if !disks.claimed.insert(key) {
                return Err(Error::Duplicate(format!("disk {key}")));
            }
            if !disks.order.contains(&key) {
                disks.order.push(key);
            }
        }
        let mut result = self.ingest_claimed(disk, base, areas, heal, source, progress);
        // The disk's new chunks get their names now rather than with a later batch: whatever
        // follows (another disk's checks, a retry of this one, a commit or an abandoned
        // generation whose chunks a retry re-uses) finds them in the store. A failed ingest's
        // chunks are complete too; its own error is the one reported.
        let named = self.repo.chunk_store().sync_names();
        if let (Ok(_), Err(e)) = (&result, named) {
            result = Err(e);
        }
        let mut disks = self.lock_disks();
        match result {
            Ok(record) => {
                let stats = record.stats;
                disks.done.push(record);
                Ok(stats)
            }
            Err(e) => {
                disks.claimed.remove(&key);
                disks.failed = true;
                Err(e)
            }
        }
    }

    /// The plan of one disk's ingest, before any data is read: the areas it will read — the
    /// given `areas` plus, for an incremental on `base`, every chunk it would inherit that is
    /// missing from the repository (quarantined, lost), which it reads again to heal — and the
    /// chunk reads that come out of them, in order. A source that reads ahead follows
    /// [`ReadPlan::reads`]; [`GenerationWriter::ingest_planned_disk`] then asks for exactly
    /// those, so read-ahead stays full while healing.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an area past the end, [`Error::InvalidOption`] for a zero
    /// capacity or chunk size, and store errors while checking inherited chunks.
    pub fn plan_reads(
        &self,
        capacity: u64,
        base: Option<&FixedIndex>,
        areas: &[Area],
    ) -> Result<ReadPlan> {
        let chunk_size = self.repo.config().chunk_size;
        let cut = self.cut.is_some();
        let mut areas = areas.to_vec();
        let mut healed_chunks = 0;
        let base = base.filter(|b| {
            b.chunk_size() == chunk_size && b.size() == capacity && b.is_variable() == cut
        });
        if let Some(b) = base {
            let missing = self.missing_inherited_chunks(&FixedIndex::derive(b), &areas)?;
            healed_chunks = missing.len();
            areas.extend(missing);
        }
        let reads = if cut {
            // The same spans the ingest will plan (from the same areas and base): a read-ahead
            // source then has exactly its planned extents in flight.
            let old = base.map(|b| b as &dyn crate::chunker::OldChunks);
            let spans = crate::chunker::plan_spans(&areas, capacity, old)?;
            crate::chunker::span_reads(&spans, crate::ingest::CDC_READ_EXTENT)
        } else {
            crate::ingest::chunk_reads(&areas, capacity, chunk_size)?
        };
        Ok(ReadPlan {
            areas,
            healed_chunks,
            reads,
        })
    }

    /// [`GenerationWriter::ingest_disk`] with a plan from [`GenerationWriter::plan_reads`]:
    /// reads exactly the plan's areas (inherited chunks were checked when planning, so they
    /// are not checked again).
    ///
    /// # Errors
    /// As [`GenerationWriter::ingest_disk`].
    pub fn ingest_planned_disk(
        &self,
        disk: DiskDescriptor,
        base: Option<&FixedIndex>,
        plan: &ReadPlan,
        source: &mut dyn DiskSource,
        progress: &dyn Fn(u64),
    ) -> Result<DiskStats> {
        if plan.healed_chunks > 0 {
            tracing::warn!(
                disk = disk.key,
                chunks = plan.healed_chunks,
                "chunks this incremental would inherit are missing from the repository; \
                 reading them again"
            );
        }
        self.ingest_with(disk, base, &plan.areas, false, source, progress)
    }

    fn lock_disks(&self) -> std::sync::MutexGuard<'_, Disks> {
        self.disks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`GenerationWriter::ingest_disk`] once the disk key is claimed: reads, stores and writes
    /// the disk's index file.
    fn ingest_claimed(
        &self,
        disk: DiskDescriptor,
        base: Option<&FixedIndex>,
        areas: &[Area],
        heal: bool,
        source: &mut dyn DiskSource,
        progress: &dyn Fn(u64),
    ) -> Result<DiskRecord> {
        if source.capacity() != disk.capacity {
            return Err(Error::InvalidOption(format!(
                "disk {}: source has {} bytes but the descriptor says {}",
                disk.key,
                source.capacity(),
                disk.capacity
            )));
        }
        let chunk_size = self.repo.config().chunk_size;
        let mut index = match base {
            Some(b) => {
                let reason = if b.chunk_size() != chunk_size {
                    Some(format!(
                        "chunk size {} instead of {chunk_size}",
                        b.chunk_size()
                    ))
                } else if b.is_variable() != self.cut.is_some() {
                    Some(if b.is_variable() {
                        "content-defined chunks in a repository of fixed chunks".to_string()
                    } else {
                        "fixed chunks in a repository of content-defined chunks".to_string()
                    })
                } else if b.size() != disk.capacity {
                    Some(format!(
                        "covers {} bytes, the disk has {}",
                        b.size(),
                        disk.capacity
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(Error::BaseIndex {
                        path: PathBuf::from(format!("index {}", b.uuid())),
                        disk: disk.key,
                        reason,
                    });
                }
                FixedIndex::derive(b)
            }
            None if self.cut.is_some() => FixedIndex::new_variable(disk.capacity, chunk_size)?,
            None => FixedIndex::new(disk.capacity, chunk_size)?,
        };
        let ctx = IngestContext {
            store: self
                .leveled_store
                .as_ref()
                .unwrap_or_else(|| self.repo.chunk_store()),
            disk_key: disk.key,
            known: &self.known,
            tuning: self.tuning,
            budget: self.repo.memory_budget(),
            cut: self.cut.as_ref(),
        };
        // An incremental inherits every chunk outside `areas` from its base without reading it.
        // A chunk of the base that is no longer in the repository (quarantined by `check
        // --repair`, lost) is read again from the source instead, which heals it.
        let mut areas = areas.to_vec();
        if base.is_some() && heal {
            let missing = self.missing_inherited_chunks(&index, &areas)?;
            if !missing.is_empty() {
                tracing::warn!(
                    disk = disk.key,
                    chunks = missing.len(),
                    "chunks this incremental would inherit are missing from the repository; \
                     reading them again"
                );
                areas.extend(missing);
            }
        }
        let stats = ingest(&ctx, &mut index, &areas, base.is_some(), source, progress)?;
        let index_file = format!("disk-{}.{INDEX_EXTENSION}", disk.key);
        // The index names its place, and the manifest records which index it is: a copy of
        // another generation's index put here is found on every read.
        index.bind(IndexBinding::new(self.key.clone(), self.id, disk.key));
        let blob = index.try_encode(self.repo.codec())?;
        let ikey = format!("{}{index_file}", self.prefix);
        let be = self.repo.backend();
        be.put(&ikey, &blob)
            .map_err(store_err(be.as_ref(), "write", &ikey))?;
        let mut record = DiskRecord {
            disk,
            index_file,
            index_sha256: None,
            index_id: None,
            stats,
        };
        record.set_index_identity(index.uuid(), &blob);
        Ok(record)
    }

    /// The chunk ranges the new index would take from its base without reading (outside
    /// `areas`) whose chunk file is missing from the repository: an incremental must read them
    /// again rather than silently inherit a chunk that is gone.
    fn missing_inherited_chunks(&self, index: &FixedIndex, areas: &[Area]) -> Result<Vec<Area>> {
        // The byte ranges the ingest reads again anyway: chunks there are not inherited.
        let ranges: Vec<(u64, u64)> = if index.is_variable() {
            crate::chunker::plan_spans(areas, index.size(), Some(index))?
                .into_iter()
                .map(|s| (s.start, s.end))
                .collect()
        } else {
            let cs = u64::from(index.chunk_size());
            crate::ingest::chunk_ranges(areas, index.size(), index.chunk_size())?
                .into_iter()
                .map(|(first, end)| (first * cs, (end * cs).min(index.size())))
                .collect()
        };
        let reread = |slot: usize| {
            let (offset, len) = index.chunk_range(slot);
            let i = ranges.partition_point(|&(_, end)| end <= offset);
            ranges
                .get(i)
                .is_some_and(|&(start, end)| start <= offset && offset + len as u64 <= end)
        };
        let mut present = HashSet::new();
        let mut gone = HashSet::new();
        let mut missing = Vec::new();
        for (slot, digest) in index.stored_chunks() {
            if reread(slot) || present.contains(&digest) {
                continue;
            }
            let is_gone = gone.contains(&digest) || {
                // A digest this generation already claimed is being (or was) stored by an ingest.
                let known = self
                    .known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&digest);
                let there = known || self.repo.chunk_store().exists_cached(&digest)?;
                if there {
                    present.insert(digest);
                } else {
                    gone.insert(digest);
                }
                !there
            };
            if is_gone {
                let (offset, len) = index.chunk_range(slot);
                missing.push(Area::new(offset, len as u64));
            }
        }
        Ok(missing)
    }

    /// Checks that every chunk the written indexes reference is in the chunk store.
    fn check_referenced_chunks(&self, done: &[DiskRecord]) -> Result<()> {
        let mut seen = HashSet::new();
        for record in done {
            let path = self
                .repo
                .backend()
                .display_path(&format!("{}{}", self.prefix, record.index_file));
            let index = self.repo.read_index(&self.key, self.id, record)?;
            for (slot, digest) in index.stored_chunks() {
                if !seen.insert(digest) {
                    continue;
                }
                if !self.repo.chunk_store().exists(&digest)? {
                    return Err(Error::Index {
                        path,
                        reason: format!(
                            "disk {}: the chunk at offset {} was not stored (a concurrent ingest \
                             of the same data failed); the generation is not committed",
                            record.disk.key,
                            index.chunk_range(slot).0
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks in the store every chunk this generation re-used only because the local chunk
    /// cache listed it (object stores). One the store lacks fails the commit and leaves the
    /// cache, so the next backup stores it again.
    fn verify_cached_chunks(&self) -> Result<()> {
        let store = self.repo.chunk_store();
        let Some(cache) = store.cache() else {
            return Ok(());
        };
        let todo: Vec<ChunkDigest> = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|d| cache.vouched(d))
            .copied()
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let threads = 16.min(todo.len());
        let per = todo.len().div_ceil(threads);
        let results: Vec<Result<Vec<ChunkDigest>>> = std::thread::scope(|s| {
            let handles: Vec<_> = todo
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        let mut missing = Vec::new();
                        for d in part {
                            if !store.exists(d)? {
                                missing.push(*d);
                            }
                        }
                        Ok(missing)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Worker("a verifier panicked".into())))
                })
                .collect()
        });
        let mut missing = Vec::new();
        for r in results {
            missing.extend(r?);
        }
        if missing.is_empty() {
            tracing::debug!(
                chunks = todo.len(),
                "chunks vouched for by the cache are in the store"
            );
            return Ok(());
        }
        for d in &missing {
            cache.remove(d);
        }
        Err(Error::Io {
            op: "verify",
            path: store.path(&missing[0]),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} chunk(s) the local cache of known chunks listed are missing from the \
                     store; the generation is not committed (the cache is corrected: the next \
                     backup stores them again)",
                    missing.len()
                ),
            ),
        })
    }

    /// Commits the generation by writing its manifest; returns its number.
    ///
    /// # Errors
    /// [`Error::Io`]; the generation then does not exist.
    pub fn commit(
        mut self,
        status: GenerationStatus,
        mut extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<GenerationId> {
        if let Some(fp) = self.repo.key_fingerprint() {
            extra.insert("key_fingerprint".into(), fp.0.clone().into());
        }
        let finished = OffsetDateTime::now_utc();
        let Disks {
            order,
            mut done,
            failed,
            ..
        } = std::mem::take(&mut *self.lock_disks());
        // Every chunk the manifest references has its name made durable first (chunks are
        // written in batches, named and synced together; see `Backend::put_name_deferred`).
        self.repo.chunk_store().sync_names()?;
        if failed {
            self.check_referenced_chunks(&done)?;
        }
        self.verify_cached_chunks()?;
        // Declared order, then the order the ingests began (the caller's order when it ingests
        // one disk at a time).
        done.sort_by_key(|d| order.iter().position(|&k| k == d.disk.key));
        let mut totals = DiskStats::default();
        for d in &done {
            totals.add(&d.stats);
        }
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            repository_id: self.repo.config().repository_id,
            target: self.identity.clone(),
            generation: self.id,
            started: self.started,
            finished,
            mode: self.mode,
            parent: self.parent,
            status,
            chunk_size: self.repo.config().chunk_size,
            disks: done,
            metadata_files: std::mem::take(&mut self.metadata),
            stats: GenerationStats {
                disks: totals,
                metadata_bytes: self.metadata_bytes,
                elapsed_seconds: (finished - self.started).as_seconds_f64(),
            },
            extra,
        };
        let blob = manifest.encode(self.repo.codec())?;
        // The commit: a conditional create, never an overwrite (a hard link locally,
        // `PUT If-None-Match: *` on S3). If a manifest exists, this generation is not ours.
        let mkey = format!("{}{MANIFEST_FILE}", self.prefix);
        let be = self.repo.backend().clone();
        be.create_new(&mkey, &blob)
            .map_err(store_err(be.as_ref(), "commit", &mkey))?;
        self.done = true;
        let marker = format!("{}{INCOMPLETE_MARKER}", self.prefix);
        be.delete(&marker)
            .map_err(store_err(be.as_ref(), "remove", &marker))?;
        tracing::info!(target_key = %self.key, generation = %self.id, "generation committed");
        Ok(self.id)
    }
}

impl Drop for GenerationWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        tracing::warn!(target_key = %self.key, generation = %self.id, "generation abandoned; removing its folder");
        // A folder that holds a manifest is a committed generation (one that another writer,
        // ignoring the target lock, committed under this number): only the marker goes.
        let be = self.repo.backend();
        let committed = be
            .head(&format!("{}{MANIFEST_FILE}", self.prefix))
            .map(|m| m.is_some())
            .unwrap_or(true);
        if committed {
            tracing::warn!(target_key = %self.key, generation = %self.id, "another writer committed this generation; leaving it");
            let _ = be.delete(&format!("{}{INCOMPLETE_MARKER}", self.prefix));
            return;
        }
        if let Err(e) = self.repo.remove_generation_dir(&self.prefix) {
            tracing::warn!(error = %e, "could not remove abandoned generation folder; gc will");
        }
    }
}
