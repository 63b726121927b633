//! Typed views of virtual devices: disks with their backings, controllers, NICs, CD-ROMs.
//!
//! Each [`Device`] keeps its raw element, so devices this crate does not model survive a
//! backup and restore unchanged.

use crate::moref::MoRef;
use crate::xml::Element;

/// One virtual device of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device key, unique within the VM.
    pub key: i32,
    /// The VIM type (`VirtualDisk`, `VirtualVmxnet3`, `ParaVirtualSCSIController`, ...).
    pub type_name: String,
    /// The label shown in the UI (`Hard disk 1`).
    pub label: Option<String>,
    /// The key of the controller the device is attached to.
    pub controller_key: Option<i32>,
    /// The unit number on that controller.
    pub unit_number: Option<i32>,
    /// What kind of device, with its typed details.
    pub kind: DeviceKind,
    /// The complete device element.
    pub raw: Element,
}

/// The modelled kinds of device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A virtual disk.
    Disk(VirtualDisk),
    /// A disk controller (IDE, SCSI, SATA, NVMe).
    Controller(Controller),
    /// A network adapter.
    Nic(Nic),
    /// A CD/DVD drive.
    Cdrom(Cdrom),
    /// Anything else (kept in `raw`).
    Other,
}

/// A virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDisk {
    /// Capacity in bytes (`capacityInBytes`, or `capacityInKB` × 1024 on old servers).
    pub capacity_in_bytes: u64,
    /// The disk's backing.
    pub backing: DiskBacking,
}

/// A disk backing (`VirtualDiskFlatVer2BackingInfo`, `VirtualDiskSparseVer2BackingInfo`, RDM...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBacking {
    /// The backing's VIM type.
    pub type_name: String,
    /// Datastore path of the descriptor (`[ds1] vm/vm.vmdk`).
    pub file_name: String,
    /// The datastore holding the file.
    pub datastore: Option<MoRef>,
    /// Thin provisioned.
    pub thin_provisioned: Option<bool>,
    /// Eagerly zeroed.
    pub eagerly_scrub: Option<bool>,
    /// The CBT change id as of this configuration (`changeId`).
    pub change_id: Option<String>,
    /// The disk uuid.
    pub uuid: Option<String>,
    /// `persistent`, `independent_persistent`, ...
    pub disk_mode: Option<String>,
    /// The parent backing for a snapshot delta disk.
    pub parent: Option<Box<DiskBacking>>,
}

/// A storage controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// The bus number.
    pub bus_number: i32,
    /// SCSI bus sharing (`noSharing`, ...), for SCSI controllers.
    pub shared_bus: Option<String>,
    /// Keys of the attached devices.
    pub devices: Vec<i32>,
}

/// A network adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// MAC address.
    pub mac_address: Option<String>,
    /// `manual`, `generated` or `assigned`.
    pub address_type: Option<String>,
    /// Where the NIC is connected.
    pub backing: NicBacking,
    /// Connected at power on.
    pub start_connected: Option<bool>,
}

/// A NIC's backing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBacking {
    /// A standard port group (`VirtualEthernetCardNetworkBackingInfo`).
    Network {
        /// The network's name.
        device_name: String,
        /// The network object.
        network: Option<MoRef>,
    },
    /// A distributed port group (`VirtualEthernetCardDistributedVirtualPortBackingInfo`).
    DistributedPort {
        /// The distributed switch uuid.
        switch_uuid: String,
        /// The port group key.
        portgroup_key: Option<String>,
        /// The port key.
        port_key: Option<String>,
    },
    /// An opaque (NSX) network (`VirtualEthernetCardOpaqueNetworkBackingInfo`).
    Opaque {
        /// The network id.
        network_id: String,
        /// The network type.
        network_type: String,
    },
    /// Another backing, by type name.
    Other(String),
    /// No backing.
    None,
}

/// A CD/DVD drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cdrom {
    /// The backing's type (`VirtualCdromIsoBackingInfo`, `VirtualCdromRemotePassthroughBackingInfo`, ...).
    pub backing_type: Option<String>,
    /// The ISO or device file name.
    pub file_name: Option<String>,
}

fn text(e: &Element, path: &str) -> Option<String> {
    e.text_at(path).map(|t| t.trim().to_owned())
}

impl DiskBacking {
    /// Reads a disk backing element.
    pub fn from_element(b: &Element) -> DiskBacking {
        DiskBacking {
            type_name: b.type_name().unwrap_or_default().to_owned(),
            file_name: text(b, "fileName").unwrap_or_default(),
            datastore: b.get("datastore").and_then(|d| MoRef::from_element(d).ok()),
            thin_provisioned: b.bool_at("thinProvisioned"),
            eagerly_scrub: b.bool_at("eagerlyScrub"),
            change_id: text(b, "changeId"),
            uuid: text(b, "uuid"),
            disk_mode: text(b, "diskMode"),
            parent: b
                .get("parent")
                .map(|p| Box::new(DiskBacking::from_element(p))),
        }
    }
}

