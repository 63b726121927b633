//! `check [--read-data] [--repair]`: verify the repository; exit 1 when anything is damaged.
//!
//! `--repair` (implies `--read-data`, takes the exclusive lock) moves damaged chunks to
//! `quarantine/`, so the next full backup of the same data stores them again. It still exits 1
//! when it found damage: the generations using a quarantined chunk stay damaged until then.

use std::fmt::Write as _;

use repository_format::CheckOptions;

use crate::cli::CheckArgs;
use crate::config::Config;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Checks the repository under the shared lock, or with `--repair` under the exclusive lock.
///
/// # Errors
/// When the repository cannot be opened or locked.
pub fn run(config: &Config, args: CheckArgs) -> Result<Report> {
    let r = repo::open(config)?;
    let read_data = args.read_data || args.repair;
    let report = if args.repair {
        let lock = r.lock_exclusive(repo::lock_wait(config))?;
        r.check_and_repair(&lock)?
    } else {
        // Works on a read-only repository too (without a recorded lock; the library warns).
        let _lock = r.lock_shared_for_reading(repo::lock_wait(config))?;
        r.check(&CheckOptions { read_data })?
    };
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
    for q in &report.quarantined {
        let _ = writeln!(
            text,
            "QUARANTINED: chunk {} ({}) moved to {}",
            q.chunk,
            q.fault,
            q.quarantine_path.display()
        );
        tracing::warn!(
            "check --repair: chunk {} moved to {}",
            q.chunk,
            q.quarantine_path.display()
        );
    }
    for q in &report.quarantined_indexes {
        let _ = writeln!(
            text,
            "QUARANTINED: index of target {} generation {} disk {} ({}) moved to {}",
            q.target,
            q.generation,
            q.disk,
            q.fault,
            q.quarantine_path.display()
        );
        tracing::warn!(
            "check --repair: index {} moved to {}",
            q.path.display(),
            q.quarantine_path.display()
        );
    }
    for g in &report.damaged_generations {
        let disks: Vec<String> = g.disks.iter().map(|d| d.to_string()).collect();
        let index_lost = report
            .quarantined_indexes
            .iter()
            .any(|q| q.target == g.target && q.generation == g.generation);
        let until = if index_lost {
            "until it is deleted (an index cannot be rebuilt; the next backup of the target reads \
             the disk in full)"
        } else {
            "until a full backup of the target stores the quarantined data again"
        };
        let _ = writeln!(
            text,
            "STILL DAMAGED: target {} generation {} (disk {}) {until}",
            g.target,
            g.generation,
            disks.join(", ")
        );
    }
    if let Some(note) = &report.repair_note {
        let _ = writeln!(text, "{note}");
    }
    if report.quarantine_files > 0 {
        let _ = writeln!(
            text,
            "{} files kept in quarantine/ (damaged chunks moved aside by repairs; remove them \
             by hand once they are of no use)",
            report.quarantine_files
        );
    }
    let outcome = if report.ok() {
        text.push_str("no problems found\n");
        Outcome::Success
    } else {
        let _ = writeln!(text, "{} problems found", report.problems.len());
        if args.repair {
            let _ = writeln!(
                text,
                "{} damaged chunks and {} damaged indexes quarantined",
                report.quarantined.len(),
                report.quarantined_indexes.len()
            );
        }
        Outcome::Failure
    };
    Ok(Report::new(outcome, &report, text))
}
