//! Step 1 of a VM restore: everything is checked before anything is created — the generation
//! and its saved metadata, the placement (datacenter, folder, pool, host, datastores) and the
//! network mapping against what this vCenter has, and an existing VM of the new name — and the
//! result is one [`RestorePlan`]. [`VmFolders`] claims the new VM's own folders (never another
//! VM's) once the restore goes ahead. The repository is only read.

use std::collections::HashMap;

use repository_format::{Manifest, Repository, RepositoryLock, TargetKey};
use vim_client::xml::Element;
use vim_client::{DatastorePath, FaultKind, MoRef, NetworkBacking, PowerState};

use crate::blocking::blocking;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::excluded_disk::{self, ExcludedDisk};
use crate::mapping::{disk_datastores, NetworkMap};
use crate::restore::policy::{plan_policies, PolicyPlan, PolicyRequest};
use crate::restore::{default_name, open_shared, read_metadata, RestoreOptions};
use crate::stored::vm::{VmMetadata, CONFIG_FILE, SUMMARY_FILE};
use crate::target::Target;
use crate::vsphere::inventory::{self, Inventory, NetworkKind, NetworkTarget};
use crate::vsphere::Vcenter;

/// Everything a restore needs, resolved and checked before anything is created.
pub struct RestorePlan {
    /// The repository.
    pub repo: Repository,
    /// The target's key.
    pub key: TargetKey,
    /// The generation.
    pub manifest: Manifest,
    /// Saved configuration (`VirtualMachineConfigInfo`).
    pub saved_config: Element,
    /// Saved summary.
    pub saved: VmMetadata,
    /// The new VM's name.
    pub name: String,
    /// Where it goes.
    pub inventory: Inventory,
    /// Folder.
    pub folder: MoRef,
    /// Resource pool.
    pub pool: MoRef,
    /// Host, if chosen.
    pub host: Option<MoRef>,
    /// Datastore name for the VM's files.
    pub vm_datastore: String,
    /// Datastore name per disk, in manifest order.
    pub disk_datastores: Vec<String>,
    /// Replacement network per original NIC key.
    pub nic_backings: HashMap<i32, NetworkBacking>,
    /// Disks the backup left out (independent or excluded): recreated empty with their
    /// capacity, or left out of the new VM with `drop_excluded`.
    pub excluded: Vec<ExcludedDisk>,
    /// `--drop-excluded-disks`: the excluded disks were removed from `saved_config`.
    pub drop_excluded: bool,
    /// Keep uuids and MACs.
    pub recovery: bool,
    /// Storage policies to apply (recorded ones found by name, or the command line's).
    pub policies: PolicyPlan,
    /// Existing VM to replace (`--overwrite`), with its power state.
    pub replace: Option<(MoRef, PowerState)>,
    /// The shared repository lock, held until the restore ends so that no prune or gc
    /// removes chunks it still has to read.
    pub lock: repository_format::RepositoryLock,
}

type Loaded = (
    Repository,
    RepositoryLock,
    TargetKey,
    Manifest,
    Element,
    VmMetadata,
);

/// Takes the shared repository lock and reads the generation and its saved metadata (blocking).
fn load_generation(
    config: &Config,
    options: &RestoreOptions,
    target: &Target,
    wanted: Option<u64>,
) -> Result<Loaded> {
    let (repo, lock) = open_shared(config, options)?;
    let (summary, _) =
        crate::repo::find_target_from(&repo, target, options.from_vcenter.as_deref())?;
    let key = summary.key;
    let manifest = crate::repo::pick_generation(&repo, &key, wanted)?;
    let xml = read_metadata(&repo, &key, &manifest, CONFIG_FILE)?;
    let saved_config = vim_client::xml::parse(&xml)?;
    let summary_json = read_metadata(&repo, &key, &manifest, SUMMARY_FILE)?;
    let saved: VmMetadata = serde_json::from_slice(&summary_json)
        .map_err(|e| Error::Other(format!("saved {}: {e}", SUMMARY_FILE)))?;
    Ok((repo, lock, key, manifest, saved_config, saved))
}

