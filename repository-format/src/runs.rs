//! Run records: one small object per backup run under `runs/`, so that "did last night's
//! backup work?" is answered from the repository itself, also after a crash.
//!
//! A run writes its record twice through the repository's storage backend (so it works the
//! same on a folder and on S3): at the start with status `running`, and at the end with its
//! outcome, replacing the first atomically (`put`). A record still `running` whose run no
//! longer holds the repository lock ([`Repository::live_runs`]) was interrupted (killed,
//! crashed, machine lost): [`Repository::runs`] reports it as [`RunStatus::Interrupted`].
//!
//! Records are sealed like generation metadata (an `F` blob: CRC32, compressed, encrypted in
//! an encrypted repository, because they name VMs and hosts). Each is named
//! `runs/<start as YYYYMMDDTHHMMSS.mmmZ>-<run id>`, so a listing sorted by key is sorted by start
//! time, and a record read back must carry the id and start time of its own name.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::blob::BlobKind;
use crate::error::{store_err, Error, Result};
use crate::repository::Repository;

/// The folder of run records.
pub const RUNS_DIR: &str = "runs";

/// Largest run record read back (a run of thousands of targets with long errors fits).
pub const RUN_RECORD_LIMIT: usize = 4 << 20;

/// How a run ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and still holding the repository lock (or, as stored, not yet ended).
    Running,
    /// Every target succeeded (exit 0).
    Succeeded,
    /// Some targets succeeded, some failed (exit 3).
    Partial,
    /// Nothing succeeded, or the run could not start (exit 1).
    Failed,
    /// Never stored: a `running` record whose run no longer holds the repository lock.
    Interrupted,
}

impl RunStatus {
    /// Whether the run did not succeed completely (what `runs --failed` shows).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunStatus::Partial | RunStatus::Failed | RunStatus::Interrupted
        )
    }
}

/// One target of a run and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTarget {
    /// The target as the run names it (`vm:web01`).
    pub target: String,
    /// `succeeded`, `failed` or `skipped`.
    pub outcome: String,
    /// The generation committed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The record of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id: the id of the repository lock the run holds, which is how an interrupted
    /// run is told from a live one.
    pub id: String,
    /// The id of the repository lock the run holds now: the run's own id while it backs up,
    /// the id of its exclusive lock while a job prunes (`run JOB` trades its shared lock for
    /// an exclusive one). A `running` record whose lock is not live was interrupted.
    #[serde(default)]
    pub lock: String,
    /// Host name of the machine the run ran on.
    pub host: String,
    /// What ran: `backup` or `run JOB`.
    pub command: String,
    /// The job's name for `run JOB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the run started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When it ended (`None` while running).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended: Option<OffsetDateTime>,
    /// How it ended.
    pub status: RunStatus,
    /// The process exit code (`None` while running).
    #[serde(default)]
    pub exit_code: Option<u8>,
    /// Why the whole run failed, when it did not get to its targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The targets, as far as the run got.
    #[serde(default)]
    pub targets: Vec<RunTarget>,
}

impl RunRecord {
    /// A record of a run that starts now.
    pub fn start(id: &str, host: &str, command: &str, job: Option<&str>) -> RunRecord {
        RunRecord {
            id: id.to_string(),
            lock: id.to_string(),
            host: host.to_string(),
            command: command.to_string(),
            job: job.map(str::to_string),
            started: to_millisecond(OffsetDateTime::now_utc()),
            ended: None,
            status: RunStatus::Running,
            exit_code: None,
            error: None,
            targets: Vec::new(),
        }
    }

    /// The record's object key.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for an id that is not a safe object name.
    pub fn key(&self) -> Result<String> {
        let ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::InvalidOption(format!(
                "run id {:?} is not 1 to 64 letters, digits, '-' or '_'",
                self.id
            )));
        }
        let s = self.started.to_offset(time::UtcOffset::UTC);
        Ok(format!(
            "{RUNS_DIR}/{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{}",
            s.year(),
            u8::from(s.month()),
            s.day(),
            s.hour(),
            s.minute(),
            s.second(),
            s.millisecond(),
            self.id
        ))
    }
}

/// The time cut to whole milliseconds: the key holds milliseconds (so that runs started in
/// the same second still list in order), and a record must give back its own key.
pub fn to_millisecond(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t)
}

/// Run records as [`Repository::runs`] reads them.
#[derive(Debug, Clone, Default)]
pub struct RunListing {
    /// Readable records, newest first; `running` ones whose run is gone are `interrupted`.
    pub records: Vec<RunRecord>,
    /// Objects under `runs/` that are not valid records: key and why.
    pub unreadable: Vec<(String, String)>,
}

