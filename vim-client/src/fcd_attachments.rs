//! Which VMs use a first class disk, and first class disk tags (VIM's
//! `AttachTagToVStorageObject` family: vCenter keeps FCD tags apart from vAPI tagging).

use crate::client::Client;
use crate::device::{Device, DeviceKind};
use crate::error::{Error, Result};
use crate::fcd::id_element;
use crate::moref::MoRef;
use crate::xml::Element;

/// A VM disk that is a first class disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcdAttachment {
    /// The VM.
    pub vm: MoRef,
    /// The VM's name.
    pub vm_name: String,
    /// The disk's device key in the VM.
    pub device_key: i32,
    /// The disk's descriptor path as the VM sees it.
    pub file_name: String,
    /// Whether it matched by the backing's `vDiskId` (true) or only by file path (false:
    /// servers, like the lab's simulator, that attach an FCD's file without `vDiskId`).
    pub by_vdisk_id: bool,
}

impl Client {
    fn fcd_manager(&self) -> Result<MoRef> {
        self.service_content()
            .vstorage_object_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no VStorageObjectManager".into()))
    }

    /// The VMs that have first class disk `id` (on `datastore`) attached: disks whose backing
    /// carries `vDiskId` = `id`, or whose file is the disk's descriptor. Sorted by VM name.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown disk, other faults.
    pub async fn vms_with_fcd(&self, id: &str, datastore: &MoRef) -> Result<Vec<FcdAttachment>> {
        let disk = self.fcd_retrieve(id, datastore).await?;
        let root = self.service_content().root_folder.clone();
        let vms = self
            .container_objects(&root, "VirtualMachine", &["name", "config.hardware.device"])
            .await?;
        let mut out = Vec::new();
        for vm in vms {
            let Some(devices) = vm.get("config.hardware.device") else {
                continue;
            };
            for d in devices.children.iter().map(Device::from_element) {
                let DeviceKind::Disk(v) = &d.kind else {
                    continue;
                };
                let vdisk_id = d
                    .raw
                    .text_at("backing/vDiskId/id")
                    .or_else(|| d.raw.text_at("vDiskId/id"))
                    .map(str::trim);
                let by_id = vdisk_id == Some(id);
                let by_path = disk.file_path.as_deref() == Some(v.backing.file_name.as_str());
                if by_id || by_path {
                    out.push(FcdAttachment {
                        vm: vm.obj.clone(),
                        vm_name: vm.text("name").unwrap_or_default().to_owned(),
                        device_key: d.key,
                        file_name: v.backing.file_name.clone(),
                        by_vdisk_id: by_id,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            a.vm_name
                .cmp(&b.vm_name)
                .then(a.device_key.cmp(&b.device_key))
        });
        Ok(out)
    }

    /// Attaches first class disk `id` (on `datastore`) to `vm` (`AttachDisk_Task`) on
    /// controller `controller_key` at `unit_number` (the server picks when `None`), and waits.
    ///
    /// # Errors
    ///
    /// `NotFound`, `InvalidState` (already attached), `InvalidController`, other task faults.
    pub async fn fcd_attach_to_vm(
        &self,
        vm: &MoRef,
        id: &str,
        datastore: &MoRef,
        controller_key: Option<i32>,
        unit_number: Option<i32>,
    ) -> Result<()> {
        let body = Element::vim("AttachDisk_Task")
            .child(vm.to_element("_this"))
            .child(id_element("diskId", id))
            .child(datastore.to_element("datastore"))
            .opt_child(controller_key.map(|k| Element::vim_text("controllerKey", k.to_string())))
            .opt_child(unit_number.map(|u| Element::vim_text("unitNumber", u.to_string())));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Detaches first class disk `id` from `vm` (`DetachDisk_Task`), keeping the disk, and
    /// waits.
    ///
    /// # Errors
    ///
    /// `NotFound` when the disk is not attached to the VM, other task faults.
    pub async fn fcd_detach_from_vm(&self, vm: &MoRef, id: &str) -> Result<()> {
        let body = Element::vim("DetachDisk_Task")
            .child(vm.to_element("_this"))
            .child(id_element("diskId", id));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Attaches tag `tag` of category `category` (both by name) to first class disk `id`.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown tag or category, other faults.
    pub async fn fcd_attach_tag(&self, id: &str, category: &str, tag: &str) -> Result<()> {
        let body = Element::vim("AttachTagToVStorageObject")
            .child(self.fcd_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .text_child("category", category)
            .text_child("tag", tag);
        self.call(body).await.map(|_| ())
    }

    /// Detaches tag `tag` of category `category` from first class disk `id`.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown tag or category, other faults.
    pub async fn fcd_detach_tag(&self, id: &str, category: &str, tag: &str) -> Result<()> {
        let body = Element::vim("DetachTagFromVStorageObject")
            .child(self.fcd_manager()?.to_element("_this"))
            .child(id_element("id", id))
            .text_child("category", category)
            .text_child("tag", tag);
        self.call(body).await.map(|_| ())
    }

    /// The ids of the first class disks tagged `category`/`tag` (by name), sorted.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown tag or category, other faults.
    pub async fn fcd_attached_to_tag(&self, category: &str, tag: &str) -> Result<Vec<String>> {
        let body = Element::vim("ListVStorageObjectsAttachedToTag")
            .child(self.fcd_manager()?.to_element("_this"))
            .text_child("category", category)
            .text_child("tag", tag);
        let response = self.call(body).await?;
        let mut ids: Vec<String> = response
            .all("returnval")
            .filter_map(|r| r.text_at("id").map(|t| t.trim().to_owned()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The tags of first class disk `id`, as (category, tag) names.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn fcd_tags(&self, id: &str) -> Result<Vec<(String, String)>> {
        let body = Element::vim("ListTagsAttachedToVStorageObject")
            .child(self.fcd_manager()?.to_element("_this"))
            .child(id_element("id", id));
        let response = self.call(body).await?;
        Ok(response
            .all("returnval")
            .map(|r| {
                (
                    r.text_at("parentCategoryName")
                        .unwrap_or_default()
                        .to_owned(),
                    r.text_at("tagName").unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}
