//! Step 3 of a backup: the `safekeeping-<UTC>` snapshot that freezes the disks while they are
//! read, removed on every path: success, error, Ctrl-C and SIGTERM (the backup awaits
//! [`SnapshotGuard::remove`] on all of them), and as a last resort from `Drop` after a panic.
//! Its description records its owner (run, repository, host: [`crate::vsphere::snapshot_owner`]).
//! A snapshot left by a killed run is found and removed by [`remove_leftovers`] at the next
//! backup of the VM into the same repository, once that run provably ended; snapshots of other
//! runs, other repositories and other tools are left alone.

use vim_client::{MoRef, QuiesceSpec, SnapshotInfo, VmConfig};

use crate::error::{Error, Result};
use crate::target_settings::QuiesceMode;
use crate::vsphere::snapshot_name::{is_ours, snapshot_name};
use crate::vsphere::snapshot_owner::{judge, Judge, SnapshotOwner, Verdict};
use crate::vsphere::Vcenter;

/// A snapshot safekeeping created and still has to remove.
#[derive(Debug)]
pub struct SnapshotGuard {
    vc: Vcenter,
    vm: MoRef,
    snapshot: MoRef,
    name: String,
    quiesced: bool,
    quiesce_fallback: Option<String>,
    armed: bool,
}

impl SnapshotGuard {
    /// Creates the snapshot (memory off), described with its `owner`, quiescing as `quiesce`
    /// says: with [`QuiesceMode::Try`] a failed quiesced snapshot is retried once without
    /// quiescing, with a warning ([`SnapshotGuard::quiesce_fallback`] says why); with
    /// [`QuiesceMode::Require`] that failure is the error (and no snapshot exists). A quiesced
    /// snapshot with a `spec` (timeout, VSS options) is taken with `CreateSnapshotEx_Task`; a
    /// vCenter older than 6.5, which lacks it, gets the plain quiesced `CreateSnapshot_Task`.
    ///
    /// # Errors
    /// The fault of the (last) CreateSnapshot_Task.
    pub async fn create(
        vc: &Vcenter,
        vm: &MoRef,
        quiesce: QuiesceMode,
        spec: Option<&QuiesceSpec>,
        owner: &SnapshotOwner,
    ) -> Result<SnapshotGuard> {
        let name = snapshot_name(time::OffsetDateTime::now_utc());
        let description = owner.description();
        let c = &vc.client;
        let wanted = quiesce != QuiesceMode::Off;
        let mut fallback = None;
        let first = match spec.filter(|_| wanted) {
            Some(spec) => {
                tracing::info!(vm = %vm.value, ?spec, "quiesced snapshot with a quiesce spec (CreateSnapshotEx)");
                match c
                    .create_snapshot_ex(vm, &name, &description, false, spec)
                    .await
                {
                    Err(e) if e.is_fault(&vim_client::FaultKind::NotSupported) => {
                        tracing::warn!(vm = %vm.value, "this vCenter has no CreateSnapshotEx_Task ({e}); quiescing without the timeout and VSS options");
                        c.create_snapshot(vm, &name, &description, false, true)
                            .await
                    }
                    other => other,
                }
            }
            None => {
                c.create_snapshot(vm, &name, &description, false, wanted)
                    .await
            }
        };
        let (snapshot, quiesced) = match first {
            Ok(s) => (s, wanted),
            Err(e) if quiesce == QuiesceMode::Require => {
                return Err(Error::Other(format!(
                    "quiescing the guest failed and quiesce = require: {e}; no snapshot was taken, nothing was backed up"
                )));
            }
            Err(e) if wanted => {
                tracing::warn!(
                    vm = %vm.value,
                    "quiesced snapshot failed ({e}); retrying once without quiescing (quiesce = try)"
                );
                fallback = Some(e.to_string());
                (
                    c.create_snapshot(vm, &name, &description, false, false)
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
            quiesce_fallback: fallback,
            armed: true,
        })
    }

    /// Why quiescing failed when the snapshot fell back to one without it.
    pub fn quiesce_fallback(&self) -> Option<&str> {
        self.quiesce_fallback.as_deref()
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
    /// The fault of RemoveSnapshot_Task; the snapshot is then left for the leftover cleanup of
    /// the next backup into the same repository, and the error says so.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        self.vc
            .client
            .remove_snapshot(&self.snapshot, true)
            .await
            .map_err(|e| {
                Error::Other(format!(
                    "could not remove snapshot {} ({}) of {}: {e}; the next backup of this VM into this repository removes it",
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

/// Removes the snapshots of `vm` that runs into this repository left behind and that
/// provably ended (see [`judge`]), returning their names; every other snapshot stays, and
/// one that looks like ours but stays is logged with why.
///
/// `snapshots` must be read after the target's lock was taken, and `judge` after `snapshots`
/// (so that every run whose snapshot is listed and still runs is among its live runs).
///
/// # Errors
/// vCenter errors.
pub async fn remove_leftovers(
    vc: &Vcenter,
    vm: &MoRef,
    snapshots: &SnapshotInfo,
    judge_by: &Judge,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for s in snapshots.all() {
        match judge(judge_by, &s.description, is_ours(&s.name), &s.create_time) {
            Verdict::Remove(why) => {
                tracing::warn!(vm = %vm.value, snapshot = %s.name, "removing a leftover snapshot: {why}");
                match vc.client.remove_snapshot(&s.snapshot, true).await {
                    Ok(()) => removed.push(s.name.clone()),
                    // Another backup (into another repository, or of the previous release)
                    // removed it first: what we wanted.
                    Err(e) if e.is_fault(&vim_client::FaultKind::ManagedObjectNotFound) => {
                        tracing::info!(vm = %vm.value, snapshot = %s.name, "the leftover snapshot was already removed");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Verdict::Keep { why, warn: true } => {
                tracing::warn!(vm = %vm.value, snapshot = %s.name, "leaving snapshot: {why}");
            }
            Verdict::Keep { why, warn: false } => {
                tracing::debug!(vm = %vm.value, snapshot = %s.name, "leaving snapshot: {why}");
            }
        }
    }
    Ok(removed)
}