/// How many run records `prune` keeps: none older than `max_age` and at most `max_count`
/// (newest first); a live run's record is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRetention {
    /// Records older than this are removed.
    pub max_age: Duration,
    /// At most this many records are kept.
    pub max_count: usize,
}

impl Default for RunRetention {
    /// 90 days or 1000 records, whichever is fewer: months of nightly history, bounded.
    fn default() -> Self {
        RunRetention {
            max_age: Duration::from_secs(90 * 86_400),
            max_count: 1000,
        }
    }
}

impl Repository {
    /// Writes (or replaces, atomically) a run record.
    ///
    /// # Errors
    /// An invalid run id, encoding or storage errors.
    pub fn record_run(&self, record: &RunRecord) -> Result<()> {
        let key = record.key()?;
        let json = serde_json::to_vec(record)
            .map_err(|e| Error::InvalidOption(format!("cannot encode run record: {e}")))?;
        let blob = self.codec().try_encode(BlobKind::Metadata, &json)?;
        let be = self.backend();
        be.put(&key, &blob)
            .map_err(store_err(be.as_ref(), "write run record", &key))
    }

    /// Every run record, newest first, with `running` records of runs that no longer hold the
    /// repository lock marked [`RunStatus::Interrupted`].
    ///
    /// # Errors
    /// Storage errors listing `runs/` or the lock records.
    pub fn runs(&self) -> Result<RunListing> {
        let live: HashSet<String> = self.live_runs()?.into_iter().map(|h| h.run_id).collect();
        let mut listing = self.read_runs()?;
        for r in &mut listing.records {
            let lock = if r.lock.is_empty() { &r.id } else { &r.lock };
            if r.status == RunStatus::Running && !live.contains(lock) {
                r.status = RunStatus::Interrupted;
            }
        }
        Ok(listing)
    }

    fn read_runs(&self) -> Result<RunListing> {
        let be = self.backend();
        let prefix = format!("{RUNS_DIR}/");
        let mut objects = be
            .list(&prefix)
            .map_err(store_err(be.as_ref(), "list", RUNS_DIR))?;
        objects.sort_by(|a, b| b.key.cmp(&a.key));
        let mut listing = RunListing::default();
        for o in objects {
            if o.name().starts_with(crate::format::TEMP_PREFIX) {
                continue;
            }
            match self.read_run(&o.key) {
                Ok(r) => listing.records.push(r),
                Err(e) => listing.unreadable.push((o.key.clone(), e)),
            }
        }
        Ok(listing)
    }

