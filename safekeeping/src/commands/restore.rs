//! `restore TARGET`: the arguments become [`RestoreOptions`], [`crate::restore::run`] does the
//! work, and the result is formatted here.

use std::fmt::Write as _;

use crate::backup::ChunkMemory;
use crate::cancel::Cancel;
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::report::Report;
use crate::restore::{
    IvdRestoreResult, RestoreMode, RestoreOptions, Restored, VappRestoreResult, VmRestoreReport,
};

/// The restore's options: the arguments, with the configuration's defaults filled in.
pub fn options(config: &Config, args: RestoreArgs, quiet: bool) -> RestoreOptions {
    RestoreOptions {
        target: args.target,
        generation: args.generation,
        name: args.name,
        overwrite: args.overwrite,
        force: args.force,
        recovery: args.recovery,
        mode: args.mode,
        datacenter: args.datacenter,
        folder: args.folder,
        resource_pool: args.resource_pool,
        host: args.host,
        datastore: args.datastore,
        disk_datastore: args.disk_datastore,
        network: args.network,
        power_on: args.power_on,
        attach: args.attach,
        max_connections: super::max_connections(args.max_connections, config),
        lock_wait: crate::repo::lock_wait(config),
        show_progress: !quiet,
        drop_excluded_disks: args.drop_excluded_disks,
        from_vcenter: config.source_vcenter(),
        profile: args.profile,
        disk_profile: args.disk_profile,
    }
}

/// Runs a restore.
///
/// # Errors
/// Every failure: a restore is one target, so any error fails the run (exit 1).
pub async fn run(
    mut config: Config,
    args: RestoreArgs,
    cancel: Cancel,
    quiet: bool,
) -> Result<Report> {
    super::override_transports(&mut config, args.transport.as_deref());
    let to_vcenter = args.to_vcenter.clone();
    let dry_run = args.dry_run;
    let options = options(&config, args, quiet);
    crate::restore::check_options(&options)?;
    let (config, into) = {
        let (c, o) = (config.clone(), options.clone());
        crate::blocking::blocking(move || {
            crate::restore::vcenter::choose(&c, &o, to_vcenter.as_deref())
        })
        .await?
    };
    tracing::info!("restoring {into}");
    if dry_run {
        let p = crate::restore::preview::preview(&config, &options).await?;
        return Ok(Report::new(Outcome::Success, &p, preview_text(&p)));
    }
    let restored = crate::restore::run(&config, &options, &cancel).await?;
    let mut text = match &restored {
        Restored::Vm(r) => vm_text(r),
        Restored::Ivd(r) => ivd_text(r),
        Restored::Vapp(r) => vapp_text(r),
    };
    let _ = writeln!(text, "  {into}");
    // What the disks' chunks in flight held at most of `[performance] restore_memory_mib`
    // (the process's budget, whose limit and high-water mark the restore set).
    let budget = repository_format::MemoryBudget::process();
    let chunk_memory = ChunkMemory {
        peak_bytes: budget.high_water(),
        limit_bytes: budget.limit(),
    };
    tracing::info!(
        peak_bytes = chunk_memory.peak_bytes,
        limit_bytes = chunk_memory.limit_bytes,
        "restore chunk memory"
    );
    let doc = RestoreDoc {
        restored: &restored,
        chunk_memory,
    };
    Ok(Report::new(Outcome::Success, &doc, text))
}

/// `restore --json`: what was restored, and what its chunks in flight took of their limit.
#[derive(serde::Serialize)]
struct RestoreDoc<'a> {
    #[serde(flatten)]
    restored: &'a Restored,
    chunk_memory: ChunkMemory,
}

