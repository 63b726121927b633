//! Which of vCenter's two first class disk APIs to speak: VIM's
//! `VcenterVStorageObjectManager` (every vCenter since 6.5) or the VSLM endpoint (`/vslm/sdk`,
//! vCenter 7 and later, which VMware recommends there). Both offer the same operations under
//! different names and arguments (VIM names the datastore in every call, VSLM does not);
//! [`FcdApi`] is one typed front for both, so callers never see the difference.

use serde::Deserialize;

use crate::changed_areas::DiskArea;
use crate::client::Client;
use crate::error::Result;
use crate::fcd::{id_element, FcdSnapshot};
use crate::moref::MoRef;
use crate::vslm::Vslm;
use crate::xml::Element;

/// What the user asked for (`[vcenter] fcd_api`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FcdApiChoice {
    /// VSLM on vCenter 7 and later (VIM when VSLM does not answer), VIM before.
    #[default]
    Auto,
    /// VIM's `VcenterVStorageObjectManager`.
    Vim,
    /// The VSLM endpoint.
    Vslm,
}

/// The first class disk API in use for a session.
#[derive(Debug, Clone)]
pub enum FcdApi {
    /// VIM's `VcenterVStorageObjectManager`.
    Vim,
    /// The VSLM endpoint.
    Vslm(Vslm),
}

impl FcdApi {
    /// The API `choice` names on `client`'s vCenter: `auto` is VSLM on vCenter 7 and later
    /// (falling back to VIM, with a warning, when VSLM does not answer), VIM before.
    ///
    /// # Errors
    /// VSLM asked for explicitly and not answering.
    pub async fn choose(client: &Client, choice: FcdApiChoice) -> Result<FcdApi> {
        match choice {
            FcdApiChoice::Vim => return Ok(FcdApi::Vim),
            FcdApiChoice::Vslm => return Ok(FcdApi::Vslm(client.vslm().await?)),
            FcdApiChoice::Auto => {}
        }
        let major: u32 = client
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
        match client.vslm().await {
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

    /// Snapshots disk `id` (on `datastore`), returning the snapshot id.
    ///
    /// # Errors
    /// Task faults.
    pub async fn create_snapshot(
        &self,
        client: &Client,
        id: &str,
        datastore: &MoRef,
        description: &str,
    ) -> Result<String> {
        match self {
            FcdApi::Vim => client.fcd_create_snapshot(id, datastore, description).await,
            FcdApi::Vslm(v) => v.create_snapshot(id, description).await,
        }
    }

    /// Deletes a snapshot.
    ///
    /// # Errors
    /// Task faults.
    pub async fn delete_snapshot(
        &self,
        client: &Client,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
    ) -> Result<()> {
        match self {
            FcdApi::Vim => client.fcd_delete_snapshot(id, datastore, snapshot).await,
            FcdApi::Vslm(v) => v.delete_snapshot(id, snapshot).await,
        }
    }

    /// The snapshots of a disk.
    ///
    /// # Errors
    /// Faults.
    pub async fn snapshots(
        &self,
        client: &Client,
        id: &str,
        datastore: &MoRef,
    ) -> Result<Vec<FcdSnapshot>> {
        match self {
            FcdApi::Vim => client.fcd_snapshots(id, datastore).await,
            FcdApi::Vslm(v) => v.snapshots(id).await,
        }
    }

    /// The changed areas of a snapshot since `since` (`*`: every allocated area).
    ///
    /// # Errors
    /// Faults (an unknown change id among them).
    pub async fn changed_areas(
        &self,
        client: &Client,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
        capacity: u64,
        since: &str,
    ) -> Result<Vec<DiskArea>> {
        match self {
            FcdApi::Vim => {
                client
                    .fcd_changed_disk_areas(id, datastore, snapshot, capacity, since)
                    .await
            }
            FcdApi::Vslm(v) => v.changed_disk_areas(id, snapshot, capacity, since).await,
        }
    }

    /// The change tracking id of a snapshot, the `since` of the next incremental backup.
    ///
    /// # Errors
    /// Faults.
    pub async fn snapshot_change_id(
        &self,
        client: &Client,
        id: &str,
        datastore: &MoRef,
        snapshot: &str,
    ) -> Result<Option<String>> {
        match self {
            FcdApi::Vim => client.fcd_snapshot_change_id(id, datastore, snapshot).await,
            FcdApi::Vslm(v) => v.snapshot_change_id(id, snapshot).await,
        }
    }
}

impl Client {
    /// The change tracking id of a first class disk snapshot through VIM
    /// (`RetrieveSnapshotDetails` on the `VcenterVStorageObjectManager`).
    ///
    /// # Errors
    /// Faults; [`crate::Error::Unexpected`] when vCenter has no first class disk manager.
    pub async fn fcd_snapshot_change_id(
        &self,
        id: &str,
        datastore: &MoRef,
        snapshot_id: &str,
    ) -> Result<Option<String>> {
        let body = Element::vim("RetrieveSnapshotDetails")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"))
            .child(id_element("snapshotId", snapshot_id));
        let response = self.call(body).await?;
        Ok(response
            .text_at("returnval/changedBlockTrackingId")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }
}
