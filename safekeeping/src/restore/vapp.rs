//! Restore of a vApp generation (`restore vapp:NAME`): the saved `vapp.json`,
//! `vapp-config.xml` and `vapp-resources.xml` are read, every child is planned and checked as a
//! VM restore of its linked generation (nothing is created before all plans succeed), then the
//! vApp is created without entities, each child is created inside it (`CreateChildVM_Task`)
//! and its disks written through VDDK as for `vm:` targets, the saved entity configuration is
//! applied with the old child morefs remapped to the new ones (start order kept), and with
//! `--power-on` the vApp is powered on (children in start order).
//!
//! Any failure after the vApp was created destroys it with its children. The repository is
//! only read.
//!
//! Children are named after the vApp: `<new vApp name>-<child name>`, or the child's own name
//! when the vApp is restored under its original name.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use vim_client::xml::Element;
use vim_client::{resource_config_spec_from_saved, vapp_config_spec_from_saved, MoRef};

use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::config::Config;
use crate::disk_io::VddkEndpoint;
use crate::error::{Error, Result};
use crate::restore::create::create_in;
use crate::restore::disk::write_vm_disks;
use crate::restore::plan::{plan, RestorePlan};
use crate::restore::vm::RestoreResult;
use crate::restore::{default_name, open_shared, read_metadata, RestoreMode, RestoreOptions};
use crate::stored::vapp::{VappMetadata, CONFIG_FILE, METADATA_FILE, RESOURCES_FILE};
use crate::target::{Target, VmSelector};
use crate::vsphere::Vcenter;

/// What a vApp restore did, as `restore --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct VappRestoreResult {
    /// The target restored (`vapp:NAME`).
    pub target: String,
    /// The vApp generation restored.
    pub generation: u64,
    /// The new vApp's name.
    pub name: String,
    /// The new vApp's moref.
    pub moref: String,
    /// Each child as restored, in saved start order.
    pub children: Vec<RestoreResult>,
    /// Powered on at the end (children in start order).
    pub powered_on: bool,
}

/// A vApp generation as read from the repository.
struct SavedVapp {
    generation: u64,
    meta: VappMetadata,
    config: Option<Element>,
    resources: Option<Element>,
}

/// Name of a restored child: the child's own name when the vApp keeps its original name,
/// otherwise prefixed with the new vApp's name.
pub fn child_name(new_vapp: &str, original_vapp: &str, child: &str) -> String {
    if new_vapp == original_vapp {
        child.to_string()
    } else {
        format!("{new_vapp}-{child}")
    }
}

/// Restores a vApp generation with its children.
///
/// # Errors
/// Options that do not apply to vApps, anything missing in the repository or vCenter, and any
/// failure while restoring (the new vApp is destroyed then).
pub async fn restore_vapp(
    config: &Config,
    args: &RestoreOptions,
    cancel: &Cancel,
) -> Result<VappRestoreResult> {
    if args.attach.is_some() {
        return Err(Error::Other(
            "--attach applies to first class disks (ivd: targets) only".into(),
        ));
    }
    if args.mode != RestoreMode::Create {
        return Err(Error::Other(
            "a vApp is restored by creating its children; --mode import is not supported for vapp: targets".into(),
        ));
    }
    if args.overwrite {
        return Err(Error::Other(
            "--overwrite is not supported for vapp: targets; restore under a new --name".into(),
        ));
    }
    let vc = Vcenter::connect(config).await?;
    let result = restore(config, &vc, args, cancel).await;
    vc.logout().await;
    result
}

fn load(config: &Config, options: &RestoreOptions) -> Result<SavedVapp> {
    let (repo, _lock) = open_shared(config, options)?;
    let (summary, _) =
        crate::repo::find_target_from(&repo, &options.target, options.from_vcenter.as_deref())?;
    let key = summary.key;
    let manifest = crate::repo::pick_generation(&repo, &key, options.generation)?;
    let has = |name: &str| manifest.metadata_files.iter().any(|f| f == name);
    let meta: VappMetadata =
        serde_json::from_slice(&read_metadata(&repo, &key, &manifest, METADATA_FILE)?)
            .map_err(|e| Error::Other(format!("saved {METADATA_FILE}: {e}")))?;
    let xml = |name: &str| -> Result<Option<Element>> {
        if !has(name) {
            return Ok(None);
        }
        let bytes = repo.read_metadata(&key, manifest.generation, name)?;
        Ok(Some(vim_client::xml::parse(&bytes)?))
    };
    Ok(SavedVapp {
        generation: manifest.generation.0,
        config: xml(CONFIG_FILE)?,
        resources: xml(RESOURCES_FILE)?,
        meta,
    })
}

/// Pool and folder for the new vApp: the options, else the original vApp's parent and folder
/// when it still exists, else the first child's placement (never the original vApp itself).
async fn placement(
    vc: &Vcenter,
    args: &RestoreOptions,
    original: &str,
    first: &RestorePlan,
) -> Result<(MoRef, MoRef)> {
    let old = vc
        .client
        .vapp_info(&MoRef::new("VirtualApp", original))
        .await
        .ok();
    let pool = match (
        &args.resource_pool,
        old.as_ref().and_then(|o| o.parent.clone()),
    ) {
        (None, Some(parent)) => parent,
        _ if first.pool.value != original => first.pool.clone(),
        _ => first
            .inventory
            .pools
            .iter()
            .find(|p| p.moref != original)
            .map(|p| MoRef::new("ResourcePool", p.moref.clone()))
            .ok_or_else(|| Error::Other("no resource pool to restore the vApp into".into()))?,
    };
    let folder = match (&args.folder, old.and_then(|o| o.parent_folder)) {
        (None, Some(f)) => f,
        _ => first.folder.clone(),
    };
    Ok((pool, folder))
}

