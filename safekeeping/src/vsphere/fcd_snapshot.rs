//! The first class disk snapshot that freezes an `ivd:` target while it is read, deleted on
//! every path (success, error, interruption; from `Drop` as a last resort). Its description
//! records its owner (run, repository, host: [`crate::vsphere::snapshot_owner`]); one left by
//! a killed run is deleted by the next backup of the disk into the same repository once that
//! run provably ended. Snapshots of other runs, repositories and tools are left alone.

use vim_client::MoRef;

use crate::error::{Error, Result};
use crate::vsphere::snapshot_owner::{judge, Judge, SnapshotOwner, Verdict};
use crate::vsphere::Vcenter;
use vim_client::FcdApi;

/// A first class disk snapshot still to be deleted.
#[derive(Debug)]
pub struct FcdSnapshotGuard {
    vc: Vcenter,
    api: FcdApi,
    disk: String,
    datastore: MoRef,
    id: String,
    armed: bool,
}

impl FcdSnapshotGuard {
    /// Snapshots disk `disk` on `datastore`, described with its `owner`.
    ///
    /// # Errors
    /// The fault of VStorageObjectCreateSnapshot_Task.
    pub async fn create(
        vc: &Vcenter,
        api: &FcdApi,
        disk: &str,
        datastore: &MoRef,
        owner: &SnapshotOwner,
    ) -> Result<FcdSnapshotGuard> {
        let id = api
            .create_snapshot(&vc.client, disk, datastore, &owner.description())
            .await?;
        tracing::info!(ivd = %disk, snapshot = %id, "first class disk snapshot created");
        Ok(FcdSnapshotGuard {
            vc: vc.clone(),
            api: api.clone(),
            disk: disk.to_string(),
            datastore: datastore.clone(),
            id,
            armed: true,
        })
    }

    /// The snapshot id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Deletes the snapshot.
    ///
    /// # Errors
    /// The fault of DeleteSnapshot_Task; the next backup of the disk into the same repository
    /// deletes it then.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.api
            .delete_snapshot(&self.vc.client, &self.disk, &self.datastore, &self.id)
            .await
            .map_err(|e| {
                Error::Other(format!(
                    "could not delete snapshot {} of first class disk {}: {e}; the next backup of this disk into this repository deletes it",
                    self.id, self.disk
                ))
            })?;
        tracing::info!(ivd = %self.disk, snapshot = %self.id, "first class disk snapshot deleted");
        Ok(())
    }
}

impl Drop for FcdSnapshotGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(ivd = %self.disk, snapshot = %self.id, "snapshot guard dropped without removal; deleting it now");
        let (vc, api) = (self.vc.clone(), self.api.clone());
        let (disk, datastore, id) = (self.disk.clone(), self.datastore.clone(), self.id.clone());
        // Its own thread and runtime: this may run while the process unwinds.
        let _ = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    if let Err(e) =
                        rt.block_on(api.delete_snapshot(&vc.client, &disk, &datastore, &id))
                    {
                        tracing::error!(ivd = %disk, snapshot = %id, "cannot delete snapshot: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot start a runtime to delete the snapshot: {e}"),
            }
        })
        .join();
    }
}

/// Deletes the snapshots of `disk` that runs into this repository left behind and that
/// provably ended (see [`judge`]), returning their ids; every other snapshot stays, and one
/// that looks like ours but stays is logged with why.
///
/// Call it holding the target's lock. `live_runs` is called only after the snapshots were
/// listed, so that every run whose snapshot is listed and still runs is among the live runs
/// it reports.
///
/// # Errors
/// vCenter faults, and those of `live_runs`.
pub async fn remove_leftovers<F, Fut>(
    vc: &Vcenter,
    api: &FcdApi,
    disk: &str,
    datastore: &MoRef,
    live_runs: F,
) -> Result<Vec<String>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Judge>>,
{
    let snapshots = api.snapshots(&vc.client, disk, datastore).await?;
    if snapshots.is_empty() {
        return Ok(Vec::new());
    }
    let judge_by = live_runs().await?;
    let mut removed = Vec::new();
    for s in snapshots {
        // First class disk snapshots have no name: the description alone says whose they are.
        match judge(&judge_by, &s.description, true, &s.create_time) {
            Verdict::Remove(why) => {
                tracing::warn!(ivd = %disk, snapshot = %s.id, "deleting a leftover snapshot: {why}");
                match api
                    .delete_snapshot(&vc.client, disk, datastore, &s.id)
                    .await
                {
                    Ok(()) => removed.push(s.id),
                    // Another backup (into another repository, or of the previous release)
                    // deleted it first: what we wanted.
                    Err(e) if e.is_fault(&vim_client::FaultKind::NotFound) => {
                        tracing::info!(ivd = %disk, snapshot = %s.id, "the leftover snapshot was already deleted");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Verdict::Keep { why, warn: true } => {
                tracing::warn!(ivd = %disk, snapshot = %s.id, "leaving snapshot: {why}");
            }
            Verdict::Keep { why, warn: false } => {
                tracing::debug!(ivd = %disk, snapshot = %s.id, "leaving snapshot: {why}");
            }
        }
    }
    Ok(removed)
}
