//! A backup of one target, step by step: resolve the VM, take the target's lock, remove
//! leftover snapshots, enable CBT if needed, snapshot, save metadata, read each disk (full or
//! incremental, with the reason logged), commit, and remove the snapshot on every path.

use std::sync::Arc;

use repository_format::{
    Area, BackupMode, DiskDescriptor, GenerationStatus, GenerationWriter, Manifest, Provisioning,
    Repository, RepositoryLock, TargetIdentity, TargetKey, TargetKind,
};
use serde::Serialize;
use vim_client::{VmConfig, VmInfo};

use crate::cancel::Cancel;
use crate::changed_areas;
use crate::commands::blocking;
use crate::config::Config;
use crate::disk_ingest::{ingest_disk, DiskIngest, SnapshotDisk};
use crate::disk_plan::{plan_disk, DiskFacts, DiskMode, DiskPlan, PreviousDisk};
use crate::error::{Error, Result};
use crate::metadata;
use crate::resolve::resolve;
use crate::snapshot::{remove_leftovers, SnapshotGuard};
use crate::target::Target;
use crate::vcenter::Vcenter;
use crate::vddk_session::VddkEndpoint;

/// Options of a backup run.
#[derive(Debug, Clone, Copy)]
pub struct BackupOptions {
    /// Read every disk in full.
    pub full: bool,
    /// Quiesce the guest.
    pub quiesce: bool,
    /// Progress bars allowed (not `-q`).
    pub show_progress: bool,
}

/// What one run shares between its targets.
pub struct BackupContext {
    /// Configuration.
    pub config: Arc<Config>,
    /// vCenter session.
    pub vc: Vcenter,
    /// VDDK.
    pub vddk: VddkEndpoint,
    /// The repository.
    pub repo: Repository,
    /// The shared repository lock, held for the whole run.
    pub lock: Arc<RepositoryLock>,
    /// Stop requests.
    pub cancel: Cancel,
    /// Options.
    pub options: BackupOptions,
    /// One permit per VDDK connection the run may open (`max_vddk_connections`): a disk holds
    /// one from before it connects until after it disconnects.
    pub vddk_connections: Arc<tokio::sync::Semaphore>,
}

/// The outcome of one disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    /// Position in the VM (0-based), as `export --disk` and `--disk-datastore` count.
    pub index: usize,
    /// Device key.
    pub key: i32,
    /// Label.
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Full or incremental.
    pub mode: DiskMode,
    /// Why.
    pub reason: String,
    /// Bytes read from VDDK.
    pub bytes_read: u64,
    /// Bytes of new chunk data (before compression).
    pub bytes_new: u64,
    /// Change id recorded for the next incremental.
    pub change_id: Option<String>,
}

/// The outcome of one target, as `backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target as given.
    pub target: String,
    /// The VM's name, once resolved.
    pub vm: Option<String>,
    /// The committed generation.
    pub generation: Option<u64>,
    /// `full` or `incremental` (incremental when any disk was).
    pub mode: Option<BackupMode>,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// Bytes read from VDDK.
    pub bytes_read: u64,
    /// Bytes of new chunk data.
    pub bytes_new: u64,
    /// Per disk.
    pub disks: Vec<DiskResult>,
    /// What went wrong.
    pub error: Option<String>,
}

impl TargetResult {
    /// A failed result for `target`, before anything is known about it.
    pub fn new(target: &Target) -> TargetResult {
        TargetResult {
            target: target.to_string(),
            vm: None,
            generation: None,
            mode: None,
            status: "failed",
            bytes_read: 0,
            bytes_new: 0,
            disks: Vec::new(),
            error: None,
        }
    }

    /// Whether the target was backed up.
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// Records how the run ended, and logs it.
    pub(crate) fn conclude(mut self, target: &Target, outcome: Result<()>) -> TargetResult {
        match outcome {
            Ok(()) => {
                self.status = "succeeded";
                tracing::info!(
                    target = %target,
                    generation = ?self.generation,
                    "backup succeeded: {} bytes read, {} new",
                    self.bytes_read,
                    self.bytes_new
                );
            }
            Err(e) => {
                tracing::error!(target = %target, "backup failed: {e}");
                self.error = Some(e.to_string());
            }
        }
        self
    }
}

