//! `gc`: delete chunks that no generation references.

use repository_format::GcOptions;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Collects garbage under the exclusive lock.
///
/// # Errors
/// Lock timeouts, repository errors.
pub fn run(config: &Config) -> Result<Report> {
    let r = repo::open(config)?;
    let lock = r.lock_exclusive(repo::lock_wait(config))?;
    let report = r.gc(&lock, &GcOptions::default())?;
    let text = format!(
        "removed {} of {} chunks ({}); {} unreferenced chunks kept as too recent\n",
        report.chunks_removed,
        report.chunks_found,
        human_bytes(report.bytes_removed),
        report.chunks_kept_recent
    );
    Ok(Report::new(Outcome::Success, &report, text))
}
