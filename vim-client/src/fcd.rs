//! First class disks (FCDs) through VIM's `VcenterVStorageObjectManager`: create, retrieve,
//! list, snapshot, changed areas, delete.

use crate::changed_areas::{collect_areas, DiskArea, DiskChangeInfo};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// A first class disk (`VStorageObject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VStorageObject {
    /// The disk's id (a uuid).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Capacity in MiB.
    pub capacity_in_mb: u64,
    /// Creation time (`xsd:dateTime` text).
    pub create_time: String,
    /// Datastore path of the VMDK (`[ds] fcd/x.vmdk`).
    pub file_path: Option<String>,
    /// The datastore it lives on.
    pub datastore: Option<MoRef>,
    /// Whether CBT is on for the disk.
    pub changed_block_tracking_enabled: Option<bool>,
    /// The whole `VStorageObject`.
    pub raw: Element,
}

impl VStorageObject {
    /// Reads a `VStorageObject` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] without `config/id/id`.
    pub fn from_element(e: &Element) -> Result<VStorageObject> {
        let config = e
            .get("config")
            .ok_or_else(|| Error::Unexpected("VStorageObject without config".into()))?;
        Ok(VStorageObject {
            id: config
                .text_at("id/id")
                .ok_or_else(|| Error::Unexpected("VStorageObject without id".into()))?
                .trim()
                .to_owned(),
            name: config.text_at("name").unwrap_or_default().to_owned(),
            capacity_in_mb: config.parse_at("capacityInMB").unwrap_or(0),
            create_time: config.text_at("createTime").unwrap_or_default().to_owned(),
            file_path: config.text_at("backing/filePath").map(str::to_owned),
            datastore: config
                .path("backing/datastore")
                .and_then(|d| MoRef::from_element(d).ok()),
            changed_block_tracking_enabled: config.bool_at("changedBlockTrackingEnabled"),
            raw: e.clone(),
        })
    }
}

/// A snapshot of a first class disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcdSnapshot {
    /// The snapshot id.
    pub id: String,
    /// Its description.
    pub description: String,
    /// Creation time.
    pub create_time: String,
}

/// How a new first class disk is provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioning {
    /// Thin.
    Thin,
    /// Thick, zeroed on first write.
    LazyZeroedThick,
    /// Thick, zeroed at creation.
    EagerZeroedThick,
}

impl Provisioning {
    fn as_str(self) -> &'static str {
        match self {
            Provisioning::Thin => "thin",
            Provisioning::LazyZeroedThick => "lazyZeroedThick",
            Provisioning::EagerZeroedThick => "eagerZeroedThick",
        }
    }
}

/// An `ID` element (`<name><id>uuid</id></name>`).
pub(crate) fn id_element(local: &str, id: &str) -> Element {
    Element::vim(local).text_child("id", id)
}

/// A `VslmCreateSpec` for a disk file on `datastore`.
pub(crate) fn create_spec(
    name: &str,
    datastore: &MoRef,
    capacity_mb: u64,
    path: Option<&str>,
    provisioning: Provisioning,
) -> Element {
    let backing = Element::vim("backingSpec")
        .typed("VslmCreateSpecDiskFileBackingSpec")
        .child(datastore.to_element("datastore"))
        .opt_child(path.map(|p| Element::vim_text("path", p)))
        .text_child("provisioningType", provisioning.as_str());
    Element::vim("spec")
        .text_child("name", name)
        .child(backing)
        .text_child("capacityInMB", capacity_mb.to_string())
}

pub(crate) fn snapshots_from(info: &Element) -> Vec<FcdSnapshot> {
    info.all("snapshots")
        .map(|s| FcdSnapshot {
            id: s.text_at("id/id").unwrap_or_default().trim().to_owned(),
            description: s.text_at("description").unwrap_or_default().to_owned(),
            create_time: s.text_at("createTime").unwrap_or_default().to_owned(),
        })
        .collect()
}

impl Client {
    pub(crate) fn vstorage_manager(&self) -> Result<MoRef> {
        self.service_content()
            .vstorage_object_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no VStorageObjectManager".into()))
    }

    async fn fcd_returnval(&self, body: Element) -> Result<Element> {
        let method = body.local().to_owned();
        let response = self.call(body).await?;
        response
            .get("returnval")
            .cloned()
            .ok_or_else(|| Error::Unexpected(format!("{method} returned nothing")))
    }

