//! The per-disk step every target kind shares, in the order it runs:
//! 1. [`plan_disk`]: full or incremental, with the reason said out loud (incremental only when
//!    the previous successful generation has this disk, with the same capacity and uuid, and a
//!    change id to ask CBT from); then [`verify_base`]: the previous generation's index of the
//!    disk must read and verify (it is the one that generation committed, and belongs there),
//!    or the disk is read in full — a damaged or swapped base never blocks a backup, and is
//!    never built upon;
//! 2. [`changed_areas`](mod@changed_areas): what to read — every allocated area (`*`) for a full, the areas
//!    changed since the previous change id otherwise; a change id vCenter refuses (CBT reset,
//!    disk moved) turns this disk into a full read, the only safe answer;
//! 3. [`read_disk`]: VDDK reads (with read-ahead) → hash → dedup → compress → store chunk →
//!    disk index, through [`GenerationWriter::ingest_disk`], on a blocking thread that owns
//!    the disk's VDDK connection.
//!
//! VM disks (`vm:`) and first class disks (`ivd:`) differ only in how VDDK connects to their
//! snapshot ([`SnapshotDisk`]) and how vCenter is asked for changed areas.

use std::future::Future;
use std::sync::Arc;

use repository_format::{
    Area, DiskDescriptor, DiskStats, FixedIndex, GenerationId, GenerationWriter, Manifest,
    TargetKey,
};
use serde::Serialize;
use vddk::{Connection, Disk};
use vim_client::MoRef;

use crate::backup::{BackupContext, DiskResult};
use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::disk_io::{VddkEndpoint, VddkSource};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::vsphere::changed_areas;

/// How a disk is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// Every allocated area (CBT `*`).
    Full,
    /// Only the areas changed since the previous generation's change id.
    Incremental,
}

/// What the previous successful generation recorded for this disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousDisk {
    /// Generation number.
    pub generation: u64,
    /// Capacity then.
    pub capacity: u64,
    /// Change id recorded then.
    pub change_id: Option<String>,
    /// The disk's uuid then (a different uuid now means another disk behind the same key).
    pub disk_uuid: Option<String>,
}

impl PreviousDisk {
    /// What generation `m` recorded for disk `key`, if it has that disk.
    pub fn from_manifest(m: &Manifest, key: i32) -> Option<PreviousDisk> {
        m.disk(key).map(|d| PreviousDisk {
            generation: m.generation.0,
            capacity: d.disk.capacity,
            change_id: d.disk.change_id.clone(),
            disk_uuid: d.disk.disk_uuid.clone(),
        })
    }
}

impl DiskPlan {
    /// A full read, for `reason`.
    pub fn full(reason: String) -> DiskPlan {
        DiskPlan {
            mode: DiskMode::Full,
            reason,
            since_change_id: "*".into(),
            base: None,
        }
    }
}

/// The decision for one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskPlan {
    /// Full or incremental.
    pub mode: DiskMode,
    /// Why, in words for the log.
    pub reason: String,
    /// What to pass to QueryChangedDiskAreas: `*` or the previous change id.
    pub since_change_id: String,
    /// For an incremental: the previous generation's index of this disk, verified by
    /// [`verify_base`] (the ingest starts from it).
    #[serde(skip)]
    pub base: Option<Arc<FixedIndex>>,
}

/// Facts the decision is based on.
#[derive(Debug, Clone)]
pub struct DiskFacts<'a> {
    /// `--full` was given.
    pub force_full: bool,
    /// CBT was switched on by this run (so no earlier change id is meaningful).
    pub cbt_just_enabled: bool,
    /// The disk's capacity now.
    pub capacity: u64,
    /// The disk's uuid now.
    pub disk_uuid: Option<&'a str>,
    /// The previous generation's record of this disk, if any.
    pub previous: Option<&'a PreviousDisk>,
}