/// Checks everything and resolves the placement.
///
/// # Errors
/// Any unknown name (with candidates), a missing generation or metadata, a VM of that name
/// that exists (without `--overwrite`) or is powered on (without `--force`).
pub async fn plan(config: &Config, vc: &Vcenter, args: &RestoreOptions) -> Result<RestorePlan> {
    let (c, o) = (config.clone(), args.clone());
    let (repo, lock, key, manifest, mut saved_config, saved) =
        blocking(move || load_generation(&c, &o, &o.target, o.generation)).await?;
    let excluded = excluded_disk::from_manifest(&manifest).map_err(Error::Other)?;
    if args.drop_excluded_disks {
        let keys: Vec<i32> = excluded.iter().map(|x| x.key).collect();
        drop_disks(&mut saved_config, &keys);
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&manifest.target.name, time::OffsetDateTime::now_utc()));

    let dcs = inventory::datacenters(vc).await?;
    let dc_name = match &args.datacenter {
        Some(d) => d.clone(),
        None if dcs.iter().any(|d| d.name == saved.placement.datacenter) => {
            saved.placement.datacenter.clone()
        }
        None => dcs
            .first()
            .map(|d| d.name.clone())
            .ok_or_else(|| Error::Other("vCenter has no datacenter".into()))?,
    };
    let inventory = Inventory::load(vc, &dc_name).await?;
    let folder = match &args.folder {
        Some(f) => inventory.folder(f)?,
        None => inventory
            .folder(&saved.placement.folder)
            .unwrap_or_else(|_| inventory.datacenter.vm_folder.clone()),
    };
    let pool = match &args.resource_pool {
        Some(p) => inventory.pool(p)?,
        None => match inventory.pool(&saved.placement.resource_pool) {
            Ok(p) => p,
            Err(_) => inventory
                .pools
                .first()
                .map(|c| MoRef::new("ResourcePool", c.moref.clone()))
                .ok_or_else(|| {
                    Error::Other(format!("datacenter {dc_name} has no resource pool"))
                })?,
        },
    };
    let host = args
        .host
        .as_deref()
        .map(|h| inventory.host(h))
        .transpose()?;
    let saved_vm_ds = saved
        .vmx_path
        .as_deref()
        .map(metadata_datastore)
        .unwrap_or_default();
    let vm_datastore = match &args.datastore {
        Some(d) => inventory.datastore(d)?.name.clone(),
        None => match inventory.datastore(&saved_vm_ds) {
            Ok(d) => d.name.clone(),
            Err(_) => inventory
                .datastores
                .first()
                .map(|d| d.name.clone())
                .ok_or_else(|| Error::Other(format!("datacenter {dc_name} has no datastore")))?,
        },
    };
    let originals: Vec<String> = manifest
        .disks
        .iter()
        .map(|d| {
            if inventory.datastore(&d.disk.datastore).is_ok() {
                d.disk.datastore.clone()
            } else {
                vm_datastore.clone()
            }
        })
        .collect();
    let disk_datastores =
        disk_datastores(&originals, args.datastore.as_deref(), &args.disk_datastore)?;
    for ds in &disk_datastores {
        inventory.datastore(ds)?;
    }
    let saved_networks: Vec<String> = saved.nics.iter().map(|n| n.network.clone()).collect();
    let network_map = NetworkMap::new(&args.network, &saved_networks)?;
    let mut nic_backings = HashMap::new();
    for nic in &saved.nics {
        let target = inventory.network(network_map.target(&nic.network))?;
        nic_backings.insert(nic.key, network_backing(target));
    }

    let mut disk_keys: Vec<i32> = manifest.disks.iter().map(|d| d.disk.key).collect();
    if !args.drop_excluded_disks {
        disk_keys.extend(excluded.iter().map(|x| x.key));
    }
    let policies = plan_policies(
        vc,
        saved.storage_policies.as_ref(),
        manifest.disks.len(),
        &disk_keys,
        PolicyRequest {
            all: args.profile.as_deref(),
            per_disk: &args.disk_profile,
        },
    )
    .await?;
    if let Some(h) = &policies.home {
        tracing::info!(vm = %name, policy = %h.name, "storage policy of the VM home");
    }
    for (key, p) in &policies.disks {
        tracing::info!(vm = %name, disk = key, policy = %p.name, "storage policy of a disk");
    }
    let encrypted = drop_unrestorable_security(&mut saved_config, saved.security.as_ref(), &name);
    if encrypted && args.mode == crate::restore::RestoreMode::Import {
        // An encrypted VM's .vmx holds its key safe and an encrypted section: without the key,
        // which the generation does not have, no host can register it.
        return Err(Error::Other(format!(
            "generation {} is of an encrypted VM, whose saved .vmx cannot be registered without its key (not kept in the backup); restore it with --mode create",
            manifest.generation
        )));
    }

    let replace = match existing_vm(vc, &name).await? {
        None => None,
        Some((moref, state)) => {
            if !args.overwrite {
                return Err(Error::NameTaken(name));
            }
            if state == PowerState::PoweredOn && !args.force {
                return Err(Error::PoweredOn(name));
            }
            Some((moref, state))
        }
    };
    Ok(RestorePlan {
        repo,
        key,
        manifest,
        saved_config,
        saved,
        name,
        inventory,
        folder,
        pool,
        host,
        vm_datastore,
        disk_datastores,
        nic_backings,
        excluded,
        drop_excluded: args.drop_excluded_disks,
        policies,
        recovery: args.recovery,
        replace,
        lock,
    })
}

