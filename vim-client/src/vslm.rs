//! First class disks through the VSLM endpoint (`/vslm/sdk`, `VslmVStorageObjectManager`).
//!
//! VSLM shares the VIM session: the `vmware_soap_session` cookie travels both as the HTTP cookie
//! and as the `vcSessionCookie` SOAP header. Its tasks are `VslmTask`s, polled with
//! `VslmQueryInfo`.

use std::time::{Duration, Instant};

use crate::changed_areas::{collect_areas, DiskArea, DiskChangeInfo};
use crate::client::{Client, Endpoint};
use crate::error::{Error, Result};
use crate::fault;
use crate::fcd::{
    create_spec, id_element, snapshots_from, FcdSnapshot, Provisioning, VStorageObject,
};
use crate::moref::MoRef;
use crate::xml::Element;

/// A handle on the VSLM service of a logged-in [`Client`].
#[derive(Debug, Clone)]
pub struct Vslm {
    client: Client,
    manager: MoRef,
}

impl Client {
    /// Connects to the VSLM endpoint with this client's session (`RetrieveContent`).
    ///
    /// # Errors
    ///
    /// Faults and transport errors (HTTP 404 on servers without VSLM, such as ESXi).
    pub async fn vslm(&self) -> Result<Vslm> {
        let body = Element::vim("RetrieveContent")
            .child(MoRef::new("VslmServiceInstance", "ServiceInstance").to_element("_this"));
        let response = self.call_at(Endpoint::Vslm, body).await?;
        let manager = response
            .path("returnval/vStorageObjectManager")
            .ok_or_else(|| Error::Unexpected("VSLM content has no vStorageObjectManager".into()))
            .and_then(MoRef::from_element)?;
        Ok(Vslm {
            client: self.clone(),
            manager,
        })
    }
}

impl Vslm {
    async fn call(&self, body: Element) -> Result<Element> {
        self.client.call_at(Endpoint::Vslm, body).await
    }

    async fn returnval(&self, body: Element) -> Result<Element> {
        let method = body.local().to_owned();
        self.call(body)
            .await?
            .get("returnval")
            .cloned()
            .ok_or_else(|| Error::Unexpected(format!("{method} returned nothing")))
    }

    fn this(&self, method: &str) -> Element {
        Element::vim(method).child(self.manager.to_element("_this"))
    }

    /// Calls a `Vslm..._Task` method and waits for the `VslmTask`, polling `VslmQueryInfo`.
    async fn run_task(&self, body: Element) -> Result<Option<Element>> {
        let task = MoRef::from_element(&self.returnval(body).await?)?;
        let timeout = self.client.task_timeout();
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let info = self
                .returnval(Element::vim("VslmQueryInfo").child(task.to_element("_this")))
                .await?;
            match info.text_at("state").map(str::trim) {
                Some("success") => return Ok(info.get("result").cloned()),
                Some("error") => {
                    return Err(match info.get("error") {
                        Some(e) => fault::from_localized_method_fault(e),
                        None => Error::Unexpected(format!("{task} failed without an error")),
                    })
                }
                _ if started.elapsed() >= timeout => {
                    return Err(Error::Timeout {
                        what: format!("VSLM task {task}"),
                        after: timeout,
                    })
                }
                _ => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Creates a first class disk and waits.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn create_disk(
        &self,
        name: &str,
        datastore: &MoRef,
        capacity_mb: u64,
        path: Option<&str>,
        provisioning: Provisioning,
    ) -> Result<VStorageObject> {
        let body = self.this("VslmCreateDisk_Task").child(create_spec(
            name,
            datastore,
            capacity_mb,
            path,
            provisioning,
        ));
        let result = self.run_task(body).await?;
        VStorageObject::from_element(
            result
                .as_ref()
                .ok_or_else(|| Error::Unexpected("VslmCreateDisk_Task returned nothing".into()))?,
        )
    }

    /// Reads a first class disk.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown id.
    pub async fn retrieve(&self, id: &str) -> Result<VStorageObject> {
        let body = self
            .this("VslmRetrieveVStorageObject")
            .child(id_element("id", id));
        VStorageObject::from_element(&self.returnval(body).await?)
    }

    /// The ids of the first class disks on `datastore` (`VslmListVStorageObjectForSpec`).
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn list(&self, datastore: &MoRef) -> Result<Vec<String>> {
        let query = Element::vim("query")
            .text_child("queryField", "datastoreMoId")
            .text_child("queryOperator", "equals")
            .text_child("queryValue", datastore.value.clone());
        let body = self
            .this("VslmListVStorageObjectForSpec")
            .child(query)
            .text_child("maxResult", "10000");
        let result = self.returnval(body).await?;
        Ok(result
            .all("id")
            .filter_map(|i| i.text_at("id").map(|t| t.trim().to_owned()))
            .collect())
    }

    /// Deletes a first class disk and waits.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let body = self
            .this("VslmDeleteVStorageObject_Task")
            .child(id_element("id", id));
        self.run_task(body).await.map(|_| ())
    }

    /// Snapshots a first class disk and waits; returns the snapshot id.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn create_snapshot(&self, id: &str, description: &str) -> Result<String> {
        let body = self
            .this("VslmCreateSnapshot_Task")
            .child(id_element("id", id))
            .text_child("description", description);
        let result = self.run_task(body).await?;
        result
            .as_ref()
            .and_then(|r| r.text_at("id").map(|t| t.trim().to_owned()))
            .ok_or_else(|| Error::Unexpected("VslmCreateSnapshot_Task returned no id".into()))
    }

