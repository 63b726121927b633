//! First class disks (`ivd:` targets) through vCenter's VIM first class disk manager: finding a
//! disk by id or name across the datastores, its snapshot change id, and the facts a backup
//! keeps about it (provisioning, tags, the VMs it is attached to).

use crate::stored::ivd::IvdMetadata;
use vim_client::{FcdApi, FcdApiChoice, InventoryKind, MoRef, VStorageObject};

use crate::error::{Error, Result};
use crate::target::is_uuid;
use crate::vsphere::Vcenter;

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

/// The environment variable that picks the first class disk API: `vim`, `vslm` or `auto`.
pub const FCD_API_ENV: &str = "SAFEKEEPING_FCD_API";

/// The first class disk API for this session: `SAFEKEEPING_FCD_API` when set, else
/// `configured` (`[vcenter] fcd_api`); see [`FcdApi::choose`] for `auto`.
///
/// # Errors
/// An unknown `SAFEKEEPING_FCD_API` value, or VSLM asked for and not answering.
pub async fn choose_api(vc: &Vcenter, configured: FcdApiChoice) -> Result<FcdApi> {
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
    Ok(FcdApi::choose(&vc.client, choice).await?)
}
