//! Restore by creation: a `VirtualMachineConfigSpec` rebuilt from the saved configuration
//! (new disks of the original capacity and provisioning on the mapped datastores, NICs on the
//! mapped networks, identity kept only with `--recovery`), then `CreateVM_Task`. A VM restore
//! puts the `.vmx` and every disk in folders claimed for it ([`VmFolders`]), never in an
//! existing folder of the same name. The saved `.nvram` goes into the new VM's folder before
//! its first power-on, so an EFI or Secure Boot VM keeps its boot entries and variables.

use vim_client::{
    apply_profiles, config_spec_from_info, DatastorePath, DiskTarget, MacPolicy, MoRef,
    RestoreOptions,
};

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::restore::plan::{RestorePlan, VmFolders};
use crate::stored::vm::NVRAM_FILE;
use crate::vsphere::metadata::sibling;
use crate::vsphere::Vcenter;

/// The spec options the plan describes, with the server choosing the folders (`[ds]`).
pub fn restore_options(plan: &RestorePlan) -> RestoreOptions {
    restore_options_in(plan, None)
}

/// The spec options the plan describes; with `folders`, the `.vmx` is
/// `[ds] folder/name.vmx` and each disk gets a full path in the claimed folder of its
/// datastore (the server would otherwise put a disk in `[ds] name/`, which may be another
/// VM's folder).
pub fn restore_options_in(plan: &RestorePlan, folders: Option<&VmFolders>) -> RestoreOptions {
    let vm_path = match folders {
        Some(f) => f.vmx_path(&plan.name).to_string(),
        None => format!("[{}]", plan.vm_datastore),
    };
    let disk_paths = folders.map(|f| f.disk_paths(plan));
    let mut o = RestoreOptions::new(plan.name.clone(), vm_path);
    if plan.recovery {
        o.uuid = plan
            .saved_config
            .text_at("uuid")
            .map(str::to_string)
            .filter(|u| !u.is_empty());
        o.instance_uuid = plan
            .saved_config
            .text_at("instanceUuid")
            .map(str::to_string);
        o.macs = MacPolicy::Keep;
    } else {
        o.macs = MacPolicy::Regenerate;
    }
    for (i, (record, ds)) in plan
        .manifest
        .disks
        .iter()
        .zip(&plan.disk_datastores)
        .enumerate()
    {
        let file_name = disk_paths
            .as_ref()
            .and_then(|p| p.get(i).cloned())
            .unwrap_or_else(|| format!("[{ds}]"));
        let datastore = plan
            .inventory
            .datastore(ds)
            .ok()
            .map(|c| MoRef::new("Datastore", c.moref.clone()));
        o.disks.insert(
            record.disk.key,
            DiskTarget {
                file_name,
                datastore,
                thin_provisioned: None,
                create: true,
            },
        );
    }
    // A disk the backup left out is recreated empty, with its saved capacity, in the new VM's
    // folder (it has no data to put on another datastore); with `--drop-excluded-disks` it was
    // removed from the saved configuration and is not created at all.
    if !plan.drop_excluded {
        let datastore = plan
            .inventory
            .datastore(&plan.vm_datastore)
            .ok()
            .map(|c| MoRef::new("Datastore", c.moref.clone()));
        for x in &plan.excluded {
            let file_name = match folders {
                Some(f) => f
                    .vm_file(&format!("{}_excluded{}.vmdk", plan.name, x.index))
                    .to_string(),
                None => format!("[{}]", plan.vm_datastore),
            };
            o.disks.insert(
                x.key,
                DiskTarget {
                    file_name,
                    datastore: datastore.clone(),
                    thin_provisioned: None,
                    create: true,
                },
            );
        }
    }
    for (key, backing) in &plan.nic_backings {
        o.set_nic_backing(*key, backing);
    }
    o
}

/// Creates the VM with its files in `folders` and puts the saved `.nvram` beside its `.vmx`;
/// returns it and the configuration fields that were not carried over.
///
/// # Errors
/// An unusable saved configuration, CreateVM_Task faults, a failed `.nvram` upload (the new
/// VM is then destroyed; the caller deletes the claimed folders).
pub async fn create(
    vc: &Vcenter,
    plan: &RestorePlan,
    folders: &VmFolders,
) -> Result<(MoRef, Vec<String>)> {
    let created = create_with(vc, plan, None, Some(folders)).await?;
    let nvram = folders.vm_file(&format!("{}.nvram", plan.name));
    if let Err(e) = upload_nvram(vc, plan, &nvram).await {
        destroy_partial(vc, &created.0, &plan.name).await;
        return Err(Error::Other(format!(
            "uploading the saved .nvram of `{}` failed (the new VM was destroyed): {e}",
            plan.name
        )));
    }
    Ok(created)
}

