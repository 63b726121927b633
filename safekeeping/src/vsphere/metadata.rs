//! Step 4 of a backup: what a restore needs besides the disks, saved into the generation —
//! the VM's configuration exactly as vCenter returned it, its `.vmx` and `.nvram`, and where
//! it lived (datacenter, folder, pool, host, datastores, and each NIC's network) by name, the
//! storage policies of its home and disks (SPBM), and whether it was encrypted or had a vTPM.

use vim_client::{DatastorePath, MoRef, NicBacking, VmInfo};

use crate::error::{Error, Result};
use crate::stored::vm::{
    SavedDiskPolicy, SavedNic, SavedPolicies, SavedPolicy, SavedSecurity, VmMetadata, CONFIG_FILE,
    NVRAM_FILE, SUMMARY_FILE, VMX_FILE,
};
use crate::vsphere::inventory::placement_of;
use crate::vsphere::Vcenter;

/// Everything collected, ready to be written with `put_metadata`.
#[derive(Debug)]
pub struct CollectedMetadata {
    /// The summary.
    pub summary: VmMetadata,
    /// `(file name, bytes)` to store.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Collects the metadata of a VM.
///
/// # Errors
/// vCenter errors reading the configuration or the placement. A `.vmx` or `.nvram` that
/// cannot be downloaded is a warning (recorded in `missing`): the disks are still worth saving.
pub async fn collect(vc: &Vcenter, info: &VmInfo) -> Result<CollectedMetadata> {
    let config = info
        .config
        .as_ref()
        .ok_or_else(|| Error::Other(format!("VM {} has no configuration", info.name)))?;
    let placement = placement_of(vc, &info.moref).await?;
    let datacenter = vc.client.datacenter_of(&info.moref).await?;
    let datacenter_path = vc.client.inventory_path(&datacenter).await?;
    let network_names = network_names(vc, &info.networks).await?;
    let nics = config
        .nics()
        .map(|d| {
            let nic = d.as_nic();
            let network = match nic.map(|n| &n.backing) {
                Some(NicBacking::Network { device_name, .. }) => device_name.clone(),
                Some(NicBacking::DistributedPort { portgroup_key, .. }) => portgroup_key
                    .as_ref()
                    .and_then(|k| network_names.iter().find(|(m, _)| &m.value == k))
                    .map(|(_, n)| n.clone())
                    .or_else(|| portgroup_key.clone())
                    .unwrap_or_default(),
                Some(NicBacking::Opaque { network_id, .. }) => network_id.clone(),
                _ => String::new(),
            };
            SavedNic {
                key: d.key,
                device_type: d.type_name.clone(),
                network,
                mac: nic.and_then(|n| n.mac_address.clone()),
            }
        })
        .collect();
    let mut files = vec![(
        CONFIG_FILE.to_string(),
        vim_client::xml::write_document(&config.raw).into_bytes(),
    )];
    let mut missing = Vec::new();
    if let Some(vmx_path) = &config.vm_path_name {
        match download(vc, &datacenter_path, vmx_path).await {
            Ok(vmx) => {
                let text = String::from_utf8_lossy(&vmx).into_owned();
                let nvram_name = crate::restore::vmx::value(&text, "nvram")
                    .unwrap_or_else(|| format!("{}.nvram", config.name));
                let nvram_path = sibling(vmx_path, &nvram_name);
                files.push((VMX_FILE.to_string(), vmx));
                match download(vc, &datacenter_path, &nvram_path).await {
                    Ok(nvram) => files.push((NVRAM_FILE.to_string(), nvram)),
                    Err(e) => {
                        tracing::warn!(vm = %info.name, "cannot download {nvram_path}: {e}");
                        missing.push(format!("{NVRAM_FILE}: {e}"));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(vm = %info.name, "cannot download {vmx_path}: {e}; restore --mode import will not be possible from this generation");
                missing.push(format!("{VMX_FILE}: {e}"));
            }
        }
    }
    let disk_keys: Vec<i32> = config.disks().map(|(d, _)| d.key).collect();
    let storage_policies = match storage_policies(vc, &info.moref, &disk_keys).await {
        Ok(p) => Some(p),
        Err(e) => {
            // A vCenter without SPBM (or ESXi) must not stop the backup: the restore then
            // places the VM with the datastores' default policies, as before.
            tracing::warn!(vm = %info.name, "cannot read the storage policies (PBM): {e}; the restore will use the datastores' defaults");
            None
        }
    };
    let security = security_of(config);
    if security.encrypted || security.vtpm {
        tracing::warn!(
            vm = %info.name,
            encrypted = security.encrypted,
            vtpm = security.vtpm,
            "{}",
            security_note(&security)
        );
    }
    let summary = VmMetadata {
        name: info.name.clone(),
        placement,
        datacenter_path,
        nics,
        vmx_path: config.vm_path_name.clone(),
        missing,
        storage_policies,
        security: Some(security),
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::Other(format!("cannot encode VM metadata: {e}")))?;
    files.push((SUMMARY_FILE.to_string(), json));
    Ok(CollectedMetadata { summary, files })
}

/// The storage policies of the VM home and of each disk, with their names.
async fn storage_policies(vc: &Vcenter, vm: &MoRef, disk_keys: &[i32]) -> Result<SavedPolicies> {
    let pbm = vc.client.pbm().await?;
    let ids = pbm.vm_policies(vm, disk_keys).await?;
    let mut wanted: Vec<String> = ids.home.clone();
    wanted.extend(ids.disks.iter().flat_map(|(_, p)| p.iter().cloned()));
    wanted.sort();
    wanted.dedup();
    let known = pbm.policies(&wanted).await?;
    let named = |id: &String| SavedPolicy {
        id: id.clone(),
        name: known
            .iter()
            .find(|p| &p.id == id)
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    };
    Ok(SavedPolicies {
        home: ids.home.first().map(named),
        disks: ids
            .disks
            .iter()
            .filter_map(|(key, p)| {
                Some(SavedDiskPolicy {
                    key: *key,
                    policy: named(p.first()?),
                })
            })
            .collect(),
    })
}

/// Whether the VM is encrypted (`keyId`) and whether it has a virtual TPM.
pub fn security_of(config: &vim_client::VmConfig) -> SavedSecurity {
    let key = config.raw.get("keyId");
    SavedSecurity {
        encrypted: key.is_some(),
        key_provider: key
            .and_then(|k| k.text_at("providerId/id"))
            .map(str::to_string),
        vtpm: config.devices.iter().any(|d| d.type_name == "VirtualTPM"),
    }
}

/// What is and is not kept of an encrypted VM or a vTPM, for the backup's and the restore's
/// logs.
pub fn security_note(s: &SavedSecurity) -> String {
    let mut parts = Vec::new();
    if s.encrypted {
        parts.push(format!(
            "the VM is encrypted{}: its disks are read decrypted through VDDK and stored like all data (encrypted only in an encrypted repository); the VM encryption key and policy are not kept, a restore creates an unencrypted VM (apply an encryption storage policy with --profile to encrypt it again)",
            s.key_provider
                .as_deref()
                .map(|p| format!(" (key provider {p})"))
                .unwrap_or_default()
        ));
    }
    if s.vtpm {
        parts.push("the VM has a virtual TPM: its secrets (BitLocker keys, Windows Hello, measured-boot state) are bound to the VM's encryption and are not kept; a restore recreates the vTPM device only where the VM is encrypted again, otherwise without it".to_string());
    }
    parts.join("; ")
}

async fn network_names(vc: &Vcenter, networks: &[MoRef]) -> Result<Vec<(MoRef, String)>> {
    let mut out = Vec::new();
    for n in networks {
        out.push((n.clone(), vc.client.name_of(n).await?));
    }
    Ok(out)
}

async fn download(vc: &Vcenter, dc_path: &str, ds_path: &str) -> Result<Vec<u8>> {
    let path: DatastorePath = ds_path.parse()?;
    Ok(vc.client.read_datastore_file(dc_path, &path).await?)
}

/// `[ds] dir/other` for `[ds] dir/file` and `other`.
pub fn sibling(path: &str, name: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => match path.split_once(']') {
            Some((ds, _)) => format!("{ds}] {name}"),
            None => name.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sibling_paths() {
        assert_eq!(
            super::sibling("[ds1] web/web.vmx", "web.nvram"),
            "[ds1] web/web.nvram"
        );
        assert_eq!(
            super::sibling("[ds1] web.vmx", "web.nvram"),
            "[ds1] web.nvram"
        );
    }
}
