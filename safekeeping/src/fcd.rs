//! First class disks (`ivd:` targets) through vCenter's VIM first class disk manager: finding a
//! disk by id or name across the datastores, its snapshot change id, and the facts a backup
//! keeps about it (provisioning, tags, the VMs it is attached to).

use serde::{Deserialize, Serialize};
use vim_client::xml::Element;
use vim_client::{InventoryKind, MoRef, VStorageObject};

use crate::config::FcdApiChoice;
use crate::error::{Error, Result};
use crate::target::is_uuid;
use crate::vcenter::Vcenter;

/// A first class disk found in the inventory.
#[derive(Debug, Clone)]
pub struct FoundDisk {
    /// The disk as vCenter describes it.
    pub object: VStorageObject,
    /// Its datastore.
    pub datastore: MoRef,
    /// The datastore's name.
    pub datastore_name: String,
}

impl FoundDisk {
    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.object.capacity_in_mb.saturating_mul(1024 * 1024)
    }

    /// The `provisioningType` of the disk's backing (`thin`, `lazyZeroedThick`,
    /// `eagerZeroedThick`), when vCenter reports it.
    pub fn provisioning(&self) -> Option<String> {
        self.object
            .raw
            .text_at("config/backing/provisioningType")
            .map(|s| s.trim().to_string())
    }

    /// The storage policy id, when vCenter reports one.
    pub fn storage_policy(&self) -> Option<String> {
        self.object
            .raw
            .text_at("config/profile/profileId")
            .map(|s| s.trim().to_string())
    }
}