/// Writes the generation's `.nvram` to `path`: `NAME.nvram` beside the new VM's `NAME.vmx`,
/// the file the VM reads at power-on (ESXi creates an empty one when there is none, losing
/// EFI boot entries and Secure Boot keys). A generation without one is left as before.
async fn upload_nvram(vc: &Vcenter, plan: &RestorePlan, path: &DatastorePath) -> Result<()> {
    let m = &plan.manifest;
    if !m.metadata_files.iter().any(|f| f == NVRAM_FILE) {
        tracing::info!(vm = %plan.name, "generation {} has no .nvram; the VM starts with a new one", m.generation);
        return Ok(());
    }
    let repo = plan.repo.clone();
    let key = plan.key.clone();
    let generation = m.generation;
    let nvram = blocking(move || Ok(repo.read_metadata(&key, generation, NVRAM_FILE)?)).await?;
    vc.client
        .write_datastore_file(&plan.inventory.datacenter.name, path, nvram)
        .await?;
    tracing::info!(vm = %plan.name, nvram = %path, "saved .nvram restored before the first power-on");
    Ok(())
}

/// Creates the VM in the plan's folder and pool (`CreateVM_Task`) or, with `vapp`, as a child
/// of that vApp (`CreateChildVM_Task`), with the saved `.nvram` beside the `.vmx` the server
/// chose; returns it and the fields that were not carried over.
///
/// # Errors
/// An unusable saved configuration, task faults, a failed `.nvram` upload (the VM exists
/// then: the caller removes what it built).
pub async fn create_in(
    vc: &Vcenter,
    plan: &RestorePlan,
    vapp: Option<&MoRef>,
) -> Result<(MoRef, Vec<String>)> {
    let created = create_with(vc, plan, vapp, None).await?;
    let vmx = vc
        .client
        .vm_config(&created.0)
        .await?
        .vm_path_name
        .ok_or_else(|| Error::Other(format!("the new VM `{}` has no .vmx path", plan.name)))?;
    let stem = vmx
        .rsplit(['/', ' '])
        .next()
        .and_then(|f| f.strip_suffix(".vmx"))
        .unwrap_or(&plan.name);
    let nvram: DatastorePath = sibling(&vmx, &format!("{stem}.nvram")).parse()?;
    upload_nvram(vc, plan, &nvram).await.map_err(|e| {
        Error::Other(format!(
            "uploading the saved .nvram of `{}` failed: {e}",
            plan.name
        ))
    })?;
    Ok(created)
}

async fn create_with(
    vc: &Vcenter,
    plan: &RestorePlan,
    vapp: Option<&MoRef>,
    folders: Option<&VmFolders>,
) -> Result<(MoRef, Vec<String>)> {
    let mut rebuilt =
        config_spec_from_info(&plan.saved_config, &restore_options_in(plan, folders))?;
    apply_profiles(
        &mut rebuilt.spec,
        plan.policies.home.as_ref().map(|p| p.id.as_str()),
        &plan.policies.disk_ids(&rebuilt.key_map),
    )?;
    if !rebuilt.dropped_fields.is_empty() {
        tracing::info!(
            "configuration fields not carried over: {}",
            rebuilt.dropped_fields.join(", ")
        );
    }
    let vm = match vapp {
        None => {
            vc.client
                .create_vm(&plan.folder, &rebuilt.spec, &plan.pool, plan.host.as_ref())
                .await?
        }
        Some(v) => {
            vc.client
                .create_child_vm(v, &rebuilt.spec, plan.host.as_ref())
                .await?
        }
    };
    tracing::info!(vm = %plan.name, moref = %vm.value, "created VM");
    Ok((vm, rebuilt.dropped_fields))
}

/// Destroys a half-restored VM, logging (not failing) if that fails too; returns whether it
/// is gone.
pub async fn destroy_partial(vc: &Vcenter, vm: &MoRef, name: &str) -> bool {
    let _ = vc.client.power_off(vm).await;
    match vc.client.destroy(vm).await {
        Ok(()) => {
            tracing::warn!(vm = %name, "destroyed the partially restored VM");
            true
        }
        Err(e) => {
            tracing::error!(vm = %name, "could not destroy the partially restored VM {}: {e}; remove it by hand", vm.value);
            false
        }
    }
}
