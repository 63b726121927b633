//! Restore by import: the saved `.vmx` (renamed, identity cleared unless `--recovery`, disks,
//! disk controllers and NICs removed) and `.nvram` are uploaded to a new folder on the
//! datastore, registered with `RegisterVM_Task`, and the controllers, new disks and NICs are
//! added with `ReconfigVM_Task` from the same rebuilt spec restore-by-create uses
//! ([`vim_client::import_devices_spec`]). The folder
//! is one claimed for this VM ([`VmFolders`]: `name`, else `name_1`, ...), so an existing
//! folder of that name (the VM `--overwrite` replaces, an orphan) is never written into.

use vim_client::{apply_profiles, config_spec_from_info, import_devices_spec, MoRef};

use crate::error::{Error, Result};
use crate::restore::create::{destroy_partial, restore_options_in};
use crate::restore::plan::{RestorePlan, VmFolders};
use crate::restore::vmx::{edit_vmx, VmxEdit};
use crate::stored::vm::{NVRAM_FILE, VMX_FILE};
use crate::vsphere::Vcenter;

/// Imports the VM into the claimed `folders` (the `.vmx` and `.nvram` in the one on the VM's
/// datastore, each disk in the one on its datastore); returns it and the configuration fields
/// that were not carried over.
///
/// # Errors
/// A generation without `.vmx`, upload, RegisterVM_Task and ReconfigVM_Task faults. A VM
/// registered before the failure is destroyed; the caller deletes the claimed folders with
/// whatever was uploaded to them.
pub async fn import(
    vc: &Vcenter,
    plan: &RestorePlan,
    folders: &VmFolders,
) -> Result<(MoRef, Vec<String>)> {
    let m = &plan.manifest;
    let read = |name: &str| -> Result<Vec<u8>> {
        if !m.metadata_files.iter().any(|f| f == name) {
            return Err(Error::NotInRepository(format!(
                "generation {} has no {name}, so it cannot be restored with --mode import; use --mode create",
                m.generation
            )));
        }
        Ok(plan.repo.read_metadata(&plan.key, m.generation, name)?)
    };
    let vmx = String::from_utf8_lossy(&read(VMX_FILE)?).into_owned();
    let nvram = read(NVRAM_FILE).ok();
    let nvram_name = format!("{}.nvram", plan.name);
    let edited = edit_vmx(
        &vmx,
        &VmxEdit {
            name: &plan.name,
            nvram_file: &nvram_name,
            keep_identity: plan.recovery,
        },
    );
    let dc_path = plan.inventory.datacenter.name.clone();
    let vmx_path = folders.vmx_path(&plan.name);
    let uploaded = async {
        vc.client
            .write_datastore_file(&dc_path, &vmx_path, edited.into_bytes())
            .await?;
        if let Some(n) = nvram {
            let p = folders.vm_file(&nvram_name);
            vc.client.write_datastore_file(&dc_path, &p, n).await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    uploaded?;
    let vm = vc
        .client
        .register_vm(
            &plan.folder,
            &vmx_path.to_string(),
            Some(&plan.name),
            &plan.pool,
            plan.host.as_ref(),
        )
        .await?;
    tracing::info!(vm = %plan.name, moref = %vm.value, vmx = %vmx_path, "registered VM from the saved .vmx");
    match add_devices(vc, plan, folders, &vm).await {
        Ok(dropped) => Ok((vm, dropped)),
        Err(e) => {
            destroy_partial(vc, &vm, &plan.name).await;
            Err(Error::Other(format!(
                "adding controllers, disks and NICs to the registered VM `{}` failed (the VM was destroyed): {e}",
                plan.name
            )))
        }
    }
}

async fn add_devices(
    vc: &Vcenter,
    plan: &RestorePlan,
    folders: &VmFolders,
    vm: &MoRef,
) -> Result<Vec<String>> {
    // Each disk is created under its full path in the claimed folder of its datastore.
    let options = restore_options_in(plan, Some(folders));
    let mut rebuilt = config_spec_from_info(&plan.saved_config, &options)?;
    // The disks' policies travel in their device changes; the VM home's goes in the same
    // ReconfigVM_Task.
    apply_profiles(
        &mut rebuilt.spec,
        None,
        &plan.policies.disk_ids(&rebuilt.key_map),
    )?;
    let mut spec = import_devices_spec(&rebuilt.spec);
    apply_profiles(
        &mut spec,
        plan.policies.home.as_ref().map(|p| p.id.as_str()),
        &[],
    )?;
    tracing::debug!(spec = %vim_client::xml::to_string(&spec), "ReconfigVM_Task spec");
    vc.client.reconfigure_vm(vm, &spec).await?;
    Ok(rebuilt.dropped_fields)
}
