//! `backup TARGET...`: the arguments become [`BackupOptions`], [`crate::backup::run`] backs
//! the targets up, and the results are formatted here.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::backup::BackupOptions;
use crate::cancel::Cancel;
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::history::RunHistory;
use crate::metrics;
use crate::outcome::Outcome;
use crate::report::Report;
use repository_format::{RunRecord, RunTarget};

/// The plan of `backup --dry-run`, for people.
fn preview_text(p: &crate::backup::preview::BackupPreview) -> String {
    let mut text = format!(
        "dry run: {} would be backed up (nothing was created)\n",
        crate::format::count(p.targets.len() as u64, "target", "targets")
    );
    for t in &p.targets {
        let _ = write!(text, "{}", t.target);
        if let Some(m) = &t.moref {
            let _ = write!(text, " ({m})");
        }
        match t.previous_generation {
            Some(g) => {
                let _ = write!(text, ": builds on generation {g}");
            }
            None => text.push_str(": first backup"),
        }
        if t.change_tracking == Some(false) {
            text.push_str("; change tracking off (the backup switches it on)");
        }
        text.push('\n');
        for d in &t.disks {
            let mode = match d.mode {
                Some(crate::backup::disk::DiskMode::Full) => "full",
                Some(crate::backup::disk::DiskMode::Incremental) => "incremental",
                None => "left out",
            };
            let _ = writeln!(
                text,
                "  disk {} {} ({}): {mode}: {}",
                d.index,
                d.label,
                human_bytes(d.capacity),
                d.reason
            );
        }
        if let Some(n) = &t.note {
            let _ = writeln!(text, "  {n}");
        }
        if let Some(e) = &t.error {
            let _ = writeln!(text, "  would fail: {e}");
        }
    }
    for s in &p.skipped {
        let _ = writeln!(text, "{}: skipped ({})", s.target, s.reason);
    }
    text
}

/// The backup's options: the arguments, with the configuration's defaults filled in.
pub fn options(config: &Config, args: BackupArgs, quiet: bool) -> BackupOptions {
    BackupOptions {
        targets: args.targets,
        all: args.all,
        exclude: args.exclude,
        full: args.full,
        quiesce: if args.no_quiesce {
            Some(crate::target_settings::QuiesceMode::Off)
        } else {
            args.quiesce
        },
        exclude_disks: args.exclude_disk,
        transports: args.transport,
        show_progress: !quiet,
        parallel: args
            .parallel
            .map(usize::from)
            .unwrap_or(config.defaults.parallel)
            .max(1),
        max_connections: super::max_connections(args.max_connections, config),
        lock_wait: crate::repo::lock_wait(config),
        fcd_api: config.vcenter.fcd_api,
    }
}

/// Runs the backup of every target, recorded in the run history and notified.
///
/// # Errors
/// When the run cannot start: repository missing or locked, vCenter unreachable or refusing
/// the login, VDDK not loadable. Target failures are in the report.
pub async fn run(
    mut config: Config,
    args: BackupArgs,
    cancel: Cancel,
    quiet: bool,
) -> Result<Report> {
    super::override_transports(&mut config, args.transport.as_deref());
    if args.dry_run {
        let options = options(&config, args, quiet);
        let p = crate::backup::preview::preview(Arc::new(config), &options).await?;
        let outcome = if p.ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        return Ok(Report::new(outcome, &p, preview_text(&p)));
    }
    let started = SystemTime::now();
    let clock = Instant::now();
    let metrics_file = args.metrics_file.clone();
    let options = options(&config, args, quiet);
    let config = Arc::new(config);
    let history = start_history(&config, "backup", None).await;
    let run = execute(config.clone(), options, metrics_file.as_deref(), cancel).await;
    let outcome = match &run {
        Ok(r) => outcome_of(&r.targets),
        Err(_) => Outcome::Failure,
    };
    let record = finish_history(history, &run, outcome, None).await;
    if let Some(n) = &config.notify {
        crate::notify::send(n, outcome.code(), &super::runs::summary(&record, &[])).await;
    }
    let run = run?;
    let summary = RunSummary::of(&run.targets, started, clock.elapsed());
    let mut text = text_of(&run);
    let _ = writeln!(text, "{}", summary.line());
    let mut report = Report::new(outcome, &run, text);
    if let Some(map) = report.json.as_object_mut() {
        map.insert("run_id".into(), record.id.clone().into());
        if let Ok(serde_json::Value::Object(extra)) = serde_json::to_value(&summary) {
            map.extend(extra);
        }
    }
    Ok(report)
}

