//! The backup wing: one run over many targets, each target backed up on its own.
//!
//! The run ([`run`]) opens the repository and takes its shared lock, logs in to vCenter,
//! expands the selection, loads VDDK and backs the targets up concurrently (`parallel` at
//! once, every disk of the run within one limit of `max_connections` VDDK connections). Each
//! target kind has its own file, which reads top to bottom as the data flow:
//! - [`vm`]: resolve → lock → leftover snapshots → CBT on → snapshot → metadata → per disk
//!   ([`disk`]) → commit → snapshot removed → lock released;
//! - [`ivd`]: the same for a first class disk and its own snapshots;
//! - [`vapp`]: every child as a `vm` target, then the vApp's own generation.
//!
//! [`disk`] is the one per-disk step every kind shares: full or incremental and why, the
//! changed areas (a change id vCenter refuses becomes a full read), and the VDDK reads into the
//! repository's ingest.
//!
//! # Snapshot ownership
//!
//! A run records itself as the owner of every snapshot it takes ([`BackupContext::snapshot_owner`]:
//! its repository lock's run id, the repository id, the host). A target's lock is taken before
//! its snapshots are read and held until its own snapshot is removed (past the commit, which
//! releases the writer's share of it), so a second backup of the target into the same
//! repository waits, and never sees the first one's snapshot. Leftovers are judged by
//! [`crate::vsphere::snapshot_owner::judge`] against the live runs read after the snapshots.

pub mod disk;
pub mod ivd;
pub mod preview;
pub mod vapp;
pub mod vm;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use repository_format::{BackupMode, Manifest, Repository, RepositoryLock, TargetKey};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::config::{Config, FcdApiChoice};
use crate::disk_io::VddkEndpoint;
use crate::error::{Error, Result};
use crate::excluded_disk::ExcludedDisk;
use crate::progress::RunProgress;
use crate::target::Target;
use crate::target_settings::QuiesceMode;
use crate::vsphere::selection::{self, Skipped, TargetKindArg};
use crate::vsphere::snapshot_owner::{self, Judge, SnapshotOwner};
use crate::vsphere::Vcenter;

pub use disk::DiskMode;

/// Everything a backup run was asked to do, resolved once from the command line and the
/// configuration.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Targets as given.
    pub targets: Vec<Target>,
    /// Every target of these kinds.
    pub all: Vec<TargetKindArg>,
    /// Left out.
    pub exclude: Vec<Target>,
    /// Read every disk in full.
    pub full: bool,
    /// Quiesce the guest (`None`: as the target's configuration says, else `try`).
    pub quiesce: Option<QuiesceMode>,
    /// `--transport MODES`: wins over every target's `transports` setting.
    pub transports: Option<String>,
    /// Disk positions to leave out (`--exclude-disk`; only with exactly one `vm:` target).
    pub exclude_disks: Vec<usize>,
    /// Progress bars allowed (not `-q`).
    pub show_progress: bool,
    /// Targets backed up at the same time (at least 1).
    pub parallel: usize,
    /// VDDK connections open at once across the run (at least 1).
    pub max_connections: usize,
    /// How long to wait for a repository or target lock.
    pub lock_wait: Duration,
    /// Which first class disk API to use.
    pub fcd_api: FcdApiChoice,
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
    /// The owner written into the description of every snapshot this run takes: the
    /// repository lock's run id, so that while the lock is held, no other run removes them.
    pub snapshot_owner: SnapshotOwner,
    /// Stop requests.
    pub cancel: Cancel,
    /// Options.
    pub options: BackupOptions,
    /// For each `[targets."tag:…"]` section of the configuration, the morefs of the VMs that
    /// carry that tag now (read once per run).
    pub tag_members: HashMap<String, HashSet<String>>,
    /// One permit per VDDK connection the run may open (`max_connections`): a disk holds one
    /// from before it connects until after it disconnects.
    pub vddk_connections: Arc<Semaphore>,
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
    /// What the new chunks took in the repository (compressed, and encrypted if so).
    pub bytes_stored: u64,
    /// Change id recorded for the next incremental.
    pub change_id: Option<String>,
    /// The transport mode VDDK chose for this disk (`nbdssl`, `hotadd`, ...).
    pub transport: Option<String>,
}

/// The outcome of one target, as `backup --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target as people know it: `vm:NAME` once the VM is resolved (also when it was
    /// selected by moref, uuid, path, tag or `--all`), else as given.
    pub target: String,
    /// The target as given or as the selection expanded it (`vm:vm-39`, `tag:gold`).
    pub selected_as: String,
    /// The VM's managed object id, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moref: Option<String>,
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
    /// What the new chunks took in the repository (compressed, and encrypted if so).
    pub bytes_stored: u64,
    /// When the target's backup started (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub started: time::OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished: Option<time::OffsetDateTime>,
    /// How long it took, in seconds.
    pub duration_seconds: f64,
    /// Per disk.
    pub disks: Vec<DiskResult>,
    /// Disks left out (independent, or excluded), each with its note.
    pub excluded_disks: Vec<ExcludedDisk>,
    /// The quiesce mode asked for (VM targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<QuiesceMode>,
    /// Whether the snapshot quiesced the guest (VM targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesced: Option<bool>,
    /// Why quiescing failed when `quiesce = try` fell back to a snapshot without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce_fallback: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

