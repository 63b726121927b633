//! `restore TARGET`: plan and check, set a VM that `--overwrite` replaces aside (renamed,
//! powered off), build the VM (create or import) in folders of its own, write the disks,
//! optionally power on; then destroy the old VM. If anything fails after the new VM was
//! created, the new VM is destroyed; if anything fails after the old VM was set aside, it gets
//! its name and power state back.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::cancel::Cancel;
use crate::cli::{RestoreArgs, RestoreMode};
use crate::commands::list::human_bytes;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::report::Report;
use crate::restore::{
    destroy_partial, plan, set_aside, write_disks, RestorePlan, RestoreResult, VmFolders,
};
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
    let (r, replaced_vm_left) = result?;
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
    if let Some(left) = &replaced_vm_left {
        let _ = writeln!(
            text,
            "  warning: the replaced VM could not be destroyed; it is left as `{left}`: remove it by hand"
        );
    }
    let doc = VmRestoreReport {
        result: r,
        replaced_vm_left,
    };
    Ok(Report::new(Outcome::Success, &doc, text))
}

/// `restore --json` of a VM: the [`RestoreResult`] and, when `--overwrite` could not destroy
/// the VM it replaced, that VM's name.
#[derive(Serialize)]
struct VmRestoreReport {
    #[serde(flatten)]
    result: RestoreResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    replaced_vm_left: Option<String>,
}

/// Restores, and returns the result and, when a replaced VM could not be destroyed at the end,
/// its name.
async fn restore(
    config: &Config,
    vc: &Vcenter,
    args: &RestoreArgs,
    cancel: &Cancel,
    quiet: bool,
) -> Result<(RestoreResult, Option<String>)> {
    let plan = Arc::new(plan(config, vc, args).await?);
    let vddk = VddkEndpoint::load(config, vc).await?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let aside = set_aside(vc, &plan).await?;
    let built = build(
        vc,
        &vddk,
        &plan,
        args,
        cancel,
        quiet,
        args.connections(config),
    )
    .await;
    let Some(aside) = aside else {
        return built.map(|r| (r, None));
    };
    match built {
        Ok(r) => {
            let left = aside.discard(vc).await;
            Ok((r, left))
        }
        Err(e) => {
            tracing::error!(vm = %plan.name, "restore failed: {e}; putting the old VM back");
            Err(aside.put_back(vc, e).await)
        }
    }
}

/// Builds the new VM in claimed folders, writes its disks and powers it on if asked. On a
/// failure nothing of it is left: the VM is destroyed and the claimed folders deleted.
async fn build(
    vc: &Vcenter,
    vddk: &VddkEndpoint,
    plan: &Arc<RestorePlan>,
    args: &RestoreArgs,
    cancel: &Cancel,
    quiet: bool,
    max_connections: usize,
) -> Result<RestoreResult> {
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let folders = VmFolders::claim(vc, plan).await?;
    let created = match args.mode {
        RestoreMode::Create => restore_create::create(vc, plan, &folders).await,
        RestoreMode::Import => restore_import::import(vc, plan, &folders).await,
    };
    let (vm, dropped_fields) = match created {
        Ok(c) => c,
        Err(e) => {
            folders.release(vc, plan).await;
            return Err(e);
        }
    };
    let finish = async {
        let disks = write_disks(vc, vddk, plan, &vm, cancel, !quiet, max_connections).await?;
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
            if destroy_partial(vc, &vm, &plan.name).await {
                folders.release(vc, plan).await;
                return Err(Error::Other(format!(
                    "restore of {} failed and the partially restored VM `{}` was destroyed: {e}",
                    args.target, plan.name
                )));
            }
            return Err(Error::Other(format!(
                "restore of {} failed and the partially restored VM `{}` ({}) could not be destroyed: remove it by hand: {e}",
                args.target, plan.name, vm.value
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
