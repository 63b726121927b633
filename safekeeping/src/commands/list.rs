//! `list [TARGET]`: targets and their generations; `list --resolve TARGET...`: what a
//! selection covers in vCenter now, as a backup run would expand it.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::target::{Target, VmSelector};
use crate::vsphere::resolve::all_vms;
use crate::vsphere::{selection, Vcenter};

#[derive(Serialize)]
struct Listed {
    /// The display name (`vm:web01`), as every command names a target.
    target: String,
    key: String,
    name: String,
    generations: Vec<repository_format::repository::GenerationSummary>,
}

/// One target a selection covers now.
#[derive(Serialize)]
struct Selected {
    /// The target as a backup would run it (`vm:vm-12`, `ivd:ID`, `vapp:NAME`).
    target: String,
    /// `vm`, `ivd` or `vapp`.
    kind: &'static str,
    /// The VM's name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// `list --resolve TARGET... [--all KIND] [--exclude TARGET]`: asks vCenter what the
/// selection expands to now (the backup's own expansion), backing nothing up.
///
/// # Errors
/// vCenter unreachable or refusing the login, a selection naming nothing (unknown folder,
/// cluster, host, pool, datastore or tag, or an `--exclude` that names nothing).
pub async fn resolve(config: &Config, args: &ListArgs) -> Result<Report> {
    let vc = Vcenter::connect(config).await?;
    let out = resolved(&vc, config, args).await;
    vc.logout().await;
    out
}

async fn resolved(vc: &Vcenter, config: &Config, args: &ListArgs) -> Result<Report> {
    let selection = selection::select(
        vc,
        &args.resolve,
        &args.all,
        &args.exclude,
        config.defaults.product_uuid_file.as_deref(),
    )
    .await?;
    let names: HashMap<String, String> = all_vms(vc)
        .await?
        .into_iter()
        .map(|v| (v.moref.value, v.name))
        .collect();
    let mut selected = Vec::new();
    let mut text = String::new();
    for t in &selection.targets {
        let name = match t {
            Target::Vm(VmSelector::Moref(m)) => names.get(m).cloned(),
            Target::Vm(_) => match crate::vsphere::resolve::resolve(vc, t).await {
                Ok(v) => Some(v.name),
                Err(e) => {
                    let _ = writeln!(text, "{t}: {e}");
                    None
                }
            },
            _ => None,
        };
        match &name {
            Some(n) => {
                let _ = writeln!(text, "{t}  {n}");
            }
            None if !matches!(t, Target::Vm(_)) => {
                let _ = writeln!(text, "{t}");
            }
            None => {}
        }
        selected.push(Selected {
            target: t.to_string(),
            kind: t.kind(),
            name,
        });
    }
    for s in &selection.skipped {
        let _ = writeln!(text, "{}: skipped ({})", s.target, s.reason);
    }
    if selection.targets.is_empty() {
        text.push_str("the selection holds no target now\n");
    }
    Ok(Report::new(
        Outcome::Success,
        &serde_json::json!({ "selected": selected, "skipped": selection.skipped }),
        text,
    ))
}

/// Lists every target (or one) with its generations.
///
/// # Errors
/// Repository errors; an unknown target.
pub fn run(config: &Config, target: Option<&Target>) -> Result<Report> {
    let r = repo::open(config)?;
    let summaries = match target {
        Some(t) => vec![repo::find_configured_target(&r, t, config)?.0],
        None => r.targets()?,
    };
    let mut listed = Vec::new();
    let mut text = String::new();
    for s in summaries {
        let gens = r.generations(&s.key)?;
        let _ = writeln!(text, "{}  ({})", repo::display_name(&s), s.key);
        let _ = writeln!(
            text,
            "  {:>4}  {:<20}  {:<11}  {:<9}  {:>12}  {:>12}",
            "gen", "time (UTC)", "mode", "status", "read", "new"
        );
        for g in &gens {
            let t = g.time.to_offset(time::UtcOffset::UTC);
            let t = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            let _ = writeln!(
                text,
                "  {:>4}  {:<20}  {:<11}  {:<9}  {:>12}  {:>12}",
                g.id.0,
                t,
                format!("{:?}", g.mode).to_lowercase(),
                format!("{:?}", g.status).to_lowercase(),
                human_bytes(g.stats.read_bytes),
                human_bytes(g.stats.new_bytes),
            );
        }
        listed.push(Listed {
            target: repo::display_name(&s),
            key: s.key.to_string(),
            name: s.name,
            generations: gens,
        });
    }
    if listed.is_empty() {
        text.push_str("the repository is empty\n");
    }
    Ok(Report::new(
        Outcome::Success,
        &serde_json::json!({ "targets": listed }),
        text,
    ))
}
