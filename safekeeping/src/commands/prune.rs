//! `prune`: forget generations a retention policy does not keep (plan, then delete).

use std::fmt::Write as _;

use repository_format::RetentionPolicy;

use crate::cli::PruneArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// The policy the flags describe.
///
/// # Errors
/// When no keep rule is given (pruning everything is never what was meant).
pub fn policy(args: &PruneArgs) -> Result<RetentionPolicy> {
    let p = RetentionPolicy {
        keep_last: args.keep_last.unwrap_or(0),
        keep_hourly: args.keep_hourly.unwrap_or(0),
        keep_daily: args.keep_daily.unwrap_or(0),
        keep_weekly: args.keep_weekly.unwrap_or(0),
        keep_monthly: args.keep_monthly.unwrap_or(0),
        keep_yearly: args.keep_yearly.unwrap_or(0),
        keep_within_seconds: args.keep_within,
    };
    if p == RetentionPolicy::default() {
        return Err(Error::Other(
            "prune needs at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within".into(),
        ));
    }
    Ok(p)
}

/// Prunes under the exclusive lock.
///
/// # Errors
/// Lock timeouts, repository errors, an unknown target.
pub fn run(config: &Config, args: &PruneArgs) -> Result<Report> {
    let policy = policy(args)?;
    let r = repo::open(config)?;
    let key = match &args.target {
        Some(t) => Some(repo::find_configured_target(&r, t, config)?.0.key),
        None => None,
    };
    let lock = r.lock_exclusive(repo::lock_wait(config))?;
    let report = r.prune(
        &lock,
        &policy,
        key.as_ref(),
        time::OffsetDateTime::now_utc(),
        args.dry_run,
    )?;
    // People and scripts see targets as `vm:web01`, with the folder key beside it in JSON.
    let names = repo::TargetNames::of(&r).unwrap_or_default();
    let name = |key: &repository_format::TargetKey| names.name(key);
    // Old run records go with a prune of the whole repository (90 days or 1000 records).
    let runs_removed = if key.is_none() && !args.dry_run {
        r.prune_runs(Default::default(), time::OffsetDateTime::now_utc())?
    } else {
        0
    };
    let mut text = String::new();
    for t in &report.targets {
        let _ = writeln!(text, "{}:", name(&t.target));
        for g in &t.generations {
            let _ = writeln!(
                text,
                "  generation {:>4}  {}  {}",
                g.id.0,
                if g.keep {
                    "keep  "
                } else if args.dry_run {
                    "would remove"
                } else {
                    "remove"
                },
                g.reasons.join(", ")
            );
        }
    }
    let _ = writeln!(
        text,
        "{} {}; run `safekeeping gc` to free their chunks",
        crate::format::count(report.removed.len() as u64, "generation", "generations"),
        if args.dry_run {
            "would be removed"
        } else {
            "removed"
        }
    );
    let doc = serde_json::json!({
        "dry_run": report.dry_run,
        "targets": report.targets.iter().map(|t| serde_json::json!({
            "target": name(&t.target),
            "key": t.target,
            "generations": t.generations.iter().map(|g| serde_json::json!({
                "generation": g.id.0,
                "time": g.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "status": g.status,
                "keep": g.keep,
                "reasons": g.reasons,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "removed": report.removed.iter().map(|(key, id)| serde_json::json!({
            "target": name(key),
            "key": key,
            "generation": id.0,
        })).collect::<Vec<_>>(),
    });
    if runs_removed > 0 {
        let _ = writeln!(text, "{runs_removed} old run records removed");
    }
    let mut doc = doc;
    if let Some(m) = doc.as_object_mut() {
        m.insert("run_records_removed".into(), runs_removed.into());
    }
    Ok(Report::new(Outcome::Success, &doc, text))
}
