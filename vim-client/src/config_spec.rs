//! Rebuilding a `VirtualMachineConfigSpec` for `CreateVM_Task` from a saved
//! `VirtualMachineConfigInfo`, for restores.
//!
//! The saved configuration is the raw tree, so everything vCenter reported is available. Fields
//! are copied by name in the order the schema wants (vCenter's deserialiser is order
//! sensitive); devices become `deviceChange` entries with operation `add` (disks with
//! `fileOperation create` unless told to attach an existing file). Devices every new VM gets
//! anyway (PCI, IDE, PS/2, SIO controllers, keyboard, mouse, video card, VMCI) are left out.
//! Device keys are renumbered to negative temporary keys, with `controllerKey` and boot order
//! references rewritten to match. Top-level fields that are not carried over are listed in
//! [`RestoreConfig::dropped_fields`] so a caller can report them.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// Where and how one disk of the restored VM is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTarget {
    /// The backing file: `[ds]` to let the server name it in the VM's folder, or a full
    /// datastore path `[ds] dir/name.vmdk`.
    pub file_name: String,
    /// The datastore object (recommended with `[ds]`).
    pub datastore: Option<MoRef>,
    /// Thin provisioning (`None` keeps the original setting).
    pub thin_provisioned: Option<bool>,
    /// `true`: create a new empty disk (`fileOperation create`); `false`: attach the existing
    /// file at `file_name`.
    pub create: bool,
}

/// What to do with MAC addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacPolicy {
    /// Keep each NIC's MAC (as a manual address), for a restore that replaces the original.
    Keep,
    /// Let the server generate new MACs, for a copy beside the original.
    Regenerate,
}

/// What to do with CD/DVD drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdromPolicy {
    /// Keep the backing (an ISO path must exist on the target).
    Keep,
    /// Keep the drive, empty and disconnected (client device backing).
    Empty,
}

/// Choices for rebuilding the configuration.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The new VM's name.
    pub name: String,
    /// Where the `.vmx` goes: `[ds]` (the server makes a folder named after the VM).
    pub vm_path_name: String,
    /// The BIOS uuid to set (`None`: the server generates one).
    pub uuid: Option<String>,
    /// The instance uuid to set (`None`: the server generates one).
    pub instance_uuid: Option<String>,
    /// MAC addresses.
    pub macs: MacPolicy,
    /// CD/DVD drives.
    pub cdroms: CdromPolicy,
    /// Placement of each disk by its original device key. A disk without an entry is placed
    /// in `[ds]` of `vm_path_name` and created.
    pub disks: HashMap<i32, DiskTarget>,
    /// Replacement NIC backings by original device key (a `backing` element with its
    /// `xsi:type`), for network mapping.
    pub nic_backings: HashMap<i32, Element>,
    /// Whether to carry `changeTrackingEnabled` over (default true).
    pub keep_change_tracking: bool,
}

/// The network a restored NIC is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkBacking {
    /// A standard port group or opaque network: by name and `Network` object.
    Standard {
        /// The network's name (`deviceName`).
        name: String,
        /// The network object.
        network: MoRef,
    },
    /// A distributed port group: by switch uuid and port group key.
    Distributed {
        /// The distributed switch's uuid.
        switch_uuid: String,
        /// The port group's key.
        portgroup_key: String,
    },
}

impl NetworkBacking {
    /// The NIC's `backing` element with its `xsi:type`.
    pub fn to_element(&self) -> Element {
        match self {
            NetworkBacking::Standard { name, network } => Element::vim("backing")
                .typed("VirtualEthernetCardNetworkBackingInfo")
                .text_child("deviceName", name.clone())
                .child(network.to_element("network")),
            NetworkBacking::Distributed {
                switch_uuid,
                portgroup_key,
            } => Element::vim("backing")
                .typed("VirtualEthernetCardDistributedVirtualPortBackingInfo")
                .child(
                    Element::vim("port")
                        .text_child("switchUuid", switch_uuid.clone())
                        .text_child("portgroupKey", portgroup_key.clone()),
                ),
        }
    }
}

