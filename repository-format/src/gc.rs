//! Garbage collection: mark every chunk referenced by a committed index, sweep the rest.
//!
//! # Why a chunk in use by a running backup is never deleted
//!
//! A backup that finds a chunk already present *touches* it (sets its mtime to now, by path)
//! and then stats it; only if both succeed does it count the chunk as present. A new chunk is
//! written with a fresh mtime. The sweep deletes an unreferenced chunk only if its mtime is older
//! than the **cutoff** = min(start of this gc, start of the oldest live writer) − grace, and does
//! so in three steps:
//!
//! 1. stat: mtime ≥ cutoff → keep;
//! 2. rename the chunk to a temporary name in the same folder;
//! 3. stat the renamed file: mtime ≥ cutoff → rename it back, else unlink it.
//!
//! If the writer's touch+stat succeeded, the name existed when it stat'ed, so the touch happened
//! before step 2 and step 3 sees it. If the touch or stat came after step 2, the writer saw
//! "not found" and wrote the chunk again. Either way the chunk exists when the writer commits.
//! Chunks a writer takes from its parent's index without reading are referenced by that
//! committed parent and therefore marked. The tests in this module force each interleaving.
//!
//! # Why a chunk a running `serve` reads is never deleted
//!
//! `serve` and `files` pin their generation ([`crate::lock`]): prune and delete keep a pinned
//! generation, so its manifest stays and the mark covers its chunks. gc checks that every
//! live pin names a generation it marked and deletes nothing otherwise (a generation deleted
//! by a version that did not know pins, for example).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;

use crate::chunk_store::ChunkEntry;
use crate::digest::ChunkDigest;
use crate::error::{io_err, store_err, Result};
use crate::format::DEFAULT_GC_GRACE;
use crate::lock::RepositoryLock;
use crate::repository::Repository;
pub(crate) use crate::storage::SweepHooks;

/// Options of [`Repository::gc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GcOptions {
    /// Only count what would be removed.
    pub dry_run: bool,
    /// Subtracted from the cutoff (clock skew, coarse timestamps). Default 5 minutes, at least
    /// [`MIN_GRACE`].
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: DEFAULT_GC_GRACE,
        }
    }
}

/// What garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcReport {
    /// True if nothing was removed because of `dry_run`.
    pub dry_run: bool,
    /// Chunks newer than this were kept even when unreferenced.
    #[serde(with = "time::serde::rfc3339::option")]
    pub cutoff: Option<OffsetDateTime>,
    /// Committed generations whose indexes were marked.
    pub generations_marked: u64,
    /// Distinct chunks referenced.
    pub chunks_referenced: u64,
    /// Chunk files found.
    pub chunks_found: u64,
    /// Unreferenced chunks removed (or that would be, in a dry run).
    pub chunks_removed: u64,
    /// Bytes of those chunks.
    pub bytes_removed: u64,
    /// Unreferenced chunks kept because they are newer than the cutoff.
    pub chunks_kept_recent: u64,
    /// Leftover temporary files removed.
    pub temp_files_removed: u64,
    /// Abandoned generation folders removed (`target/gen-NNNNNN`).
    pub incomplete_removed: Vec<String>,
    /// Generation folders of live writers left alone.
    pub incomplete_in_progress: Vec<String>,
    /// Files under `chunks/` that are not chunks (left alone; `check` reports them).
    pub foreign_files: Vec<PathBuf>,
    /// Generations committed while gc ran, found by the second listing and marked before
    /// anything was deleted.
    #[serde(default)]
    pub generations_marked_late: u64,
    /// Unreferenced chunks kept because the S3 object lock still retains them (see
    /// [`crate::object_lock`]); a later gc removes them.
    #[serde(default)]
    pub chunks_kept_locked: u64,
    /// The grace subtracted from the cutoff, in seconds: 0 when gc held the exclusive lock
    /// and saw no live lock holder and no running writer (then unreferenced chunks older than
    /// its start went at once), else the configured grace.
    #[serde(default)]
    pub grace_seconds: u64,
    /// Live holders of other locks seen by a gc under the exclusive lock (their presence
    /// keeps the grace).
    #[serde(default)]
    pub live_lock_holders: u64,
    /// Generations pinned by running readers (`serve`, `files`): marked like every committed
    /// generation, and checked to be.
    #[serde(default)]
    pub generations_pinned: u64,
}

