//! Repository and target locks.
//!
//! Each lock is an OS advisory lock (`flock`) on a file in `locks/` plus a *holder record* (JSON:
//! pid, host, command, since, mode) written next to it, so a waiter can name who holds it.
//! The kernel drops a dead process's `flock`, so a crash never blocks others; the holder record
//! it leaves behind is detected (dead pid on this host, or older than [`STALE_LOCK_AGE`] for
//! another host), reported with `tracing::warn!` and in [`RepositoryLock::stale_records`], and
//! removed. Records of *live* conflicting holders on other hosts are honoured even when the
//! file system does not share `flock` between hosts.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{io_err, Error, Result};
use crate::format::STALE_LOCK_AGE;
use crate::fsutil;
use crate::target::TargetKey;

/// Shared (backup, restore, check) or exclusive (gc, prune, reindex, delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder, no shared holders.
    Exclusive,
}

/// Who holds (or held) a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// Command line of the holder (safekeeping never takes secrets as arguments).
    pub command: String,
    /// When the lock was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Lock mode.
    pub mode: LockMode,
    /// Set when the record is stale, saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since = self
            .since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        write!(
            f,
            "pid {} on {} ({:?}, since {since}): {}",
            self.pid, self.host, self.mode, self.command
        )?;
        if let Some(s) = &self.stale {
            write!(f, " [stale: {s}]")?;
        }
        Ok(())
    }
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether `pid` is a running process on this host (Linux `/proc`; elsewhere assumed alive).
pub(crate) fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

fn command_line() -> String {
    let s = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    // Cut at a character boundary: arguments may hold any UTF-8 (VM names).
    s.chars().take(256).collect()
}

/// Classifies a record: `Some(reason)` if stale.
pub(crate) fn staleness(h: &LockHolder, host: &str, now: OffsetDateTime) -> Option<String> {
    if h.host == host {
        if !pid_alive(h.pid) {
            return Some(format!("process {} is not running on this host", h.pid));
        }
        return None;
    }
    let age = now - h.since;
    if age > time::Duration::try_from(STALE_LOCK_AGE).expect("fits") {
        return Some(format!(
            "held for {} hours by another host, more than {} hours",
            age.whole_hours(),
            STALE_LOCK_AGE.as_secs() / 3600
        ));
    }
    None
}

/// The OS lock plus this holder's record; releases both on drop.
#[derive(Debug)]
struct Held {
    file: File,
    record: PathBuf,
    stale: Vec<LockHolder>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.record);
        let _ = FileExt::unlock(&self.file);
    }
}

fn records(dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, Option<LockHolder>)>> {
    let mut out = Vec::new();
    for (name, path) in fsutil::list_dir(dir)? {
        if name.starts_with(prefix) && name.ends_with(".holder") {
            let holder = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok());
            out.push((path, holder));
        }
    }
    Ok(out)
}