/// Finds the first class disk `selector` (a disk id, or a name) on every datastore.
///
/// # Errors
/// [`Error::Other`] when no disk or several disks match (naming them), vCenter errors.
pub async fn find(vc: &Vcenter, selector: &str) -> Result<FoundDisk> {
    let by_id = is_uuid(selector);
    let mut found = Vec::new();
    let mut names = Vec::new();
    for ds in vc.client.list_named(InventoryKind::Datastore).await? {
        for id in vc.client.fcd_list(&ds.moref).await? {
            if by_id && !id.eq_ignore_ascii_case(selector) {
                continue;
            }
            let object = vc.client.fcd_retrieve(&id, &ds.moref).await?;
            names.push(format!("{} ({id})", object.name));
            if by_id || object.name == selector {
                found.push(FoundDisk {
                    object,
                    datastore: ds.moref.clone(),
                    datastore_name: ds.name.clone(),
                });
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Other(format!(
            "no first class disk matches ivd:{selector}{}",
            if by_id || names.is_empty() {
                String::new()
            } else {
                format!("; the disks are: {}", names.join(", "))
            }
        ))),
        _ => Err(Error::Other(format!(
            "ivd:{selector} matches {} first class disks: {}; use ivd:ID",
            found.len(),
            found
                .iter()
                .map(|f| format!("{} on {}", f.object.id, f.datastore_name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The change tracking id of a first class disk snapshot (`RetrieveSnapshotDetails`), the
/// `since` of the next incremental backup.
///
/// # Errors
/// vCenter faults.
pub async fn snapshot_change_id(
    vc: &Vcenter,
    id: &str,
    datastore: &MoRef,
    snapshot_id: &str,
) -> Result<Option<String>> {
    let manager = vc
        .client
        .service_content()
        .vstorage_object_manager
        .clone()
        .ok_or_else(|| Error::Other("vCenter has no first class disk manager".into()))?;
    let body = Element::vim("RetrieveSnapshotDetails")
        .child(manager.to_element("_this"))
        .child(Element::vim("id").text_child("id", id))
        .child(datastore.to_element("datastore"))
        .child(Element::vim("snapshotId").text_child("id", snapshot_id));
    let response = vc.client.call(body).await?;
    Ok(response
        .text_at("returnval/changedBlockTrackingId")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// What a backup keeps about a first class disk (`ivd.json` in the generation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvdMetadata {
    /// The disk id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// `thin`, `lazyZeroedThick` or `eagerZeroedThick`, when known.
    pub provisioning: Option<String>,
    /// Datastore name.
    pub datastore: String,
    /// Datastore moref.
    pub datastore_moref: String,
    /// Datastore path of the descriptor.
    pub file_path: Option<String>,
    /// Storage policy id, when vCenter reports one.
    pub storage_policy: Option<String>,
    /// `category/tag` pairs attached to the disk.
    pub tags: Vec<(String, String)>,
    /// Names of the VMs the disk was attached to at backup time.
    pub attached_vms: Vec<String>,
    /// Creation time, as vCenter gave it.
    pub create_time: String,
}

/// Name of the metadata file in an `ivd` generation.
pub const METADATA_FILE: &str = "ivd.json";

/// Gathers the metadata of `disk`. Tags and attachments are best effort (logged when they
/// cannot be read), since neither is needed to restore the data.
pub async fn metadata(vc: &Vcenter, disk: &FoundDisk) -> IvdMetadata {
    let id = &disk.object.id;
    let tags = vc.client.fcd_tags(id).await.unwrap_or_else(|e| {
        tracing::warn!(ivd = %id, "cannot read the disk's tags: {e}");
        Vec::new()
    });
    let attached_vms = match vc.client.vms_with_fcd(id, &disk.datastore).await {
        Ok(a) => a.into_iter().map(|a| a.vm_name).collect(),
        Err(e) => {
            tracing::warn!(ivd = %id, "cannot list the VMs using the disk: {e}");
            Vec::new()
        }
    };
    IvdMetadata {
        id: id.clone(),
        name: disk.object.name.clone(),
        capacity: disk.capacity(),
        provisioning: disk.provisioning(),
        datastore: disk.datastore_name.clone(),
        datastore_moref: disk.datastore.value.clone(),
        file_path: disk.object.file_path.clone(),
        storage_policy: disk.storage_policy(),
        tags,
        attached_vms,
        create_time: disk.object.create_time.clone(),
    }
}

/// Which vCenter endpoint manages first class disk snapshots and changed areas.
#[derive(Debug, Clone)]
pub enum FcdApi {
    /// VIM's `VcenterVStorageObjectManager` (`/sdk`).
    Vim,
    /// The VSLM endpoint (`/vslm/sdk`), vCenter 7 and later.
    Vslm(vim_client::Vslm),
}

/// The environment variable that picks the endpoint: `vim` or `vslm`.
pub const FCD_API_ENV: &str = "SAFEKEEPING_FCD_API";

impl FcdApi {
    /// `SAFEKEEPING_FCD_API` when set, else `configured` (`[vcenter] fcd_api`); `auto` is VSLM
    /// on vCenter 7 and later (falling back to VIM, with a warning, when VSLM does not answer),
    /// VIM before.
    ///
    /// # Errors
    /// An unknown `SAFEKEEPING_FCD_API` value, or VSLM asked for and not answering.
    pub async fn choose(vc: &Vcenter, configured: FcdApiChoice) -> Result<FcdApi> {
        let choice = match std::env::var(FCD_API_ENV).ok().as_deref().map(str::trim) {
            Some("vim") => FcdApiChoice::Vim,
            Some("vslm") => FcdApiChoice::Vslm,
            Some("auto") => FcdApiChoice::Auto,
            Some(other) if !other.is_empty() => {
                return Err(Error::Other(format!(
                    "{FCD_API_ENV}={other}: expected vim, vslm or auto"
                )))
            }
            _ => configured,
        };
        match choice {
            FcdApiChoice::Vim => return Ok(FcdApi::Vim),
            FcdApiChoice::Vslm => return Ok(FcdApi::Vslm(vc.client.vslm().await?)),
            FcdApiChoice::Auto => {}
        }
        let major: u32 = vc
            .client
            .service_content()
            .about
            .api_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Ok(FcdApi::Vim);
        }
        match vc.client.vslm().await {
            Ok(v) => Ok(FcdApi::Vslm(v)),
            Err(e) => {
                tracing::warn!(
                    "VSLM endpoint unavailable ({e}); using the VIM first class disk manager"
                );
                Ok(FcdApi::Vim)
            }
        }
    }

    /// `vim` or `vslm`.
    pub fn name(&self) -> &'static str {
        match self {
            FcdApi::Vim => "vim",
            FcdApi::Vslm(_) => "vslm",
        }
    }

    /// Snapshots a disk, returning the snapshot id.
    ///
    /// # Errors
    /// Task faults.
    pub async fn create_snapshot(
        &self,
        vc: &Vcenter,
        id: &str,
        datastore: &MoRef,
        description: &str,
    ) -> Result<String> {
        Ok(match self {
            FcdApi::Vim => {
                vc.client
                    .fcd_create_snapshot(id, datastore, description)
                    .await?
            }
            FcdApi::Vslm(v) => v.create_snapshot(id, description).await?,
        })
    }

    /// Deletes a snapshot.
    ///
    /// # Errors
    /// Task faults.
    pub async fn delete_snapshot(
        &self,
        vc: &Vcenter,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
    ) -> Result<()> {
        match self {
            FcdApi::Vim => {
                vc.client
                    .fcd_delete_snapshot(id, datastore, snapshot)
                    .await?
            }
            FcdApi::Vslm(v) => v.delete_snapshot(id, snapshot).await?,
        }
        Ok(())
    }

    /// The snapshots of a disk.
    ///
    /// # Errors
    /// Faults.
    pub async fn snapshots(
        &self,
        vc: &Vcenter,
        id: &str,
        datastore: &MoRef,
    ) -> Result<Vec<vim_client::FcdSnapshot>> {
        Ok(match self {
            FcdApi::Vim => vc.client.fcd_snapshots(id, datastore).await?,
            FcdApi::Vslm(v) => v.snapshots(id).await?,
        })
    }

    /// The changed areas of a snapshot since `since` (`*`: every allocated area).
    ///
    /// # Errors
    /// Faults (an unknown change id among them).
    pub async fn changed_areas(
        &self,
        vc: &Vcenter,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
        capacity: u64,
        since: &str,
    ) -> std::result::Result<Vec<vim_client::DiskArea>, vim_client::Error> {
        match self {
            FcdApi::Vim => {
                vc.client
                    .fcd_changed_disk_areas(id, datastore, snapshot, capacity, since)
                    .await
            }
            FcdApi::Vslm(v) => v.changed_disk_areas(id, snapshot, capacity, since).await,
        }
    }

    /// The change tracking id of a snapshot (`RetrieveSnapshotDetails`).
    ///
    /// # Errors
    /// Faults.
    pub async fn snapshot_change_id(
        &self,
        vc: &Vcenter,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
    ) -> Result<Option<String>> {
        match self {
            FcdApi::Vim => snapshot_change_id(vc, id, datastore, snapshot).await,
            FcdApi::Vslm(v) => Ok(v.snapshot_change_id(id, snapshot).await?),
        }
    }
}
