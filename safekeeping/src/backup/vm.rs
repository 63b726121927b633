//! Backup of one VM (`vm:` targets, and each child of a `vapp:`), top to bottom: resolve the
//! VM, take the target's lock, read the VM again, remove the leftover snapshots of this
//! repository's ended runs, switch CBT on if needed, snapshot, save the metadata, plan and read
//! each disk ([`crate::backup::disk`]: full or incremental and why, changed areas, VDDK reads
//! into the generation), commit, remove the snapshot on every path, and only then release the
//! target's lock.

use std::collections::BTreeSet;
use std::sync::Arc;

use repository_format::{
    BackupMode, DiskDescriptor, GenerationStatus, GenerationWriter, Manifest, Provisioning,
    TargetIdentity, TargetKey, TargetKind,
};
use vim_client::{VmConfig, VmInfo};

use crate::backup::disk::{
    self, plan_disk, read_disk, require_capacity, DiskFacts, DiskMode, PlannedDisk, PreviousDisk,
    SnapshotDisk,
};
use crate::backup::preview::{DiskPreview, TargetPreview};
use crate::backup::{
    latest_manifest, leftover_judge, lock_target, with_snapshot_removed, BackupContext,
    TargetResult,
};
use crate::blocking::blocking;
use crate::cancel::first_failure;
use crate::error::{Error, Result};
use crate::excluded_disk::{self, why_excluded, ExcludedDisk};
use crate::target::Target;
use crate::target_settings::{effective, Effective, QuiesceMode, VmFacts};
use crate::vsphere::resolve::resolve;
use crate::vsphere::snapshot::{remove_leftovers, SnapshotGuard};
use crate::vsphere::{changed_areas, metadata};

/// Everything known about the VM before the snapshot.
struct Prepared {
    info: VmInfo,
    config: VmConfig,
    identity: TargetIdentity,
    key: TargetKey,
    cbt_just_enabled: bool,
    previous: Option<Manifest>,
    /// The configuration's sections that apply to this VM, combined.
    settings: Effective,
}

/// Backs up one VM target; never fails, the result says what happened.
pub async fn backup_vm(ctx: Arc<BackupContext>, target: Target) -> TargetResult {
    let mut result = TargetResult::new(&target);
    let outcome = run(&ctx, &target, &mut result).await;
    result.conclude(&target, outcome)
}

async fn run(ctx: &Arc<BackupContext>, target: &Target, result: &mut TargetResult) -> Result<()> {
    let vc = &ctx.vc;
    let resolved = resolve(vc, target).await?;
    tracing::info!(vm = %resolved.name, moref = %resolved.moref.value, "starting backup");
    result.vm = Some(resolved.name.clone());
    result.moref = Some(resolved.moref.value.clone());
    let info = vc.client.vm_info(&resolved.moref).await?;
    let config = configuration(&info)?;
    let identity = identity_of(vc, &info, &config).await;
    // The repository names the target's folder (keyed when the repository is encrypted).
    let key = ctx.repo.target_key(&identity)?;
    let settings = settings_of(&ctx.config, &ctx.tag_members, &identity);

    let target_lock = lock_target(ctx, &key).await?;
    // Read the VM again now that the lock is held: a backup of it that held the lock until now
    // has changed it (its snapshot removed, CBT switched on), and the snapshot list must be
    // read after the lock, or it lists that backup's snapshot as a leftover.
    let info = vc.client.vm_info(&resolved.moref).await?;
    let config = configuration(&info)?;
    let judge_by = leftover_judge(ctx).await?;
    let removed = remove_leftovers(vc, &info.moref, &info.snapshots, &judge_by).await?;
    if !removed.is_empty() {
        tracing::warn!(vm = %info.name, "removed {} leftover snapshot(s): {}", removed.len(), removed.join(", "));
    }
    let cbt_just_enabled =
        changed_areas::ensure_enabled(vc, &info.moref, config.change_tracking_enabled, &info.name)
            .await?;
    let previous = latest_manifest(ctx, &key).await?;
    let prepared = Prepared {
        info,
        config,
        identity,
        key,
        cbt_just_enabled,
        previous,
        settings,
    };

    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    // The command line wins over the target's configuration, which wins over `try`.
    let asked = ctx
        .options
        .quiesce
        .or(prepared.settings.quiesce)
        .unwrap_or_default();
    result.quiesce = Some(asked);
    // Quiescing needs VMware Tools running in the guest: only for a powered-on VM (a powered
    // off VM's disks are consistent as they are).
    let quiesce = if prepared.info.power_state == vim_client::PowerState::PoweredOn {
        asked
    } else {
        if asked == QuiesceMode::Require {
            tracing::info!(vm = %prepared.info.name, "powered off: nothing to quiesce, its disks are consistent as they are");
        }
        QuiesceMode::Off
    };
    // The target's sections win over `[defaults]` and `[vss]`.
    let spec = crate::target_settings::quiesce_spec(
        prepared.config.guest_id.as_deref(),
        prepared
            .settings
            .quiesce_timeout_seconds
            .or(ctx.config.defaults.quiesce_timeout_seconds),
        prepared.settings.vss.or(ctx.config.vss),
    );
    let snapshot = SnapshotGuard::create(
        vc,
        &prepared.info.moref,
        quiesce,
        spec.as_ref(),
        &ctx.snapshot_owner,
    )
    .await?;
    result.quiesced = Some(snapshot.quiesced());
    result.quiesce_fallback = snapshot.quiesce_fallback().map(str::to_string);
    // The generation writer gets a share of the target's lock and releases it at commit; this
    // one keeps the lock until the snapshot is gone, so the next backup of the VM into this
    // repository starts only then.
    let outcome = with_snapshot(ctx, &prepared, &snapshot, target_lock.share(), result).await;
    let removal = snapshot.remove().await;
    drop(target_lock);
    with_snapshot_removed(outcome, removal, result.generation)
}

