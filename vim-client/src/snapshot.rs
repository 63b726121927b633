//! Snapshots: the snapshot tree, creating and removing snapshots, a snapshot's configuration.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::vm_config::VmConfig;
use crate::xml::Element;

/// A VM's snapshots (`VirtualMachineSnapshotInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot the VM is running from.
    pub current: Option<MoRef>,
    /// The root snapshots with their children.
    pub roots: Vec<SnapshotTree>,
}

/// One snapshot and its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTree {
    /// The snapshot object.
    pub snapshot: MoRef,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The per-VM snapshot id.
    pub id: Option<i32>,
    /// Creation time (`xsd:dateTime` text).
    pub create_time: String,
    /// The power state when it was taken.
    pub state: String,
    /// Whether the guest file systems were quiesced.
    pub quiesced: bool,
    /// Child snapshots.
    pub children: Vec<SnapshotTree>,
}

impl SnapshotTree {
    fn from_element(e: &Element) -> Result<SnapshotTree> {
        let snapshot = e
            .get("snapshot")
            .ok_or_else(|| Error::Unexpected("snapshot tree node without snapshot".into()))
            .and_then(MoRef::from_element)?;
        Ok(SnapshotTree {
            snapshot,
            name: e.text_at("name").unwrap_or_default().to_owned(),
            description: e.text_at("description").unwrap_or_default().to_owned(),
            id: e.parse_at("id"),
            create_time: e.text_at("createTime").unwrap_or_default().to_owned(),
            state: e.text_at("state").unwrap_or_default().to_owned(),
            quiesced: e.bool_at("quiesced").unwrap_or(false),
            children: e
                .all("childSnapshotList")
                .map(SnapshotTree::from_element)
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn windows_spec_carries_the_vss_options() {
        let spec = QuiesceSpec {
            timeout_minutes: Some(10),
            windows: Some(WindowsQuiesceSpec {
                backup_type: Some(5),
                bootable_system_state: Some(true),
                partial_file_support: None,
                backup_context: Some("ctx_backup".into()),
            }),
        };
        let e = spec.to_element();
        assert_eq!(e.type_name(), Some("VirtualMachineWindowsQuiesceSpec"));
        assert_eq!(e.text_at("timeout"), Some("10"));
        assert_eq!(e.text_at("vssBackupType"), Some("5"));
        assert_eq!(e.text_at("vssBootableSystemState"), Some("true"));
        assert_eq!(e.get("vssPartialFileSupport"), None);
        assert_eq!(e.text_at("vssBackupContext"), Some("ctx_backup"));
        let plain = QuiesceSpec {
            timeout_minutes: Some(5),
            windows: None,
        }
        .to_element();
        assert_eq!(plain.type_name(), Some("VirtualMachineGuestQuiesceSpec"));
    }
}

impl SnapshotInfo {
    /// Reads a `VirtualMachineSnapshotInfo` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] for a node without a snapshot reference.
    pub fn from_element(e: &Element) -> Result<SnapshotInfo> {
        Ok(SnapshotInfo {
            current: e
                .get("currentSnapshot")
                .map(MoRef::from_element)
                .transpose()?,
            roots: e
                .all("rootSnapshotList")
                .map(SnapshotTree::from_element)
                .collect::<Result<_>>()?,
        })
    }

    /// Every snapshot, depth first.
    pub fn all(&self) -> Vec<&SnapshotTree> {
        fn walk<'a>(nodes: &'a [SnapshotTree], out: &mut Vec<&'a SnapshotTree>) {
            for n in nodes {
                out.push(n);
                walk(&n.children, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.roots, &mut out);
        out
    }

    /// The snapshots with this name.
    pub fn find_by_name(&self, name: &str) -> Vec<&SnapshotTree> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }
}

/// How a quiesced snapshot quiesces (`VirtualMachineGuestQuiesceSpec`, sent with
/// `CreateSnapshotEx_Task`, vSphere API 6.5 and later).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuiesceSpec {
    /// Longest time, in minutes, the guest may take to quiesce (vSphere accepts 5 to 240).
    pub timeout_minutes: Option<i32>,
    /// For Windows guests: the VSS options (`VirtualMachineWindowsQuiesceSpec`).
    pub windows: Option<WindowsQuiesceSpec>,
}

/// The VSS options of `VirtualMachineWindowsQuiesceSpec`; unset fields are left to the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowsQuiesceSpec {
    /// `VSS_BACKUP_TYPE`: 1 full, 2 incremental, 3 differential, 4 log, 5 copy.
    pub backup_type: Option<i32>,
    /// Whether the backup includes a bootable system state.
    pub bootable_system_state: Option<bool>,
    /// Whether writers may report partial files.
    pub partial_file_support: Option<bool>,
    /// `ctx_auto`, `ctx_backup` or `ctx_file_share_backup`.
    pub backup_context: Option<String>,
}

impl QuiesceSpec {
    /// The `quiesceSpec` element, typed as the Windows spec when there are VSS options.
    pub fn to_element(&self) -> Element {
        let typed = if self.windows.is_some() {
            "VirtualMachineWindowsQuiesceSpec"
        } else {
            "VirtualMachineGuestQuiesceSpec"
        };
        let mut e = Element::vim("quiesceSpec").typed(typed);
        if let Some(t) = self.timeout_minutes {
            e = e.text_child("timeout", t.to_string());
        }
        if let Some(w) = &self.windows {
            if let Some(t) = w.backup_type {
                e = e.text_child("vssBackupType", t.to_string());
            }
            if let Some(b) = w.bootable_system_state {
                e = e.text_child("vssBootableSystemState", b.to_string());
            }
            if let Some(b) = w.partial_file_support {
                e = e.text_child("vssPartialFileSupport", b.to_string());
            }
            if let Some(c) = &w.backup_context {
                e = e.text_child("vssBackupContext", c.clone());
            }
        }
        e
    }
}

impl Client {
    /// Takes a quiesced snapshot of `vm` as `spec` says (`CreateSnapshotEx_Task`) and waits
    /// for it; returns the snapshot.
    ///
    /// # Errors
    ///
    /// Task faults (`ApplicationQuiesceFault`, `TaskInProgress`, ...), `MethodNotFound` on
    /// servers older than 6.5, and timeouts.
    pub async fn create_snapshot_ex(
        &self,
        vm: &MoRef,
        name: &str,
        description: &str,
        memory: bool,
        spec: &QuiesceSpec,
    ) -> Result<MoRef> {
        let body = Element::vim("CreateSnapshotEx_Task")
            .child(vm.to_element("_this"))
            .text_child("name", name)
            .text_child("description", description)
            .text_child("memory", memory.to_string())
            .child(spec.to_element());
        // The guest may take the whole quiesce timeout: waiting less would give up on a
        // snapshot vCenter still takes (and leave it behind).
        let wait = match spec.timeout_minutes {
            Some(m) => self.task_timeout().max(std::time::Duration::from_secs(
                u64::from(m.unsigned_abs()) * 60 + 300,
            )),
            None => self.task_timeout(),
        };
        let result = self.run_task(body, wait).await?;
        result
            .as_ref()
            .ok_or_else(|| Error::Unexpected("CreateSnapshotEx_Task returned no snapshot".into()))
            .and_then(MoRef::from_element)
    }