/// Says what an encrypted VM or a vTPM loses in the restore, and removes the `VirtualTPM`
/// device from the saved configuration: vCenter refuses a vTPM on a VM that is not encrypted,
/// and the VM is restored unencrypted (the key is not in the generation). Generations written
/// before this was recorded are judged from their saved configuration. Returns whether the VM
/// was encrypted.
fn drop_unrestorable_security(
    saved_config: &mut Element,
    recorded: Option<&crate::stored::vm::SavedSecurity>,
    name: &str,
) -> bool {
    let has_vtpm = |c: &Element| {
        c.get("hardware").is_some_and(|hw| {
            hw.all("device")
                .any(|d| d.type_name() == Some("VirtualTPM"))
        })
    };
    let security = crate::stored::vm::SavedSecurity {
        encrypted: recorded.is_some_and(|s| s.encrypted) || saved_config.get("keyId").is_some(),
        key_provider: recorded.and_then(|s| s.key_provider.clone()),
        vtpm: recorded.is_some_and(|s| s.vtpm) || has_vtpm(saved_config),
    };
    if !security.encrypted && !security.vtpm {
        return false;
    }
    tracing::warn!(
        vm = %name,
        "{}",
        crate::vsphere::metadata::security_note(&security)
    );
    if let Some(hw) = saved_config.get_mut("hardware") {
        hw.children
            .retain(|d| !(d.local() == "device" && d.type_name() == Some("VirtualTPM")));
    }
    security.encrypted
}

/// Removes the disks with these device keys from a saved configuration, and their entries
/// from the boot order, so that the rebuilt VM does not have them.
fn drop_disks(saved_config: &mut Element, keys: &[i32]) {
    let is_dropped =
        |e: &Element, field: &str| e.parse_at::<i32>(field).is_some_and(|k| keys.contains(&k));
    if let Some(hw) = saved_config.get_mut("hardware") {
        hw.children
            .retain(|d| !(d.local() == "device" && is_dropped(d, "key")));
    }
    if let Some(boot) = saved_config.get_mut("bootOptions") {
        boot.children
            .retain(|b| !(b.local() == "bootOrder" && is_dropped(b, "deviceKey")));
    }
}

/// Device keys of the saved configuration's disks, in device order: the order the new VM's
/// disks come in.
pub fn saved_disk_keys(saved_config: &Element) -> Vec<i32> {
    saved_config
        .get("hardware")
        .map(|hw| {
            hw.all("device")
                .filter(|d| d.type_name() == Some("VirtualDisk"))
                .filter_map(|d| d.parse_at::<i32>("key"))
                .collect()
        })
        .unwrap_or_default()
}