/// What the repository knows the VM as: name, moref, uuids, inventory path, vCenter.
async fn identity_of(
    vc: &crate::vsphere::Vcenter,
    info: &VmInfo,
    config: &VmConfig,
) -> TargetIdentity {
    let mut identity = TargetIdentity::new(TargetKind::Vm, info.name.clone());
    identity.moref = Some(info.moref.value.clone());
    identity.bios_uuid = Some(config.uuid.to_ascii_lowercase()).filter(|u| !u.is_empty());
    identity.instance_uuid = config
        .instance_uuid
        .as_ref()
        .map(|u| u.to_ascii_lowercase());
    if let Ok(path) = vc.client.inventory_path(&info.moref).await {
        identity.extra.insert("inventory_path".into(), path.into());
    }
    // Which vCenter: recorded in the generation, and part of the key for a named one.
    vc.origin.stamp(&mut identity);
    identity
}

/// The configuration's `[targets."…"]` sections that apply to the VM `identity` names
/// (`tag_members`: the VMs carrying each tag that has a section).
fn settings_of(
    config: &crate::config::Config,
    tag_members: &std::collections::HashMap<String, std::collections::HashSet<String>>,
    identity: &TargetIdentity,
) -> Effective {
    let path = identity
        .extra
        .get("inventory_path")
        .and_then(|v| v.as_str());
    let moref = identity.moref.as_deref().unwrap_or_default();
    let facts = VmFacts {
        name: &identity.name,
        moref,
        bios_uuid: identity.bios_uuid.as_deref(),
        instance_uuid: identity.instance_uuid.as_deref(),
        inventory_path: path,
    };
    effective(&config.targets, &facts, |tag| {
        tag_members.get(tag).is_some_and(|vms| vms.contains(moref))
    })
}