/// Smallest grace applied, whatever the options say (file timestamp granularity).
pub const MIN_GRACE: Duration = Duration::from_secs(1);

impl Repository {
    /// Removes chunks no committed generation references, abandoned generation folders and
    /// leftover temporary files.
    ///
    /// # Errors
    /// [`crate::Error::LockRequired`] without the exclusive lock. Any unreadable manifest or index
    /// aborts before anything is deleted (the mark would be incomplete), naming the file.
    pub fn gc(&self, lock: &RepositoryLock, opts: &GcOptions) -> Result<GcReport> {
        lock.require(self.config().repository_id, "gc", true)?;
        run_exclusive(
            self,
            opts,
            &SweepHooks::default(),
            Some(lock.run_id()),
            None,
        )
    }

    /// [`Repository::gc`] telling `progress` about the sweep (the long part on a repository
    /// with much to free).
    ///
    /// # Errors
    /// As [`Repository::gc`].
    pub fn gc_reporting(
        &self,
        lock: &RepositoryLock,
        opts: &GcOptions,
        progress: &dyn GcProgress,
    ) -> Result<GcReport> {
        lock.require(self.config().repository_id, "gc", true)?;
        run_exclusive(
            self,
            opts,
            &SweepHooks::default(),
            Some(lock.run_id()),
            Some(progress),
        )
    }
}

/// Told about gc's sweep ([`Repository::gc_reporting`]): the stored bytes of the unreferenced
/// chunks older than the cutoff once they are known, then each one as it is removed or kept.
pub trait GcProgress {
    /// `chunks` candidates holding `bytes` stored bytes are about to be swept.
    fn sweep_started(&self, chunks: u64, bytes: u64);
    /// One candidate of `bytes` stored bytes was removed or kept.
    fn swept(&self, bytes: u64);
}

/// Marks the chunks of every committed generation not in `seen` (adding them to it); returns
/// how many generations were marked. Abandoned and live incomplete folders are reported
/// through the callback.
fn mark(
    repo: &Repository,
    seen: &mut HashSet<String>,
    marked: &mut HashSet<ChunkDigest>,
    mut incomplete: impl FnMut(
        &crate::target::TargetKey,
        &crate::repository::GenerationDir,
    ) -> Result<()>,
) -> Result<u64> {
    let mut n = 0;
    for key in repo.target_keys()? {
        for g in repo.generation_dirs(&key)? {
            if !g.committed {
                incomplete(&key, &g)?;
                continue;
            }
            if !seen.insert(g.prefix.clone()) {
                continue;
            }
            let m = repo.manifest(&key, g.id)?;
            for d in &m.disks {
                let idx = repo.index_of(&key, &m, d.disk.key)?;
                marked.extend(idx.stored_chunks().map(|(_, dg)| dg));
            }
            n += 1;
        }
    }
    Ok(n)
}

/// gc as if no lock were held: the grace always applies (the tests drive the sweep's
/// interleavings through this).
#[cfg(test)]
pub(crate) fn run(repo: &Repository, opts: &GcOptions, hooks: &SweepHooks<'_>) -> Result<GcReport> {
    run_exclusive(repo, opts, hooks, None, None)
}