/// How a NIC attaches to `target`.
fn network_backing(target: &NetworkTarget) -> NetworkBacking {
    match &target.kind {
        NetworkKind::Standard => NetworkBacking::Standard {
            name: target.candidate.name.clone(),
            network: MoRef::new("Network", target.candidate.moref.clone()),
        },
        NetworkKind::Distributed {
            switch_uuid,
            portgroup_key,
        } => NetworkBacking::Distributed {
            switch_uuid: switch_uuid.clone(),
            portgroup_key: portgroup_key.clone(),
        },
    }
}

fn metadata_datastore(path: &str) -> String {
    path.parse::<vim_client::DatastorePath>()
        .map(|p| p.datastore)
        .unwrap_or_default()
}

async fn existing_vm(vc: &Vcenter, name: &str) -> Result<Option<(MoRef, PowerState)>> {
    let vms = vc.client.list_vms().await?;
    let mut matches = vms.into_iter().filter(|v| v.name == name);
    let first = matches.next();
    if matches.next().is_some() {
        return Err(Error::Other(format!(
            "several VMs are named `{name}`; --overwrite needs a unique name"
        )));
    }
    Ok(first.map(|v| {
        (
            v.moref,
            v.power_state.unwrap_or(PowerState::Unknown(String::new())),
        )
    }))
}

/// How often a folder name is tried (`name`, `name_1`, ...) before giving up.
const FOLDER_TRIES: usize = 1000;