/// The disks of `frozen` left out of this backup, by position; `--exclude-disk` positions the
/// VM does not have are an error (a typo must not back up the disk meant to be left out).
fn excluded_disks(
    exclude_disks: &[usize],
    p: &Prepared,
    frozen: &VmConfig,
) -> Result<Vec<Option<ExcludedDisk>>> {
    let command_line: BTreeSet<usize> = exclude_disks.iter().copied().collect();
    let configured = &p.settings.exclude_disks;
    let count = frozen.disks().count();
    if let Some(n) = command_line.iter().find(|n| **n >= count) {
        return Err(Error::Other(format!(
            "--exclude-disk {n}: VM {} has {count} disk(s), numbered from 0",
            p.info.name
        )));
    }
    for n in configured.iter().filter(|n| **n >= count) {
        tracing::warn!(vm = %p.info.name, "exclude_disks lists disk {n}, but the VM has {count} disk(s), numbered from 0");
    }
    Ok(frozen
        .disks()
        .enumerate()
        .map(|(index, (device, vdisk))| {
            let mode = vdisk.backing.disk_mode.as_deref();
            let reason = why_excluded(index, mode, &command_line, configured)?;
            let original = p.config.device(device.key).and_then(|d| d.as_disk());
            Some(ExcludedDisk {
                index,
                key: device.key,
                label: device
                    .label
                    .clone()
                    .unwrap_or_else(|| format!("disk {}", device.key)),
                capacity: vdisk.capacity_in_bytes,
                disk_mode: mode.map(str::to_string),
                file_path: original
                    .map(|d| d.backing.file_name.clone())
                    .unwrap_or_else(|| vdisk.backing.file_name.clone()),
                reason,
                note: reason.note(mode),
            })
        })
        .collect())
}

/// `backup --dry-run` of one VM: the same resolution, identity, settings, exclusions and
/// per-disk decisions ([`plan_disk`], [`disk::verify_base`]) as [`backup_vm`], on the VM as
/// it is now instead of its snapshot; no lock, no CBT change, no snapshot, nothing written.
/// A change id is only checked by vCenter once a snapshot exists: the backup turns a refused
/// one into a full read of that disk.
pub(crate) async fn preview_vm(
    vc: &crate::vsphere::Vcenter,
    settings: &crate::config::Config,
    repo: &repository_format::Repository,
    options: &crate::backup::BackupOptions,
    tag_members: &std::collections::HashMap<String, std::collections::HashSet<String>>,
    target: &Target,
) -> Result<TargetPreview> {
    let resolved = resolve(vc, target).await?;
    let info = vc.client.vm_info(&resolved.moref).await?;
    let config = configuration(&info)?;
    let identity = identity_of(vc, &info, &config).await;
    let key = repo.target_key(&identity)?;
    let r = repo.clone();
    let k = key.clone();
    let previous = blocking(move || crate::backup::latest_manifest_in(&r, &k)).await?;
    let cbt = config.change_tracking_enabled;
    let p = Prepared {
        settings: settings_of(settings, tag_members, &identity),
        info,
        config,
        identity,
        key,
        cbt_just_enabled: !cbt,
        previous,
    };
    let quiesce = options.quiesce.or(p.settings.quiesce).unwrap_or_default();
    let exclusions = excluded_disks(&options.exclude_disks, &p, &p.config)?;
    let mut disks = Vec::new();
    for ((index, (device, vdisk)), exclusion) in p.config.disks().enumerate().zip(exclusions) {
        let label = device
            .label
            .clone()
            .unwrap_or_else(|| format!("disk {}", device.key));
        if let Some(x) = exclusion {
            disks.push(DiskPreview {
                index,
                label,
                capacity: vdisk.capacity_in_bytes,
                mode: None,
                reason: x.note.clone(),
            });
            continue;
        }
        let previous = p
            .previous
            .as_ref()
            .and_then(|m| PreviousDisk::from_manifest(m, device.key));
        let facts = DiskFacts {
            force_full: options.full,
            cbt_just_enabled: p.cbt_just_enabled,
            capacity: vdisk.capacity_in_bytes,
            disk_uuid: vdisk.backing.uuid.as_deref(),
            previous: previous.as_ref(),
        };
        let mut plan = plan_disk(&facts);
        if facts.cbt_just_enabled && !facts.force_full {
            // plan_disk's words are for the run that switched it on.
            plan.reason =
                "change tracking is off: the backup switches it on and reads the disk in full"
                    .into();
        }
        let what = format!("{} {label}", p.info.name);
        disk::verify_base(
            repo,
            &mut plan,
            &p.key,
            previous.as_ref(),
            device.key,
            &what,
        )
        .await;
        disks.push(DiskPreview {
            index,
            label,
            capacity: vdisk.capacity_in_bytes,
            mode: Some(plan.mode),
            reason: plan.reason,
        });
    }
    Ok(TargetPreview {
        target: format!("vm:{}", p.info.name),
        moref: Some(p.info.moref.value.clone()),
        key: Some(p.key.to_string()),
        previous_generation: p.previous.as_ref().map(|m| m.generation.0),
        change_tracking: Some(cbt),
        quiesce: Some(if p.info.power_state == vim_client::PowerState::PoweredOn {
            quiesce
        } else {
            QuiesceMode::Off
        }),
        disks,
        note: None,
        error: None,
    })
}