/// The plan of `restore --dry-run`, for people.
fn preview_text(p: &crate::restore::preview::RestorePreview) -> String {
    let mut text = format!(
        "dry run: would restore {} generation {} as VM `{}` by {} (nothing was created)\n",
        p.target,
        p.generation,
        p.name,
        match p.mode {
            RestoreMode::Create => "create",
            RestoreMode::Import => "import",
        }
    );
    let pl = &p.placement;
    let _ = writeln!(
        text,
        "  placement: datacenter {}, folder {}, resource pool {}{}, datastore {}",
        pl.datacenter,
        pl.folder,
        pl.resource_pool,
        pl.host
            .as_ref()
            .map(|h| format!(", host {h}"))
            .unwrap_or_default(),
        pl.datastore
    );
    for d in &p.disks {
        let _ = writeln!(
            text,
            "  disk {} {} ({}) -> datastore {}",
            d.index,
            d.label,
            human_bytes(d.capacity),
            d.datastore
        );
    }
    for x in &p.excluded_disks {
        let _ = writeln!(
            text,
            "  disk {} {}: not in the backup; {}",
            x.index,
            x.label,
            if p.excluded_disks_recreated {
                "would be recreated empty"
            } else {
                "left out"
            }
        );
    }
    for n in &p.networks {
        let _ = writeln!(text, "  NIC {}: network {} -> {}", n.key, n.from, n.to);
    }
    if let Some(r) = &p.replaces {
        let _ = writeln!(
            text,
            "  would replace the existing VM `{}` ({}){}",
            r.name,
            r.moref,
            if r.powered_on {
                ", powering it off first"
            } else {
                ""
            }
        );
    }
    if p.power_on {
        text.push_str("  would power it on\n");
    }
    text
}

fn vm_text(report: &VmRestoreReport) -> String {
    let r = &report.result;
    let mut text = format!(
        "restored {} generation {} as VM `{}` ({}) by {}\n",
        r.target,
        r.generation,
        r.name,
        r.moref,
        match r.mode {
            RestoreMode::Create => "create",
            RestoreMode::Import => "import",
        }
    );
    for d in &r.disks {
        let _ = writeln!(
            text,
            "  disk {}: {} ({}), {} written",
            d.index,
            d.path,
            human_bytes(d.capacity),
            human_bytes(d.bytes_written)
        );
    }
    for x in &r.excluded_disks {
        let done = if r.excluded_disks_recreated {
            format!("recreated empty ({})", human_bytes(x.capacity))
        } else {
            "left out (--drop-excluded-disks)".to_string()
        };
        let _ = writeln!(
            text,
            "  disk {} {}: not in the backup ({}); {done}",
            x.index, x.label, x.note
        );
    }
    if r.powered_on {
        text.push_str("  powered on\n");
    }
    if let Some(left) = &report.replaced_vm_left {
        let _ = writeln!(
            text,
            "  warning: the replaced VM could not be destroyed; it is left as `{left}`: remove it by hand"
        );
    }
    text
}

fn ivd_text(r: &IvdRestoreResult) -> String {
    let mut text = format!(
        "restored {} generation {} as first class disk `{}` ({}) on {}: {} , {} written\n",
        r.target,
        r.generation,
        r.name,
        r.id,
        r.datastore,
        human_bytes(r.capacity),
        human_bytes(r.bytes_written)
    );
    if let Some(vm) = &r.attached_to {
        let _ = writeln!(text, "  attached to VM `{vm}`");
    }
    text
}

fn vapp_text(r: &VappRestoreResult) -> String {
    let mut text = format!(
        "restored {} generation {} as vApp `{}` ({})\n",
        r.target, r.generation, r.name, r.moref
    );
    for c in &r.children {
        let written: u64 = c.disks.iter().map(|d| d.bytes_written).sum();
        let _ = writeln!(
            text,
            "  VM `{}` ({}) from {} generation {}: {} disk(s), {} written",
            c.name,
            c.moref,
            c.target,
            c.generation,
            c.disks.len(),
            human_bytes(written)
        );
    }
    if r.powered_on {
        text.push_str("  powered on in start order\n");
    }
    text
}
