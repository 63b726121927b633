//! What a generation stores besides its disks, as both wings read and write it: the names and
//! formats of the metadata files (`vm-config.xml`, `vm.vmx`, `vm.nvram`, `vm.json` for VMs;
//! `ivd.json` for first class disks; `vapp.json`, `vapp-config.xml`, `vapp-resources.xml` for
//! vApps). A backup writes them with `put_metadata`, a restore reads them back; the formats are
//! part of the repository's contents, so a change here needs the same care as a format change.

use serde::{Deserialize, Serialize};

/// Files of a `vm` generation.
pub mod vm {
    use super::*;

    /// Where a VM lived at backup time, by name (recorded in the generation).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Placement {
        /// Datacenter name.
        pub datacenter: String,
        /// VM folder path below the datacenter (`vm/prod`).
        pub folder: String,
        /// Resource pool name.
        pub resource_pool: String,
        /// Host name.
        pub host: String,
        /// Datastore names the VM uses.
        pub datastores: Vec<String>,
        /// Network names the VM uses.
        pub networks: Vec<String>,
    }

    /// Metadata file: the VM configuration (`VirtualMachineConfigInfo`) as XML.
    pub const CONFIG_FILE: &str = "vm-config.xml";
    /// Metadata file: the `.vmx`.
    pub const VMX_FILE: &str = "vm.vmx";
    /// Metadata file: the `.nvram`.
    pub const NVRAM_FILE: &str = "vm.nvram";
    /// Metadata file: [`VmMetadata`] as JSON.
    pub const SUMMARY_FILE: &str = "vm.json";

    /// One NIC as backed up.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SavedNic {
        /// Device key in the original VM.
        pub key: i32,
        /// Device type (`VirtualVmxnet3`, ...).
        pub device_type: String,
        /// Name of the network it was on.
        pub network: String,
        /// MAC address.
        pub mac: Option<String>,
    }

    /// The JSON summary saved with each generation.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VmMetadata {
        /// The VM's name at backup time.
        pub name: String,
        /// Where it lived.
        pub placement: Placement,
        /// Datacenter inventory path (for datastore file URLs).
        pub datacenter_path: String,
        /// NICs in device order.
        pub nics: Vec<SavedNic>,
        /// Datastore path of the `.vmx` at backup time.
        pub vmx_path: Option<String>,
        /// Metadata files that could not be saved, with why.
        pub missing: Vec<String>,
        /// Storage policies of the VM home and its disks (`None`: not recorded, as in
        /// generations written before policies were, or when vCenter's PBM did not answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub storage_policies: Option<SavedPolicies>,
        /// What the backup found about encryption and vTPM (absent in older generations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub security: Option<SavedSecurity>,
    }

    /// A storage policy by id and name (the name is what a restore looks up).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SavedPolicy {
        /// PBM profile id at backup time.
        pub id: String,
        /// Policy name.
        pub name: String,
    }

    /// One disk's storage policy.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SavedDiskPolicy {
        /// Device key in the original VM.
        pub key: i32,
        /// Its policy.
        pub policy: SavedPolicy,
    }

    /// The storage policies of a VM at backup time.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SavedPolicies {
        /// The VM home's policy (configuration files).
        pub home: Option<SavedPolicy>,
        /// Disks with a policy, in device order.
        pub disks: Vec<SavedDiskPolicy>,
    }

    /// Encryption and vTPM as the backup saw them: what a restore can and cannot bring back.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SavedSecurity {
        /// The VM was encrypted (`config.keyId`): its disks were read in clear through VDDK,
        /// the key is not in the generation.
        pub encrypted: bool,
        /// The key provider the VM used, when known.
        pub key_provider: Option<String>,
        /// The VM had a virtual TPM: its secrets live in the encrypted `.nvram`/`.vmx`
        /// state and are not kept.
        pub vtpm: bool,
    }
}

/// Files of an `ivd` (first class disk) generation.
pub mod ivd {
    use super::*;

    /// The device key under which an `ivd` generation stores its one disk.
    pub const IVD_DISK_KEY: i32 = 0;

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
}

/// Files of a `vapp` generation.
pub mod vapp {
    use super::*;

    /// A child VM as `vapp.json` records it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct VappChild {
        /// The VM's name.
        pub name: String,
        /// Its moref at backup time.
        pub moref: String,
        /// Start group (`startOrder`).
        pub start_order: Option<i32>,
        /// Seconds before the next group starts.
        pub start_delay: Option<i32>,
        /// `powerOn` or `none`.
        pub start_action: Option<String>,
        /// Seconds after stopping.
        pub stop_delay: Option<i32>,
        /// `powerOff`, `guestShutdown`, ...
        pub stop_action: Option<String>,
        /// The child's OVF tag.
        pub tag: Option<String>,
        /// The child's generation in the repository.
        pub generation: u64,
    }

    /// `vapp.json`: the vApp and its children in start order.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct VappMetadata {
        /// The vApp's name.
        pub name: String,
        /// Its moref at backup time.
        pub moref: String,
        /// Children in start order.
        pub children: Vec<VappChild>,
    }

    /// Name of the vApp summary in a `vapp` generation.
    pub const METADATA_FILE: &str = "vapp.json";
    /// The saved `VAppConfigInfo`.
    pub const CONFIG_FILE: &str = "vapp-config.xml";
    /// The saved resource allocation.
    pub const RESOURCES_FILE: &str = "vapp-resources.xml";
}

#[cfg(test)]
mod tests {
    use super::vm::VmMetadata;

    #[test]
    fn a_vm_json_from_before_policies_still_reads() {
        let old = r#"{"name":"web01","placement":{"datacenter":"DC0","folder":"vm","resource_pool":"Resources","host":"h1","datastores":["ds1"],"networks":[]},"datacenter_path":"DC0","nics":[],"vmx_path":"[ds1] web01/web01.vmx","missing":[]}"#;
        let m: VmMetadata = serde_json::from_str(old).unwrap();
        assert_eq!(m.name, "web01");
        assert_eq!(m.storage_policies, None);
        assert_eq!(m.security, None);
        // And a new one without policies writes no field an older reader would trip on.
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("storage_policies"), "{text}");
    }
}