/// Everything known about the VM before the snapshot.
struct Prepared {
    info: VmInfo,
    config: VmConfig,
    identity: TargetIdentity,
    key: TargetKey,
    cbt_just_enabled: bool,
    previous: Option<Manifest>,
}

/// Backs up one target; never fails, the result says what happened.
pub async fn backup_target(ctx: Arc<BackupContext>, target: Target) -> TargetResult {
    let mut result = TargetResult::new(&target);
    let outcome = run(&ctx, &target, &mut result).await;
    result.conclude(&target, outcome)
}

async fn run(ctx: &Arc<BackupContext>, target: &Target, result: &mut TargetResult) -> Result<()> {
    let vc = &ctx.vc;
    let resolved = resolve(vc, target).await?;
    tracing::info!(vm = %resolved.name, moref = %resolved.moref.value, "starting backup");
    result.vm = Some(resolved.name.clone());
    let info = vc.client.vm_info(&resolved.moref).await?;
    let config = info
        .config
        .clone()
        .ok_or_else(|| Error::Other(format!("VM {} has no configuration yet", info.name)))?;
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
    identity
        .extra
        .insert("vcenter".into(), ctx.config.vcenter.url.clone().into());
    // The repository names the target's folder (keyed when the repository is encrypted).
    let key = ctx.repo.target_key(&identity)?;

    let target_lock = lock_target(ctx, &key).await?;

    let removed = remove_leftovers(vc, &info.moref, &info.snapshots).await?;
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
    };

    if ctx.cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    // Quiescing needs VMware Tools running in the guest: only for a powered-on VM.
    let quiesce =
        ctx.options.quiesce && prepared.info.power_state == vim_client::PowerState::PoweredOn;
    let snapshot = SnapshotGuard::create(vc, &prepared.info.moref, quiesce).await?;
    let outcome = with_snapshot(ctx, &prepared, &snapshot, target_lock, result).await;
    let removal = snapshot.remove().await;
    with_snapshot_removed(outcome, removal, result.generation)
}

/// Takes the target's lock, waiting as long as the configuration allows.
pub(crate) async fn lock_target(
    ctx: &BackupContext,
    key: &TargetKey,
) -> Result<repository_format::TargetLock> {
    let repo = ctx.repo.clone();
    let wait = crate::repo::lock_wait(&ctx.config);
    let key = key.clone();
    blocking(move || {
        repo.lock_target(&key, wait)
            .map_err(|e| Error::from_lock(format!("target {key}"), wait.as_secs(), e))
    })
    .await
}