impl RestoreOptions {
    /// Attaches the NIC whose original device key is `key` to `backing`.
    pub fn set_nic_backing(&mut self, key: i32, backing: &NetworkBacking) {
        self.nic_backings.insert(key, backing.to_element());
    }

    /// Options that create every disk beside the `.vmx` and keep the MACs.
    pub fn new(name: impl Into<String>, vm_path_name: impl Into<String>) -> Self {
        RestoreOptions {
            name: name.into(),
            vm_path_name: vm_path_name.into(),
            uuid: None,
            instance_uuid: None,
            macs: MacPolicy::Keep,
            cdroms: CdromPolicy::Empty,
            disks: HashMap::new(),
            nic_backings: HashMap::new(),
            keep_change_tracking: true,
        }
    }
}

/// The rebuilt spec and a report of what was not carried over.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The `VirtualMachineConfigSpec` (element named `config`, as `CreateVM_Task` wants).
    pub spec: Element,
    /// Top-level `VirtualMachineConfigInfo` fields that were not carried over.
    pub dropped_fields: Vec<String>,
    /// Original device key → temporary key in the spec.
    pub key_map: HashMap<i32, i32>,
}

/// `VirtualMachineConfigSpec` fields in schema order, each with the `ConfigInfo` path it is
/// copied from (`None`: set by this module).
const SPEC_FIELDS: &[(&str, Option<&str>)] = &[
    ("name", None),
    ("version", Some("version")),
    ("uuid", None),
    ("instanceUuid", None),
    ("npivNodeWorldWideName", Some("npivNodeWorldWideName")),
    ("npivPortWorldWideName", Some("npivPortWorldWideName")),
    ("npivWorldWideNameType", Some("npivWorldWideNameType")),
    ("npivDesiredNodeWwns", Some("npivDesiredNodeWwns")),
    ("npivDesiredPortWwns", Some("npivDesiredPortWwns")),
    ("npivTemporaryDisabled", Some("npivTemporaryDisabled")),
    ("npivOnNonRdmDisks", Some("npivOnNonRdmDisks")),
    ("guestId", Some("guestId")),
    ("alternateGuestName", Some("alternateGuestName")),
    ("annotation", Some("annotation")),
    ("files", None),
    ("tools", Some("tools")),
    ("flags", Some("flags")),
    ("consolePreferences", Some("consolePreferences")),
    ("powerOpInfo", Some("defaultPowerOps")),
    ("numCPUs", Some("hardware/numCPU")),
    ("vcpuConfig", Some("vcpuConfig")),
    ("numCoresPerSocket", Some("hardware/numCoresPerSocket")),
    ("memoryMB", Some("hardware/memoryMB")),
    ("memoryHotAddEnabled", Some("memoryHotAddEnabled")),
    ("cpuHotAddEnabled", Some("cpuHotAddEnabled")),
    ("cpuHotRemoveEnabled", Some("cpuHotRemoveEnabled")),
    ("virtualICH7MPresent", Some("hardware/virtualICH7MPresent")),
    ("virtualSMCPresent", Some("hardware/virtualSMCPresent")),
    ("deviceChange", None),
    ("cpuAllocation", Some("cpuAllocation")),
    ("memoryAllocation", Some("memoryAllocation")),
    ("latencySensitivity", Some("latencySensitivity")),
    ("cpuAffinity", Some("cpuAffinity")),
    ("memoryAffinity", Some("memoryAffinity")),
    ("networkShaper", Some("networkShaper")),
    ("extraConfig", None),
    ("swapPlacement", Some("swapPlacement")),
    ("bootOptions", None),
    ("vAssertsEnabled", Some("vAssertsEnabled")),
    ("changeTrackingEnabled", None),
    ("firmware", Some("firmware")),
    ("maxMksConnections", Some("maxMksConnections")),
    ("guestAutoLockEnabled", Some("guestAutoLockEnabled")),
    (
        "memoryReservationLockedToMax",
        Some("memoryReservationLockedToMax"),
    ),
    ("nestedHVEnabled", Some("nestedHVEnabled")),
    ("vPMCEnabled", Some("vPMCEnabled")),
    ("messageBusTunnelEnabled", Some("messageBusTunnelEnabled")),
    ("migrateEncryption", Some("migrateEncryption")),
    ("sgxInfo", Some("sgxInfo")),
    ("guestMonitoringModeInfo", Some("guestMonitoringModeInfo")),
    ("sevEnabled", Some("sevEnabled")),
    ("pmemFailoverEnabled", Some("pmemFailoverEnabled")),
    (
        "vmxStatsCollectionEnabled",
        Some("vmxStatsCollectionEnabled"),
    ),
    (
        "vmOpNotificationToAppEnabled",
        Some("vmOpNotificationToAppEnabled"),
    ),
    ("vmOpNotificationTimeout", Some("vmOpNotificationTimeout")),
    ("deviceSwap", Some("deviceSwap")),
    ("deviceGroups", Some("deviceGroups")),
    (
        "fixedPassthruHotPlugEnabled",
        Some("fixedPassthruHotPlugEnabled"),
    ),
];