/// The VM's configuration, which a VM being created does not have yet.
fn configuration(info: &VmInfo) -> Result<VmConfig> {
    info.config
        .clone()
        .ok_or_else(|| Error::Other(format!("VM {} has no configuration yet", info.name)))
}

fn provisioning(thin: Option<bool>, eager: Option<bool>) -> Provisioning {
    match (thin, eager) {
        (Some(true), _) => Provisioning::Thin,
        (_, Some(true)) => Provisioning::EagerZeroedThick,
        (Some(false), _) => Provisioning::Thick,
        _ => Provisioning::Unknown,
    }
}

async fn with_snapshot(
    ctx: &Arc<BackupContext>,
    p: &Prepared,
    snapshot: &SnapshotGuard,
    target_lock: repository_format::TargetLock,
    result: &mut TargetResult,
) -> Result<()> {
    let vc = &ctx.vc;
    let frozen = snapshot.config().await?;
    let collected = metadata::collect(vc, &p.info).await?;

    // Steps 1 and 2 for every disk before anything is written, so a refused change id turns
    // into a full read of that disk first.
    let mut plans: Vec<PlannedDisk> = Vec::new();
    let exclusions = excluded_disks(&ctx.options.exclude_disks, p, &frozen)?;
    // The command line wins over the target's section, which wins over `[vddk] transports`.
    let transports = ctx
        .options
        .transports
        .clone()
        .or_else(|| p.settings.transports.clone());
    if let Some(t) = &transports {
        tracing::info!(vm = %p.info.name, transports = %t, "VDDK transport modes for this VM");
    }
    let mut excluded: Vec<ExcludedDisk> = Vec::new();
    for ((index, (device, vdisk)), exclusion) in frozen.disks().enumerate().zip(exclusions) {
        if let Some(x) = exclusion {
            // Never opened through VDDK: its capacity and place are recorded so that a restore
            // recreates it empty.
            tracing::warn!(vm = %p.info.name, disk = index, label = %x.label, capacity = x.capacity, "{}", x.note);
            excluded.push(x);
            continue;
        }
        let label = device
            .label
            .clone()
            .unwrap_or_else(|| format!("disk {}", device.key));
        let what = format!("{} {label}", p.info.name);
        require_capacity(
            vdisk.capacity_in_bytes,
            &format!("disk {index} ({label}) of VM {}", p.info.name),
        )?;
        let previous = p
            .previous
            .as_ref()
            .and_then(|m| PreviousDisk::from_manifest(m, device.key));
        let mut plan = plan_disk(&DiskFacts {
            force_full: ctx.options.full,
            cbt_just_enabled: p.cbt_just_enabled,
            capacity: vdisk.capacity_in_bytes,
            disk_uuid: vdisk.backing.uuid.as_deref(),
            previous: previous.as_ref(),
        });
        disk::verify_base(
            &ctx.repo,
            &mut plan,
            &p.key,
            previous.as_ref(),
            device.key,
            &what,
        )
        .await;
        tracing::info!(vm = %p.info.name, disk = %label, mode = ?plan.mode, "{}", plan.reason);
        let capacity = vdisk.capacity_in_bytes;
        let device_key = device.key;
        let areas = disk::changed_areas(&mut plan, &what, |since| async move {
            vc.client
                .changed_disk_areas(
                    &p.info.moref,
                    Some(snapshot.moref()),
                    device_key,
                    capacity,
                    &since,
                )
                .await
        })
        .await?;

        let original = p.config.device(device.key).and_then(|d| d.as_disk());
        let file_path = original
            .map(|d| d.backing.file_name.clone())
            .unwrap_or_else(|| vdisk.backing.file_name.clone());
        let mut descriptor = DiskDescriptor::new(device.key, capacity);
        descriptor.label = label;
        descriptor.controller_key = device.controller_key;
        descriptor.bus_number = device
            .controller_key
            .and_then(|k| frozen.device(k))
            .and_then(|c| c.as_controller())
            .map(|c| c.bus_number);
        descriptor.unit_number = device.unit_number;
        descriptor.provisioning =
            provisioning(vdisk.backing.thin_provisioned, vdisk.backing.eagerly_scrub);
        descriptor.datastore = file_path
            .parse::<vim_client::DatastorePath>()
            .map(|d| d.datastore)
            .unwrap_or_default();
        descriptor.file_path = file_path;
        descriptor.change_id_used =
            (plan.mode == DiskMode::Incremental).then(|| plan.since_change_id.clone());
        descriptor.change_id = vdisk.backing.change_id.clone();
        descriptor.disk_uuid = vdisk.backing.uuid.clone();
        descriptor.disk_mode = vdisk.backing.disk_mode.clone();
        plans.push(PlannedDisk {
            index,
            plan,
            descriptor,
            source: SnapshotDisk::Vm {
                vm: p.info.moref.clone(),
                snapshot: snapshot.moref().clone(),
                path: vdisk.backing.file_name.clone(),
                transports: transports.clone(),
            },
            areas,
        });
    }
    let any_incremental = plans.iter().any(|d| d.plan.mode == DiskMode::Incremental);
    let mode = if any_incremental {
        BackupMode::Incremental
    } else {
        BackupMode::Full
    };
    let parent = if any_incremental {
        p.previous.as_ref().map(|m| m.generation)
    } else {
        None
    };

    let repo = ctx.repo.clone();
    let lock = ctx.lock.clone();
    let identity = p.identity.clone();
    let files = collected.files;
    let device_order: Vec<i32> = plans.iter().map(|d| d.descriptor.key).collect();
    // The target's section wins over `[defaults] compression_level`.
    let compression_level = p
        .settings
        .compression_level
        .unwrap_or(ctx.config.defaults.compression_level);
    let writer: GenerationWriter = blocking(move || {
        let mut w = repo.begin_generation(&lock, target_lock, identity, mode, parent)?;
        w.set_compression_level(compression_level)?;
        for (name, data) in &files {
            w.put_metadata(name, data)?;
        }
        // Restore pairs the manifest's disks with the VM's by position.
        w.declare_disk_order(&device_order)?;
        Ok(w)
    })
    .await?;
    tracing::info!(vm = %p.info.name, generation = %writer.id(), ?mode, disks = plans.len(), "writing generation");

    // Step 3 for every disk at once, each as soon as it gets a VDDK connection permit. The
    // first failure stops the target's other disks (the generation cannot commit without them).
    let writer = Arc::new(writer);
    let disks_cancel = ctx.cancel.child();
    let previous = p.previous.as_ref().map(|m| (&p.key, m.generation));
    let reads = plans.into_iter().map(|planned| {
        let writer = writer.clone();
        let disks_cancel = disks_cancel.clone();
        let label = format!("{} {}", p.info.name, planned.descriptor.label);
        async move {
            let r = read_disk(ctx, writer, planned, previous, label, &disks_cancel).await;
            if r.is_err() {
                disks_cancel.cancel();
            }
            r
        }
    });
    let outcomes = futures_util::future::join_all(reads).await;
    let writer = Arc::into_inner(writer)
        .ok_or_else(|| Error::Other("the generation is still being written".into()))?;
    for disk in first_failure(outcomes)? {
        result.add_disk(disk);
    }

    let mut extra = serde_json::Map::new();
    extra.insert("snapshot".into(), snapshot.name().into());
    extra.insert("quiesced".into(), snapshot.quiesced().into());
    extra.insert("compression_level".into(), compression_level.into());
    extra.insert("cbt_enabled_by_backup".into(), p.cbt_just_enabled.into());
    if !excluded.is_empty() {
        extra.insert(
            excluded_disk::MANIFEST_FIELD.into(),
            excluded_disk::to_manifest_value(&excluded),
        );
    }
    result.excluded_disks = excluded;
    let generation =
        blocking(move || Ok(writer.commit(GenerationStatus::Succeeded, extra)?)).await?;
    tracing::info!(vm = %p.info.name, %generation, "generation committed");
    result.generation = Some(generation.0);
    result.mode = Some(mode);
    Ok(())
}
