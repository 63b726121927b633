//! Inventory selections (`folder:`, `cluster:`, `host:`, `rp:`, `datastore:`): the VMs below a
//! place in vCenter's inventory, read when the run starts. Folders, clusters, hosts and
//! resource pools are containers, so one recursive container view lists every VM below them
//! (subfolders, child pools and vApps included). A datastore lists the VMs with any file on
//! it; of those (their devices read in one call), the selection keeps the VMs with a disk there
//! (a base disk or a snapshot delta of one), not those that only keep their `.vmx` there.

use vim_client::{DatastorePath, Device, DiskBacking, InventoryKind, MoRef};

use crate::error::{Error, Result};
use crate::target::InventorySelector;
use crate::vsphere::Vcenter;

/// The morefs of the VMs in `place` (templates included; the selection leaves them out).
///
/// # Errors
/// A place vCenter does not have (with the names it has), vCenter errors.
pub async fn vms_in(vc: &Vcenter, place: &InventorySelector) -> Result<Vec<MoRef>> {
    let c = &vc.client;
    let unknown = |e: vim_client::Error| match e {
        vim_client::Error::UnknownObject { .. } | vim_client::Error::Ambiguous { .. } => {
            Error::Other(format!("{}:{}: {e}", place.kind(), place.value()))
        }
        e => e.into(),
    };
    let container = match place {
        InventorySelector::Folder(path) => by_path(vc, place, path, "Folder").await?,
        InventorySelector::Pool(path) => by_path(vc, place, path, "ResourcePool").await?,
        InventorySelector::Host(name) => c
            .find_by_name(InventoryKind::Host, name)
            .await
            .map_err(unknown)?,
        InventorySelector::Cluster(name) => cluster(vc, name).await?,
        InventorySelector::Datastore(name) => {
            let ds = c
                .find_by_name(InventoryKind::Datastore, name)
                .await
                .map_err(unknown)?;
            // One call for the devices of every VM with a file there; a VM removed between
            // the two reads fails that call, so the list is read once more.
            let mut tries = 0;
            let vms = loop {
                let o = c.object_properties(&ds, &["vm"]).await?;
                match c
                    .objects_properties(&o.morefs("vm"), &["config.hardware.device"])
                    .await
                {
                    Err(e)
                        if tries == 0
                            && e.is_fault(&vim_client::FaultKind::ManagedObjectNotFound) =>
                    {
                        tries += 1;
                    }
                    other => break other?,
                }
            };
            return Ok(vms
                .into_iter()
                .filter(|vm| {
                    vm.get("config.hardware.device").is_some_and(|devices| {
                        devices.children.iter().any(|d| {
                            Device::from_element(d)
                                .as_disk()
                                .is_some_and(|disk| disk_on(&disk.backing, &ds, name))
                        })
                    })
                })
                .map(|vm| vm.obj)
                .collect());
        }
    };
    let mut vms: Vec<MoRef> = c
        .container_objects(&container, "VirtualMachine", &["name"])
        .await?
        .into_iter()
        .map(|o| o.obj)
        .collect();
    // A cluster's view reaches a VM through its host and through its pool.
    vms.sort();
    vms.dedup();
    Ok(vms)
}

/// Whether a disk's file, or a file of its snapshot chain, is on datastore `ds` (`name`).
fn disk_on(backing: &DiskBacking, ds: &MoRef, name: &str) -> bool {
    let mut next = Some(backing);
    while let Some(b) = next {
        let by_path = b
            .file_name
            .parse::<DatastorePath>()
            .is_ok_and(|p| p.datastore == name);
        if b.datastore.as_ref() == Some(ds) || by_path {
            return true;
        }
        next = b.parent.as_deref();
    }
    false
}

/// The object at inventory path `path`, which must be a `kind` (`DC0/vm/prod` is a folder,
/// `DC0/host/C1/Resources/gold` a resource pool).
async fn by_path(vc: &Vcenter, place: &InventorySelector, path: &str, kind: &str) -> Result<MoRef> {
    let moref = match vc.client.find_by_inventory_path(path).await {
        Ok(m) => m,
        Err(vim_client::Error::UnknownObject { .. }) => {
            return Err(Error::Other(format!(
                "{}:{path}: vCenter has nothing at this inventory path",
                place.kind()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    // A vApp is a resource pool too.
    let fits = moref.kind == kind || (kind == "ResourcePool" && moref.kind == "VirtualApp");
    if !fits {
        return Err(Error::Other(format!(
            "{}:{path}: the path names a {}, not a {kind}",
            place.kind(),
            moref.kind
        )));
    }
    Ok(moref)
}

/// The cluster named `name` (a standalone host's compute resource is not a cluster).
async fn cluster(vc: &Vcenter, name: &str) -> Result<MoRef> {
    let root = vc.client.service_content().root_folder.clone();
    let all = vc
        .client
        .container_objects(&root, "ClusterComputeResource", &["name"])
        .await?;
    let hits: Vec<&vim_client::ObjectContent> = all
        .iter()
        .filter(|o| o.text("name") == Some(name))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.obj.clone()),
        [] => {
            let mut known: Vec<&str> = all.iter().filter_map(|o| o.text("name")).collect();
            known.sort_unstable();
            Err(Error::Other(format!(
                "cluster:{name}: no such cluster (vCenter has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )))
        }
        many => Err(Error::Other(format!(
            "cluster:{name}: {} clusters have this name; use rp:DATACENTER/host/{name}/Resources",
            many.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(file: &str, parent: Option<DiskBacking>) -> DiskBacking {
        DiskBacking {
            type_name: "VirtualDiskFlatVer2BackingInfo".into(),
            file_name: file.into(),
            datastore: None,
            thin_provisioned: None,
            eagerly_scrub: None,
            change_id: None,
            uuid: None,
            disk_mode: None,
            parent: parent.map(Box::new),
        }
    }

    #[test]
    fn a_disk_is_on_a_datastore_by_its_file_or_its_snapshot_chain() {
        let ds2 = MoRef::new("Datastore", "datastore-2");
        let base = backing("[ds2] db/db.vmdk", None);
        assert!(disk_on(&base, &ds2, "ds2"));
        assert!(!disk_on(
            &base,
            &MoRef::new("Datastore", "datastore-1"),
            "ds1"
        ));
        // A snapshot delta in the VM's home folder on ds1, its base on ds2.
        let delta = backing("[ds1] db/db-000001.vmdk", Some(base));
        assert!(disk_on(&delta, &ds2, "ds2"));
        let only_home = backing("[ds1] db/db.vmdk", None);
        assert!(!disk_on(&only_home, &ds2, "ds2"));
        // By moref when the path names another datastore spelling.
        let mut by_ref = backing("[renamed] db/db.vmdk", None);
        by_ref.datastore = Some(ds2.clone());
        assert!(disk_on(&by_ref, &ds2, "ds2"));
    }
}