    /// Reads and verifies one record: its blob, its JSON, and that it is the record its name
    /// says (a record copied or renamed onto another name is refused).
    fn read_run(&self, key: &str) -> std::result::Result<RunRecord, String> {
        let bytes = self
            .read_object(key, RUN_RECORD_LIMIT as u64 + 4096)
            .map_err(|e| e.to_string())?;
        let json = self
            .codec()
            .decode(BlobKind::Metadata, &bytes, RUN_RECORD_LIMIT)
            .map_err(|e| e.to_string())?;
        let record: RunRecord =
            serde_json::from_slice(&json).map_err(|e| format!("not a run record: {e}"))?;
        match record.key() {
            Ok(k) if k == key => Ok(record),
            Ok(k) => Err(format!("the record belongs at {k}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes run records beyond `retention` (never the record of a live run), returning how
    /// many went. Unreadable objects under `runs/` are left for `check` to report; a record
    /// that cannot be deleted (object lock) is logged and left for a later prune.
    ///
    /// # Errors
    /// Storage errors listing `runs/` or the locks.
    pub fn prune_runs(&self, retention: RunRetention, now: OffsetDateTime) -> Result<usize> {
        let listing = self.runs()?;
        let cutoff = now - retention.max_age;
        let be = self.backend();
        let mut removed = 0;
        for (i, r) in listing.records.iter().enumerate() {
            if r.status == RunStatus::Running {
                continue;
            }
            if i >= retention.max_count || r.started < cutoff {
                let key = r.key()?;
                // A record still under an S3 object lock cannot go yet; a later prune removes
                // it. History is never a reason for a prune to fail.
                match be.delete(&key) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(
                        "cannot remove the run record {}: {e}",
                        be.display_path(&key).display()
                    ),
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InitOptions;

    fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let r = Repository::init(
            dir.path().join("repo"),
            &InitOptions {
                chunk_size: 64 * 1024,
                ..Default::default()
            },
        )
        .unwrap();
        (dir, r)
    }

    fn ended(mut r: RunRecord, status: RunStatus, code: u8) -> RunRecord {
        r.status = status;
        r.exit_code = Some(code);
        r.ended = Some(r.started + Duration::from_secs(5));
        r
    }

    #[test]
    fn a_record_is_replaced_at_the_end_and_listed_newest_first() {
        let (_d, repo) = repo();
        let mut old = RunRecord::start("a1", "h", "backup", None);
        old.started -= Duration::from_secs(3600);
        repo.record_run(&ended(old, RunStatus::Failed, 1)).unwrap();
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let mut r = RunRecord::start(lock.run_id(), "h", "run nightly", Some("nightly"));
        repo.record_run(&r).unwrap();
        let l = repo.runs().unwrap();
        assert_eq!(l.records.len(), 2);
        assert_eq!(l.records[0].status, RunStatus::Running, "live run");
        assert_eq!(l.records[1].id, "a1");
        r.targets.push(RunTarget {
            target: "vm:web01".into(),
            outcome: "succeeded".into(),
            generation: Some(3),
            error: None,
        });
        let r = ended(r, RunStatus::Succeeded, 0);
        repo.record_run(&r).unwrap();
        let l = repo.runs().unwrap();
        assert_eq!(l.records.len(), 2, "replaced, not added");
        assert_eq!(l.records[0], r);
        assert!(l.unreadable.is_empty());
    }

    #[test]
    fn a_running_record_without_its_lock_is_interrupted() {
        let (_d, repo) = repo();
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let r = RunRecord::start(lock.run_id(), "h", "backup", None);
        repo.record_run(&r).unwrap();
        drop(lock);
        let l = repo.runs().unwrap();
        assert_eq!(l.records[0].status, RunStatus::Interrupted);
        // A run that traded its lock for another one is live while it holds that one.
        let other = repo.lock_exclusive(Duration::ZERO).unwrap();
        let mut r = r;
        r.lock = other.run_id().to_string();
        repo.record_run(&r).unwrap();
        assert_eq!(repo.runs().unwrap().records[0].status, RunStatus::Running);
        drop(other);
        assert_eq!(
            repo.runs().unwrap().records[0].status,
            RunStatus::Interrupted
        );
        assert!(l.records[0].status.is_failure());
    }

    #[test]
    fn a_record_under_another_name_or_damaged_is_unreadable() {
        let (_d, repo) = repo();
        let r = ended(
            RunRecord::start("b2", "h", "backup", None),
            RunStatus::Succeeded,
            0,
        );
        repo.record_run(&r).unwrap();
        let be = repo.backend();
        let bytes = be.get(&r.key().unwrap(), 1 << 20).unwrap();
        be.put("runs/20000101T000000.000Z-other", &bytes).unwrap();
        be.put("runs/20000101T000000.000Z-junk", b"not a blob")
            .unwrap();
        let l = repo.runs().unwrap();
        assert_eq!(l.records, vec![r]);
        assert_eq!(l.unreadable.len(), 2);
        assert!(l
            .unreadable
            .iter()
            .any(|(_, why)| why.contains("belongs at")));
    }

    #[test]
    fn bad_ids_are_refused() {
        let (_d, repo) = repo();
        for id in ["", "../x", "a/b", &"x".repeat(65)] {
            let r = RunRecord::start(id, "h", "backup", None);
            assert!(repo.record_run(&r).is_err(), "{id:?}");
        }
    }

    #[test]
    fn prune_keeps_by_age_and_count_and_never_a_live_run() {
        let (_d, repo) = repo();
        let now = OffsetDateTime::now_utc();
        for i in 0..5u64 {
            let mut r = RunRecord::start(&format!("r{i}"), "h", "backup", None);
            r.started = (now - Duration::from_secs(86_400 * (i * 30)))
                .replace_nanosecond(0)
                .unwrap();
            repo.record_run(&ended(r, RunStatus::Succeeded, 0)).unwrap();
        }
        let lock = repo.lock_shared(Duration::ZERO).unwrap();
        let mut live = RunRecord::start(lock.run_id(), "h", "backup", None);
        live.started -= Duration::from_secs(200 * 86_400);
        repo.record_run(&live).unwrap();
        // Newest first: r0, r1 kept by count; r2 by count, r3 and r4 by count and age gone.
        let removed = repo
            .prune_runs(
                RunRetention {
                    max_age: Duration::from_secs(75 * 86_400),
                    max_count: 2,
                },
                now,
            )
            .unwrap();
        let left: Vec<String> = repo
            .runs()
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(removed, 3, "{left:?}");
        assert_eq!(
            left,
            vec!["r0".to_string(), "r1".into(), lock.run_id().into()]
        );
    }
}
