//! A typed view of the parts of a `VirtualMachineConfigInfo` that backup and restore act on:
//! disks, NICs and controllers. The full configuration is kept as the raw XML tree elsewhere;
//! this only reads it.

use serde::Serialize;
use vim_client::xml::Element;

/// One virtual disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// Device key (stable within the VM).
    pub key: i32,
    /// `Hard disk 1`
    pub label: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Key of the controller it hangs off.
    pub controller_key: Option<i32>,
    /// Unit number on that controller.
    pub unit_number: Option<i32>,
    /// Datastore path of the backing file, `[ds] dir/disk.vmdk`.
    pub file_name: String,
    /// Datastore name, from the path.
    pub datastore: String,
    /// Thin provisioned.
    pub thin: bool,
    /// Eagerly zeroed thick.
    pub eager_scrub: bool,
    /// `persistent`, `independent_persistent`, ...
    pub disk_mode: Option<String>,
    /// CBT change id of this disk state, when CBT is on.
    pub change_id: Option<String>,
}

/// One network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicInfo {
    /// Device key.
    pub key: i32,
    /// `Network adapter 1`
    pub label: String,
    /// The device type (`VirtualVmxnet3`, `VirtualE1000`, ...).
    pub device_type: String,
    /// The network's name (standard portgroup name, or the summary vCenter shows).
    pub network: String,
    /// MAC address.
    pub mac: Option<String>,
}

/// The device elements of a configuration (`hardware/device`).
pub fn devices(config: &Element) -> impl Iterator<Item = &Element> {
    config
        .get("hardware")
        .into_iter()
        .flat_map(|h| h.all("device"))
}

/// The datastore name in a `[ds] path` string.
pub fn datastore_of(path: &str) -> String {
    path.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map(|(ds, _)| ds.to_string())
        .unwrap_or_default()
}

/// Every virtual disk, in device order.
pub fn disks(config: &Element) -> Vec<DiskInfo> {
    devices(config)
        .filter(|d| d.type_name() == Some("VirtualDisk"))
        .map(|d| {
            let capacity = d
                .parse_at::<u64>("capacityInBytes")
                .filter(|c| *c > 0)
                .or_else(|| d.parse_at::<u64>("capacityInKB").map(|kb| kb * 1024))
                .unwrap_or(0);
            let file_name = d
                .text_at("backing/fileName")
                .unwrap_or_default()
                .to_string();
            DiskInfo {
                key: d.parse_at("key").unwrap_or(0),
                label: d
                    .text_at("deviceInfo/label")
                    .unwrap_or_default()
                    .to_string(),
                capacity,
                controller_key: d.parse_at("controllerKey"),
                unit_number: d.parse_at("unitNumber"),
                datastore: datastore_of(&file_name),
                file_name,
                thin: d.bool_at("backing/thinProvisioned").unwrap_or(false),
                eager_scrub: d.bool_at("backing/eagerlyScrub").unwrap_or(false),
                disk_mode: d.text_at("backing/diskMode").map(str::to_string),
                change_id: d
                    .text_at("backing/changeId")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            }
        })
        .collect()
}

/// Whether a device element is a network adapter (it has a MAC address type).
pub fn is_nic(d: &Element) -> bool {
    d.get("addressType").is_some() || d.get("macAddress").is_some()
}

/// Every network adapter, in device order.
pub fn nics(config: &Element) -> Vec<NicInfo> {
    devices(config)
        .filter(|d| is_nic(d))
        .map(|d| NicInfo {
            key: d.parse_at("key").unwrap_or(0),
            label: d
                .text_at("deviceInfo/label")
                .unwrap_or_default()
                .to_string(),
            device_type: d.type_name().unwrap_or("VirtualEthernetCard").to_string(),
            network: d
                .text_at("backing/deviceName")
                .or_else(|| d.text_at("deviceInfo/summary"))
                .unwrap_or_default()
                .to_string(),
            mac: d.text_at("macAddress").map(str::to_string),
        })
        .collect()
}

/// Whether change tracking is on in this configuration.
pub fn cbt_enabled(config: &Element) -> bool {
    config.bool_at("changeTrackingEnabled").unwrap_or(false)
}

/// The VM's directory datastore path (`[ds] dir/`) and `.vmx` path, from `files/vmPathName`.
pub fn vmx_path(config: &Element) -> Option<String> {
    config.text_at("files/vmPathName").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_config() -> Element {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/vcenter-soap/test_json_vm_explode_default-20-Fetch.response.xml"
        );
        let bytes = std::fs::read(path).expect("recorded vCenter response");
        let doc = vim_client::xml::parse(&bytes).expect("parses");
        fn find<'a>(e: &'a Element, t: &str) -> Option<&'a Element> {
            if e.type_name() == Some(t) {
                return Some(e);
            }
            e.children.iter().find_map(|c| find(c, t))
        }
        find(&doc, "VirtualMachineConfigInfo")
            .expect("a config in the response")
            .clone()
    }

    #[test]
    fn reads_disks_of_a_real_vcenter_config() {
        let config = fixture_config();
        let d = disks(&config);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key, 2000);
        assert_eq!(d[0].label, "Hard disk 1");
        assert_eq!(d[0].capacity, 2_147_483_648);
        assert_eq!(d[0].controller_key, Some(1000));
        assert_eq!(d[0].datastore, "vsanDatastore");
        assert!(d[0].thin);
        assert_eq!(d[0].disk_mode.as_deref(), Some("persistent"));
        assert_eq!(
            vmx_path(&config).map(|p| datastore_of(&p)),
            Some("vsanDatastore".into())
        );
    }

    #[test]
    fn datastore_parsing() {
        assert_eq!(datastore_of("[LocalDS_0] a/b.vmdk"), "LocalDS_0");
        assert_eq!(datastore_of("nope"), "");
    }
}
