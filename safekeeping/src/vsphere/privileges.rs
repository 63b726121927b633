//! The vCenter privileges safekeeping needs, and which of them the configured user lacks.
//!
//! The lists are the ones `docs/user-guide.md` gives (section "vCenter"); keep both in step.
//! They are checked on the root folder: a role granted there and propagated covers every VM,
//! datastore, pool and network a backup or restore may touch.

use crate::error::Result;
use crate::vsphere::Vcenter;

/// What a backup needs: snapshots, disk reads, change tracking, the VM's files.
pub const BACKUP: &[&str] = &[
    "VirtualMachine.State.CreateSnapshot",
    "VirtualMachine.State.RemoveSnapshot",
    "VirtualMachine.Provisioning.DiskRandomRead",
    "VirtualMachine.Provisioning.DiskRandomAccess",
    "VirtualMachine.Config.ChangeTracking",
    "Datastore.Browse",
    "Datastore.FileManagement",
    // Reading the storage policies a backup records (PBM); without it the backup only warns,
    // and a restore cannot apply the policies by name.
    "StorageProfile.View",
];

/// What a restore needs besides: creating, registering and removing VMs, adding disks,
/// placing them in a pool and on a network.
pub const RESTORE: &[&str] = &[
    "VirtualMachine.Inventory.Create",
    "VirtualMachine.Inventory.Register",
    "VirtualMachine.Inventory.Delete",
    "VirtualMachine.Config.AddNewDisk",
    "Resource.AssignVMToPool",
    "Network.Assign",
];

/// The privileges of [`BACKUP`] and [`RESTORE`] the logged-in user lacks on the root folder,
/// each with the operation that needs it.
///
/// # Errors
/// SOAP faults (a server without `HasPrivilegeOnEntities` answers with one).
pub async fn missing(vc: &Vcenter) -> Result<Vec<(&'static str, &'static str)>> {
    let root = vc.client.service_content().root_folder.clone();
    let mut missing = Vec::new();
    for (operation, list) in [("backup", BACKUP), ("restore", RESTORE)] {
        let checks = vc.client.check_privileges(&root, list).await?;
        for (id, check) in list.iter().zip(checks) {
            if !check.granted {
                missing.push((operation, *id));
            }
        }
    }
    Ok(missing)
}
