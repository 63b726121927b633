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

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use time::OffsetDateTime;

use crate::chunk_store::ChunkEntry;
use crate::digest::ChunkDigest;
use crate::error::{io_err, Result};
use crate::format::{DEFAULT_GC_GRACE, MANIFEST_FILE, TEMP_PREFIX};
use crate::fsutil;
use crate::lock::RepositoryLock;
use crate::manifest::Manifest;
use crate::repository::Repository;

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
}

/// Smallest grace applied, whatever the options say (file timestamp granularity).
pub const MIN_GRACE: Duration = Duration::from_secs(1);

/// Test hooks called between the steps of sweeping one chunk.
#[derive(Default)]
pub(crate) struct SweepHooks<'a> {
    pub after_first_stat: Option<&'a dyn Fn()>,
    pub after_rename: Option<&'a dyn Fn()>,
}

fn mtime(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

/// Sweeps one unreferenced chunk; returns the bytes freed (0 if kept or gone).
pub(crate) fn sweep_chunk(
    path: &Path,
    cutoff: SystemTime,
    hooks: &SweepHooks<'_>,
) -> Result<Option<u64>> {
    let (t, _) = match mtime(path) {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if t >= cutoff {
        return Ok(None);
    }
    if let Some(h) = hooks.after_first_stat {
        h();
    }
    let dir = path.parent().expect("chunk has a folder");
    let trash = dir.join(format!("{TEMP_PREFIX}gc-{}", uuid::Uuid::new_v4().simple()));
    match fs::rename(path, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("rename", path)(e)),
    }
    if let Some(h) = hooks.after_rename {
        h();
    }
    let (t, len) = mtime(&trash).map_err(io_err("stat", &trash))?;
    if t >= cutoff {
        // Touched between our first stat and the rename: it is in use, put it back.
        fs::rename(&trash, path).map_err(io_err("restore", path))?;
        return Ok(None);
    }
    fs::remove_file(&trash).map_err(io_err("remove", &trash))?;
    Ok(Some(len))
}

impl Repository {
    /// Removes chunks no committed generation references, abandoned generation folders and
    /// leftover temporary files.
    ///
    /// # Errors
    /// [`crate::Error::LockRequired`] without the exclusive lock. Any unreadable manifest or index
    /// aborts before anything is deleted (the mark would be incomplete), naming the file.
    pub fn gc(&self, lock: &RepositoryLock, opts: &GcOptions) -> Result<GcReport> {
        lock.require(self.config().repository_id, "gc", true)?;
        run(self, opts, &SweepHooks::default())
    }
}

pub(crate) fn run(repo: &Repository, opts: &GcOptions, hooks: &SweepHooks<'_>) -> Result<GcReport> {
    let start = SystemTime::now();
    let host = crate::lock::host_name();
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut oldest_writer = start;
    let mut marked: HashSet<ChunkDigest> = HashSet::new();
    let mut abandoned = Vec::new();

    for key in repo.target_keys()? {
        for g in repo.generation_dirs(&key)? {
            let label = format!("{key}/{}", g.id.folder_name());
            if !g.committed {
                let live = repo.incomplete_writer(&g.path).and_then(|w| {
                    let alive = if w.host == host {
                        crate::lock::pid_alive(w.pid)
                    } else {
                        OffsetDateTime::now_utc() - w.started
                            < time::Duration::try_from(crate::format::STALE_LOCK_AGE).expect("fits")
                    };
                    alive.then_some(w)
                });
                // A folder whose marker is not written yet belongs to a writer just starting.
                let young = repo.incomplete_writer(&g.path).is_none()
                    && mtime(&g.path)
                        .map(|(t, _)| t + opts.grace > start)
                        .unwrap_or(false);
                match live {
                    Some(w) => {
                        oldest_writer = oldest_writer.min(SystemTime::from(w.started));
                        report.incomplete_in_progress.push(label);
                    }
                    None if young => {
                        oldest_writer =
                            oldest_writer.min(mtime(&g.path).map(|(t, _)| t).unwrap_or(start));
                        report.incomplete_in_progress.push(label);
                    }
                    None => abandoned.push((key.clone(), g.path.clone(), label)),
                }
                continue;
            }
            let m = Manifest::read(&g.path.join(MANIFEST_FILE), repo.codec())?;
            for d in &m.disks {
                let idx = repo.index_of(&key, &m, d.disk.key)?;
                marked.extend(idx.stored_chunks().map(|(_, dg)| dg));
            }
            report.generations_marked += 1;
        }
    }
    report.chunks_referenced = marked.len() as u64;
    let cutoff = oldest_writer
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    report.cutoff = Some(OffsetDateTime::from(cutoff));

    repo.chunk_store().scan(|entry| {
        match entry {
            ChunkEntry::Chunk(d, path) => {
                report.chunks_found += 1;
                if marked.contains(&d) {
                    return Ok(());
                }
                if opts.dry_run {
                    match mtime(&path) {
                        Ok((t, len)) if t < cutoff => {
                            report.chunks_removed += 1;
                            report.bytes_removed += len;
                        }
                        Ok(_) => report.chunks_kept_recent += 1,
                        Err(_) => {}
                    }
                    return Ok(());
                }
                match sweep_chunk(&path, cutoff, hooks)? {
                    Some(len) => {
                        report.chunks_removed += 1;
                        report.bytes_removed += len;
                    }
                    None => report.chunks_kept_recent += 1,
                }
            }
            ChunkEntry::Temp(path) => {
                let old = mtime(&path).map(|(t, _)| t < cutoff).unwrap_or(false);
                if old && !opts.dry_run && fs::remove_file(&path).is_ok() {
                    report.temp_files_removed += 1;
                }
            }
            ChunkEntry::Foreign(path) => report.foreign_files.push(path),
        }
        Ok(())
    })?;

    for (key, path, label) in abandoned {
        if !opts.dry_run {
            repo.remove_generation_dir(&key, &path)?;
        }
        report.incomplete_removed.push(label);
    }
    if !opts.dry_run {
        fsutil::sync_dir(repo.chunk_store().dir())?;
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
    use crate::lock::TargetLock;
    use crate::manifest::{BackupMode, DiskDescriptor, GenerationStatus};
    use crate::source::MemorySource;
    use crate::target::{TargetIdentity, TargetKind};
    use std::cell::Cell;

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
        let tl = TargetLock::acquire(
            &repo.locks_dir(),
            repo.config().repository_id,
            &key,
            Duration::ZERO,
        )
        .unwrap();
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
}