async fn restore(
    config: &Config,
    vc: &Vcenter,
    args: &RestoreOptions,
    cancel: &Cancel,
) -> Result<VappRestoreResult> {
    let (c, o) = (config.clone(), args.clone());
    let saved = blocking(move || load(&c, &o)).await?;
    if saved.meta.children.is_empty() {
        return Err(Error::Other(format!(
            "generation {} of {} has no child VMs",
            saved.generation, args.target
        )));
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&saved.meta.name, time::OffsetDateTime::now_utc()));
    if vc.client.list_vapps().await?.iter().any(|v| v.name == name) {
        return Err(Error::Other(format!(
            "a vApp named `{name}` exists; choose another --name"
        )));
    }

    // Plan and check every child before anything is created.
    let mut plans = Vec::new();
    for child in &saved.meta.children {
        let child_args = args.for_vapp_child(
            Target::Vm(VmSelector::Moref(child.moref.clone())),
            child.generation,
            child_name(&name, &saved.meta.name, &child.name),
        );
        let p = plan(config, vc, &child_args).await.map_err(|e| match e {
            Error::NameTaken(taken) => Error::Other(format!(
                "child VM `{}` would be restored as `{taken}`, but a VM of that name exists: \
                 choose another --name for the vApp (nothing was created)",
                child.name
            )),
            e => Error::Other(format!(
                "child VM `{}` (generation {}) cannot be restored: {e} (nothing was created)",
                child.name, child.generation
            )),
        })?;
        plans.push((child, Arc::new(p)));
    }
    let (pool, folder) = placement(vc, args, &saved.meta.moref, &plans[0].1).await?;
    let vddk = VddkEndpoint::load(config, vc).await?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }

    let saved_config = saved.config.as_ref();
    let create_spec = vapp_config_spec_from_saved(saved_config, &HashMap::new())?;
    let vapp = vc
        .client
        .create_vapp(
            &name,
            &pool,
            Some(&folder),
            &create_spec.create_spec,
            &resource_config_spec_from_saved(saved.resources.as_ref()),
        )
        .await?;
    tracing::info!(vapp = %name, moref = %vapp.value, "created vApp");

    let mut step = String::from("creating the children");
    let finish = async {
        let mut remap = HashMap::new();
        let mut children = Vec::new();
        for (child, p) in &plans {
            step = format!("restoring child VM `{}` as `{}`", child.name, p.name);
            let (vm, dropped_fields) = create_in(vc, p, Some(&vapp)).await?;
            let disks = write_vm_disks(
                vc,
                &vddk,
                p,
                &vm,
                cancel,
                args.show_progress,
                args.max_connections,
            )
            .await?;
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            remap.insert(
                MoRef::new("VirtualMachine", child.moref.clone()),
                vm.clone(),
            );
            children.push(RestoreResult {
                target: format!("vm:{}", child.name),
                generation: child.generation,
                mode: RestoreMode::Create,
                name: p.name.clone(),
                moref: vm.value.clone(),
                disks,
                powered_on: args.power_on,
                dropped_fields,
                excluded_disks: p.excluded.clone(),
                excluded_disks_recreated: !p.drop_excluded,
                storage_policies: p.policies.applied(),
            });
        }
        step = "applying the saved start order".into();
        let spec = vapp_config_spec_from_saved(saved_config, &remap)?;
        if !spec.unmapped.is_empty() {
            tracing::warn!(
                "saved start settings for {} entities without a restored child left out",
                spec.unmapped.len()
            );
        }
        if spec.entity_spec.all("entityConfig").next().is_some() {
            vc.client
                .update_vapp_config(&vapp, &spec.entity_spec)
                .await?;
        }
        if args.power_on {
            step = "powering the vApp on".into();
            vc.client.power_on_vapp(&vapp).await?;
        }
        Ok::<_, Error>(children)
    }
    .await;
    match finish {
        Ok(children) => Ok(VappRestoreResult {
            target: args.target.to_string(),
            generation: saved.generation,
            name,
            moref: vapp.value.clone(),
            children,
            powered_on: args.power_on,
        }),
        Err(e) => {
            tracing::error!(vapp = %name, "vApp restore failed while {step}: {e}");
            destroy_partial(vc, &vapp, &name).await;
            Err(Error::Other(format!(
                "restore of {} failed while {step}: {e}; the partially restored vApp `{name}` \
                 was destroyed with its children",
                args.target
            )))
        }
    }
}

/// Destroys a half-restored vApp with its children, logging (not failing) if that fails.
async fn destroy_partial(vc: &Vcenter, vapp: &MoRef, name: &str) {
    let _ = vc.client.power_off_vapp(vapp, true).await;
    match vc.client.destroy(vapp).await {
        Ok(()) => tracing::warn!(vapp = %name, "destroyed the partially restored vApp"),
        Err(e) => tracing::error!(
            vapp = %name,
            "could not destroy the partially restored vApp {}: {e}; remove it by hand",
            vapp.value
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_keep_their_names_only_under_the_original_vapp_name() {
        assert_eq!(child_name("shop", "shop", "web"), "web");
        assert_eq!(child_name("shop2", "shop", "web"), "shop2-web");
    }
}
