//! Backup of one first class disk (`ivd:ID` or `ivd:NAME`): find the disk, take the target's
//! lock, delete the leftover snapshots of this repository's ended runs, snapshot the disk, ask
//! for its changed areas (`*` for a full, the previous generation's change id for an
//! incremental), read the snapshot through VDDK (vStorageObject connection), commit, delete the
//! snapshot on every path, and only then release the target's lock.
//!
//! A first class disk attached to a VM is also one of that VM's disks, so `vm:` and `ivd:`
//! backups both read it; its data is stored once at the chunk level (identical chunks
//! deduplicate), but it is read twice.

use std::sync::Arc;

use repository_format::{
    BackupMode, DiskDescriptor, GenerationStatus, GenerationWriter, Provisioning, TargetIdentity,
    TargetKind,
};
use vim_client::FcdApi;

use crate::backup::disk::{
    self, plan_disk, read_disk, require_capacity, DiskFacts, DiskMode, PlannedDisk, PreviousDisk,
    SnapshotDisk,
};
use crate::backup::{
    latest_manifest, leftover_judge, lock_target, with_snapshot_removed, BackupContext,
    TargetResult,
};
use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::stored::ivd::{IvdMetadata, IVD_DISK_KEY, METADATA_FILE};
use crate::target::Target;
use crate::vsphere::fcd::{self, FoundDisk};
use crate::vsphere::fcd_snapshot::{remove_leftovers, FcdSnapshotGuard};

/// Backs up one `ivd:` target; never fails, the result says what happened.
pub async fn backup_ivd(ctx: Arc<BackupContext>, target: Target, selector: String) -> TargetResult {
    let mut result = TargetResult::new(&target);
    let outcome = run(&ctx, &selector, &mut result).await;
    result.conclude(&target, outcome)
}

/// The repository's provisioning for vCenter's `provisioningType`.
pub fn provisioning(kind: Option<&str>) -> Provisioning {
    match kind {
        Some("thin") => Provisioning::Thin,
        Some("eagerZeroedThick") => Provisioning::EagerZeroedThick,
        Some("lazyZeroedThick") => Provisioning::Thick,
        _ => Provisioning::Unknown,
    }
}

async fn run(ctx: &Arc<BackupContext>, selector: &str, result: &mut TargetResult) -> Result<()> {
    let vc = &ctx.vc;
    let disk = fcd::find(vc, selector).await?;
    let api = fcd::choose_api(vc, ctx.options.fcd_api).await?;
    tracing::info!(ivd = %disk.object.id, api = api.name(), "first class disk endpoint");
    let id = disk.object.id.clone();
    tracing::info!(ivd = %id, name = %disk.object.name, "starting backup of a first class disk");
    result.vm = Some(disk.object.name.clone());

    let identity = identity_of(&disk, &ctx.vc);
    let key = ctx.repo.target_key(&identity)?;

    let target_lock = lock_target(ctx, &key).await?;
    // Listed after the lock; the live runs are read after the list (see `remove_leftovers`).
    let removed = remove_leftovers(vc, &api, &id, &disk.datastore, || leftover_judge(ctx)).await?;
    if !removed.is_empty() {
        tracing::warn!(ivd = %id, "deleted {} leftover snapshot(s): {}", removed.len(), removed.join(", "));
    }
    let previous = latest_manifest(ctx, &key).await?;
    let metadata = fcd::metadata(vc, &disk).await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }

    let snapshot =
        FcdSnapshotGuard::create(vc, &api, &id, &disk.datastore, &ctx.snapshot_owner).await?;
    let outcome = with_snapshot(
        ctx,
        Prepared {
            api: &api,
            disk: &disk,
            identity,
            key,
            previous,
            metadata,
        },
        &snapshot,
        // The writer's share goes at commit; this one keeps the next backup of the disk into
        // this repository waiting until the snapshot is deleted.
        target_lock.share(),
        result,
    )
    .await;
    let removal = snapshot.remove().await;
    drop(target_lock);
    with_snapshot_removed(outcome, removal, result.generation)
}

