//! The run history of a backup run: its record under `runs/` in the repository, written when
//! the run starts (status `running`) and replaced when it ends.
//!
//! The record's id is the id of a shared repository lock this module holds for the whole run
//! (beside the lock the backup itself takes): while it is held the record reads `running`; a
//! run killed before it ended leaves a record whose lock is gone, which `safekeeping runs`
//! shows as `interrupted`. History is a side channel: a record that cannot be written is
//! logged, never a reason for the backup to fail (the notification and the exit code still
//! report the run).

use repository_format::{Repository, RepositoryLock, RunRecord, RunStatus, RunTarget};

use crate::config::Config;
use crate::outcome::Outcome;

/// A run being recorded.
pub struct RunHistory {
    /// The configuration the repository is opened from for each write; `None` when it could
    /// not be opened or locked at the start: nothing is written then. The repository is not
    /// kept open between writes, so the run's own handle gets the local catalog cache (one
    /// process handle at a time can hold it).
    config: Option<Config>,
    lock: Option<RepositoryLock>,
    /// The record as last written.
    pub record: RunRecord,
}

impl RunHistory {
    /// Opens the repository, takes a shared lock and writes the `running` record. Blocks (lock
    /// wait). When the repository cannot be opened or locked, the run is still described (for
    /// the notification) but not recorded: the run itself then fails and says why.
    pub fn start(config: &Config, host: &str, command: &str, job: Option<&str>) -> Self {
        let opened = crate::repo::open(config).and_then(|repo| {
            let lock = repo.lock_shared(crate::repo::lock_wait(config))?;
            Ok((repo, lock))
        });
        match opened {
            Ok((repo, lock)) => {
                let record = RunRecord::start(lock.run_id(), host, command, job);
                write(&repo, &record);
                drop(repo);
                RunHistory {
                    config: Some(config.clone()),
                    lock: Some(lock),
                    record,
                }
            }
            Err(e) => {
                tracing::debug!("run history: the repository cannot be used: {e}");
                Self::unrecorded(host, command, job)
            }
        }
    }

    /// A run described (for the notification and the report) but not recorded.
    pub fn unrecorded(host: &str, command: &str, job: Option<&str>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        RunHistory {
            config: None,
            lock: None,
            record: RunRecord::start(&id, host, command, job),
        }
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Releases the shared lock, so that the same process can take the exclusive one (a job's
    /// prune); follow with [`RunHistory::hold`].
    pub fn release_lock(&mut self) {
        self.lock = None;
    }

    /// Records that the run now holds `lock` (taken after [`RunHistory::release_lock`]), so
    /// the record stays `running`, not `interrupted`, while a job prunes.
    pub fn hold(&mut self, lock: &RepositoryLock) {
        self.record.lock = lock.run_id().to_string();
        self.write();
    }

    /// Records the targets so far (written with the next write).
    pub fn set_targets(&mut self, targets: Vec<RunTarget>) {
        self.record.targets = targets;
    }

    /// Writes the final record and returns it.
    pub fn finish(mut self, outcome: Outcome, error: Option<String>) -> RunRecord {
        self.record.status = match outcome {
            Outcome::Success => RunStatus::Succeeded,
            Outcome::Partial => RunStatus::Partial,
            Outcome::Failure => RunStatus::Failed,
        };
        self.record.exit_code = Some(outcome.code());
        self.record.error = error;
        self.record.ended = Some(time::OffsetDateTime::now_utc());
        self.write();
        self.record
    }

    fn write(&self) {
        if let Some(config) = &self.config {
            match crate::repo::open(config) {
                Ok(repo) => write(&repo, &self.record),
                Err(e) => tracing::warn!("cannot write the run record: {e}"),
            }
        }
    }
}

fn write(repo: &Repository, record: &RunRecord) {
    if let Err(e) = repo.record_run(record) {
        tracing::warn!("cannot write the run record: {e}");
    }
}
