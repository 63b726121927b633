//! `runs`: the run history, newest first, so that "did last night's backup work?" is one
//! command; also the JSON summary of a run that notifications send.

use std::fmt::Write as _;

use repository_format::{RunRecord, RunStatus};
use time::OffsetDateTime;

use crate::cli::RunsArgs;
use crate::config::Config;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Lists the run records (`--failed`: only runs that did not fully succeed; `--since`: only
/// runs started since then). Needs no lock: records are written atomically.
///
/// # Errors
/// The repository cannot be opened or listed.
pub fn run(config: &Config, args: &RunsArgs) -> Result<Report> {
    let r = repo::open(config)?;
    let listing = r.runs()?;
    let runs: Vec<&RunRecord> = listing
        .records
        .iter()
        .filter(|r| !args.failed || r.status.is_failure())
        .filter(|r| args.since.is_none_or(|s| r.started >= s))
        .collect();
    let mut text = String::new();
    for run in &runs {
        let ok = run
            .targets
            .iter()
            .filter(|t| t.outcome == "succeeded")
            .count();
        let _ = writeln!(
            text,
            "{}  {:<11}  {:<18}  {}  {}/{} targets  {}  {}",
            stamp(run.started),
            status_word(run.status),
            run.command,
            run.ended
                .map(|e| format!("{:>6}s", (e - run.started).whole_seconds()))
                .unwrap_or_else(|| "      -".into()),
            ok,
            run.targets.len(),
            run.host,
            run.id
        );
        if let Some(e) = &run.error {
            let _ = writeln!(text, "    error: {e}");
        }
        for t in run.targets.iter().filter(|t| t.outcome != "succeeded") {
            let _ = writeln!(
                text,
                "    {}: {}{}",
                t.target,
                t.outcome,
                t.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if runs.is_empty() {
        text.push_str("no runs recorded\n");
    }
    for (key, why) in &listing.unreadable {
        let _ = writeln!(text, "UNREADABLE: {key}: {why}");
        tracing::warn!("run record {key}: {why}");
    }
    let doc = serde_json::json!({
        "runs": runs,
        "unreadable": listing.unreadable.iter().map(|(k, w)| serde_json::json!({"key": k, "reason": w})).collect::<Vec<_>>(),
    });
    Ok(Report::new(Outcome::Success, &doc, text))
}

fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn status_word(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Partial => "partial",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

/// The JSON summary of a finished run that a webhook receives: what ran, where, when, how it
/// ended, each target, and (for `run JOB`) each step.
pub fn summary(record: &RunRecord, steps: &[serde_json::Value]) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "run_id": record.id,
        "command": record.command,
        "job": record.job,
        "host": record.host,
        "started": stamp(record.started),
        "ended": record.ended.map(stamp),
        "outcome": status_word(record.status),
        "exit_code": record.exit_code,
        "error": record.error,
        "targets": record.targets,
    });
    if !steps.is_empty() {
        doc["steps"] = serde_json::Value::Array(steps.to_vec());
    }
    doc
}
