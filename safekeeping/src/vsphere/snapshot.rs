//! Step 3 of a backup: the `safekeeping-<UTC>` snapshot that freezes the disks while they are
//! read, removed on every path: success, error, Ctrl-C and SIGTERM (the backup awaits
//! [`SnapshotGuard::remove`] on all of them), and as a last resort from `Drop` after a panic.
//! A snapshot left by a killed run is found and removed by [`remove_leftovers`] at the next
//! backup of the VM.

use vim_client::{MoRef, SnapshotInfo, VmConfig};

use crate::error::{Error, Result};
use crate::vsphere::snapshot_name::{is_ours, snapshot_name};
use crate::vsphere::Vcenter;

/// A snapshot safekeeping created and still has to remove.
#[derive(Debug)]
pub struct SnapshotGuard {
    vc: Vcenter,
    vm: MoRef,
    snapshot: MoRef,
    name: String,
    quiesced: bool,
    armed: bool,
}

const DESCRIPTION: &str = "safekeeping backup in progress; removed when the backup ends";

impl SnapshotGuard {
    /// Creates the snapshot (memory off). With `quiesce`, a failed quiesced snapshot is retried
    /// once without quiescing, with a warning.
    ///
    /// # Errors
    /// The fault of the (last) CreateSnapshot_Task.
    pub async fn create(vc: &Vcenter, vm: &MoRef, quiesce: bool) -> Result<SnapshotGuard> {
        let name = snapshot_name(time::OffsetDateTime::now_utc());
        let c = &vc.client;
        let (snapshot, quiesced) = match c
            .create_snapshot(vm, &name, DESCRIPTION, false, quiesce)
            .await
        {
            Ok(s) => (s, quiesce),
            Err(e) if quiesce => {
                tracing::warn!(
                    vm = %vm.value,
                    "quiesced snapshot failed ({e}); retrying once without quiescing"
                );
                (
                    c.create_snapshot(vm, &name, DESCRIPTION, false, false)
                        .await?,
                    false,
                )
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(vm = %vm.value, snapshot = %snapshot.value, %name, quiesced, "snapshot created");
        Ok(SnapshotGuard {
            vc: vc.clone(),
            vm: vm.clone(),
            snapshot,
            name,
            quiesced,
            armed: true,
        })
    }

    /// The snapshot's managed object reference.
    pub fn moref(&self) -> &MoRef {
        &self.snapshot
    }

    /// The snapshot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the guest was quiesced.
    pub fn quiesced(&self) -> bool {
        self.quiesced
    }

    /// The snapshot's frozen configuration: its disk backings are what the backup reads.
    ///
    /// # Errors
    /// vCenter errors.
    pub async fn config(&self) -> Result<VmConfig> {
        Ok(self.vc.client.snapshot_config(&self.snapshot).await?)
    }

    /// Removes the snapshot (consolidating the disks).
    ///
    /// # Errors
    /// The fault of RemoveSnapshot_Task; the snapshot is then left for the next backup's
    /// leftover cleanup, and the error says so.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.vc
            .client
            .remove_snapshot(&self.snapshot, true)
            .await
            .map_err(|e| {
                Error::Other(format!(
                    "could not remove snapshot {} ({}) of {}: {e}; the next backup of this VM removes it",
                    self.name, self.snapshot.value, self.vm.value
                ))
            })?;
        tracing::info!(vm = %self.vm.value, snapshot = %self.name, "snapshot removed");
        Ok(())
    }
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(snapshot = %self.name, "snapshot guard dropped without removal; removing it now");
        // A separate thread with its own runtime: this may run while the process unwinds.
        let client = self.vc.client.clone();
        let snapshot = self.snapshot.clone();
        let removal = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(client.remove_snapshot(&snapshot, true)) {
                        tracing::error!(snapshot = %snapshot.value, "cannot remove snapshot: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot start a runtime to remove the snapshot: {e}"),
            }
        });
        let _ = removal.join();
    }
}

/// Removes `safekeeping-*` snapshots left by runs that were killed, returning their names.
///
/// # Errors
/// vCenter errors.
pub async fn remove_leftovers(
    vc: &Vcenter,
    vm: &MoRef,
    snapshots: &SnapshotInfo,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for s in snapshots.all() {
        if is_ours(&s.name) {
            tracing::warn!(vm = %vm.value, snapshot = %s.name, "removing a snapshot left by an earlier, interrupted run");
            vc.client.remove_snapshot(&s.snapshot, true).await?;
            removed.push(s.name.clone());
        }
    }
    Ok(removed)
}