/// `ConfigInfo` fields handled without a same-named copy (so not reported as dropped).
const HANDLED: &[&str] = &[
    "name",
    "uuid",
    "instanceUuid",
    "files",
    "hardware",
    "extraConfig",
    "bootOptions",
    "changeTrackingEnabled",
    "defaultPowerOps",
];

/// Devices every new VM has; adding them again fails.
const BUILT_IN_DEVICES: &[&str] = &[
    "VirtualPCIController",
    "VirtualIDEController",
    "VirtualPS2Controller",
    "VirtualSIOController",
    "VirtualKeyboard",
    "VirtualPointingDevice",
    "VirtualMachineVideoCard",
    "VirtualMachineVMCIDevice",
];

/// `extraConfig` keys that describe the old VM's files or runtime and must not be copied.
const EXTRA_CONFIG_SKIP: &[&str] = &[
    "nvram",
    "sched.swap.derivedName",
    "migrate.hostLog",
    "migrate.hostLogState",
    "migrate.migrationId",
    "vmware.tools.internalversion",
    "vmware.tools.requiredversion",
];

/// Disk backing fields that describe the old file, its snapshots or CBT state.
const DISK_BACKING_STRIP: &[&str] = &[
    "backingObjectId",
    "contentId",
    "changeId",
    "parent",
    "deltaDiskFormat",
    "deltaDiskFormatVariant",
    "deltaGrainSize",
    "keyId",
    "uuid",
];

/// `VirtualDiskFlatVer2BackingInfo` fields in schema order.
const FLAT_BACKING_ORDER: &[&str] = &[
    "fileName",
    "datastore",
    "backingObjectId",
    "diskMode",
    "split",
    "writeThrough",
    "thinProvisioned",
    "eagerlyScrub",
    "uuid",
    "contentId",
    "changeId",
    "parent",
    "deltaDiskFormat",
    "digestEnabled",
    "deltaGrainSize",
    "deltaDiskFormatVariant",
    "sharing",
    "keyId",
];

/// Sets child `field` to `value`, inserting it at its schema position when missing.
fn set_ordered(e: &mut Element, field: &str, value: Element, order: &[&str]) {
    if let Some(c) = e.children.iter_mut().find(|c| c.local() == field) {
        *c = value;
        return;
    }
    let rank = |name: &str| order.iter().position(|o| *o == name).unwrap_or(usize::MAX);
    let mine = rank(field);
    let at = e
        .children
        .iter()
        .position(|c| rank(c.local()) > mine)
        .unwrap_or(e.children.len());
    e.children.insert(at, value);
}