impl TargetResult {
    /// A failed result for `target`, before anything is known about it.
    pub fn new(target: &Target) -> TargetResult {
        TargetResult {
            target: target.to_string(),
            selected_as: target.to_string(),
            moref: None,
            vm: None,
            generation: None,
            mode: None,
            status: "failed",
            bytes_read: 0,
            bytes_new: 0,
            bytes_stored: 0,
            started: time::OffsetDateTime::now_utc(),
            finished: None,
            duration_seconds: 0.0,
            disks: Vec::new(),
            excluded_disks: Vec::new(),
            quiesce: None,
            quiesced: None,
            quiesce_fallback: None,
            error: None,
        }
    }

    /// Whether the target was backed up.
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// Adds a disk's result and its byte counts.
    pub(crate) fn add_disk(&mut self, disk: DiskResult) {
        self.bytes_read += disk.bytes_read;
        self.bytes_new += disk.bytes_new;
        self.bytes_stored += disk.bytes_stored;
        self.disks.push(disk);
    }

    /// Records how the run ended, and logs it.
    pub(crate) fn conclude(mut self, target: &Target, outcome: Result<()>) -> TargetResult {
        let finished = time::OffsetDateTime::now_utc();
        self.duration_seconds = (finished - self.started).as_seconds_f64().max(0.0);
        self.finished = Some(finished);
        // One name per target everywhere: `vm:web01`, whatever form selected it. The moref
        // and the selection form stay beside it for scripts.
        if let (Target::Vm(_), Some(name)) = (target, &self.vm) {
            self.target = format!("vm:{name}");
        }
        match outcome {
            Ok(()) => {
                self.status = "succeeded";
                tracing::info!(
                    target = %target,
                    generation = self.generation.unwrap_or_default(),
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

/// What a backup run did: one result per target, and what the selection left out.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRun {
    /// Per target, in selection order.
    pub targets: Vec<TargetResult>,
    /// Targets the selection left out, with why.
    pub skipped: Vec<Skipped>,
    /// What the run's chunks in flight took of its memory budget.
    pub chunk_memory: ChunkMemory,
}

/// The chunk memory of a run (`[performance] chunk_memory_mib`), shared by all its disks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChunkMemory {
    /// The most the run's chunks in flight (buffers and blobs) held at once, in bytes.
    pub peak_bytes: u64,
    /// The limit, in bytes.
    pub limit_bytes: u64,
}

/// Runs a backup of every selected target.
///
/// # Errors
/// When the run cannot start: repository missing or locked, vCenter unreachable or refusing
/// the login, VDDK not loadable. Target failures are in the [`BackupRun`] instead.
pub async fn run(config: Arc<Config>, options: BackupOptions, cancel: Cancel) -> Result<BackupRun> {
    let c = config.clone();
    let repo = blocking(move || crate::repo::open(&c)).await?;
    // Every disk of the run, whatever its VM, draws its chunks in flight from this one budget
    // (the process's), so `--parallel` and `max_vddk_connections` no longer multiply memory.
    let chunk_memory = repo.memory_budget().clone();
    chunk_memory.set_limit(config.performance.chunk_memory_bytes());
    chunk_memory.reset_high_water();
    let r = repo.clone();
    let wait = options.lock_wait;
    let lock = blocking(move || {
        r.lock_shared(wait)
            .map_err(|e| Error::from_lock("the repository".into(), wait.as_secs(), e))
    })
    .await?;
    let vc = Vcenter::connect(&config).await?;
    let selection = match selection::select(
        &vc,
        &options.targets,
        &options.all,
        &options.exclude,
        config.defaults.product_uuid_file.as_deref(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            vc.logout().await;
            return Err(e);
        }
    };
    let tag_members = tag_members(&vc, &config).await;
    let vddk = match VddkEndpoint::load(&config, &vc).await {
        Ok(v) => v,
        Err(e) => {
            vc.logout().await;
            return Err(e);
        }
    };
    tracing::debug!(
        parallel = options.parallel,
        max_connections = options.max_connections,
        "targets and VDDK connections at once"
    );
    let snapshot_owner = SnapshotOwner::new(
        lock.run_id(),
        repo.config().repository_id,
        &snapshot_owner::host_name(),
    );
    let ctx = Arc::new(BackupContext {
        config,
        vc: vc.clone(),
        vddk,
        repo,
        lock: Arc::new(lock),
        snapshot_owner,
        cancel,
        tag_members,
        vddk_connections: Arc::new(Semaphore::new(options.max_connections.max(1))),
        options,
    });
    // Targets run concurrently on this task (vCenter calls are async, disk I/O runs on
    // blocking threads); the gate bounds how many are in flight.
    let gate = Arc::new(Semaphore::new(ctx.options.parallel.max(1)));
    let overall = Arc::new(RunProgress::new(
        "backup",
        selection.targets.len(),
        !ctx.options.show_progress,
    ));
    let runs = selection.targets.into_iter().map(|target| {
        let ctx = ctx.clone();
        let gate = gate.clone();
        let overall = overall.clone();
        async move {
            let _permit = gate.acquire_owned().await;
            let result = backup_target(ctx, target).await;
            overall.target_done();
            result
        }
    });
    let targets: Vec<TargetResult> = futures_util::future::join_all(runs).await;
    overall.finish();
    let chunk_memory = ChunkMemory {
        peak_bytes: chunk_memory.high_water(),
        limit_bytes: chunk_memory.limit(),
    };
    tracing::info!(
        "chunks in flight held at most {} MiB of the run's {} MiB ([performance] chunk_memory_mib)",
        chunk_memory.peak_bytes >> 20,
        chunk_memory.limit_bytes >> 20
    );
    vc.logout().await;
    Ok(BackupRun {
        targets,
        skipped: selection.skipped,
        chunk_memory,
    })
}

/// The VMs carrying each tag that has a `[targets."tag:…"]` section. A tag vCenter does not
/// know is logged and matches no VM: one configuration may serve several vCenters.
pub(crate) async fn tag_members(vc: &Vcenter, config: &Config) -> HashMap<String, HashSet<String>> {
    let mut out = HashMap::new();
    for key in config.targets.keys() {
        let Ok(Target::Tag(tag)) = key.parse::<Target>() else {
            continue;
        };
        match selection::tagged_vms(vc, &tag).await {
            Ok(vms) => {
                out.insert(tag, vms);
            }
            Err(e) => {
                tracing::warn!("[targets.\"{key}\"] applies to no VM: {e}");
            }
        }
    }
    out
}

/// Backs up one target of any kind; never fails, the result says what happened.
pub async fn backup_target(ctx: Arc<BackupContext>, target: Target) -> TargetResult {
    match &target {
        Target::Ivd(selector) => {
            let selector = selector.clone();
            ivd::backup_ivd(ctx, target, selector).await
        }
        Target::Vapp(name) => {
            let name = name.clone();
            vapp::backup_vapp(ctx, target, name).await
        }
        _ => vm::backup_vm(ctx, target).await,
    }
}

/// Takes the target's lock, waiting as long as the options allow.
pub(crate) async fn lock_target(
    ctx: &BackupContext,
    key: &TargetKey,
) -> Result<repository_format::TargetLock> {
    let repo = ctx.repo.clone();
    let wait = ctx.options.lock_wait;
    let key = key.clone();
    blocking(move || {
        repo.lock_target(&key, wait)
            .map_err(|e| Error::from_lock(format!("target {key}"), wait.as_secs(), e))
    })
    .await
}

/// What decides which of a target's snapshots are leftovers to remove: the runs that hold a
/// live record of this repository's lock. Ask for it only after the target's lock was taken
/// and its snapshots were read: a run whose snapshot is in that list and that still runs held
/// the repository lock before taking the snapshot, so it shows here.
pub(crate) async fn leftover_judge(ctx: &BackupContext) -> Result<Judge> {
    let repo = ctx.repo.clone();
    let live = blocking(move || Ok(repo.live_runs()?)).await?;
    Ok(Judge {
        repository: ctx.repo.config().repository_id,
        own_run: ctx.snapshot_owner.run.clone(),
        live_runs: live.into_iter().map(|h| h.run_id).collect(),
        now: time::OffsetDateTime::now_utc(),
    })
}

/// The manifest of the target's latest successful generation, if it has one.
pub(crate) async fn latest_manifest(
    ctx: &BackupContext,
    key: &TargetKey,
) -> Result<Option<Manifest>> {
    let repo = ctx.repo.clone();
    let key = key.clone();
    blocking(move || latest_manifest_in(&repo, &key)).await
}

/// [`latest_manifest`] of `repo` (blocking).
pub(crate) fn latest_manifest_in(repo: &Repository, key: &TargetKey) -> Result<Option<Manifest>> {
    match repo.latest_successful(key) {
        Ok(Some(g)) => Ok(Some(repo.manifest(key, g.id)?)),
        Ok(None) | Err(repository_format::Error::TargetNotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
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
        (Ok(()), Err(r)) => Err(Error::SnapshotNotRemoved {
            generation,
            source: Box::new(r),
        }),
        (Err(e), Err(r)) => Err(Error::Other(format!("{e}; also {r}"))),
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
