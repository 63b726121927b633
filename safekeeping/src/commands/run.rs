//! `run JOB`: a job of the configuration (`[jobs.NAME]`) end to end: the backup, then, unless
//! the backup failed completely, the prune of the targets it backed up by the job's
//! retention, `gc` and `check` when the job asks for them. One run record covers the whole
//! job; the notification and the exit code report the worst step.
//!
//! A run stopped by SIGINT or SIGTERM skips the maintenance steps. Exit codes are the
//! backup's: 0 when every step succeeded, 3 when some targets failed and
//! nothing else did, 1 when the backup failed completely or a maintenance step failed.

use std::fmt::Write as _;
use std::sync::Arc;

use repository_format::{CheckOptions, GcOptions, RetentionPolicy};
use serde::Serialize;

use crate::backup::BackupOptions;
use crate::cancel::Cancel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::history::RunHistory;
use crate::jobs::JobConfig;
use crate::outcome::Outcome;
use crate::report::Report;
use crate::target::Target;

/// One step of a job and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `backup`, `prune`, `gc` or `check`.
    pub step: &'static str,
    /// `succeeded`, `partial`, `failed` or `skipped`.
    pub outcome: &'static str,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The step's own report (as its command's `--json` prints it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl Step {
    fn done(step: &'static str, outcome: Outcome, report: serde_json::Value) -> Step {
        Step {
            step,
            outcome: word(outcome),
            reason: None,
            report: Some(report),
        }
    }

    fn failed(step: &'static str, reason: String) -> Step {
        Step {
            step,
            outcome: "failed",
            reason: Some(reason),
            report: None,
        }
    }

    fn skipped(step: &'static str, reason: &str) -> Step {
        Step {
            step,
            outcome: "skipped",
            reason: Some(reason.to_string()),
            report: None,
        }
    }

    /// The step's weight in the exit code (a skipped step counts as a success).
    fn exit_outcome(&self) -> Outcome {
        match self.outcome {
            "failed" => Outcome::Failure,
            "partial" => Outcome::Partial,
            _ => Outcome::Success,
        }
    }
}

fn word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "succeeded",
        Outcome::Partial => "partial",
        Outcome::Failure => "failed",
    }
}

