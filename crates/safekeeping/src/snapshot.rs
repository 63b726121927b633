//! Step 3 of a backup: the `safekeeping-<UTC>` snapshot that freezes the disks while they are
//! read, removed on every path: success, error, Ctrl-C and SIGTERM (the backup awaits
//! [`SnapshotGuard::remove`] on all of them), and as a last resort from `Drop` after a panic.
//! A snapshot left by a killed run is found and removed by [`remove_leftovers`] at the next
//! backup of the VM.

use vim_client::xml::Element;
use vim_client::MoRef;

use crate::error::{Error, Result};
use crate::snapshot_name::{is_ours, snapshot_name};
use crate::vcenter::Vcenter;

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

impl SnapshotGuard {
    /// Creates the snapshot (memory off). With `quiesce`, a failed quiesced snapshot is retried
    /// once without quiescing, with a warning.
    ///
    /// # Errors
    /// The fault of the (last) CreateSnapshot_Task.
    pub async fn create(vc: &Vcenter, vm: &MoRef, quiesce: bool) -> Result<SnapshotGuard> {
        let name = snapshot_name(time::OffsetDateTime::now_utc());
        let attempt = |q: bool| {
            let name = name.clone();
            async move {
                vc.task(
                    "CreateSnapshot_Task",
                    vm,
                    vec![
                        Element::vim_text("name", name),
                        Element::vim_text("description", "safekeeping backup in progress"),
                        Element::vim_text("memory", "false"),
                        Element::vim_text("quiesce", q.to_string()),
                    ],
                )
                .await
            }
        };
        let (result, quiesced) = match attempt(quiesce).await {
            Ok(r) => (r, quiesce),
            Err(e) if quiesce => {
                tracing::warn!(
                    vm = %vm.value,
                    "quiesced snapshot failed ({e}); retrying once without quiescing"
                );
                (attempt(false).await?, false)
            }
            Err(e) => return Err(e),
        };
        let snapshot = result
            .as_ref()
            .map(MoRef::from_element)
            .transpose()?
            .ok_or_else(|| Error::Other("CreateSnapshot_Task returned no snapshot".into()))?;
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

    /// The snapshot's frozen configuration (`VirtualMachineConfigInfo`).
    ///
    /// # Errors
    /// vCenter errors.
    pub async fn config(&self) -> Result<Element> {
        let o = self
            .vc
            .client
            .object_properties(&self.snapshot, &["config"])
            .await?;
        o.get("config")
            .cloned()
            .ok_or_else(|| Error::Other(format!("snapshot {} has no config", self.snapshot.value)))
    }

    /// Removes the snapshot (consolidating the disks).
    ///
    /// # Errors
    /// The fault of RemoveSnapshot_Task; the snapshot is then left for the next backup's
    /// leftover cleanup, and the error says so.
    pub async fn remove(mut self) -> Result<()> {
        self.armed = false;
        remove_snapshot(&self.vc, &self.snapshot).await.map_err(|e| {
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
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let vc = self.vc.clone();
            let snapshot = self.snapshot.clone();
            handle.spawn(async move {
                if let Err(e) = remove_snapshot(&vc, &snapshot).await {
                    tracing::error!(snapshot = %snapshot.value, "cannot remove snapshot: {e}");
                }
            });
        }
    }
}

async fn remove_snapshot(vc: &Vcenter, snapshot: &MoRef) -> Result<()> {
    vc.task(
        "RemoveSnapshot_Task",
        snapshot,
        vec![
            Element::vim_text("removeChildren", "false"),
            Element::vim_text("consolidate", "true"),
        ],
    )
    .await?;
    Ok(())
}

/// A snapshot in a VM's snapshot tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Its reference.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
}

/// Every snapshot of a VM (the whole tree, flattened).
///
/// # Errors
/// vCenter errors.
pub async fn list(vc: &Vcenter, vm: &MoRef) -> Result<Vec<SnapshotEntry>> {
    let o = vc.client.object_properties(vm, &["snapshot"]).await?;
    let mut out = Vec::new();
    if let Some(info) = o.get("snapshot") {
        for tree in info.all("rootSnapshotList") {
            walk(tree, &mut out)?;
        }
    }
    Ok(out)
}

fn walk(tree: &Element, out: &mut Vec<SnapshotEntry>) -> Result<()> {
    if let Some(s) = tree.get("snapshot") {
        out.push(SnapshotEntry {
            moref: MoRef::from_element(s)?,
            name: tree.text_at("name").unwrap_or_default().to_string(),
        });
    }
    for child in tree.all("childSnapshotList") {
        walk(child, out)?;
    }
    Ok(())
}

/// Removes `safekeeping-*` snapshots left by runs that were killed, returning their names.
///
/// # Errors
/// vCenter errors.
pub async fn remove_leftovers(vc: &Vcenter, vm: &MoRef) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for s in list(vc, vm).await? {
        if is_ours(&s.name) {
            tracing::warn!(vm = %vm.value, snapshot = %s.name, "removing a snapshot left by an earlier, interrupted run");
            remove_snapshot(vc, &s.moref).await?;
            removed.push(s.name);
        }
    }
    Ok(removed)
}