/// The `ReconfigVM_Task` spec that gives a VM registered from an edited `.vmx` (restore by
/// import: disks, disk controllers and NICs removed from it) those devices back: only the
/// `deviceChange` entries of `rebuilt` (a spec from [`config_spec_from_info`]) that add a disk
/// controller (SCSI, SATA, NVMe), a disk or a NIC. Everything else (USB, CD-ROM on IDE, ...)
/// stays as the `.vmx` describes it.
pub fn import_devices_spec(rebuilt: &Element) -> Element {
    let mut spec = Element::vim("spec").typed("VirtualMachineConfigSpec");
    for change in rebuilt.all("deviceChange") {
        if change.get("device").is_some_and(is_reimported_device) {
            spec.push(change.clone());
        }
    }
    spec
}

/// Whether [`import_devices_spec`] adds `device` back.
fn is_reimported_device(device: &Element) -> bool {
    const DISK_CONTROLLERS: &[&str] = &[
        "ParaVirtualSCSIController",
        "VirtualLsiLogicController",
        "VirtualLsiLogicSASController",
        "VirtualBusLogicController",
        "VirtualAHCIController",
        "VirtualNVMEController",
    ];
    let t = device.type_name().unwrap_or_default();
    t == "VirtualDisk"
        || DISK_CONTROLLERS.contains(&t)
        || device.get("addressType").is_some()
        || device.get("macAddress").is_some()
}

/// Builds a `VirtualMachineConfigSpec` for `CreateVM_Task` from a saved
/// `VirtualMachineConfigInfo` tree.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `info` is not a configuration (no `hardware`).
pub fn config_spec_from_info(info: &Element, options: &RestoreOptions) -> Result<RestoreConfig> {
    let hardware = info
        .get("hardware")
        .ok_or_else(|| Error::InvalidInput("saved configuration has no hardware".into()))?;
    let devices: Vec<&Element> = hardware
        .all("device")
        .filter(|d| !BUILT_IN_DEVICES.contains(&d.type_name().unwrap_or_default()))
        .collect();
    let key_map: HashMap<i32, i32> = devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((d.parse_at::<i32>("key")?, -(i as i32) - 100)))
        .collect();

    let mut spec = Element::vim("config").typed("VirtualMachineConfigSpec");
    let mut copied: Vec<&str> = Vec::new();
    for (field, source) in SPEC_FIELDS {
        match (*field, source) {
            ("name", _) => spec.push(Element::vim_text("name", options.name.clone())),
            ("uuid", _) => {
                if let Some(u) = &options.uuid {
                    spec.push(Element::vim_text("uuid", u.clone()));
                }
            }
            ("instanceUuid", _) => {
                if let Some(u) = &options.instance_uuid {
                    spec.push(Element::vim_text("instanceUuid", u.clone()));
                }
            }
            ("files", _) => spec
                .push(Element::vim("files").text_child("vmPathName", options.vm_path_name.clone())),
            ("deviceChange", _) => {
                for d in &devices {
                    spec.push(device_change(d, &key_map, options));
                }
            }
            ("extraConfig", _) => {
                for opt in info.all("extraConfig") {
                    let key = opt.text_at("key").unwrap_or_default();
                    if !EXTRA_CONFIG_SKIP.contains(&key) {
                        spec.push(opt.clone());
                    }
                }
            }
            ("bootOptions", _) => {
                if let Some(b) = info.get("bootOptions") {
                    spec.push(remap_boot_options(b, &key_map));
                }
            }
            ("changeTrackingEnabled", _) => {
                if options.keep_change_tracking {
                    if let Some(c) = info.get("changeTrackingEnabled") {
                        spec.push(c.clone());
                    }
                }
            }
            (field, Some(path)) => {
                let (parent, leaf) = match path.rsplit_once('/') {
                    Some((p, l)) => (info.path(p), l),
                    None => (Some(info), *path),
                };
                if let Some(parent) = parent {
                    for value in parent.all(leaf) {
                        spec.push(value.renamed(field));
                    }
                    if !path.contains('/') {
                        copied.push(path);
                    }
                }
            }
            (_, None) => {}
        }
    }
    let mut dropped_fields: Vec<String> = info
        .children
        .iter()
        .map(|c| c.local())
        .filter(|n| !copied.contains(n) && !HANDLED.contains(n))
        .map(str::to_owned)
        .collect();
    dropped_fields.dedup();
    Ok(RestoreConfig {
        spec,
        dropped_fields,
        key_map,
    })
}

