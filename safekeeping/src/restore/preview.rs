//! `restore --dry-run` of a VM: the plan the restore would carry out — generation, new name,
//! placement, per-disk datastores, network mapping, the VM `--overwrite` would replace — made
//! by the same [`plan`] a real restore makes (every name checked against this vCenter), and
//! then dropped: no folder claimed, no VM created, nothing written.

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::excluded_disk::ExcludedDisk;
use crate::mapping::NetworkMap;
use crate::restore::plan::plan;
use crate::restore::{RestoreMode, RestoreOptions};
use crate::target::Target;
use crate::vsphere::Vcenter;

/// What `restore --dry-run` would do, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePreview {
    /// Always true: nothing was created.
    pub dry_run: bool,
    /// The target as given.
    pub target: String,
    /// The generation that would be restored.
    pub generation: u64,
    /// Create or import.
    pub mode: RestoreMode,
    /// The new VM's name.
    pub name: String,
    /// Where it would go.
    pub placement: PreviewPlacement,
    /// Per disk of the generation, in order.
    pub disks: Vec<PreviewDisk>,
    /// Per saved NIC: the network it was on and the one it would be on.
    pub networks: Vec<PreviewNic>,
    /// Disks the backup left out: recreated empty, or left out with `--drop-excluded-disks`.
    pub excluded_disks: Vec<ExcludedDisk>,
    /// Whether `excluded_disks` would be recreated empty (false: left out).
    pub excluded_disks_recreated: bool,
    /// The existing VM `--overwrite` would replace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<PreviewReplaced>,
    /// Keep uuids and MAC addresses (`--recovery`).
    pub recovery: bool,
    /// Power on at the end.
    pub power_on: bool,
}

/// Placement of the new VM, by name (moref beside it).
#[derive(Debug, Clone, Serialize)]
pub struct PreviewPlacement {
    /// Datacenter.
    pub datacenter: String,
    /// VM folder (path below the datacenter), or its moref when it has no listed name.
    pub folder: String,
    /// Resource pool.
    pub resource_pool: String,
    /// Host, when one was chosen (else vCenter picks one in the pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Datastore of the VM's files.
    pub datastore: String,
}

/// One disk of the restore.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewDisk {
    /// Position in the generation (as `show` numbers it).
    pub index: usize,
    /// Label at backup time.
    pub label: String,
    /// Bytes.
    pub capacity: u64,
    /// Datastore it would be written to.
    pub datastore: String,
}

/// One NIC's network mapping.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewNic {
    /// Device key of the saved NIC.
    pub key: i32,
    /// Network at backup time.
    pub from: String,
    /// Network of the restored NIC.
    pub to: String,
}

/// The VM `--overwrite` would replace.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewReplaced {
    /// Its name.
    pub name: String,
    /// Its moref.
    pub moref: String,
    /// Powered on now (it would be powered off: `--force`).
    pub powered_on: bool,
}

/// Plans the restore of a VM target as a real restore would, and describes the plan.
///
/// # Errors
/// Everything [`plan`] refuses (unknown names with candidates, a missing generation, a VM of
/// that name without `--overwrite`); `ivd:` and `vapp:` targets (not previewed yet).
pub async fn preview(config: &Config, options: &RestoreOptions) -> Result<RestorePreview> {
    if matches!(options.target, Target::Ivd(_) | Target::Vapp(_)) {
        return Err(Error::Other(format!(
            "--dry-run previews vm: restores; {} is not one (run `safekeeping show {}` to see what it holds)",
            options.target, options.target
        )));
    }
    let vc = Vcenter::connect(config).await?;
    let planned = plan(config, &vc, options).await;
    vc.logout().await;
    let p = planned?;
    let name_of = |list: &[crate::mapping::Candidate], moref: &str| {
        list.iter()
            .find(|c| c.moref == moref)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| moref.to_string())
    };
    let saved_networks: Vec<String> = p.saved.nics.iter().map(|n| n.network.clone()).collect();
    let map = NetworkMap::new(&options.network, &saved_networks)?;
    let preview = RestorePreview {
        dry_run: true,
        target: options.target.to_string(),
        generation: p.manifest.generation.0,
        mode: options.mode,
        name: p.name.clone(),
        placement: PreviewPlacement {
            datacenter: p.inventory.datacenter.name.clone(),
            folder: name_of(&p.inventory.folders, &p.folder.value),
            resource_pool: name_of(&p.inventory.pools, &p.pool.value),
            host: p
                .host
                .as_ref()
                .map(|h| name_of(&p.inventory.hosts, &h.value)),
            datastore: p.vm_datastore.clone(),
        },
        disks: p
            .manifest
            .disks
            .iter()
            .zip(&p.disk_datastores)
            .enumerate()
            .map(|(index, (d, ds))| PreviewDisk {
                index,
                label: d.disk.label.clone(),
                capacity: d.disk.capacity,
                datastore: ds.clone(),
            })
            .collect(),
        networks: p
            .saved
            .nics
            .iter()
            .map(|n| PreviewNic {
                key: n.key,
                from: n.network.clone(),
                to: map.target(&n.network).to_string(),
            })
            .collect(),
        excluded_disks: p.excluded.clone(),
        excluded_disks_recreated: !p.drop_excluded,
        replaces: p.replace.as_ref().map(|(moref, state)| PreviewReplaced {
            name: p.name.clone(),
            moref: moref.value.clone(),
            powered_on: *state == vim_client::PowerState::PoweredOn,
        }),
        recovery: p.recovery,
        power_on: options.power_on,
    };
    // The plan holds the repository's shared lock and handles: off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(p)).await;
    Ok(preview)
}