/// What the repository knows a first class disk as: name, id, datastore, vCenter.
fn identity_of(disk: &FoundDisk, vc: &crate::vsphere::Vcenter) -> TargetIdentity {
    let mut identity = TargetIdentity::new(TargetKind::Ivd, disk.object.name.clone());
    identity.instance_uuid = Some(disk.object.id.to_ascii_lowercase());
    identity
        .extra
        .insert("datastore".into(), disk.datastore_name.clone().into());
    // Which vCenter: recorded in the generation, and part of the key for a named one.
    vc.origin.stamp(&mut identity);
    identity
}

/// `backup --dry-run` of one first class disk: the same identity and decision
/// ([`plan_disk`], [`disk::verify_base`]) as [`backup_ivd`], on the disk as it is now; no
/// lock, no snapshot, nothing written.
pub(crate) async fn preview_ivd(
    vc: &crate::vsphere::Vcenter,
    repo: &repository_format::Repository,
    options: &crate::backup::BackupOptions,
    target: &Target,
    selector: &str,
) -> Result<crate::backup::preview::TargetPreview> {
    let disk = fcd::find(vc, selector).await?;
    let identity = identity_of(&disk, vc);
    let key = repo.target_key(&identity)?;
    let (r, k) = (repo.clone(), key.clone());
    let previous_manifest = blocking(move || crate::backup::latest_manifest_in(&r, &k)).await?;
    let previous = previous_manifest
        .as_ref()
        .and_then(|m| PreviousDisk::from_manifest(m, IVD_DISK_KEY));
    let capacity = disk.capacity();
    let cbt = disk.object.changed_block_tracking_enabled != Some(false);
    let facts = DiskFacts {
        force_full: options.full,
        cbt_just_enabled: !cbt,
        capacity,
        disk_uuid: Some(disk.object.id.as_str()),
        previous: previous.as_ref(),
    };
    let mut plan = plan_disk(&facts);
    if facts.cbt_just_enabled && !facts.force_full {
        plan.reason = "change tracking is off: the backup reads the disk in full".into();
    }
    let what = format!("ivd {}", disk.object.name);
    disk::verify_base(
        repo,
        &mut plan,
        &key,
        previous.as_ref(),
        IVD_DISK_KEY,
        &what,
    )
    .await;
    let mut preview = crate::backup::preview::TargetPreview::unresolved(target);
    preview.target = format!("ivd:{}", disk.object.name);
    preview.key = Some(key.to_string());
    preview.previous_generation = previous_manifest.as_ref().map(|m| m.generation.0);
    preview.change_tracking = Some(cbt);
    preview.disks = vec![crate::backup::preview::DiskPreview {
        index: 0,
        label: disk.object.name.clone(),
        capacity,
        mode: Some(plan.mode),
        reason: plan.reason,
    }];
    Ok(preview)
}

struct Prepared<'a> {
    api: &'a FcdApi,
    disk: &'a FoundDisk,
    identity: TargetIdentity,
    key: repository_format::TargetKey,
    previous: Option<repository_format::Manifest>,
    metadata: IvdMetadata,
}