/// gc; `exclusive` is the run id of the exclusive repository lock the caller holds. Holding
/// it, and seeing no other live lock holder and no running writer, gc applies no grace: no
/// writer it can see is alive, so a failed backup's chunks go at once.
pub(crate) fn run_exclusive(
    repo: &Repository,
    opts: &GcOptions,
    hooks: &SweepHooks<'_>,
    exclusive: Option<&str>,
    progress: Option<&dyn GcProgress>,
) -> Result<GcReport> {
    let be = repo.backend().as_ref();
    // Every time below is the store's: object times are compared with the time the store gives
    // an object written now, so host clocks do not matter.
    let start =
        be.store_time()
            .map_err(store_err(be, "read the clock of", crate::format::LOCKS_DIR))?;
    let grace = opts.grace.max(MIN_GRACE);
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut oldest_writer = start;
    let mut marked: HashSet<ChunkDigest> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut abandoned = Vec::new();

    report.generations_marked = mark(repo, &mut seen, &mut marked, |key, g| {
        let label = format!("{key}/{}", g.id.folder_name());
        // A writer holds its target's lock (and renews it) from begin to commit or drop, and
        // takes it before it creates the folder's first object; a folder whose target lock
        // has no live holder is abandoned.
        let locked = crate::lock::is_held(be, &format!("target-{key}"))?;
        if locked {
            let began = g
                .marker
                .as_ref()
                .map(|m| m.modified)
                .or_else(|| g.newest())
                .unwrap_or(start);
            oldest_writer = oldest_writer.min(began);
            report.incomplete_in_progress.push(label);
        } else {
            abandoned.push((g.prefix.clone(), label));
        }
        Ok(())
    })?;
    // The grace protects writers gc cannot see (a run that ignored or lost its lock, coarse
    // timestamps). Under the exclusive lock, with no other live lock holder and no running
    // writer, no writer is alive that it could protect from: chunks older than gc's start go
    // now, so the space a failed backup left behind is freed by the next gc.
    let grace = match exclusive {
        Some(own) if report.incomplete_in_progress.is_empty() => {
            let others = crate::lock::other_live_holders(be, own)?;
            report.live_lock_holders = others.len() as u64;
            if others.is_empty() {
                Duration::ZERO
            } else {
                tracing::info!(
                    holders = %others.join("; "),
                    "live lock holders: unreferenced chunks newer than the grace are kept"
                );
                grace
            }
        }
        _ => grace,
    };
    report.grace_seconds = grace.as_secs();
    let cutoff = oldest_writer
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    report.cutoff = Some(OffsetDateTime::from(cutoff));

    // Phase one: find the candidates (unreferenced, older than the cutoff).
    let mut candidates: Vec<(ChunkDigest, String, u64)> = Vec::new();
    repo.chunk_store().scan(|entry| {
        match entry {
            ChunkEntry::Chunk(d, info) => {
                report.chunks_found += 1;
                if marked.contains(&d) {
                    return Ok(());
                }
                if info.modified >= cutoff {
                    report.chunks_kept_recent += 1;
                } else {
                    candidates.push((d, info.key, info.size));
                }
            }
            ChunkEntry::Temp(info) => {
                if let Some(root) = be.local_root() {
                    let path = root.join(&info.key);
                    if info.modified < cutoff
                        && !opts.dry_run
                        && std::fs::remove_file(&path).is_ok()
                    {
                        report.temp_files_removed += 1;
                    }
                }
            }
            ChunkEntry::Foreign(info) => report.foreign_files.push(be.display_path(&info.key)),
        }
        Ok(())
    })?;

    if let Some(h) = hooks.after_scan {
        h();
    }
    // Phase two: list the generations again. One committed since the mark (a writer that
    // ignored or lost the lock) is marked too, so none of its chunks is deleted.
    report.generations_marked_late = mark(repo, &mut seen, &mut marked, |_, _| Ok(()))?;
    report.generations_marked += report.generations_marked_late;
    report.chunks_referenced = marked.len() as u64;
    // Listed after the mark: a pin taken before this gc's exclusive lock shows here, and no
    // pin can be taken while gc holds it. Each must name a generation whose chunks are marked.
    let pins = crate::lock::live_pins(be)?;
    for h in &pins {
        let Some(p) = &h.pin else { continue };
        let prefix = repo.generation_prefix(&p.target, crate::target::GenerationId(p.generation));
        if !seen.contains(&prefix) {
            return Err(crate::error::Error::PinnedGenerationMissing {
                target: p.target.to_string(),
                generation: p.generation,
                holder: Box::new(h.clone()),
            });
        }
    }
    report.generations_pinned = pins.len() as u64;
    if report.generations_marked_late > 0 {
        tracing::warn!(
            late = report.generations_marked_late,
            "generations were committed while gc ran; their chunks are kept"
        );
    }

    if let Some(p) = progress {
        p.sweep_started(
            candidates.len() as u64,
            candidates.iter().map(|(_, _, size)| size).sum(),
        );
    }
    for (d, key, size) in candidates {
        if let Some(p) = progress {
            p.swept(size);
        }
        if marked.contains(&d) {
            continue;
        }
        if opts.dry_run {
            if let Some(info) = be.head(&key).map_err(store_err(be, "stat", &key))? {
                if be.locked_until(&info).is_some() {
                    report.chunks_kept_locked += 1;
                    continue;
                }
                report.chunks_removed += 1;
                report.bytes_removed += info.size;
            }
            continue;
        }
        // Deleted only if still older than the cutoff: a local touch since the scan (a
        // backup re-using it) keeps it (see the module docs).
        let freed = match be.local_root() {
            Some(root) => {
                let path = root.join(&key);
                crate::storage::sweep_file(&path, cutoff, hooks).map_err(io_err("sweep", &path))?
            }
            None => be
                .delete_if_older(&key, cutoff)
                .map_err(store_err(be, "delete", &key))?,
        };
        match freed {
            Some(len) => {
                report.chunks_removed += 1;
                report.bytes_removed += len;
            }
            None => {
                // Kept by the backend: too recent, or (S3) under object lock.
                let locked = be.object_lock().is_some()
                    && be
                        .head(&key)
                        .map_err(store_err(be, "stat", &key))?
                        .is_some_and(|i| be.locked_until(&i).is_some());
                if locked {
                    report.chunks_kept_locked += 1;
                } else {
                    report.chunks_kept_recent += 1;
                }
            }
        }
    }

    if report.chunks_removed > 0 && !opts.dry_run {
        repo.chunks_removed()?;
    }
    for (prefix, label) in abandoned {
        if !opts.dry_run {
            repo.remove_generation_dir(&prefix)?;
        }
        report.incomplete_removed.push(label);
    }
    tracing::info!(
        removed = report.chunks_removed,
        bytes = report.bytes_removed,
        "garbage collection finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobKind;
    use crate::config::InitOptions;
    use crate::ingest::Area;
    use crate::manifest::{BackupMode, DiskDescriptor, GenerationStatus};
    use crate::source::MemorySource;
    use crate::target::{TargetIdentity, TargetKind};
    use std::cell::Cell;
    use std::path::Path;

    const CS: u32 = 64 * 1024;

    fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(
            dir.path().join("r"),
            &InitOptions {
                chunk_size: CS,
                compression_level: 1,
                ..Default::default()
            },
        )
        .unwrap();
        (dir, repo)
    }

    fn set_old(path: &Path) {
        let t = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_file_mtime(path, t).unwrap();
    }

    fn orphan(repo: &Repository, content: &[u8]) -> (ChunkDigest, PathBuf) {
        let d = ChunkDigest::of(content);
        let blob = repo.chunk_store().codec().encode(BlobKind::Chunk, content);
        repo.chunk_store().insert(&d, &blob).unwrap();
        let p = repo.chunk_store().path(&d);
        set_old(&p);
        (d, p)
    }

    #[test]
    fn old_unreferenced_chunk_is_swept_referenced_kept() {
        let (_d, repo) = repo();
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let id = {
            let mut i = TargetIdentity::new(TargetKind::Vm, "a");
            i.instance_uuid = Some("1".into());
            i
        };
        let key = id.key().unwrap();
        let tl = repo.lock_target(&key, Duration::ZERO).unwrap();
        let w = repo
            .begin_generation(&lock, tl, id, BackupMode::Full, None)
            .unwrap();
        let data = vec![5u8; CS as usize];
        w.ingest_disk(
            DiskDescriptor::new(1, CS as u64),
            None,
            &[Area::new(0, CS as u64)],
            &mut MemorySource::new(data.clone()),
            &|_| {},
        )
        .unwrap();
        let g = w
            .commit(GenerationStatus::Succeeded, Default::default())
            .unwrap();
        let used = repo.chunk_store().path(&ChunkDigest::of(&data));
        set_old(&used);
        let (_, dead) = orphan(&repo, b"nobody uses me");
        drop(lock);
        let x = repo.lock_exclusive(Duration::ZERO).unwrap();
        let dry = repo
            .gc(
                &x,
                &GcOptions {
                    dry_run: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(dry.chunks_removed, 1);
        assert!(dead.exists());
        let r = repo.gc(&x, &GcOptions::default()).unwrap();
        assert_eq!(
            (r.chunks_removed, r.chunks_referenced, r.generations_marked),
            (1, 1, 1)
        );
        assert!(r.bytes_removed > 0);
        assert!(!dead.exists());
        assert!(used.exists());
        let mut rd = repo.disk_reader(&key, g, 1).unwrap();
        let mut buf = vec![0u8; CS as usize];
        rd.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, data);
    }

    #[test]
    fn shared_lock_is_not_enough_for_gc() {
        let (_d, repo) = repo();
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        assert!(matches!(
            repo.gc(&lock, &GcOptions::default()),
            Err(crate::Error::LockRequired { .. })
        ));
    }

    /// A chunk written during gc (after the mark phase) is newer than the cutoff and survives.
    #[test]
    fn chunk_written_during_gc_survives() {
        let (_d, repo) = repo();
        let (_, old) = orphan(&repo, b"old garbage");
        let written = Cell::new(None);
        let hook = || {
            if written.get().is_none() {
                let d = ChunkDigest::of(b"fresh chunk from a running backup");
                let blob = repo
                    .chunk_store()
                    .codec()
                    .encode(BlobKind::Chunk, b"fresh chunk from a running backup");
                repo.chunk_store().insert(&d, &blob).unwrap();
                written.set(Some(d));
            }
        };
        let hooks = SweepHooks {
            after_first_stat: Some(&hook),
            after_rename: None,
            after_scan: None,
        };
        let r = run(
            &repo,
            &GcOptions {
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            &hooks,
        )
        .unwrap();
        assert!(!old.exists());
        let fresh = written.get().unwrap();
        assert!(repo.chunk_store().path(&fresh).exists());
        // A second gc right away still keeps it: it is newer than the cutoff.
        let r2 = run(
            &repo,
            &GcOptions {
                grace: Duration::from_secs(60),
                ..Default::default()
            },
            &SweepHooks::default(),
        )
        .unwrap();
        assert!(repo.chunk_store().path(&fresh).exists());
        assert_eq!(r.chunks_removed, 1);
        assert_eq!(r2.chunks_kept_recent, 1);
    }

    /// A backup re-uses an old unreferenced chunk between gc's first stat and its rename:
    /// the recheck after the rename sees the touch and restores the chunk.
    #[test]
    fn chunk_reused_before_rename_is_restored() {
        let (_d, repo) = repo();
        let (d, path) = orphan(&repo, b"reused by a backup");
        let present = Cell::new(false);
        let hook = || present.set(repo.chunk_store().touch(&d).unwrap());
        let hooks = SweepHooks {
            after_first_stat: Some(&hook),
            after_rename: None,
            after_scan: None,
        };
        let r = run(
            &repo,
            &GcOptions {
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            &hooks,
        )
        .unwrap();
        assert!(present.get(), "the backup saw the chunk present");
        assert!(path.exists(), "so it must still exist");
        assert_eq!(r.chunks_removed, 0);
        assert!(repo
            .chunk_store()
            .load(&d, b"reused by a backup".len())
            .is_ok());
    }

    /// A backup tries to re-use the chunk after gc renamed it away: the touch reports it missing,
    /// so the backup writes it again, and gc's unlink of the renamed copy does not remove it.
    #[test]
    fn chunk_reused_after_rename_is_rewritten_by_the_backup() {
        let (_d, repo) = repo();
        let content = b"reused late";
        let (d, path) = orphan(&repo, content);
        let hook = || {
            let present = repo.chunk_store().touch(&d).unwrap();
            assert!(
                !present,
                "renamed away: the backup must not count it as present"
            );
            let blob = repo.chunk_store().codec().encode(BlobKind::Chunk, content);
            repo.chunk_store().insert(&d, &blob).unwrap();
        };
        let hooks = SweepHooks {
            after_first_stat: None,
            after_scan: None,
            after_rename: Some(&hook),
        };
        let r = run(
            &repo,
            &GcOptions {
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            &hooks,
        )
        .unwrap();
        assert_eq!(r.chunks_removed, 1, "the old copy was removed");
        assert!(path.exists());
        assert!(repo.chunk_store().load(&d, content.len()).is_ok());
    }

    /// Real concurrency: backups re-using and writing chunks while gc loops. Afterwards every
    /// committed generation restores.
    #[test]
    fn gc_racing_backups_loses_nothing() {
        let (_d, repo) = repo();
        let data: Vec<Vec<u8>> = (0..6u8)
            .map(|i| {
                (0..CS as usize * 4)
                    .map(|j| (j as u8).wrapping_mul(i + 1) ^ (j / 4096) as u8)
                    .collect()
            })
            .collect();
        // Make every chunk pre-exist as old garbage so the backups re-use them.
        for d in &data {
            for c in d.chunks(CS as usize) {
                orphan(&repo, c);
            }
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut committed = Vec::new();
        std::thread::scope(|s| {
            let gc = s.spawn(|| {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    run(
                        &repo,
                        &GcOptions {
                            grace: Duration::from_secs(1),
                            ..Default::default()
                        },
                        &SweepHooks::default(),
                    )
                    .unwrap();
                    runs += 1;
                }
                runs
            });
            for (i, d) in data.iter().enumerate() {
                let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
                let mut id = TargetIdentity::new(TargetKind::Vm, format!("vm{i}"));
                id.instance_uuid = Some(format!("u{i}"));
                let key = id.key().unwrap();
                let tl = repo.lock_target(&key, Duration::ZERO).unwrap();
                let w = repo
                    .begin_generation(&lock, tl, id, BackupMode::Full, None)
                    .unwrap();
                w.ingest_disk(
                    DiskDescriptor::new(1, d.len() as u64),
                    None,
                    &[Area::new(0, d.len() as u64)],
                    &mut MemorySource::new(d.clone()),
                    &|_| {},
                )
                .unwrap();
                committed.push((
                    key,
                    w.commit(GenerationStatus::Succeeded, Default::default())
                        .unwrap(),
                    d.clone(),
                ));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(gc.join().unwrap() > 0);
        });
        for (key, g, d) in committed {
            let mut r = repo.disk_reader(&key, g, 1).unwrap();
            let mut buf = vec![0u8; d.len()];
            r.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, d);
        }
        assert!(repo
            .check(&crate::CheckOptions { read_data: true })
            .unwrap()
            .ok());
    }

    #[test]
    fn a_generation_committed_while_gc_runs_keeps_its_chunks() {
        let (_d, repo) = repo();
        let content = vec![9u8; CS as usize];
        let (_, path) = orphan(&repo, &content);
        let id = {
            let mut i = TargetIdentity::new(TargetKind::Vm, "late");
            i.instance_uuid = Some("late".into());
            i
        };
        let key = id.key().unwrap();
        let committed = Cell::new(None);
        // Between gc's chunk listing (the chunk is an old, unreferenced candidate) and its
        // second listing of generations, a backup that gc's lock did not keep out commits a
        // generation using the chunk. The mtime is set old again, as on an object store
        // (no touch): only the second listing can save the chunk.
        let hook = || {
            let lock = repo.lock_shared(Duration::ZERO).unwrap();
            let tl = repo.lock_target(&key, Duration::ZERO).unwrap();
            let w = repo
                .begin_generation(&lock, tl, id.clone(), BackupMode::Full, None)
                .unwrap();
            w.ingest_disk(
                DiskDescriptor::new(1, CS as u64),
                None,
                &[Area::new(0, CS as u64)],
                &mut MemorySource::new(content.clone()),
                &|_| {},
            )
            .unwrap();
            committed.set(Some(
                w.commit(GenerationStatus::Succeeded, Default::default())
                    .unwrap(),
            ));
            set_old(&path);
        };
        let r = run(
            &repo,
            &GcOptions {
                dry_run: false,
                grace: Duration::from_secs(1),
            },
            &SweepHooks {
                after_scan: Some(&hook),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.generations_marked_late, 1, "{r:#?}");
        assert_eq!(r.chunks_removed, 0, "{r:#?}");
        assert!(path.exists());
        let mut rd = repo.disk_reader(&key, committed.get().unwrap(), 1).unwrap();
        let mut buf = vec![0u8; CS as usize];
        rd.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, content);
    }
}