/// The `i`-th folder name tried for a VM's files: `name`, `name_1`, `name_2`, ...
pub fn folder_candidate(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// New, empty folders claimed for a new VM's files, one per datastore it uses (the VM's
/// datastore first). A folder is claimed by creating it (`MakeDirectory` without parents,
/// which fails with `FileAlreadyExists` when it exists), so the new VM never writes into the
/// folder of another VM (a VM being replaced, or an orphan folder of the same name).
#[derive(Debug, Clone)]
pub struct VmFolders {
    folders: Vec<DatastorePath>,
}

impl VmFolders {
    /// Claims a free folder on the VM's datastore and on every disk datastore.
    ///
    /// # Errors
    /// `MakeDirectory` faults other than `FileAlreadyExists`, or no free name; folders
    /// claimed before the failure are deleted again.
    pub async fn claim(vc: &Vcenter, plan: &RestorePlan) -> Result<VmFolders> {
        let mut out = VmFolders {
            folders: Vec::new(),
        };
        let mut datastores = vec![plan.vm_datastore.clone()];
        for ds in &plan.disk_datastores {
            if !datastores.contains(ds) {
                datastores.push(ds.clone());
            }
        }
        for ds in datastores {
            match claim_folder(vc, plan, &ds).await {
                Ok(p) => out.folders.push(p),
                Err(e) => {
                    out.release(vc, plan).await;
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// The claimed folder on the VM's datastore.
    pub fn vm_folder(&self) -> &DatastorePath {
        &self.folders[0]
    }

    /// A file in the claimed folder on the VM's datastore.
    pub fn vm_file(&self, file: &str) -> DatastorePath {
        let f = self.vm_folder();
        DatastorePath::new(f.datastore.clone(), format!("{}/{file}", f.path))
    }

    /// The `.vmx` path: `[ds] folder/name.vmx`.
    pub fn vmx_path(&self, name: &str) -> DatastorePath {
        self.vm_file(&format!("{name}.vmx"))
    }

    /// Full datastore paths of the new disks, in manifest order (see [`disk_paths`]).
    pub fn disk_paths(&self, plan: &RestorePlan) -> Vec<String> {
        disk_paths(&plan.name, &plan.disk_datastores, &self.folders)
    }

    /// Deletes the claimed folders (with whatever a failed build left in them). A folder
    /// already gone (destroying the VM deleted it) is fine.
    pub async fn release(&self, vc: &Vcenter, plan: &RestorePlan) {
        for dir in &self.folders {
            match vc
                .client
                .delete_datastore_file(dir, Some(&plan.inventory.datacenter.moref))
                .await
            {
                Ok(()) => tracing::info!("deleted the folder {dir} claimed for the new VM"),
                Err(e) if e.is_fault(&FaultKind::FileNotFound) => {}
                Err(e) => tracing::warn!("could not delete the folder {dir} claimed for the new VM: {e}; remove it by hand"),
            }
        }
    }
}

async fn claim_folder(vc: &Vcenter, plan: &RestorePlan, datastore: &str) -> Result<DatastorePath> {
    for i in 0..FOLDER_TRIES {
        let dir = DatastorePath::new(datastore, folder_candidate(&plan.name, i));
        match vc
            .client
            .make_directory(&dir, Some(&plan.inventory.datacenter.moref), false)
            .await
        {
            Ok(()) => {
                if i > 0 {
                    tracing::info!(vm = %plan.name, "[{datastore}] {} exists; the new VM's files go to {dir}", plan.name);
                }
                return Ok(dir);
            }
            Err(e) if e.is_fault(&FaultKind::FileAlreadyExists) => continue,
            Err(e) => {
                return Err(Error::Other(format!(
                    "cannot create the folder {dir} for the new VM: {e}"
                )))
            }
        }
    }
    Err(Error::Other(format!(
        "no free folder for the new VM on [{datastore}]: {} to {} all exist",
        plan.name,
        folder_candidate(&plan.name, FOLDER_TRIES - 1)
    )))
}

/// Datastore paths of new disks named after the VM, each in the claimed folder of its
/// datastore: `[ds] folder/name.vmdk`, then `name_1.vmdk`, ... numbered per folder.
pub fn disk_paths(
    name: &str,
    disk_datastores: &[String],
    folders: &[DatastorePath],
) -> Vec<String> {
    let mut used: HashMap<&str, usize> = HashMap::new();
    disk_datastores
        .iter()
        .map(|ds| {
            let n = used.entry(ds.as_str()).or_insert(0);
            let file = if *n == 0 {
                format!("{name}.vmdk")
            } else {
                format!("{name}_{n}.vmdk")
            };
            *n += 1;
            match folders.iter().find(|f| &f.datastore == ds) {
                Some(f) => DatastorePath::new(ds.clone(), format!("{}/{file}", f.path)).to_string(),
                None => format!("[{ds}]"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Candidate;

    #[test]
    fn folder_candidates_are_numbered_after_the_name() {
        assert_eq!(folder_candidate("web01", 0), "web01");
        assert_eq!(folder_candidate("web01", 1), "web01_1");
        assert_eq!(folder_candidate("web01", 12), "web01_12");
    }

    #[test]
    fn disks_go_to_the_claimed_folder_of_their_datastore() {
        let folders = vec![
            DatastorePath::new("ds1", "web01_1"),
            DatastorePath::new("ds2", "web01"),
        ];
        let ds = |s: &[&str]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        assert_eq!(
            disk_paths("web01", &ds(&["ds1", "ds2", "ds1", "ds2", "ds1"]), &folders),
            vec![
                "[ds1] web01_1/web01.vmdk",
                "[ds2] web01/web01.vmdk",
                "[ds1] web01_1/web01_1.vmdk",
                "[ds2] web01/web01_1.vmdk",
                "[ds1] web01_1/web01_2.vmdk",
            ]
        );
        // A datastore without a claimed folder keeps the server's choice.
        assert_eq!(disk_paths("web01", &ds(&["ds3"]), &folders), vec!["[ds3]"]);
    }

    #[test]
    fn nics_map_to_the_backing_of_their_network_kind() {
        let std = NetworkTarget {
            candidate: Candidate {
                name: "VM Network".into(),
                moref: "network-7".into(),
            },
            kind: NetworkKind::Standard,
        };
        assert_eq!(
            network_backing(&std),
            NetworkBacking::Standard {
                name: "VM Network".into(),
                network: MoRef::new("Network", "network-7"),
            }
        );
        let dv = NetworkTarget {
            candidate: Candidate {
                name: "DC0_DVPG0".into(),
                moref: "dvportgroup-9".into(),
            },
            kind: NetworkKind::Distributed {
                switch_uuid: "50 aa".into(),
                portgroup_key: "dvportgroup-9".into(),
            },
        };
        assert_eq!(
            network_backing(&dv),
            NetworkBacking::Distributed {
                switch_uuid: "50 aa".into(),
                portgroup_key: "dvportgroup-9".into(),
            }
        );
    }
}