    /// Creates a first class disk and waits.
    ///
    /// # Errors
    ///
    /// Task faults (`FileAlreadyExists`, `InvalidArgument`, ...).
    pub async fn fcd_create(
        &self,
        name: &str,
        datastore: &MoRef,
        capacity_mb: u64,
        path: Option<&str>,
        provisioning: Provisioning,
    ) -> Result<VStorageObject> {
        let body = Element::vim("CreateDisk_Task")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(create_spec(
                name,
                datastore,
                capacity_mb,
                path,
                provisioning,
            ));
        let result = self.run_task(body, self.task_timeout()).await?;
        VStorageObject::from_element(
            result
                .as_ref()
                .ok_or_else(|| Error::Unexpected("CreateDisk_Task returned nothing".into()))?,
        )
    }

    /// Reads a first class disk.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown id.
    pub async fn fcd_retrieve(&self, id: &str, datastore: &MoRef) -> Result<VStorageObject> {
        let body = Element::vim("RetrieveVStorageObject")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"));
        VStorageObject::from_element(&self.fcd_returnval(body).await?)
    }

    /// The ids of the first class disks on `datastore`.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn fcd_list(&self, datastore: &MoRef) -> Result<Vec<String>> {
        let body = Element::vim("ListVStorageObject")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(datastore.to_element("datastore"));
        let response = self.call(body).await?;
        Ok(response
            .all("returnval")
            .filter_map(|r| r.text_at("id").map(|t| t.trim().to_owned()))
            .collect())
    }

    /// Deletes a first class disk and its file, and waits.
    ///
    /// # Errors
    ///
    /// Task faults (`NotFound`, `InvalidState` while attached, ...).
    pub async fn fcd_delete(&self, id: &str, datastore: &MoRef) -> Result<()> {
        let body = Element::vim("DeleteVStorageObject_Task")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Snapshots a first class disk and waits; returns the snapshot id.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn fcd_create_snapshot(
        &self,
        id: &str,
        datastore: &MoRef,
        description: &str,
    ) -> Result<String> {
        let body = Element::vim("VStorageObjectCreateSnapshot_Task")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"))
            .text_child("description", description);
        let result = self.run_task(body, self.task_timeout()).await?;
        result
            .as_ref()
            .and_then(|r| r.text_at("id").map(|t| t.trim().to_owned()))
            .ok_or_else(|| {
                Error::Unexpected("VStorageObjectCreateSnapshot_Task returned no id".into())
            })
    }

    /// Deletes a snapshot of a first class disk and waits.
    ///
    /// # Errors
    ///
    /// Task faults (`NotFound`, `InvalidArgument` for an unknown snapshot).
    pub async fn fcd_delete_snapshot(
        &self,
        id: &str,
        datastore: &MoRef,
        snapshot_id: &str,
    ) -> Result<()> {
        let body = Element::vim("DeleteSnapshot_Task")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"))
            .child(id_element("snapshotId", snapshot_id));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// The snapshots of a first class disk.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown disk.
    pub async fn fcd_snapshots(&self, id: &str, datastore: &MoRef) -> Result<Vec<FcdSnapshot>> {
        let body = Element::vim("RetrieveSnapshotInfo")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"));
        Ok(snapshots_from(&self.fcd_returnval(body).await?))
    }

    /// One `VstorageObjectVCenterQueryChangedDiskAreas` call for a first class disk snapshot.
    ///
    /// # Errors
    ///
    /// Faults (CBT off, unknown change id, unknown snapshot).
    pub async fn fcd_query_changed_disk_areas(
        &self,
        id: &str,
        datastore: &MoRef,
        snapshot_id: &str,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo> {
        let body = Element::vim("VstorageObjectVCenterQueryChangedDiskAreas")
            .child(self.vstorage_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .child(datastore.to_element("datastore"))
            .child(id_element("snapshotId", snapshot_id))
            .text_child("startOffset", start_offset.to_string())
            .text_child("changeId", change_id);
        DiskChangeInfo::from_element(&self.fcd_returnval(body).await?)
    }

    /// All changed areas of a first class disk snapshot of `capacity` bytes.
    ///
    /// # Errors
    ///
    /// As [`Client::fcd_query_changed_disk_areas`], and [`crate::Error::ChangedAreas`] when the
    /// answers do not tile the disk (see [`crate::Client::changed_disk_areas`]).
    pub async fn fcd_changed_disk_areas(
        &self,
        id: &str,
        datastore: &MoRef,
        snapshot_id: &str,
        capacity: u64,
        change_id: &str,
    ) -> Result<Vec<DiskArea>> {
        collect_areas(capacity, |offset| {
            self.fcd_query_changed_disk_areas(id, datastore, snapshot_id, offset, change_id)
        })
        .await
    }
}