/// Writes the `running` record of a run (on a blocking thread: it waits for the lock).
pub(crate) async fn start_history(
    config: &Arc<Config>,
    command: &str,
    job: Option<&str>,
) -> RunHistory {
    let config = config.clone();
    let command = command.to_string();
    let job = job.map(str::to_string);
    let host = crate::vsphere::snapshot_owner::host_name();
    let (h, c, j) = (host.clone(), command.clone(), job.clone());
    match crate::blocking::blocking(move || Ok(RunHistory::start(&config, &h, &c, j.as_deref())))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            // Only a panicked worker gets here; describe the run without recording it.
            tracing::warn!("run history: {e}");
            RunHistory::unrecorded(&host, &command, job.as_deref())
        }
    }
}

/// Writes the final record of a backup run (targets, outcome, the error that stopped it).
pub(crate) async fn finish_history(
    mut history: RunHistory,
    run: &Result<crate::backup::BackupRun>,
    outcome: Outcome,
    error: Option<String>,
) -> RunRecord {
    let error = match run {
        Ok(r) => {
            history.set_targets(run_targets(r));
            error
        }
        Err(e) => Some(e.to_string()),
    };
    let id = history.id().to_string();
    match crate::blocking::blocking(move || Ok(history.finish(outcome, error))).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("run history: {e}");
            let mut r = RunRecord::start(&id, "", "backup", None);
            r.exit_code = Some(outcome.code());
            r
        }
    }
}

/// The backup step itself: the run, then the metrics file if asked for.
///
/// # Errors
/// As [`crate::backup::run`].
pub(crate) async fn execute(
    config: Arc<Config>,
    options: BackupOptions,
    metrics_file: Option<&std::path::Path>,
    cancel: Cancel,
) -> Result<crate::backup::BackupRun> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let run = crate::backup::run(config.clone(), options, cancel).await;
    if let Some(path) = metrics_file {
        let targets = run.as_ref().map(|r| target_runs(&r.targets));
        let exit_code = match &run {
            Ok(r) => outcome_of(&r.targets).code(),
            Err(_) => Outcome::Failure.code(),
        };
        let m = metrics::BackupMetrics {
            started,
            duration: clock.elapsed(),
            exit_code,
            targets: targets.unwrap_or_default(),
            repository: repository_history(&config).await,
        };
        // Monitoring must not change the backup's result: a write failure is logged loudly,
        // and the stale file's run timestamp shows it on the dashboard.
        if let Err(e) = metrics::write(path, &m) {
            tracing::error!("cannot write the metrics file {}: {e}", path.display());
        }
    }
    run
}

/// The text report of a backup run.
pub(crate) fn text_of(run: &crate::backup::BackupRun) -> String {
    let results = &run.targets;
    let mut text = String::new();
    for r in results {
        match (&r.error, r.generation) {
            (None, Some(g)) => {
                let _ = writeln!(
                    text,
                    "{}: generation {g} ({}) — read {}, new {}, stored {}, in {:.1} s",
                    r.target,
                    r.mode
                        .map(|m| format!("{m:?}").to_lowercase())
                        .unwrap_or_default(),
                    human_bytes(r.bytes_read),
                    human_bytes(r.bytes_new),
                    human_bytes(r.bytes_stored),
                    r.duration_seconds
                );
                for d in &r.disks {
                    let _ = writeln!(
                        text,
                        "  disk {} {}: {:?} ({}), read {}",
                        d.index,
                        d.label,
                        d.mode,
                        d.reason,
                        human_bytes(d.bytes_read)
                    );
                }
                for x in &r.excluded_disks {
                    let _ = writeln!(
                        text,
                        "  disk {} {}: {} ({})",
                        x.index,
                        x.label,
                        x.note,
                        human_bytes(x.capacity)
                    );
                }
                if let Some(why) = &r.quiesce_fallback {
                    let _ = writeln!(
                        text,
                        "  not quiesced: quiescing failed ({why}); the snapshot was taken without it"
                    );
                }
            }
            (Some(e), _) => {
                let _ = writeln!(text, "{}: FAILED: {e}", r.target);
            }
            (None, None) => {
                let _ = writeln!(text, "{}: FAILED", r.target);
            }
        }
    }
    for s in &run.skipped {
        let _ = writeln!(text, "{}: skipped ({})", s.target, s.reason);
    }
    text
}