/// Decides full or incremental for one disk.
pub fn plan_disk(f: &DiskFacts<'_>) -> DiskPlan {
    let full = DiskPlan::full;
    if f.force_full {
        return full("--full was given".into());
    }
    if f.cbt_just_enabled {
        return full("change tracking was just enabled".into());
    }
    let Some(prev) = f.previous else {
        return full("no previous successful generation has this disk".into());
    };
    if prev.capacity != f.capacity {
        return full(format!(
            "capacity changed from {} to {} bytes since generation {}",
            prev.capacity, f.capacity, prev.generation
        ));
    }
    if let (Some(then), Some(now)) = (prev.disk_uuid.as_deref(), f.disk_uuid) {
        if !then.eq_ignore_ascii_case(now) {
            return full(format!(
                "the disk was replaced since generation {} (uuid {then} is now {now})",
                prev.generation
            ));
        }
    }
    match prev.change_id.as_deref() {
        Some(id) if !id.is_empty() && id != "*" => DiskPlan {
            mode: DiskMode::Incremental,
            reason: format!(
                "changes since generation {} (change id {id})",
                prev.generation
            ),
            since_change_id: id.to_string(),
            base: None,
        },
        _ => full(format!(
            "generation {} recorded no change id for this disk",
            prev.generation
        )),
    }
}

/// Step 1b: for an incremental `plan`, reads and verifies its base — the index of disk
/// `disk_key` in generation `previous.generation` of `target` — and keeps it in the plan. A
/// base that cannot be read or verified (damaged, missing, copied from elsewhere, not the one
/// that generation committed) turns the plan into a full read of this disk, said in the log
/// (a warning naming the file) and in the plan's reason: the backup goes on and commits, and
/// nothing is built on a base that cannot be trusted. `what` names the disk in the log.
pub async fn verify_base(
    repo: &repository_format::Repository,
    plan: &mut DiskPlan,
    target: &TargetKey,
    previous: Option<&PreviousDisk>,
    disk_key: i32,
    what: &str,
) {
    let Some(prev) = previous.filter(|_| plan.mode == DiskMode::Incremental) else {
        return;
    };
    let repo = repo.clone();
    let target = target.clone();
    let generation = GenerationId(prev.generation);
    let loaded = blocking(move || Ok(repo.fixed_index(&target, generation, disk_key)?))
        .await
        .map_err(|e| e.to_string());
    apply_base(plan, prev.generation, loaded, what);
}

/// [`verify_base`] once the base was read: keeps it, or makes the plan a full read and says
/// why.
fn apply_base(
    plan: &mut DiskPlan,
    generation: u64,
    loaded: std::result::Result<FixedIndex, String>,
    what: &str,
) {
    match loaded {
        Ok(index) => plan.base = Some(Arc::new(index)),
        Err(e) => {
            tracing::warn!(
                disk = %what,
                "the index of generation {generation} cannot be the base of an incremental \
                 ({e}); reading this disk in full"
            );
            *plan = DiskPlan::full(format!(
                "the index of generation {generation} cannot be used as the base: {e}"
            ));
        }
    }
}

