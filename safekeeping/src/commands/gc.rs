//! `gc`: delete chunks that no generation references.

use repository_format::GcOptions;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Collects garbage under the exclusive lock; `dry_run` counts what would go and removes
/// nothing.
///
/// # Errors
/// Lock timeouts, repository errors.
pub fn run(config: &Config, dry_run: bool) -> Result<Report> {
    let r = repo::open(config)?;
    let lock = r.lock_exclusive(repo::lock_wait(config))?;
    let options = GcOptions {
        dry_run,
        ..GcOptions::default()
    };
    let report = r.gc(&lock, &options)?;
    let mut text = format!(
        "{} {} of {} chunks ({}); {} unreferenced chunks kept as too recent\n",
        if dry_run { "would remove" } else { "removed" },
        report.chunks_removed,
        report.chunks_found,
        human_bytes(report.bytes_removed),
        report.chunks_kept_recent
    );
    if report.chunks_kept_locked > 0 {
        text.push_str(&format!(
            "{} unreferenced chunks kept: still under object lock (a later gc removes them)\n",
            report.chunks_kept_locked
        ));
    }
    if report.generations_pinned > 0 {
        text.push_str(&format!(
            "{} in use by a running serve or files (pinned): their chunks are kept\n",
            crate::format::count(report.generations_pinned, "generation", "generations")
        ));
    }
    Ok(Report::new(Outcome::Success, &report, text))
}
