//! The typed view of a `VirtualMachineConfigInfo`, keeping the raw tree for round trips.

use crate::device::{Device, DeviceKind, VirtualDisk};
use crate::error::{Error, Result};
use crate::xml::Element;

/// A VM's configuration (`VirtualMachineConfigInfo`): what a backup needs, typed, plus the raw
/// tree of everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The VM's name.
    pub name: String,
    /// The BIOS uuid.
    pub uuid: String,
    /// The vCenter instance uuid.
    pub instance_uuid: Option<String>,
    /// The guest OS id (`otherLinux64Guest`).
    pub guest_id: Option<String>,
    /// The hardware version (`vmx-19`).
    pub version: Option<String>,
    /// Number of virtual CPUs.
    pub num_cpu: u32,
    /// Cores per socket.
    pub num_cores_per_socket: Option<u32>,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// `bios` or `efi`.
    pub firmware: Option<String>,
    /// Whether changed block tracking is on.
    pub change_tracking_enabled: bool,
    /// Datastore path of the `.vmx` (`files.vmPathName`).
    pub vm_path_name: Option<String>,
    /// Whether the VM is a template.
    pub template: bool,
    /// All devices, in the server's order.
    pub devices: Vec<Device>,
    /// The complete `VirtualMachineConfigInfo` element.
    pub raw: Element,
}

impl VmConfig {
    /// Reads the typed view of a `VirtualMachineConfigInfo` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when `name` or `hardware` is missing.
    pub fn from_element(e: &Element) -> Result<VmConfig> {
        let text = |p: &str| e.text_at(p).map(|t| t.trim().to_owned());
        let hardware = e
            .get("hardware")
            .ok_or_else(|| Error::Unexpected("VirtualMachineConfigInfo without hardware".into()))?;
        Ok(VmConfig {
            name: text("name")
                .ok_or_else(|| Error::Unexpected("VirtualMachineConfigInfo without name".into()))?,
            uuid: text("uuid").unwrap_or_default(),
            instance_uuid: text("instanceUuid"),
            guest_id: text("guestId"),
            version: text("version"),
            num_cpu: hardware.parse_at("numCPU").unwrap_or(0),
            num_cores_per_socket: hardware.parse_at("numCoresPerSocket"),
            memory_mb: hardware.parse_at("memoryMB").unwrap_or(0),
            firmware: text("firmware"),
            change_tracking_enabled: e.bool_at("changeTrackingEnabled").unwrap_or(false),
            vm_path_name: text("files/vmPathName"),
            template: e.bool_at("template").unwrap_or(false),
            devices: hardware.all("device").map(Device::from_element).collect(),
            raw: e.clone(),
        })
    }

    /// The virtual disks, in device order, with their device entries.
    pub fn disks(&self) -> impl Iterator<Item = (&Device, &VirtualDisk)> {
        self.devices
            .iter()
            .filter_map(|d| d.as_disk().map(|disk| (d, disk)))
    }

    /// The device with this key.
    pub fn device(&self, key: i32) -> Option<&Device> {
        self.devices.iter().find(|d| d.key == key)
    }

    /// The network adapters.
    pub fn nics(&self) -> impl Iterator<Item = &Device> {
        self.devices
            .iter()
            .filter(|d| matches!(d.kind, DeviceKind::Nic(_)))
    }
}