    /// Deletes a snapshot of a first class disk and waits.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn delete_snapshot(&self, id: &str, snapshot_id: &str) -> Result<()> {
        let body = self
            .this("VslmDeleteSnapshot_Task")
            .child(id_element("id", id))
            .child(id_element("snapshotId", snapshot_id));
        self.run_task(body).await.map(|_| ())
    }

    /// The snapshots of a first class disk.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown disk.
    pub async fn snapshots(&self, id: &str) -> Result<Vec<FcdSnapshot>> {
        let body = self
            .this("VslmRetrieveSnapshotInfo")
            .child(id_element("id", id));
        Ok(snapshots_from(&self.returnval(body).await?))
    }

    /// The change tracking id a snapshot of a first class disk was taken at
    /// (`VslmRetrieveSnapshotDetails`), the base of the next incremental; `None` when change
    /// tracking is off.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown disk or snapshot.
    pub async fn snapshot_change_id(&self, id: &str, snapshot_id: &str) -> Result<Option<String>> {
        let body = self
            .this("VslmRetrieveSnapshotDetails")
            .child(id_element("id", id))
            .child(id_element("snapshotId", snapshot_id));
        Ok(self
            .returnval(body)
            .await?
            .text_at("changedBlockTrackingId")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// One `VslmQueryChangedDiskAreas` call.
    ///
    /// # Errors
    ///
    /// Faults (CBT off, unknown change id, unknown snapshot).
    pub async fn query_changed_disk_areas(
        &self,
        id: &str,
        snapshot_id: &str,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo> {
        let body = self
            .this("VslmQueryChangedDiskAreas")
            .child(id_element("id", id))
            .child(id_element("snapshotId", snapshot_id))
            .text_child("startOffset", start_offset.to_string())
            .text_child("changeId", change_id);
        DiskChangeInfo::from_element(&self.returnval(body).await?)
    }

    /// All changed areas of a snapshot of `capacity` bytes.
    ///
    /// # Errors
    ///
    /// As [`Vslm::query_changed_disk_areas`], and [`crate::Error::ChangedAreas`] when the
    /// answers do not tile the disk (see [`crate::Client::changed_disk_areas`]).
    pub async fn changed_disk_areas(
        &self,
        id: &str,
        snapshot_id: &str,
        capacity: u64,
        change_id: &str,
    ) -> Result<Vec<DiskArea>> {
        collect_areas(capacity, |offset| {
            self.query_changed_disk_areas(id, snapshot_id, offset, change_id)
        })
        .await
    }
}