/// The manifest of the target's latest successful generation, if it has one.
pub(crate) async fn latest_manifest(
    ctx: &BackupContext,
    key: &TargetKey,
) -> Result<Option<Manifest>> {
    let repo = ctx.repo.clone();
    let key = key.clone();
    blocking(move || match repo.latest_successful(&key) {
        Ok(Some(g)) => Ok(Some(repo.manifest(&key, g.id)?)),
        Ok(None) | Err(repository_format::Error::TargetNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    })
    .await
}

/// The run's outcome once its snapshot was removed: a failed removal fails the run too,
/// saying whether the generation (`generation`) was committed before it.
pub(crate) fn with_snapshot_removed(
    outcome: Result<()>,
    removal: Result<()>,
    generation: Option<u64>,
) -> Result<()> {
    match (outcome, removal) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(r)) => Err(Error::Other(format!(
            "generation {} was committed, but {r}",
            generation.unwrap_or_default()
        ))),
        (Err(e), Err(r)) => Err(Error::Other(format!("{e}; also {r}"))),
    }
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

    // Decide per disk before writing anything.
    let mut plans: Vec<PlannedDisk> = Vec::new();
    for (index, (device, disk)) in frozen.disks().enumerate() {
        require_capacity(
            disk.capacity_in_bytes,
            &format!(
                "disk {index} ({}) of VM {}",
                device.label.as_deref().unwrap_or("no label"),
                p.info.name
            ),
        )?;
        let previous = p.previous.as_ref().and_then(|m| {
            m.disk(device.key).map(|d| PreviousDisk {
                generation: m.generation.0,
                capacity: d.disk.capacity,
                change_id: d.disk.change_id.clone(),
                disk_uuid: d
                    .disk
                    .extra
                    .get("disk_uuid")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            })
        });
        let plan = plan_disk(&DiskFacts {
            force_full: ctx.options.full,
            cbt_just_enabled: p.cbt_just_enabled,
            capacity: disk.capacity_in_bytes,
            disk_uuid: disk.backing.uuid.as_deref(),
            previous: previous.as_ref(),
        });
        let label = device
            .label
            .clone()
            .unwrap_or_else(|| format!("disk {}", device.key));
        tracing::info!(vm = %p.info.name, disk = %label, mode = ?plan.mode, "{}", plan.reason);
        let original = p.config.device(device.key).and_then(|d| d.as_disk());
        let file_path = original
            .map(|d| d.backing.file_name.clone())
            .unwrap_or_else(|| disk.backing.file_name.clone());
        let bus_number = device
            .controller_key
            .and_then(|k| frozen.device(k))
            .and_then(|c| c.as_controller())
            .map(|c| c.bus_number);
        let mut descriptor = DiskDescriptor::new(device.key, disk.capacity_in_bytes);
        descriptor.label = label;
        descriptor.controller_key = device.controller_key;
        descriptor.bus_number = bus_number;
        descriptor.unit_number = device.unit_number;
        descriptor.provisioning =
            provisioning(disk.backing.thin_provisioned, disk.backing.eagerly_scrub);
        descriptor.datastore = file_path
            .parse::<vim_client::DatastorePath>()
            .map(|d| d.datastore)
            .unwrap_or_default();
        descriptor.file_path = file_path;
        descriptor.change_id_used =
            (plan.mode == DiskMode::Incremental).then(|| plan.since_change_id.clone());
        descriptor.change_id = disk.backing.change_id.clone();
        if let Some(mode) = disk
            .backing
            .disk_mode
            .as_deref()
            .filter(|m| m.starts_with("independent"))
        {
            tracing::warn!(
                vm = %p.info.name,
                disk = %descriptor.label,
                "disk mode {mode}: snapshots do not freeze independent disks, so this disk is read while the guest may write to it"
            );
        }
        if let Some(uuid) = &disk.backing.uuid {
            descriptor
                .extra
                .insert("disk_uuid".into(), uuid.clone().into());
        }
        if let Some(mode) = &disk.backing.disk_mode {
            descriptor
                .extra
                .insert("disk_mode".into(), mode.clone().into());
        }
        // Ask CBT now, so a refused change id turns into a full read before anything is written.
        let (mut plan, mut descriptor) = (plan, descriptor);
        let areas = match changed_areas::query(
            vc,
            &p.info.moref,
            snapshot.moref(),
            device.key,
            descriptor.capacity,
            &plan.since_change_id,
        )
        .await
        {
            Ok(a) => a,
            Err(Error::Vim(e))
                if plan.mode == DiskMode::Incremental && e.fault_kind().is_some() =>
            {
                // vCenter no longer knows the change id (CBT was reset, the disk was moved):
                // the only safe answer is a full read of this disk.
                tracing::warn!(
                    vm = %p.info.name,
                    disk = %descriptor.label,
                    "change id {} was refused ({e}); reading this disk in full",
                    plan.since_change_id
                );
                plan = DiskPlan {
                    mode: DiskMode::Full,
                    reason: format!("vCenter refused change id {}: {e}", plan.since_change_id),
                    since_change_id: "*".into(),
                };
                descriptor.change_id_used = None;
                changed_areas::query(
                    vc,
                    &p.info.moref,
                    snapshot.moref(),
                    device.key,
                    descriptor.capacity,
                    "*",
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        plans.push(PlannedDisk {
            index,
            key: device.key,
            plan,
            descriptor,
            snapshot_path: disk.backing.file_name.clone(),
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
    let device_order: Vec<i32> = plans.iter().map(|d| d.key).collect();
    let writer: GenerationWriter = blocking(move || {
        let mut w = repo.begin_generation(&lock, target_lock, identity, mode, parent)?;
        for (name, data) in &files {
            w.put_metadata(name, data)?;
        }
        // Restore pairs the manifest's disks with the VM's by position.
        w.declare_disk_order(&device_order)?;
        Ok(w)
    })
    .await?;
    tracing::info!(vm = %p.info.name, generation = %writer.id(), ?mode, disks = plans.len(), "writing generation");

    // Every disk at once, each as soon as it gets a VDDK connection permit. The first failure
    // stops the target's other disks (the generation cannot commit without them).
    let writer = Arc::new(writer);
    let disks_cancel = ctx.cancel.child();
    let reads = plans.into_iter().map(|planned| {
        let writer = writer.clone();
        let disks_cancel = disks_cancel.clone();
        async move {
            let r = read_disk(ctx, p, snapshot, writer, planned, &disks_cancel).await;
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
        result.bytes_read += disk.bytes_read;
        result.bytes_new += disk.bytes_new;
        result.disks.push(disk);
    }

    let mut extra = serde_json::Map::new();
    extra.insert("snapshot".into(), snapshot.name().into());
    extra.insert("quiesced".into(), snapshot.quiesced().into());
    extra.insert("cbt_enabled_by_backup".into(), p.cbt_just_enabled.into());
    let generation =
        blocking(move || Ok(writer.commit(GenerationStatus::Succeeded, extra)?)).await?;
    tracing::info!(vm = %p.info.name, %generation, "generation committed");
    result.generation = Some(generation.0);
    result.mode = Some(mode);
    Ok(())
}

/// Refuses a disk whose capacity vCenter did not give (a missing or malformed `capacityInBytes`
/// or `capacityInKB` reads as 0): reading "all 0 bytes" of it would commit an empty disk.
pub(crate) fn require_capacity(capacity: u64, what: &str) -> Result<()> {
    if capacity == 0 {
        return Err(Error::Other(format!(
            "{what} reports no capacity (missing or malformed in vCenter's answer); refusing to \
             back it up"
        )));
    }
    Ok(())
}

/// One disk as decided before the generation is written.
struct PlannedDisk {
    /// Position in the VM.
    index: usize,
    /// Device key.
    key: i32,
    /// Full or incremental, and why.
    plan: DiskPlan,
    /// The disk as the manifest will record it.
    descriptor: DiskDescriptor,
    /// The disk's file in the snapshot.
    snapshot_path: String,
    /// What to read.
    areas: Vec<Area>,
}

/// Step 5 for one VM disk: loads the base index of an incremental, then reads the disk's areas
/// into `writer` (see [`ingest_disk`]).
async fn read_disk(
    ctx: &BackupContext,
    p: &Prepared,
    snapshot: &SnapshotGuard,
    writer: Arc<GenerationWriter>,
    d: PlannedDisk,
    cancel: &Cancel,
) -> Result<DiskResult> {
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let to_read = changed_areas::total(&d.areas);
    tracing::info!(
        vm = %p.info.name,
        disk = %d.descriptor.label,
        "{} changed area(s), {to_read} bytes to read",
        d.areas.len()
    );
    let base = match (d.plan.mode, &p.previous) {
        (DiskMode::Incremental, Some(m)) => {
            let repo = ctx.repo.clone();
            let k = p.key.clone();
            let (g, key) = (m.generation, d.key);
            Some(blocking(move || Ok(repo.fixed_index(&k, g, key)?)).await?)
        }
        _ => None,
    };
    let change_id = d.descriptor.change_id.clone();
    let label = d.descriptor.label.clone();
    let capacity = d.descriptor.capacity;
    let stats = ingest_disk(
        ctx,
        writer,
        DiskIngest {
            source: SnapshotDisk::Vm {
                vm: p.info.moref.clone(),
                snapshot: snapshot.moref().clone(),
                path: d.snapshot_path,
            },
            descriptor: d.descriptor,
            base,
            areas: d.areas,
            progress_label: format!("{} {}", p.info.name, label),
        },
        cancel,
    )
    .await?;
    Ok(DiskResult {
        index: d.index,
        key: d.key,
        label,
        capacity,
        mode: d.plan.mode,
        reason: d.plan.reason,
        bytes_read: stats.read_bytes,
        bytes_new: stats.new_bytes,
        change_id,
    })
}

/// The disks' results in order, or the error that stopped them: the first real failure
/// rather than the interruptions it caused in the other disks.
pub(crate) fn first_failure<T>(outcomes: Vec<Result<T>>) -> Result<Vec<T>> {
    let mut done = Vec::with_capacity(outcomes.len());
    let mut interrupted = None;
    for outcome in outcomes {
        match outcome {
            Ok(t) => done.push(t),
            Err(Error::Interrupted) => interrupted = Some(Error::Interrupted),
            Err(e) => return Err(e),
        }
    }
    match interrupted {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(m: &str) -> Result<()> {
        Err(Error::Other(m.into()))
    }

    #[test]
    fn a_failed_snapshot_removal_fails_the_run_and_says_what_was_committed() {
        assert!(with_snapshot_removed(Ok(()), Ok(()), Some(3)).is_ok());
        let e = with_snapshot_removed(Ok(()), other("snapshot busy"), Some(3)).unwrap_err();
        assert!(
            e.to_string().contains("generation 3 was committed, but"),
            "{e}"
        );
        assert!(e.to_string().contains("snapshot busy"), "{e}");
        let e = with_snapshot_removed(other("read failed"), Ok(()), None).unwrap_err();
        assert_eq!(e.to_string(), other("read failed").unwrap_err().to_string());
        let e = with_snapshot_removed(other("read failed"), other("snapshot busy"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("read failed") && e.contains("; also ") && e.contains("snapshot busy"),
            "{e}"
        );
    }

    #[test]
    fn the_first_real_failure_wins_over_the_interruptions_it_caused() {
        let r = first_failure(vec![
            Ok(1),
            Err(Error::Interrupted),
            Err(Error::Other("read failed".into())),
            Ok(2),
        ]);
        assert!(r.unwrap_err().to_string().contains("read failed"));
        let r = first_failure::<u8>(vec![Ok(1), Err(Error::Interrupted)]);
        assert!(matches!(r, Err(Error::Interrupted)));
        assert_eq!(first_failure::<u8>(vec![Ok(1), Ok(2)]).unwrap(), vec![1, 2]);
    }

    #[test]
    fn a_disk_without_capacity_is_refused() {
        let e = require_capacity(0, "disk 1 (Hard disk 2) of VM web01").unwrap_err();
        assert!(e.to_string().contains("Hard disk 2"), "{e}");
        assert!(e.to_string().contains("no capacity"), "{e}");
        assert!(require_capacity(512, "disk 0").is_ok());
    }

    #[test]
    fn a_new_result_is_failed_until_concluded() {
        let target: Target = "vm:web01".parse().unwrap();
        let r = TargetResult::new(&target);
        assert!(!r.succeeded());
        assert_eq!(r.target, "vm:web01");
        let r = r.conclude(&target, Ok(()));
        assert!(r.succeeded() && r.error.is_none());
        let r = TargetResult::new(&target).conclude(&target, other("no such VM"));
        assert!(!r.succeeded());
        assert!(r.error.as_deref().unwrap().contains("no such VM"));
    }
}