fn remap_key(e: &mut Element, local: &str, key_map: &HashMap<i32, i32>) {
    if let Some(k) = e.get_mut(local) {
        if let Some(new) = k
            .text
            .trim()
            .parse::<i32>()
            .ok()
            .and_then(|old| key_map.get(&old))
        {
            k.text = new.to_string();
        }
    }
}

fn remap_boot_options(b: &Element, key_map: &HashMap<i32, i32>) -> Element {
    let mut b = b.clone();
    for item in b.children.iter_mut().filter(|c| c.local() == "bootOrder") {
        remap_key(item, "deviceKey", key_map);
    }
    b
}

fn device_change(d: &Element, key_map: &HashMap<i32, i32>, options: &RestoreOptions) -> Element {
    let original_key = d.parse_at::<i32>("key").unwrap_or(0);
    let mut device = d.renamed("device");
    remap_key(&mut device, "key", key_map);
    remap_key(&mut device, "controllerKey", key_map);
    // The server fills a controller's device list from the devices' controllerKey.
    device.remove_all("device");
    let type_name = device.type_name().unwrap_or_default().to_owned();
    let mut file_operation = None;
    if type_name == "VirtualDisk" {
        let target = options.disks.get(&original_key);
        let create = target.map(|t| t.create).unwrap_or(true);
        if create {
            file_operation = Some("create");
        }
        rewrite_disk_backing(&mut device, target, options);
        device.remove_all("vDiskId");
        device.remove_all("nativeUnmanagedLinkedClone");
    } else if let Some(backing) = options.nic_backings.get(&original_key) {
        replace_child(&mut device, backing.renamed("backing"));
    }
    if crate::device::is_nic(&type_name, &device) {
        let order = [
            "key",
            "deviceInfo",
            "backing",
            "connectable",
            "slotInfo",
            "controllerKey",
            "unitNumber",
            "numaNode",
            "deviceGroupInfo",
            "addressType",
            "macAddress",
        ];
        let keep = options.macs == MacPolicy::Keep && device.get("macAddress").is_some();
        if !keep {
            device.remove_all("macAddress");
        }
        let address_type = if keep { "manual" } else { "generated" };
        set_ordered(
            &mut device,
            "addressType",
            Element::vim_text("addressType", address_type),
            &order,
        );
    }
    if type_name == "VirtualCdrom" && options.cdroms == CdromPolicy::Empty {
        replace_child(
            &mut device,
            Element::vim("backing")
                .typed("VirtualCdromRemotePassthroughBackingInfo")
                .text_child("deviceName", "")
                .text_child("exclusive", "false"),
        );
        if let Some(c) = device.get_mut("connectable") {
            c.set_child_text("startConnected", "false");
            c.set_child_text("connected", "false");
        }
    }
    Element::vim("deviceChange")
        .text_child("operation", "add")
        .opt_child(file_operation.map(|f| Element::vim_text("fileOperation", f)))
        .child(device)
}

fn replace_child(device: &mut Element, new: Element) {
    match device
        .children
        .iter_mut()
        .find(|c| c.local() == new.local())
    {
        Some(c) => *c = new,
        None => device.push(new),
    }
}

fn datastore_of(path: &str) -> String {
    match path
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
    {
        Some((ds, _)) => format!("[{ds}]"),
        None => path.to_owned(),
    }
}