fn nic_backing(b: Option<&Element>) -> NicBacking {
    let Some(b) = b else { return NicBacking::None };
    match b.type_name().unwrap_or_default() {
        "VirtualEthernetCardNetworkBackingInfo" => NicBacking::Network {
            device_name: text(b, "deviceName").unwrap_or_default(),
            network: b.get("network").and_then(|n| MoRef::from_element(n).ok()),
        },
        "VirtualEthernetCardDistributedVirtualPortBackingInfo" => NicBacking::DistributedPort {
            switch_uuid: text(b, "port/switchUuid").unwrap_or_default(),
            portgroup_key: text(b, "port/portgroupKey"),
            port_key: text(b, "port/portKey"),
        },
        "VirtualEthernetCardOpaqueNetworkBackingInfo" => NicBacking::Opaque {
            network_id: text(b, "opaqueNetworkId").unwrap_or_default(),
            network_type: text(b, "opaqueNetworkType").unwrap_or_default(),
        },
        other => NicBacking::Other(other.to_owned()),
    }
}

/// Whether a device type is a network adapter (all of them carry `macAddress` and `addressType`).
pub(crate) fn is_nic(type_name: &str, raw: &Element) -> bool {
    matches!(
        type_name,
        "VirtualE1000"
            | "VirtualE1000e"
            | "VirtualPCNet32"
            | "VirtualVmxnet"
            | "VirtualVmxnet2"
            | "VirtualVmxnet3"
            | "VirtualVmxnet3Vrdma"
            | "VirtualSriovEthernetCard"
            | "VirtualEthernetCard"
    ) || raw.get("addressType").is_some()
        || raw.get("macAddress").is_some()
}

fn is_controller(type_name: &str) -> bool {
    type_name.ends_with("Controller")
        && (type_name.contains("SCSI")
            || type_name.contains("LsiLogic")
            || type_name.contains("BusLogic")
            || type_name.contains("IDE")
            || type_name.contains("AHCI")
            || type_name.contains("SATA")
            || type_name.contains("NVME"))
}

impl Device {
    /// Reads a `device` element of `hardware`.
    pub fn from_element(e: &Element) -> Device {
        let type_name = e.type_name().unwrap_or_else(|| e.local()).to_owned();
        let kind = if type_name == "VirtualDisk" {
            let capacity = e
                .parse_at::<u64>("capacityInBytes")
                // A capacity in KiB too large for bytes is malformed, like unparsable text.
                .or_else(|| {
                    e.parse_at::<u64>("capacityInKB")
                        .and_then(|kb| kb.checked_mul(1024))
                })
                .unwrap_or(0);
            DeviceKind::Disk(VirtualDisk {
                capacity_in_bytes: capacity,
                backing: e
                    .get("backing")
                    .map(DiskBacking::from_element)
                    .unwrap_or_else(|| DiskBacking::from_element(&Element::vim("backing"))),
            })
        } else if type_name == "VirtualCdrom" {
            let b = e.get("backing");
            DeviceKind::Cdrom(Cdrom {
                backing_type: b.and_then(|b| b.type_name()).map(str::to_owned),
                file_name: b.and_then(|b| text(b, "fileName").or_else(|| text(b, "deviceName"))),
            })
        } else if is_controller(&type_name) {
            DeviceKind::Controller(Controller {
                bus_number: e.parse_at("busNumber").unwrap_or(0),
                shared_bus: text(e, "sharedBus"),
                devices: e
                    .all("device")
                    .filter_map(|d| d.text.trim().parse().ok())
                    .collect(),
            })
        } else if is_nic(&type_name, e) {
            DeviceKind::Nic(Nic {
                mac_address: text(e, "macAddress"),
                address_type: text(e, "addressType"),
                backing: nic_backing(e.get("backing")),
                start_connected: e.bool_at("connectable/startConnected"),
            })
        } else {
            DeviceKind::Other
        };
        Device {
            key: e.parse_at("key").unwrap_or(0),
            type_name,
            label: text(e, "deviceInfo/label"),
            controller_key: e.parse_at("controllerKey"),
            unit_number: e.parse_at("unitNumber"),
            kind,
            raw: e.clone(),
        }
    }

    /// The disk details, if this is a disk.
    pub fn as_disk(&self) -> Option<&VirtualDisk> {
        match &self.kind {
            DeviceKind::Disk(d) => Some(d),
            _ => None,
        }
    }

    /// The NIC details, if this is a network adapter.
    pub fn as_nic(&self) -> Option<&Nic> {
        match &self.kind {
            DeviceKind::Nic(n) => Some(n),
            _ => None,
        }
    }

    /// The controller details, if this is a storage controller.
    pub fn as_controller(&self) -> Option<&Controller> {
        match &self.kind {
            DeviceKind::Controller(c) => Some(c),
            _ => None,
        }
    }
}
