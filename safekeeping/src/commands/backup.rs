//! `backup TARGET...`: the arguments become [`BackupOptions`], [`crate::backup::run`] backs
//! the targets up, and the results are formatted here.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::backup::BackupOptions;
use crate::cancel::Cancel;
use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::report::Report;

/// The backup's options: the arguments, with the configuration's defaults filled in.
pub fn options(config: &Config, args: BackupArgs, quiet: bool) -> BackupOptions {
    BackupOptions {
        targets: args.targets,
        all: args.all,
        exclude: args.exclude,
        full: args.full,
        quiesce: !args.no_quiesce,
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

/// Runs the backup of every target.
///
/// # Errors
/// When the run cannot start: repository missing or locked, vCenter unreachable or refusing
/// the login, VDDK not loadable. Target failures are in the report.
pub async fn run(config: Config, args: BackupArgs, cancel: Cancel, quiet: bool) -> Result<Report> {
    let options = options(&config, args, quiet);
    let run = crate::backup::run(Arc::new(config), options, cancel).await?;
    let results = &run.targets;
    let ok = results.iter().filter(|r| r.succeeded()).count();
    let outcome = Outcome::from_counts(ok, results.len() - ok);
    let mut text = String::new();
    for r in results {
        match (&r.error, r.generation) {
            (None, Some(g)) => {
                let _ = writeln!(
                    text,
                    "{}: generation {g} ({}) — read {}, new {}",
                    r.target,
                    r.mode
                        .map(|m| format!("{m:?}").to_lowercase())
                        .unwrap_or_default(),
                    human_bytes(r.bytes_read),
                    human_bytes(r.bytes_new)
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
    Ok(Report::new(outcome, &run, text))
}