fn rewrite_disk_backing(
    device: &mut Element,
    target: Option<&DiskTarget>,
    options: &RestoreOptions,
) {
    let old = device
        .get("backing")
        .cloned()
        .unwrap_or_else(|| Element::vim("backing"));
    let flat = old.type_name() == Some("VirtualDiskFlatVer2BackingInfo");
    // Other backings (RDM, sparse, SE sparse) are restored as flat VMDKs.
    let mut backing = if flat {
        let mut b = old.clone();
        for f in DISK_BACKING_STRIP {
            b.remove_all(f);
        }
        b
    } else {
        let mode = old
            .text_at("diskMode")
            .map(str::trim)
            .filter(|m| {
                matches!(
                    *m,
                    "persistent" | "independent_persistent" | "independent_nonpersistent"
                )
            })
            .unwrap_or("persistent");
        Element::vim("backing")
            .typed("VirtualDiskFlatVer2BackingInfo")
            .text_child("fileName", "")
            .text_child("diskMode", mode)
            .text_child("thinProvisioned", "true")
    };
    let file_name = target
        .map(|t| t.file_name.clone())
        .unwrap_or_else(|| datastore_of(&options.vm_path_name));
    let order = FLAT_BACKING_ORDER;
    set_ordered(
        &mut backing,
        "fileName",
        Element::vim_text("fileName", file_name),
        order,
    );
    backing.remove_all("datastore");
    if let Some(ds) = target.and_then(|t| t.datastore.as_ref()) {
        set_ordered(&mut backing, "datastore", ds.to_element("datastore"), order);
    }
    if let Some(thin) = target.and_then(|t| t.thin_provisioned) {
        let v = Element::vim_text("thinProvisioned", thin.to_string());
        set_ordered(&mut backing, "thinProvisioned", v, order);
        if thin {
            let v = Element::vim_text("eagerlyScrub", "false");
            set_ordered(&mut backing, "eagerlyScrub", v, order);
        }
    }
    replace_child(device, backing);
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    #[test]
    fn only_disk_controllers_disks_and_nics_are_re_added_on_import() {
        let dev = |t: &str| Element::vim("device").typed(t);
        assert!(is_reimported_device(&dev("VirtualDisk")));
        assert!(is_reimported_device(&dev("ParaVirtualSCSIController")));
        assert!(is_reimported_device(&dev("VirtualNVMEController")));
        assert!(is_reimported_device(
            &dev("VirtualVmxnet3").text_child("addressType", "generated")
        ));
        assert!(!is_reimported_device(&dev("VirtualUSBXHCIController")));
        assert!(!is_reimported_device(&dev("VirtualIDEController")));
        assert!(!is_reimported_device(&dev("VirtualCdrom")));
        let change = |d: Element| {
            Element::vim("deviceChange")
                .text_child("operation", "add")
                .child(d)
        };
        let rebuilt = Element::vim("spec")
            .typed("VirtualMachineConfigSpec")
            .text_child("name", "web01")
            .child(change(dev("VirtualDisk")))
            .child(change(dev("VirtualCdrom")));
        let spec = import_devices_spec(&rebuilt);
        assert_eq!(spec.all("deviceChange").count(), 1);
        assert!(spec.get("name").is_none());
        assert_eq!(spec.type_name(), Some("VirtualMachineConfigSpec"));
    }

    #[test]
    fn nic_backings_by_network_kind() {
        let b = NetworkBacking::Standard {
            name: "VM Network".into(),
            network: MoRef::new("Network", "network-7"),
        }
        .to_element();
        assert_eq!(b.type_name(), Some("VirtualEthernetCardNetworkBackingInfo"));
        assert_eq!(b.text_at("deviceName"), Some("VM Network"));
        assert_eq!(b.text_at("network"), Some("network-7"));
        let b = NetworkBacking::Distributed {
            switch_uuid: "50 aa".into(),
            portgroup_key: "dvportgroup-9".into(),
        }
        .to_element();
        assert_eq!(b.text_at("port/portgroupKey"), Some("dvportgroup-9"));
        assert_eq!(b.text_at("port/switchUuid"), Some("50 aa"));
        let mut o = RestoreOptions::new("web01", "[ds1]");
        o.set_nic_backing(
            4000,
            &NetworkBacking::Distributed {
                switch_uuid: "50 aa".into(),
                portgroup_key: "dvportgroup-9".into(),
            },
        );
        assert_eq!(o.nic_backings[&4000], b);
    }
}
