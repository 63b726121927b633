//! What a restore was asked to do, resolved once from the command line and the configuration:
//! the wing works from these plain values and never sees clap.

use std::time::Duration;

use clap::ValueEnum;

use crate::target::Target;

/// How restore builds the new VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// CreateVM_Task with a spec rebuilt from the saved configuration.
    Create,
    /// Upload the saved .vmx, RegisterVM_Task, then add devices with ReconfigVM_Task.
    Import,
}

/// One restore: the target and generation, where and how to build it.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backed-up target.
    pub target: Target,
    /// Generation to restore (`None`: the latest successful one).
    pub generation: Option<u64>,
    /// Name of the restored VM, vApp or first class disk (`None`: NAME-restored-TIMESTAMP).
    pub name: Option<String>,
    /// Replace an existing VM of that name.
    pub overwrite: bool,
    /// With `overwrite`: power the existing VM off first.
    pub force: bool,
    /// Keep the original identity (uuids, MAC addresses).
    pub recovery: bool,
    /// Create or import.
    pub mode: RestoreMode,
    /// Datacenter to restore into.
    pub datacenter: Option<String>,
    /// VM folder (name or path).
    pub folder: Option<String>,
    /// Resource pool.
    pub resource_pool: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Datastore for the VM files and every disk.
    pub datastore: Option<String>,
    /// Datastore per disk: `(index, datastore)`.
    pub disk_datastore: Vec<(u32, String)>,
    /// Network mapping `(old, new)`.
    pub network: Vec<(String, String)>,
    /// Power on at the end.
    pub power_on: bool,
    /// For a first class disk: attach the restored disk to this VM.
    pub attach: Option<Target>,
    /// VDDK connections open at once, i.e. disks written at the same time (at least 1).
    pub max_connections: usize,
    /// How long to wait for the repository lock.
    pub lock_wait: Duration,
    /// Progress bars allowed (not `-q`).
    pub show_progress: bool,
    /// Leave out the disks the backup excluded instead of recreating them empty.
    pub drop_excluded_disks: bool,
    /// Only backups taken from the vCenter `[vcenters.NAME]` (`--vcenter NAME`): two vCenters
    /// may both have a VM of the restored name. `None`: from any vCenter.
    pub from_vcenter: Option<String>,
    /// Storage policy (by name) for the VM home and every disk (`--profile`).
    pub profile: Option<String>,
    /// Storage policy per disk: `(index, policy name)` (`--disk-profile N=POLICY`).
    pub disk_profile: Vec<(u32, String)>,
}

impl RestoreOptions {
    /// The options of a vApp child: restored by creation into the vApp under `name`, from its
    /// own generation, with the vApp restore's placement, mapping and limits.
    pub fn for_vapp_child(&self, child: Target, generation: u64, name: String) -> RestoreOptions {
        RestoreOptions {
            target: child,
            generation: Some(generation),
            name: Some(name),
            overwrite: false,
            force: false,
            mode: RestoreMode::Create,
            power_on: false,
            attach: None,
            ..self.clone()
        }
    }
}