/// The worst of two outcomes: failure over partial over success.
fn worst(a: Outcome, b: Outcome) -> Outcome {
    let rank = |o| match o {
        Outcome::Success => 0,
        Outcome::Partial => 1,
        Outcome::Failure => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// The job's backup options, with the configuration's defaults filled in.
///
/// # Errors
/// Targets that do not parse (the configuration check already refused them).
pub fn options(config: &Config, job: &JobConfig, quiet: bool) -> Result<BackupOptions> {
    use clap::ValueEnum as _;
    let all = job
        .all
        .iter()
        .map(|k| crate::vsphere::selection::TargetKindArg::from_str(k, true))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::Other)?;
    Ok(BackupOptions {
        targets: job.parsed_targets().map_err(Error::Other)?,
        all,
        exclude: job.parsed_exclude().map_err(Error::Other)?,
        full: job.full,
        // `quiesce = false` turns it off for the job; else the per-target settings and the
        // default (`try`) decide, as for `backup`.
        quiesce: (!job.quiesce).then_some(crate::target_settings::QuiesceMode::Off),
        exclude_disks: Vec::new(),
        transports: None,
        show_progress: !quiet,
        parallel: job
            .parallel
            .map(usize::from)
            .unwrap_or(config.defaults.parallel)
            .max(1),
        max_connections: super::max_connections(job.max_connections, config),
        lock_wait: crate::repo::lock_wait(config),
        fcd_api: config.vcenter.fcd_api,
    })
}

/// Runs the job `name`.
///
/// # Errors
/// An unknown job or repository name. Everything after the start is in the report.
pub async fn run(mut config: Config, name: &str, cancel: Cancel, quiet: bool) -> Result<Report> {
    let job = config.jobs.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
        Error::Other(format!(
            "no job named `{name}` in the configuration: {}",
            if known.is_empty() {
                "it has no [jobs.NAME] tables".to_string()
            } else {
                format!("the configured jobs are {}", known.join(", "))
            }
        ))
    })?;
    if let Some(repo) = &job.repository {
        config
            .select(repo)
            .map_err(|e| Error::Other(format!("job `{name}`: {e}")))?;
    }
    if let Some(vc) = &job.vcenter {
        config
            .select_vcenter(vc)
            .map_err(|e| Error::Other(format!("job `{name}`: {e}")))?;
    }
    let options = options(&config, &job, quiet)?;
    let config = Arc::new(config);
    let history = super::backup::start_history(&config, &format!("run {name}"), Some(name)).await;
    let backup = super::backup::execute(
        config.clone(),
        options,
        job.metrics_file.as_deref(),
        cancel.clone(),
    )
    .await;
    let backup_outcome = match &backup {
        Ok(r) => super::backup::outcome_of(&r.targets),
        Err(_) => Outcome::Failure,
    };
    let mut steps = vec![match &backup {
        Ok(r) => Step::done(
            "backup",
            backup_outcome,
            serde_json::to_value(r).unwrap_or_default(),
        ),
        Err(e) => Step::failed("backup", e.to_string()),
    }];
    let backed_up: Vec<String> = match &backup {
        Ok(r) => r
            .targets
            .iter()
            .filter(|t| t.succeeded())
            .map(|t| t.target.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    let (history, maintenance) = if backed_up.is_empty() || cancel.is_cancelled() {
        // Stopped (systemctl stop, Ctrl-C): the snapshots are cleaned up, nothing more is
        // started, so that the stop finishes within its timeout.
        let why = if cancel.is_cancelled() {
            "the run was stopped: nothing is pruned, collected or checked"
        } else {
            "the backup failed completely: nothing is pruned, collected or checked"
        };
        let mut skipped = vec![Step::skipped("prune", why)];
        if job.gc {
            skipped.push(Step::skipped("gc", why));
        }
        if job.check || job.check_read_data || job.check_read_data_subset.is_some() {
            skipped.push(Step::skipped("check", why));
        }
        (history, skipped)
    } else {
        let c = config.clone();
        let j = job.clone();
        let mut history = history;
        let handle = crate::blocking::blocking(move || {
            let steps = maintain(&c, &j, &backed_up, &mut history);
            Ok((history, steps))
        });
        handle.await?
    };
    steps.extend(maintenance);
    let outcome = steps
        .iter()
        .map(Step::exit_outcome)
        .fold(backup_outcome, worst);
    let error = steps
        .iter()
        .find(|s| s.outcome == "failed")
        .and_then(|s| s.reason.as_ref().map(|r| format!("{}: {r}", s.step)));
    let record = super::backup::finish_history(history, &backup, outcome, error).await;
    let step_docs: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| serde_json::json!({"step": s.step, "outcome": s.outcome, "reason": s.reason}))
        .collect();
    if let Some(n) = &config.notify {
        crate::notify::send(
            n,
            outcome.code(),
            &super::runs::summary(&record, &step_docs),
        )
        .await;
    }
    let mut text = match &backup {
        Ok(r) => super::backup::text_of(r),
        Err(e) => format!("backup: FAILED: {e}\n"),
    };
    for s in &steps[1..] {
        let _ = writeln!(
            text,
            "{}: {}{}",
            s.step,
            s.outcome,
            s.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    let doc = serde_json::json!({
        "job": name,
        "run_id": record.id,
        "steps": steps,
    });
    Ok(Report::new(outcome, &doc, text))
}

/// Prune, gc and check under one exclusive lock (the run's shared lock is traded for it, and
/// the run record says so, so it stays `running`).
fn maintain(
    config: &Config,
    job: &JobConfig,
    backed_up: &[String],
    history: &mut RunHistory,
) -> Vec<Step> {
    let retention = job.retention().ok().flatten();
    let subset = job.read_subset_share().ok().flatten().map(|of| {
        let day = time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .div_euclid(86_400);
        JobConfig::read_subset_for(of, day)
    });
    let wants_check = job.check || job.check_read_data || subset.is_some();
    if retention.is_none() && !job.gc && !wants_check {
        return vec![Step::skipped("prune", "the job has no keep_* rule")];
    }
    let repo = match crate::repo::open(config) {
        Ok(r) => r,
        Err(e) => return vec![Step::failed("prune", e.to_string())],
    };
    history.release_lock();
    let wait = crate::repo::lock_wait(config);
    let lock = match repo.lock_exclusive(wait) {
        Ok(l) => l,
        Err(e) => {
            let e = Error::from_lock("the repository".into(), wait.as_secs(), e);
            return vec![Step::failed("prune", e.to_string())];
        }
    };
    history.hold(&lock);
    let mut steps = Vec::new();
    match retention {
        None => steps.push(Step::skipped("prune", "the job has no keep_* rule")),
        Some(r) => {
            let policy = RetentionPolicy {
                keep_last: r.keep_last,
                keep_hourly: r.keep_hourly,
                keep_daily: r.keep_daily,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
                keep_yearly: r.keep_yearly,
                keep_within_seconds: r.keep_within_seconds,
            };
            let now = time::OffsetDateTime::now_utc();
            let mut reports = Vec::new();
            let mut errors = Vec::new();
            for t in backed_up {
                let key = t
                    .parse::<Target>()
                    .map_err(|e| Error::Other(e.to_string()))
                    .and_then(|t| crate::repo::find_target(&repo, &t))
                    .map(|(summary, _)| summary.key);
                match key.and_then(|k| Ok(repo.prune(&lock, &policy, Some(&k), now, false)?)) {
                    Ok(report) => reports.push(report),
                    Err(e) => errors.push(format!("{t}: {e}")),
                }
            }
            if let Err(e) = repo.prune_runs(Default::default(), now) {
                errors.push(format!("run records: {e}"));
            }
            let doc = serde_json::json!({ "targets": reports });
            if errors.is_empty() {
                steps.push(Step::done("prune", Outcome::Success, doc));
            } else {
                let mut s = Step::failed("prune", errors.join("; "));
                s.report = Some(doc);
                steps.push(s);
            }
        }
    }
    if job.gc {
        steps.push(match repo.gc(&lock, &GcOptions::default()) {
            Ok(r) => Step::done(
                "gc",
                Outcome::Success,
                serde_json::to_value(&r).unwrap_or_default(),
            ),
            Err(e) => Step::failed("gc", e.to_string()),
        });
    }
    if wants_check {
        let checked = match subset {
            Some(part) => {
                tracing::info!(part = %part, "check reads one part of the data (check_read_data_subset)");
                repo.check_subset(part)
            }
            None => repo.check(&CheckOptions {
                read_data: job.check_read_data,
            }),
        };
        steps.push(match checked {
            Ok(r) if r.ok() => Step::done(
                "check",
                Outcome::Success,
                serde_json::to_value(&r).unwrap_or_default(),
            ),
            Ok(r) => {
                let mut s = Step::failed("check", format!("{} problems found", r.problems.len()));
                s.report = serde_json::to_value(&r).ok();
                s
            }
            Err(e) => Step::failed("check", e.to_string()),
        });
    }
    drop(lock);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_step_decides_the_exit_code() {
        assert_eq!(worst(Outcome::Success, Outcome::Partial), Outcome::Partial);
        assert_eq!(worst(Outcome::Partial, Outcome::Failure), Outcome::Failure);
        assert_eq!(worst(Outcome::Failure, Outcome::Success), Outcome::Failure);
        assert_eq!(
            Step::skipped("gc", "x").exit_outcome(),
            Outcome::Success,
            "a skipped step does not fail the job"
        );
    }
}