/// Step 2: the areas of a disk to read, as `query(since)` answers (`since` is `*` or a change
/// id). When vCenter refuses the plan's change id, the plan becomes a full read (said in the
/// log and in the plan's reason) and `query("*")` answers instead. `what` names the disk in
/// the log.
///
/// # Errors
/// vCenter faults other than a refused change id, and any fault of the full query.
pub async fn changed_areas<F, Fut>(plan: &mut DiskPlan, what: &str, query: F) -> Result<Vec<Area>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = std::result::Result<Vec<vim_client::DiskArea>, vim_client::Error>>,
{
    let areas = match query(plan.since_change_id.clone()).await {
        Ok(a) => a,
        Err(e) if plan.mode == DiskMode::Incremental && e.fault_kind().is_some() => {
            tracing::warn!(
                disk = %what,
                "change id {} was refused ({e}); reading this disk in full",
                plan.since_change_id
            );
            *plan = DiskPlan::full(format!(
                "vCenter refused change id {}: {e}",
                plan.since_change_id
            ));
            query("*".into()).await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(areas
        .into_iter()
        .map(|a| Area::new(a.start, a.length))
        .collect())
}

/// One disk as decided before the generation is written: steps 1 and 2 done.
#[derive(Debug)]
pub struct PlannedDisk {
    /// Position in the target (0-based).
    pub index: usize,
    /// Full or incremental, and why.
    pub plan: DiskPlan,
    /// The disk as the manifest will record it.
    pub descriptor: DiskDescriptor,
    /// Where VDDK reads it.
    pub source: SnapshotDisk,
    /// What to read.
    pub areas: Vec<Area>,
}

/// Step 3 for one disk: loads the base index of an incremental (from `previous`, the target's
/// key and generation), reads the disk's areas into `writer` and says what it did.
///
/// # Errors
/// See [`ingest_disk`]; also a base index that cannot be read.
pub async fn read_disk(
    ctx: &BackupContext,
    writer: Arc<GenerationWriter>,
    d: PlannedDisk,
    previous: Option<(&TargetKey, GenerationId)>,
    progress_label: String,
    cancel: &Cancel,
) -> Result<DiskResult> {
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    tracing::info!(
        disk = %progress_label,
        "{} changed area(s), {} bytes to read",
        d.areas.len(),
        changed_areas::total(&d.areas)
    );
    let key = d.descriptor.key;
    let mut d = d;
    let base = match (d.plan.mode, d.plan.base.clone(), previous) {
        (DiskMode::Incremental, Some(base), _) => Some(base),
        // Not verified when planned (a caller that skipped `verify_base`): read it now. One
        // that fails here cannot turn into a full read of the allocated areas any more (they
        // were asked for the incremental), so the whole disk is read: slower, never wrong.
        (DiskMode::Incremental, None, Some((target, g))) => {
            let repo = ctx.repo.clone();
            let target = target.clone();
            match blocking(move || Ok(repo.fixed_index(&target, g, key)?)).await {
                Ok(b) => Some(Arc::new(b)),
                Err(e) => {
                    tracing::warn!(
                        disk = %progress_label,
                        "the index of generation {g} cannot be the base of an incremental \
                         ({e}); reading the whole disk"
                    );
                    d.plan = DiskPlan::full(format!(
                        "the index of generation {g} cannot be used as the base: {e}"
                    ));
                    d.areas = vec![Area::new(0, d.descriptor.capacity)];
                    d.descriptor.change_id_used = None;
                    None
                }
            }
        }
        _ => None,
    };
    let change_id = d.descriptor.change_id.clone();
    let label = d.descriptor.label.clone();
    let capacity = d.descriptor.capacity;
    let (stats, transport) = ingest_disk(
        ctx,
        writer,
        DiskIngest {
            source: d.source,
            descriptor: d.descriptor,
            base,
            areas: d.areas,
            progress_label,
        },
        cancel,
    )
    .await?;
    Ok(DiskResult {
        index: d.index,
        key,
        label,
        capacity,
        mode: d.plan.mode,
        reason: d.plan.reason,
        bytes_read: stats.read_bytes,
        bytes_new: stats.new_bytes,
        bytes_stored: stats.stored_bytes,
        change_id,
        transport,
    })
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

/// Asynchronous VDDK reads kept in flight ahead of the ingest.
const READ_AHEAD: usize = 4;

/// The frozen disk VDDK reads: where to connect and which file to open.
#[derive(Debug, Clone)]
pub enum SnapshotDisk {
    /// A VM's disk at a VM snapshot.
    Vm {
        /// The VM.
        vm: MoRef,
        /// The backup's snapshot of it.
        snapshot: MoRef,
        /// The disk's file as the snapshot names it.
        path: String,
        /// Transport modes for this target (`--transport`, `[targets."…"] transports`);
        /// `None`: the run's (`[vddk] transports`).
        transports: Option<String>,
    },
    /// A first class disk at one of its own snapshots.
    FirstClass {
        /// The disk's id.
        id: String,
        /// Its datastore's managed object id.
        datastore: String,
        /// The disk snapshot's id.
        snapshot: String,
        /// The disk's file.
        path: String,
    },
}

impl SnapshotDisk {
    /// Connects read-only to the snapshot and opens the disk. Blocking.
    fn open(&self, vddk: &VddkEndpoint) -> Result<(Connection, Disk)> {
        match self {
            SnapshotDisk::Vm {
                vm,
                snapshot,
                path,
                transports,
            } => {
                let vddk = match transports {
                    Some(t) => vddk.with_transports(t),
                    None => vddk.clone(),
                };
                let conn = vddk.connect_snapshot(&vm.value, &snapshot.value)?;
                let disk = conn
                    .open(path, vddk::OpenFlags::READ_ONLY)
                    .map_err(|e| Error::vddk(format!("open {path}"), e))?;
                Ok((conn, disk))
            }
            SnapshotDisk::FirstClass {
                id,
                datastore,
                snapshot,
                path,
            } => {
                let conn = vddk.connect_fcd(id, datastore, Some(snapshot))?;
                let disk = conn
                    .open(path, vddk::OpenFlags::READ_ONLY)
                    .map_err(|e| Error::vddk(format!("open first class disk {id}"), e))?;
                Ok((conn, disk))
            }
        }
    }
}

/// One disk to read into a generation.
#[derive(Debug)]
pub struct DiskIngest {
    /// Where VDDK reads it.
    pub source: SnapshotDisk,
    /// The disk as the manifest records it (its capacity bounds the reads).
    pub descriptor: DiskDescriptor,
    /// The previous generation's index of this disk, for an incremental.
    pub base: Option<Arc<FixedIndex>>,
    /// The areas to read (all allocated areas for a full, the changed ones otherwise).
    pub areas: Vec<Area>,
    /// The progress bar's label.
    pub progress_label: String,
}

/// Step 3's data path: reads one disk into `writer` on a blocking thread that owns its VDDK connection, with
/// `READ_AHEAD` asynchronous reads in flight and a progress bar unless `-q`.
///
/// The disk first takes one of the run's VDDK connection permits
/// ([`BackupContext::vddk_connections`]) and holds it until its connection is closed, so the
/// disks read at once, across every target of the run, never exceed `max_vddk_connections`.
/// Several disks may be read into the same `writer` at the same time. Returns the ingest's
/// statistics and the transport mode VDDK chose for the disk (also recorded in the disk's
/// manifest entry as `transport`, and logged).
///
/// # Errors
/// VDDK connect, open and read failures, repository write failures, and
/// [`Error::Interrupted`] when `cancel` ended the wait or the reads.
pub async fn ingest_disk(
    ctx: &BackupContext,
    writer: Arc<GenerationWriter>,
    job: DiskIngest,
    cancel: &Cancel,
) -> Result<(DiskStats, Option<String>)> {
    let permit = tokio::select! {
        permit = ctx.vddk_connections.clone().acquire_owned() => permit
            .map_err(|_| Error::Other("the VDDK connection limit was closed".into()))?,
        _ = cancel.cancelled() => return Err(Error::Interrupted),
    };
    let vddk = ctx.vddk.clone();
    let cancel = cancel.clone();
    let show = ctx.options.show_progress;
    tokio::task::spawn_blocking(move || {
        // Released when this closure returns, after the connection is closed.
        let _permit = permit;
        let (conn, disk) = job.source.open(&vddk)?;
        let transport = disk.transport_mode();
        tracing::info!(disk = %job.progress_label, transport = transport.as_deref().unwrap_or("unknown"), "VDDK transport mode");
        let mut descriptor = job.descriptor;
        if let Some(t) = &transport {
            // DiskDescriptor keeps unknown fields: no format change.
            descriptor.extra.insert("transport".into(), t.clone().into());
        }
        // One plan for both sides: the repository decides what it will read (changed areas
        // plus inherited chunks it must heal), and VDDK reads ahead exactly that.
        let plan = writer.plan_reads(descriptor.capacity, job.base.as_deref(), &job.areas)?;
        let mut source =
            VddkSource::new(disk, cancel.clone()).with_read_ahead(plan.reads.clone(), READ_AHEAD);
        let to_read = changed_areas::total(&plan.areas);
        let progress = Progress::new(job.progress_label, to_read, !show);
        let stats = writer.ingest_planned_disk(
            descriptor,
            job.base.as_deref(),
            &plan,
            &mut source,
            &|n| progress.add(n),
        );
        progress.finish();
        // The disk closes before its connection.
        drop(source);
        drop(conn);
        stats.map(|s| (s, transport)).map_err(|e| {
            if cancel.is_cancelled() {
                Error::Interrupted
            } else {
                e.into()
            }
        })
    })
    .await
    .map_err(|e| Error::Other(format!("disk worker failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev(capacity: u64, change_id: Option<&str>) -> PreviousDisk {
        PreviousDisk {
            generation: 4,
            capacity,
            change_id: change_id.map(str::to_string),
            disk_uuid: Some("6000C29a".into()),
        }
    }

    /// A base index that cannot be read or verified makes the disk a full read (`*`), says
    /// why, and drops the base; a verified one is kept for the ingest.
    #[test]
    fn an_unusable_base_makes_the_disk_a_full_read() {
        let p = prev(100, Some("52 aa/3"));
        let mut plan = plan_disk(&facts(Some(&p)));
        assert_eq!(plan.mode, DiskMode::Incremental);
        apply_base(
            &mut plan,
            4,
            Err("index /r/disk-2000.fidx: CRC32 mismatch".into()),
            "web01 Hard disk 1",
        );
        assert_eq!(plan.mode, DiskMode::Full);
        assert_eq!(plan.since_change_id, "*");
        assert!(plan.base.is_none());
        assert!(
            plan.reason.contains("generation 4") && plan.reason.contains("disk-2000.fidx"),
            "{}",
            plan.reason
        );
        let mut plan = plan_disk(&facts(Some(&p)));
        let index = FixedIndex::new(100 << 16, 1 << 16).unwrap();
        apply_base(&mut plan, 4, Ok(index.clone()), "web01 Hard disk 1");
        assert_eq!(plan.mode, DiskMode::Incremental);
        assert_eq!(plan.base.as_deref(), Some(&index));
    }

    fn facts(previous: Option<&PreviousDisk>) -> DiskFacts<'_> {
        DiskFacts {
            force_full: false,
            cbt_just_enabled: false,
            capacity: 100,
            disk_uuid: Some("6000c29A"),
            previous,
        }
    }

    #[test]
    fn incremental_when_everything_matches() {
        let p = prev(100, Some("52 aa/3"));
        let plan = plan_disk(&facts(Some(&p)));
        assert_eq!(plan.mode, DiskMode::Incremental);
        assert_eq!(plan.since_change_id, "52 aa/3");
    }

    #[test]
    fn full_for_each_reason() {
        let p = prev(100, Some("52 aa/3"));
        let mut f = facts(Some(&p));
        f.force_full = true;
        assert!(plan_disk(&f).reason.contains("--full"));
        let mut f = facts(Some(&p));
        f.cbt_just_enabled = true;
        assert!(plan_disk(&f).reason.contains("just enabled"));
        assert!(plan_disk(&facts(None)).reason.contains("no previous"));
        let grown = prev(50, Some("x"));
        let plan = plan_disk(&facts(Some(&grown)));
        assert_eq!(plan.mode, DiskMode::Full);
        assert!(plan.reason.contains("capacity changed"));
        let mut f = facts(Some(&p));
        f.disk_uuid = Some("6000c29b");
        let plan = plan_disk(&f);
        assert_eq!(plan.mode, DiskMode::Full);
        assert!(plan.reason.contains("replaced"), "{}", plan.reason);
        for bad in [None, Some(""), Some("*")] {
            let p = prev(100, bad);
            let plan = plan_disk(&facts(Some(&p)));
            assert_eq!(plan.mode, DiskMode::Full, "{bad:?}");
            assert_eq!(plan.since_change_id, "*");
        }
    }

    #[test]
    fn a_disk_without_capacity_is_refused() {
        let e = require_capacity(0, "disk 1 (Hard disk 2) of VM web01").unwrap_err();
        assert!(e.to_string().contains("Hard disk 2"), "{e}");
        assert!(e.to_string().contains("no capacity"), "{e}");
        assert!(require_capacity(512, "disk 0").is_ok());
    }
}
