//! `check [--read-data]`: verify the repository; exit 1 when anything is damaged.

use std::fmt::Write as _;

use repository_format::CheckOptions;

use crate::config::Config;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Checks the repository under the shared lock.
///
/// # Errors
/// When the repository cannot be opened or locked.
pub fn run(config: &Config, read_data: bool) -> Result<Report> {
    let r = repo::open(config)?;
    let _lock = r.lock_shared(repo::lock_wait(config))?;
    let report = r.check(&CheckOptions { read_data })?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} targets, {} generations, {} indexes, {} chunks referenced{}",
        report.targets,
        report.generations,
        report.indexes,
        report.chunks_referenced,
        if read_data {
            format!(
                ", {} chunks ({} bytes) read and verified",
                report.chunks_verified, report.bytes_verified
            )
        } else {
            String::new()
        }
    );
    for p in &report.problems {
        let _ = writeln!(text, "PROBLEM: {p:?}");
        tracing::error!("check: {p:?}");
    }
    let outcome = if report.ok() {
        text.push_str("no problems found\n");
        Outcome::Success
    } else {
        let _ = writeln!(text, "{} problems found", report.problems.len());
        Outcome::Failure
    };
    Ok(Report::new(outcome, &report, text))
}