fn acquire(dir: &Path, name: &str, mode: LockMode, wait: Duration) -> Result<Held> {
    let lock_path = dir.join(format!("{name}.lock"));
    let record_prefix = format!("{name}.");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err("open lock", &lock_path))?;
    let host = host_name();
    let deadline = Instant::now() + wait;
    loop {
        let got = match mode {
            LockMode::Shared => FileExt::try_lock_shared(&file),
            LockMode::Exclusive => FileExt::try_lock_exclusive(&file),
        };
        let now = OffsetDateTime::now_utc();
        let mut blockers = Vec::new();
        let mut stale = Vec::new();
        if got.is_ok() {
            // We hold the OS lock; look for records of holders the OS lock cannot see.
            for (path, holder) in records(dir, &record_prefix)? {
                let Some(mut h) = holder else {
                    // A record still being written, or damaged: only stale if old.
                    let old = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60))
                        .unwrap_or(false);
                    if old {
                        tracing::warn!(record = %path.display(), "removing unreadable lock record");
                        let _ = fs::remove_file(&path);
                    }
                    continue;
                };
                if let Some(reason) = staleness(&h, &host, now) {
                    tracing::warn!(lock = %lock_path.display(), holder = %h, %reason, "removing stale lock record");
                    h.stale = Some(reason);
                    let _ = fs::remove_file(&path);
                    stale.push(h);
                } else if h.host != host
                    && (mode == LockMode::Exclusive || h.mode == LockMode::Exclusive)
                {
                    blockers.push(h);
                }
            }
            if blockers.is_empty() {
                let me = LockHolder {
                    pid: std::process::id(),
                    host: host.clone(),
                    command: command_line(),
                    since: now,
                    mode,
                    stale: None,
                };
                let record_name = format!(
                    "{record_prefix}{}.{}.holder",
                    me.pid,
                    uuid::Uuid::new_v4().simple()
                );
                let json = serde_json::to_vec(&me).expect("holder serialises");
                fsutil::write_atomic(dir, &record_name, &json)?;
                return Ok(Held {
                    file,
                    record: dir.join(record_name),
                    stale,
                });
            }
            let _ = FileExt::unlock(&file);
        }
        if Instant::now() >= deadline {
            let mut holders: Vec<LockHolder> = if blockers.is_empty() {
                records(dir, &record_prefix)?
                    .into_iter()
                    .filter_map(|(_, h)| h)
                    .filter(|h| mode == LockMode::Exclusive || h.mode == LockMode::Exclusive)
                    .collect()
            } else {
                blockers
            };
            for h in &mut holders {
                h.stale = staleness(h, &host, now);
            }
            return Err(Error::Locked {
                lock: lock_path,
                holders,
            });
        }
        std::thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
    }
}

/// A shared or exclusive lock on a repository; released on drop.
#[derive(Debug)]
pub struct RepositoryLock {
    mode: LockMode,
    repository_id: uuid::Uuid,
    held: Held,
}

impl RepositoryLock {
    pub(crate) fn acquire(
        locks_dir: &Path,
        repository_id: uuid::Uuid,
        mode: LockMode,
        wait: Duration,
    ) -> Result<Self> {
        let held = acquire(locks_dir, "repository", mode, wait)?;
        Ok(Self {
            mode,
            repository_id,
            held,
        })
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Stale holder records found (and removed) when this lock was taken.
    pub fn stale_records(&self) -> &[LockHolder] {
        &self.held.stale
    }

    pub(crate) fn require(
        &self,
        repository_id: uuid::Uuid,
        operation: &'static str,
        exclusive: bool,
    ) -> Result<()> {
        if self.repository_id != repository_id {
            return Err(Error::LockRequired {
                operation,
                needed: "a lock of this repository",
            });
        }
        if exclusive && self.mode != LockMode::Exclusive {
            return Err(Error::LockRequired {
                operation,
                needed: "the exclusive repository lock",
            });
        }
        Ok(())
    }
}

/// The lock that keeps two backups of one target from overlapping; released on drop.
#[derive(Debug)]
pub struct TargetLock {
    key: TargetKey,
    repository_id: uuid::Uuid,
    held: Held,
}

impl TargetLock {
    pub(crate) fn acquire(
        locks_dir: &Path,
        repository_id: uuid::Uuid,
        key: &TargetKey,
        wait: Duration,
    ) -> Result<Self> {
        let held = acquire(
            locks_dir,
            &format!("target-{key}"),
            LockMode::Exclusive,
            wait,
        )?;
        Ok(Self {
            key: key.clone(),
            repository_id,
            held,
        })
    }

    /// The target this lock is for.
    pub fn key(&self) -> &TargetKey {
        &self.key
    }

    pub(crate) fn repository_id(&self) -> uuid::Uuid {
        self.repository_id
    }

    /// Stale holder records found (and removed) when this lock was taken.
    pub fn stale_records(&self) -> &[LockHolder] {
        &self.held.stale
    }
}
