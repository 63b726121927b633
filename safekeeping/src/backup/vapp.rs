//! Backup of a vApp (`vapp:NAME`): each child VM is backed up as its own `vm` generation (the
//! same path as `vm:` targets), then the vApp's own generation records its configuration
//! (`vapp-config.xml`: product and property sections, IP assignment, start order as vCenter
//! keeps it; `vapp-resources.xml`: resource allocation) and `vapp.json`, which links each child
//! by name, moref, start settings, repository target key and generation. The vApp generation is
//! committed only when every child succeeded.

use std::sync::Arc;

use repository_format::{BackupMode, GenerationStatus, TargetIdentity, TargetKind};

use crate::backup::vm::backup_vm;
use crate::backup::{lock_target, BackupContext, TargetResult};
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::stored::vapp::{VappChild, VappMetadata, CONFIG_FILE, METADATA_FILE, RESOURCES_FILE};
use crate::target::{Target, VmSelector};

/// Backs up one `vapp:` target; never fails, the result says what happened.
pub async fn backup_vapp(ctx: Arc<BackupContext>, target: Target, name: String) -> TargetResult {
    let mut result = TargetResult::new(&target);
    result.vm = Some(name.clone());
    let outcome = run(&ctx, &name, &mut result).await;
    result.conclude(&target, outcome)
}

async fn run(ctx: &Arc<BackupContext>, name: &str, result: &mut TargetResult) -> Result<()> {
    let vc = &ctx.vc;
    let moref = vc.client.find_vapp_by_name(name).await?;
    let info = vc.client.vapp_info(&moref).await?;
    // Children in start order: the entity list first, then any VM it does not mention.
    let mut order: Vec<(vim_client::MoRef, Option<vim_client::VAppEntity>)> = info
        .start_order
        .iter()
        .filter_map(|e| {
            e.key
                .clone()
                .filter(|k| k.kind == "VirtualMachine")
                .map(|k| (k, Some(e.clone())))
        })
        .collect();
    for vm in &info.vms {
        if !order.iter().any(|(k, _)| k == vm) {
            order.push((vm.clone(), None));
        }
    }
    let mut children = Vec::new();
    let mut failures = Vec::new();
    // The children run at the same time, so their snapshots are taken close together; their
    // disks share the run's VDDK connection limit.
    let runs = order
        .iter()
        .map(|(vm, _)| backup_vm(ctx.clone(), Target::Vm(VmSelector::Moref(vm.value.clone()))));
    let results = futures_util::future::join_all(runs).await;
    for ((vm, entity), child) in order.into_iter().zip(results) {
        result.bytes_read += child.bytes_read;
        result.bytes_new += child.bytes_new;
        result.bytes_stored += child.bytes_stored;
        let child_name = child.vm.clone().unwrap_or_else(|| vm.value.clone());
        match (child.succeeded(), child.generation) {
            (true, Some(generation)) => {
                let e = entity.unwrap_or_default();
                children.push(VappChild {
                    name: child_name,
                    moref: vm.value.clone(),
                    start_order: e.start_order,
                    start_delay: e.start_delay,
                    start_action: e.start_action,
                    stop_delay: e.stop_delay,
                    stop_action: e.stop_action,
                    tag: e.tag,
                    generation,
                });
            }
            _ => failures.push(format!(
                "{child_name}: {}",
                child.error.unwrap_or_else(|| "failed".into())
            )),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Other(format!(
            "{} of {} child VM(s) failed, so no vApp generation was written: {}",
            failures.len(),
            failures.len() + children.len(),
            failures.join("; ")
        )));
    }

    let mut identity = TargetIdentity::new(TargetKind::VApp, info.name.clone());
    identity.moref = Some(info.moref.value.clone());
    // Which vCenter: recorded in the generation, and part of the key for a named one.
    ctx.vc.origin.stamp(&mut identity);
    let key = ctx.repo.target_key(&identity)?;
    let meta = VappMetadata {
        name: info.name.clone(),
        moref: info.moref.value.clone(),
        children,
    };
    let mut files: Vec<(&'static str, Vec<u8>)> = vec![(
        METADATA_FILE,
        serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Other(format!("cannot encode {METADATA_FILE}: {e}")))?,
    )];
    if let Some(c) = &info.vapp_config {
        files.push((CONFIG_FILE, vim_client::xml::to_string(c).into_bytes()));
    }
    if let Some(r) = &info.resource_config {
        files.push((RESOURCES_FILE, vim_client::xml::to_string(r).into_bytes()));
    }
    let target_lock = lock_target(ctx, &key).await?;
    let repo = ctx.repo.clone();
    let lock = ctx.lock.clone();
    let generation = blocking(move || {
        let mut w = repo.begin_generation(&lock, target_lock, identity, BackupMode::Full, None)?;
        for (name, data) in &files {
            w.put_metadata(name, data)?;
        }
        Ok(w.commit(GenerationStatus::Succeeded, serde_json::Map::new())?)
    })
    .await?;
    result.generation = Some(generation.0);
    result.mode = Some(BackupMode::Full);
    Ok(())
}
