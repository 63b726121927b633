//! `restore TARGET`: plan and check, build the VM (create or import), write the disks,
//! optionally power on; destroy the VM if anything fails after it was created.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::cancel::Cancel;
use crate::cli::{RestoreArgs, RestoreMode};
use crate::commands::list::human_bytes;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::report::Report;
use crate::restore::{destroy_partial, plan, remove_replaced, write_disks, RestoreResult};
use crate::vcenter::Vcenter;
use crate::vddk_session::VddkEndpoint;
use crate::{restore_create, restore_import};

/// Runs a restore.
///
/// # Errors
/// Every failure: a restore is one target, so any error fails the run (exit 1).
pub async fn run(config: Config, args: RestoreArgs, cancel: Cancel, quiet: bool) -> Result<Report> {
    if matches!(args.target, crate::target::Target::Ivd(_)) {
        return crate::ivd_restore::run(config, args, cancel, quiet).await;
    }
    if matches!(args.target, crate::target::Target::Vapp(_)) {
        return crate::vapp_restore::run(config, args, cancel, quiet).await;
    }
    if args.attach.is_some() {
        return Err(Error::Other(
            "--attach applies to first class disks (ivd: targets) only".into(),
        ));
    }
    let vc = Vcenter::connect(&config).await?;
    let result = restore(&config, &vc, &args, &cancel, quiet).await;
    vc.logout().await;
    let r = result?;
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
    if r.powered_on {
        text.push_str("  powered on\n");
    }
    Ok(Report::new(Outcome::Success, &r, text))
}

async fn restore(
    config: &Config,
    vc: &Vcenter,
    args: &RestoreArgs,
    cancel: &Cancel,
    quiet: bool,
) -> Result<RestoreResult> {
    let plan = Arc::new(plan(config, vc, args).await?);
    let c = config.clone();
    let v = vc.clone();
    let vddk = tokio::task::spawn_blocking(move || VddkEndpoint::new(&c, &v))
        .await
        .map_err(|e| Error::Other(format!("worker thread failed: {e}")))??;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    remove_replaced(vc, &plan).await?;
    let (vm, dropped_fields) = match args.mode {
        RestoreMode::Create => restore_create::create(vc, &plan).await?,
        RestoreMode::Import => restore_import::import(vc, &plan).await?,
    };
    let finish = async {
        let disks = write_disks(vc, &vddk, &plan, &vm, cancel, !quiet).await?;
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        if args.power_on {
            vc.client.power_on(&vm).await?;
        }
        Ok::<_, Error>(disks)
    }
    .await;
    let disks = match finish {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(vm = %plan.name, "restore failed after the VM was created: {e}");
            destroy_partial(vc, &vm, &plan.name).await;
            return Err(Error::Other(format!(
                "restore of {} failed and the partially restored VM `{}` was destroyed: {e}",
                args.target, plan.name
            )));
        }
    };
    Ok(RestoreResult {
        target: args.target.to_string(),
        generation: plan.manifest.generation.0,
        mode: args.mode,
        name: plan.name.clone(),
        moref: vm.value.clone(),
        disks,
        powered_on: args.power_on,
        dropped_fields,
    })
}
