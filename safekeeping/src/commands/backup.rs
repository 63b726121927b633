//! `backup TARGET...`: back up targets in parallel, one result per target.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::backup::{backup_target, BackupContext, BackupOptions, TargetResult};
use crate::cancel::Cancel;
use crate::cli::BackupArgs;
use crate::commands::blocking;
use crate::commands::list::human_bytes;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::target::Target;
use crate::vcenter::Vcenter;
use crate::vddk_session::VddkEndpoint;

#[derive(Serialize)]
struct Summary<'a> {
    targets: &'a [TargetResult],
    skipped: &'a [crate::selection::Skipped],
}

/// Runs the backup of every target.
///
/// # Errors
/// When the run cannot start: repository missing or locked, vCenter unreachable or refusing
/// the login, VDDK not loadable. Target failures are in the report.
pub async fn run(config: Config, args: BackupArgs, cancel: Cancel, quiet: bool) -> Result<Report> {
    let config = Arc::new(config);
    let c = config.clone();
    let repository = blocking(move || repo::open(&c)).await?;
    let r = repository.clone();
    let wait = repo::lock_wait(&config);
    let lock = blocking(move || {
        r.lock_shared(wait)
            .map_err(|e| Error::from_lock("the repository".into(), wait.as_secs(), e))
    })
    .await?;
    let vc = Vcenter::connect(&config).await?;
    let selection = match crate::selection::select(
        &vc,
        &args.targets,
        &args.all,
        &args.exclude,
        config.defaults.product_uuid_file.as_deref(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            vc.logout().await;
            return Err(e);
        }
    };
    let vddk = VddkEndpoint::load(&config, &vc).await?;
    let parallel = args
        .parallel
        .map(usize::from)
        .unwrap_or(config.defaults.parallel)
        .max(1);
    let max_connections = args
        .max_connections
        .map(usize::from)
        .unwrap_or(config.defaults.max_vddk_connections)
        .max(1);
    tracing::debug!(
        parallel,
        max_connections,
        "targets and VDDK connections at once"
    );
    let ctx = Arc::new(BackupContext {
        config: config.clone(),
        vc: vc.clone(),
        vddk,
        repo: repository,
        lock: Arc::new(lock),
        cancel,
        options: BackupOptions {
            full: args.full,
            quiesce: !args.no_quiesce,
            show_progress: !quiet,
        },
        vddk_connections: Arc::new(Semaphore::new(max_connections)),
    });
    // Targets run concurrently on this task (vCenter calls are async, disk I/O runs on
    // blocking threads); the semaphore bounds how many are in flight.
    let gate = Arc::new(Semaphore::new(parallel));
    let runs = selection.targets.into_iter().map(|target| {
        let ctx = ctx.clone();
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire_owned().await;
            match target {
                Target::Ivd(ref selector) => {
                    let selector = selector.clone();
                    crate::ivd_backup::backup_ivd(ctx, target, selector).await
                }
                Target::Vapp(ref name) => {
                    let name = name.clone();
                    crate::vapp_backup::backup_vapp(ctx, target, name).await
                }
                _ => backup_target(ctx, target).await,
            }
        }
    });
    let results: Vec<TargetResult> = futures_util::future::join_all(runs).await;
    vc.logout().await;

    let ok = results.iter().filter(|r| r.succeeded()).count();
    let outcome = Outcome::from_counts(ok, results.len() - ok);
    let mut text = String::new();
    for r in &results {
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
    for s in &selection.skipped {
        let _ = writeln!(text, "{}: skipped ({})", s.target, s.reason);
    }
    Ok(Report::new(
        outcome,
        &Summary {
            targets: &results,
            skipped: &selection.skipped,
        },
        text,
    ))
}
