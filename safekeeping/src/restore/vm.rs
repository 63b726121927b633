//! Restore of a VM generation (`restore vm:...`), top to bottom: plan and check everything
//! ([`crate::restore::plan`]); with `--overwrite`, set the existing VM aside (powered off with
//! `--force`, renamed to `NAME-replaced-<UTC>`) so the new VM can take its name while the old one
//! still exists; build the new VM in folders claimed for it ([`crate::restore::create`] or
//! [`crate::restore::import`]); write its disks ([`crate::restore::disk`]); power it on if asked;
//! then destroy the VM it replaced. If anything fails after the new VM was created, the new VM
//! is destroyed; if anything fails after the old VM was set aside, it gets its name and power
//! state back.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use vim_client::{MoRef, PowerState};

use crate::cancel::Cancel;
use crate::config::Config;
use crate::disk_io::VddkEndpoint;
use crate::error::{Error, Result};
use crate::excluded_disk::ExcludedDisk;
use crate::restore::create::destroy_partial;
use crate::restore::disk::{write_vm_disks, RestoredDisk};
use crate::restore::plan::{plan, RestorePlan, VmFolders};
use crate::restore::policy::AppliedPolicies;
use crate::restore::{create, import, RestoreMode, RestoreOptions};
use crate::vsphere::Vcenter;

/// What a restore did, as `restore --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    /// The target restored.
    pub target: String,
    /// The generation restored.
    pub generation: u64,
    /// Create or import.
    pub mode: RestoreMode,
    /// The new VM's name.
    pub name: String,
    /// The new VM's moref.
    pub moref: String,
    /// Per disk: index, new path, bytes written.
    pub disks: Vec<RestoredDisk>,
    /// Powered on at the end.
    pub powered_on: bool,
    /// Configuration fields vCenter reported that the rebuilt VM does not carry.
    pub dropped_fields: Vec<String>,
    /// Disks the backup left out: recreated empty with their capacity, or (with
    /// `--drop-excluded-disks`) not created.
    pub excluded_disks: Vec<ExcludedDisk>,
    /// Whether `excluded_disks` were recreated empty (false: left out).
    pub excluded_disks_recreated: bool,
    /// The storage policies applied (absent when none was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_policies: Option<AppliedPolicies>,
}

/// `restore --json` of a VM: the [`RestoreResult`] and, when `--overwrite` could not destroy
/// the VM it replaced, that VM's name.
#[derive(Debug, Clone, Serialize)]
pub struct VmRestoreReport {
    /// What was restored.
    #[serde(flatten)]
    pub result: RestoreResult,
    /// The replaced VM's name, when it could not be destroyed at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_vm_left: Option<String>,
}

/// Restores a VM generation.
///
/// # Errors
/// Every failure; what was built is removed and a replaced VM put back (the error says so).
pub async fn restore_vm(
    config: &Config,
    options: &RestoreOptions,
    cancel: &Cancel,
) -> Result<VmRestoreReport> {
    if options.attach.is_some() {
        return Err(Error::Other(
            "--attach applies to first class disks (ivd: targets) only".into(),
        ));
    }
    let vc = Vcenter::connect(config).await?;
    let result = restore(config, &vc, options, cancel).await;
    vc.logout().await;
    let (result, replaced_vm_left) = result?;
    Ok(VmRestoreReport {
        result,
        replaced_vm_left,
    })
}

/// Restores, and returns the result and, when a replaced VM could not be destroyed at the end,
/// its name.
async fn restore(
    config: &Config,
    vc: &Vcenter,
    args: &RestoreOptions,
    cancel: &Cancel,
) -> Result<(RestoreResult, Option<String>)> {
    let plan = Arc::new(plan(config, vc, args).await?);
    let vddk = VddkEndpoint::load(config, vc).await?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let aside = set_aside(vc, &plan).await?;
    let built = build(vc, &vddk, &plan, args, cancel).await;
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
    args: &RestoreOptions,
    cancel: &Cancel,
) -> Result<RestoreResult> {
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let folders = VmFolders::claim(vc, plan).await?;
    let created = match args.mode {
        RestoreMode::Create => create::create(vc, plan, &folders).await,
        RestoreMode::Import => import::import(vc, plan, &folders).await,
    };
    let (vm, dropped_fields) = match created {
        Ok(c) => c,
        Err(e) => {
            folders.release(vc, plan).await;
            return Err(e);
        }
    };
    let finish = async {
        let disks = write_vm_disks(
            vc,
            vddk,
            plan,
            &vm,
            cancel,
            args.show_progress,
            args.max_connections,
        )
        .await?;
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
        excluded_disks: plan.excluded.clone(),
        excluded_disks_recreated: !plan.drop_excluded,
        storage_policies: plan.policies.applied(),
    })
}
/// Name an existing VM carries while `--overwrite` builds its replacement:
/// `<name>-replaced-<UTC>`.
pub fn aside_name(name: &str, now: time::OffsetDateTime) -> String {
    format!("{name}-replaced-{}", crate::format::compact_utc(now))
}