    /// Takes a snapshot of `vm` and waits for it; returns the snapshot.
    ///
    /// # Errors
    ///
    /// Task faults (`InvalidPowerState` for a memory snapshot of a powered-off VM,
    /// `TaskInProgress`, ...) and timeouts.
    pub async fn create_snapshot(
        &self,
        vm: &MoRef,
        name: &str,
        description: &str,
        memory: bool,
        quiesce: bool,
    ) -> Result<MoRef> {
        let body = Element::vim("CreateSnapshot_Task")
            .child(vm.to_element("_this"))
            .text_child("name", name)
            .text_child("description", description)
            .text_child("memory", memory.to_string())
            .text_child("quiesce", quiesce.to_string());
        let result = self.run_task(body, self.task_timeout()).await?;
        result
            .as_ref()
            .ok_or_else(|| Error::Unexpected("CreateSnapshot_Task returned no snapshot".into()))
            .and_then(MoRef::from_element)
    }

    /// Removes `snapshot` (not its children) and waits; `consolidate` merges the delta disks.
    ///
    /// # Errors
    ///
    /// Task faults and timeouts.
    pub async fn remove_snapshot(&self, snapshot: &MoRef, consolidate: bool) -> Result<()> {
        let body = Element::vim("RemoveSnapshot_Task")
            .child(snapshot.to_element("_this"))
            .text_child("removeChildren", "false")
            .text_child("consolidate", consolidate.to_string());
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// The configuration recorded in a snapshot: the disk backings as of the snapshot, which
    /// are what a backup reads.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound` for an unknown snapshot.
    pub async fn snapshot_config(&self, snapshot: &MoRef) -> Result<VmConfig> {
        let props = self.object_properties(snapshot, &["config"]).await?;
        let config = props
            .get("config")
            .ok_or_else(|| Error::Unexpected(format!("{snapshot} has no config")))?;
        VmConfig::from_element(config)
    }
}
