//! `jobs list`: the jobs of the configuration, with what each backs up and keeps.

use std::fmt::Write as _;

use crate::config::Config;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::report::Report;

/// Lists the configured jobs.
///
/// # Errors
/// None today; a `Result` like every command.
pub fn list(config: &Config) -> Result<Report> {
    let mut text = String::new();
    for (name, job) in &config.jobs {
        let mut what: Vec<String> = job.targets.clone();
        what.extend(job.all.iter().map(|k| format!("all {k}")));
        let _ = writeln!(text, "{name}: {}", what.join(" "));
        if !job.exclude.is_empty() {
            let _ = writeln!(text, "  exclude: {}", job.exclude.join(" "));
        }
        let _ = writeln!(
            text,
            "  repository: {}",
            job.repository
                .as_deref()
                .map(|r| format!("[repositories.{r}]"))
                .unwrap_or_else(|| "[repository]".into())
        );
        let keep = [
            ("last", job.keep_last),
            ("hourly", job.keep_hourly),
            ("daily", job.keep_daily),
            ("weekly", job.keep_weekly),
            ("monthly", job.keep_monthly),
            ("yearly", job.keep_yearly),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
        .chain(job.keep_within.iter().map(|w| format!("within {w}")))
        .collect::<Vec<_>>();
        let _ = writeln!(
            text,
            "  keep: {}",
            if keep.is_empty() {
                "everything (no prune)".to_string()
            } else {
                keep.join(", ")
            }
        );
        let mut then = Vec::new();
        if job.gc {
            then.push("gc");
        }
        if job.check_read_data {
            then.push("check --read-data");
        } else if job.check {
            then.push("check");
        }
        if !then.is_empty() {
            let _ = writeln!(text, "  then: {}", then.join(", "));
        }
    }
    if config.jobs.is_empty() {
        text.push_str("no jobs configured ([jobs.NAME] in the configuration)\n");
    }
    let doc = serde_json::json!({ "jobs": config.jobs });
    Ok(Report::new(Outcome::Success, &doc, text))
}