/// The targets of a backup run as its run record lists them.
pub(crate) fn run_targets(run: &crate::backup::BackupRun) -> Vec<RunTarget> {
    let mut out: Vec<RunTarget> = run
        .targets
        .iter()
        .map(|t| RunTarget {
            target: t.target.clone(),
            outcome: t.status.to_string(),
            generation: t.generation,
            error: t.error.clone(),
        })
        .collect();
    out.extend(run.skipped.iter().map(|s| RunTarget {
        target: s.target.clone(),
        outcome: "skipped".into(),
        generation: None,
        error: Some(s.reason.clone()),
    }));
    out
}

pub(crate) fn outcome_of(results: &[crate::backup::TargetResult]) -> Outcome {
    let ok = results.iter().filter(|r| r.succeeded()).count();
    Outcome::from_counts(ok, results.len() - ok)
}

fn target_runs(results: &[crate::backup::TargetResult]) -> Vec<metrics::TargetRun> {
    results
        .iter()
        .map(|r| metrics::TargetRun {
            target: r.target.clone(),
            succeeded: r.succeeded(),
            generation: r.generation,
            bytes_read: r.bytes_read,
            bytes_new: r.bytes_new,
        })
        .collect()
}

/// Every target in the repository with its newest successful generation's time, or `None`
/// (logged) when the repository cannot be read now.
async fn repository_history(config: &Arc<Config>) -> Option<Vec<metrics::TargetHistory>> {
    let config = config.clone();
    let result = crate::blocking::blocking(move || {
        let r = crate::repo::open(&config)?;
        let mut out = Vec::new();
        for t in r.targets()? {
            let last_success = match t.latest_successful {
                Some(id) => r
                    .generations(&t.key)?
                    .into_iter()
                    .find(|g| g.id == id)
                    .map(|g| g.time.unix_timestamp()),
                None => None,
            };
            out.push(metrics::TargetHistory {
                target: crate::repo::display_name(&t),
                generations: t.generations,
                last_success,
            });
        }
        Ok(out)
    })
    .await;
    match result {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("metrics: cannot read the repository's targets: {e}");
            None
        }
    }
}

/// The whole run in figures: when, how long, how much was read, new and stored, and how much
/// the repository saved (read ÷ stored: deduplication, zero detection and compression).
#[derive(Debug, serde::Serialize)]
struct RunSummary {
    #[serde(with = "time::serde::rfc3339")]
    started: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    finished: time::OffsetDateTime,
    duration_seconds: f64,
    targets_succeeded: usize,
    targets_failed: usize,
    bytes_read: u64,
    bytes_new: u64,
    bytes_stored: u64,
    /// Bytes read per second of the run.
    read_bytes_per_second: f64,
    /// Bytes read for each byte stored (`null` when nothing was stored).
    reduction_ratio: Option<f64>,
}

impl RunSummary {
    fn of(
        results: &[crate::backup::TargetResult],
        started: SystemTime,
        took: std::time::Duration,
    ) -> Self {
        let ok = results.iter().filter(|r| r.succeeded()).count();
        let sum = |f: fn(&crate::backup::TargetResult) -> u64| results.iter().map(f).sum::<u64>();
        let (read, new, stored) = (
            sum(|r| r.bytes_read),
            sum(|r| r.bytes_new),
            sum(|r| r.bytes_stored),
        );
        let started = time::OffsetDateTime::from(started);
        let seconds = took.as_secs_f64();
        RunSummary {
            started,
            finished: started + took,
            duration_seconds: seconds,
            targets_succeeded: ok,
            targets_failed: results.len() - ok,
            bytes_read: read,
            bytes_new: new,
            bytes_stored: stored,
            read_bytes_per_second: if seconds > 0.0 {
                read as f64 / seconds
            } else {
                0.0
            },
            reduction_ratio: (stored > 0).then(|| read as f64 / stored as f64),
        }
    }

    /// `2 of 2 targets backed up in 12.3 s (81.2 MiB/s): read 1.0 GiB, new 20.0 MiB, stored 8.1 MiB`.
    fn line(&self) -> String {
        let total = self.targets_succeeded + self.targets_failed;
        format!(
            "{} of {total} target{} backed up in {:.1} s ({}/s): read {}, new {}, stored {}{}",
            self.targets_succeeded,
            if total == 1 { "" } else { "s" },
            self.duration_seconds,
            human_bytes(self.read_bytes_per_second as u64),
            human_bytes(self.bytes_read),
            human_bytes(self.bytes_new),
            human_bytes(self.bytes_stored),
            self.reduction_ratio
                .map(|r| format!(" ({r:.1}:1 after deduplication and compression)"))
                .unwrap_or_default()
        )
    }
}