async fn with_snapshot(
    ctx: &Arc<BackupContext>,
    p: Prepared<'_>,
    snapshot: &FcdSnapshotGuard,
    target_lock: repository_format::TargetLock,
    result: &mut TargetResult,
) -> Result<()> {
    let vc = &ctx.vc;
    let disk = p.disk;
    let id = disk.object.id.as_str();
    let capacity = disk.capacity();
    require_capacity(capacity, &format!("first class disk {id}"))?;
    let api = p.api;
    let change_id = api
        .snapshot_change_id(&vc.client, id, &disk.datastore, snapshot.id())
        .await?;
    let previous = p
        .previous
        .as_ref()
        .and_then(|m| PreviousDisk::from_manifest(m, IVD_DISK_KEY));
    let mut plan = plan_disk(&DiskFacts {
        force_full: ctx.options.full,
        cbt_just_enabled: disk.object.changed_block_tracking_enabled == Some(false),
        capacity,
        disk_uuid: Some(id),
        previous: previous.as_ref(),
    });
    let what = format!("ivd {}", disk.object.name);
    disk::verify_base(
        &ctx.repo,
        &mut plan,
        &p.key,
        previous.as_ref(),
        IVD_DISK_KEY,
        &what,
    )
    .await;
    tracing::info!(ivd = %id, mode = ?plan.mode, "{}", plan.reason);
    let areas = disk::changed_areas(&mut plan, &what, |since| async move {
        api.changed_areas(
            &vc.client,
            id,
            &disk.datastore,
            snapshot.id(),
            capacity,
            &since,
        )
        .await
    })
    .await?;

    let mut descriptor = DiskDescriptor::new(IVD_DISK_KEY, capacity);
    descriptor.label = disk.object.name.clone();
    descriptor.provisioning = provisioning(p.metadata.provisioning.as_deref());
    descriptor.datastore = disk.datastore_name.clone();
    descriptor.file_path = disk.object.file_path.clone().unwrap_or_default();
    descriptor.change_id_used =
        (plan.mode == DiskMode::Incremental).then(|| plan.since_change_id.clone());
    descriptor.change_id = change_id;
    descriptor.disk_uuid = Some(id.to_string());
    let (mode, parent) = match (plan.mode, &p.previous) {
        (DiskMode::Incremental, Some(m)) => (BackupMode::Incremental, Some(m.generation)),
        _ => (BackupMode::Full, None),
    };

    let repo = ctx.repo.clone();
    let lock = ctx.lock.clone();
    let identity = p.identity.clone();
    let meta = serde_json::to_vec_pretty(&p.metadata)
        .map_err(|e| Error::Other(format!("cannot encode {METADATA_FILE}: {e}")))?;
    let writer: GenerationWriter = blocking(move || {
        let mut w = repo.begin_generation(&lock, target_lock, identity, mode, parent)?;
        w.put_metadata(METADATA_FILE, &meta)?;
        Ok(w)
    })
    .await?;
    tracing::info!(ivd = %id, generation = %writer.id(), ?mode, "writing generation");

    let planned = PlannedDisk {
        index: 0,
        source: SnapshotDisk::FirstClass {
            id: id.to_string(),
            datastore: disk.datastore.value.clone(),
            snapshot: snapshot.id().to_string(),
            path: descriptor.file_path.clone(),
        },
        plan,
        descriptor,
        areas,
    };
    let writer = Arc::new(writer);
    let disk_result = read_disk(
        ctx,
        writer.clone(),
        planned,
        parent.map(|g| (&p.key, g)),
        what,
        &ctx.cancel,
    )
    .await?;
    let writer = Arc::into_inner(writer)
        .ok_or_else(|| Error::Other("the generation is still being written".into()))?;
    result.add_disk(disk_result);
    let mut extra = serde_json::Map::new();
    extra.insert("fcd_snapshot".into(), snapshot.id().into());
    extra.insert("fcd_api".into(), api.name().into());
    let generation =
        blocking(move || Ok(writer.commit(GenerationStatus::Succeeded, extra)?)).await?;
    tracing::info!(ivd = %id, %generation, "generation committed");
    result.generation = Some(generation.0);
    result.mode = Some(mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_types_map_to_the_repository() {
        assert_eq!(provisioning(Some("thin")), Provisioning::Thin);
        assert_eq!(
            provisioning(Some("eagerZeroedThick")),
            Provisioning::EagerZeroedThick
        );
        assert_eq!(provisioning(Some("lazyZeroedThick")), Provisioning::Thick);
        assert_eq!(provisioning(None), Provisioning::Unknown);
        assert_eq!(provisioning(Some("sparse")), Provisioning::Unknown);
    }
}
