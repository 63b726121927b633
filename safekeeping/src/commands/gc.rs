//! `gc`: delete chunks that no generation references.

use repository_format::GcOptions;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::progress::Deferred;
use crate::repo;
use crate::report::Report;

/// The sweep shown as stored bytes gone through.
struct SweepBar(Deferred);

impl repository_format::GcProgress for SweepBar {
    fn sweep_started(&self, _chunks: u64, bytes: u64) {
        self.0.start(bytes);
    }

    fn swept(&self, bytes: u64) {
        self.0.add(bytes);
    }
}

/// Collects garbage under the exclusive lock; `dry_run` counts what would go and removes
/// nothing.
///
/// # Errors
/// Lock timeouts, repository errors.
pub fn run(config: &Config, dry_run: bool, quiet: bool) -> Result<Report> {
    let r = repo::open(config)?;
    let lock = r.lock_exclusive(repo::lock_wait(config))?;
    let options = GcOptions {
        dry_run,
        ..GcOptions::default()
    };
    let progress = SweepBar(Deferred::new(
        if dry_run {
            "gc: counting unreferenced chunks"
        } else {
            "gc: removing unreferenced chunks"
        },
        quiet,
    ));
    let report = r.gc_reporting(&lock, &options, &progress);
    progress.0.finish();
    let report = report?;
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