/// The VM `--overwrite` replaces, renamed aside (and powered off) until the new VM is
/// complete: then it is destroyed; if the restore fails it gets its name (and power) back.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// The old VM.
    pub vm: MoRef,
    /// Its name, which the new VM takes.
    pub name: String,
    /// The name it carries meanwhile.
    pub aside_name: String,
    /// Whether it was powered on (`--force` powered it off).
    pub was_on: bool,
}

/// Sets the VM the plan replaces aside, if there is one: powers it off (`--force` was
/// checked) and renames it to [`aside_name`], so that the new VM can take its name while the
/// old one still exists. Nothing of the old VM is deleted here.
///
/// # Errors
/// vCenter faults; a VM powered off here is powered on again when the rename fails.
pub async fn set_aside(vc: &Vcenter, plan: &RestorePlan) -> Result<Option<SetAside>> {
    let Some((vm, state)) = &plan.replace else {
        return Ok(None);
    };
    let was_on = *state == PowerState::PoweredOn;
    if was_on {
        tracing::warn!(vm = %plan.name, "--overwrite --force: powering off the existing VM");
        vc.client.power_off(vm).await?;
    }
    let aside = aside_name(&plan.name, time::OffsetDateTime::now_utc());
    if let Err(e) = vc.client.rename(vm, &aside).await {
        let mut msg = format!(
            "could not rename the existing VM `{}` aside to `{aside}` before restoring: {e}; nothing was restored",
            plan.name
        );
        if was_on {
            match vc.client.power_on(vm).await {
                Ok(()) => msg.push_str(", and the existing VM was powered on again"),
                Err(p) => {
                    let _ = write!(
                        msg,
                        ", and powering the existing VM on again failed: {p}; it is powered off"
                    );
                }
            }
        }
        return Err(Error::Other(msg));
    }
    tracing::warn!(
        vm = %plan.name,
        "--overwrite: the existing VM ({}) was renamed to `{aside}`; it is kept until the new VM is complete",
        vm.value
    );
    Ok(Some(SetAside {
        vm: vm.clone(),
        name: plan.name.clone(),
        aside_name: aside,
        was_on,
    }))
}

impl SetAside {
    /// Destroys the old VM once the new one is complete. Returns its (aside) name when that
    /// fails: the restore has still succeeded, and the old VM is left under that name.
    pub async fn discard(&self, vc: &Vcenter) -> Option<String> {
        match vc.client.destroy(&self.vm).await {
            Ok(()) => {
                tracing::warn!(vm = %self.name, "--overwrite: destroyed the replaced VM `{}`", self.aside_name);
                None
            }
            Err(e) => {
                tracing::warn!(
                    vm = %self.name,
                    "the new VM is complete, but the replaced VM `{}` ({}) could not be destroyed: {e}; remove it by hand",
                    self.aside_name,
                    self.vm.value
                );
                Some(self.aside_name.clone())
            }
        }
    }

    /// After a failed restore (the partial new VM already destroyed): gives the old VM its name
    /// back and powers it on again if it was on. Returns `cause`, extended by what became of
    /// the old VM (put back, or where it is when putting it back failed).
    pub async fn put_back(&self, vc: &Vcenter, cause: Error) -> Error {
        if let Err(e) = vc.client.rename(&self.vm, &self.name).await {
            tracing::error!(
                vm = %self.name,
                "could not give the old VM ({}) its name back: {e}",
                self.vm.value
            );
            return Error::Other(format!(
                "{cause}; the old VM could NOT be put back ({e}): it is still named `{}` ({}), powered off; rename it to `{}` by hand",
                self.aside_name, self.vm.value, self.name
            ));
        }
        if self.was_on {
            if let Err(e) = vc.client.power_on(&self.vm).await {
                tracing::error!(vm = %self.name, "could not power the old VM on again: {e}");
                return Error::Other(format!(
                    "{cause}; the old VM was put back as `{}` but could not be powered on again: {e}",
                    self.name
                ));
            }
        }
        tracing::warn!(vm = %self.name, "the old VM was put back");
        Error::Other(format!(
            "{cause}; the old VM was put back as `{}`{}",
            self.name,
            if self.was_on {
                " and powered on again"
            } else {
                ""
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_vm_is_renamed_with_a_utc_stamp() {
        let t = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        assert_eq!(aside_name("web01", t), "web01-replaced-20261127T100000Z");
    }
}
