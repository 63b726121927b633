//! The first class disk snapshot that freezes an `ivd:` target while it is read, deleted on
//! every path (success, error, interruption; from `Drop` as a last resort). Snapshots of ours
//! left by a killed run carry [`DESCRIPTION`] and are deleted by the next backup.

use vim_client::MoRef;

use crate::error::{Error, Result};
use crate::vsphere::Vcenter;
use vim_client::FcdApi;

/// The description of every first class disk snapshot safekeeping takes.
pub const DESCRIPTION: &str = "safekeeping backup in progress; removed when the backup ends";

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
    /// Snapshots disk `disk` on `datastore`.
    ///
    /// # Errors
    /// The fault of VStorageObjectCreateSnapshot_Task.
    pub async fn create(
        vc: &Vcenter,
        api: &FcdApi,
        disk: &str,
        datastore: &MoRef,
    ) -> Result<FcdSnapshotGuard> {
        let id = api
            .create_snapshot(&vc.client, disk, datastore, DESCRIPTION)
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
    /// The fault of DeleteSnapshot_Task; the next backup of the disk deletes it then.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.api
            .delete_snapshot(&self.vc.client, &self.disk, &self.datastore, &self.id)
            .await
            .map_err(|e| {
                Error::Other(format!(
                    "could not delete snapshot {} of first class disk {}: {e}; the next backup of this disk deletes it",
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

/// Deletes snapshots of `disk` left by interrupted runs (ours by their description),
/// returning their ids.
///
/// # Errors
/// vCenter faults.
pub async fn remove_leftovers(
    vc: &Vcenter,
    api: &FcdApi,
    disk: &str,
    datastore: &MoRef,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for s in api.snapshots(&vc.client, disk, datastore).await? {
        if s.description == DESCRIPTION {
            tracing::warn!(ivd = %disk, snapshot = %s.id, "deleting a snapshot left by an earlier, interrupted run");
            api.delete_snapshot(&vc.client, disk, datastore, &s.id)
                .await?;
            removed.push(s.id);
        }
    }
    Ok(removed)
}
