//! Restore of a first class disk generation (`restore ivd:NAME|ID`): a new first class disk
//! (CreateDisk) of the saved capacity and provisioning, on the original datastore or
//! `--datastore`, named as the original or `--name`; the non-zero chunks written through VDDK;
//! optionally attached to a VM (`--attach vm:NAME`). A restore that fails after the disk was
//! created deletes it.

use repository_format::{Manifest, Repository, RepositoryLock, TargetKey};
use serde::Serialize;
use vim_client::InventoryKind;

use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::config::Config;
use crate::disk_io::VddkEndpoint;
use crate::error::{Error, Result};
use crate::restore::disk::{write_disk, DiskTarget, DiskWrite, WriteShape};
use crate::restore::{open_shared, read_metadata, RestoreOptions};
use crate::stored::ivd::{IvdMetadata, IVD_DISK_KEY, METADATA_FILE};
use crate::target::Target;
use crate::vsphere::resolve::resolve;
use crate::vsphere::Vcenter;

/// What `restore ivd:...` did, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct IvdRestoreResult {
    /// The target as given.
    pub target: String,
    /// The generation restored.
    pub generation: u64,
    /// The new disk's name.
    pub name: String,
    /// The new disk's id.
    pub id: String,
    /// Its datastore's name.
    pub datastore: String,
    /// Its descriptor's datastore path.
    pub path: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes written (zero chunks are skipped).
    pub bytes_written: u64,
    /// The VM it was attached to, if any.
    pub attached_to: Option<String>,
}

type Loaded = (Repository, RepositoryLock, TargetKey, Manifest, IvdMetadata);

fn load(config: &Config, options: &RestoreOptions, selector: &str) -> Result<Loaded> {
    let (repo, lock) = open_shared(config, options)?;
    let ivd = Target::Ivd(selector.to_string());
    let key = crate::repo::find_target_from(&repo, &ivd, options.from_vcenter.as_deref())?
        .0
        .key;
    let manifest = crate::repo::pick_generation(&repo, &key, options.generation)?;
    let raw = read_metadata(&repo, &key, &manifest, METADATA_FILE)?;
    let meta: IvdMetadata = serde_json::from_slice(&raw)
        .map_err(|e| Error::Other(format!("saved {METADATA_FILE}: {e}")))?;
    Ok((repo, lock, key, manifest, meta))
}

fn provisioning(kind: Option<&str>) -> vim_client::Provisioning {
    match kind {
        Some("eagerZeroedThick") => vim_client::Provisioning::EagerZeroedThick,
        Some("lazyZeroedThick") => vim_client::Provisioning::LazyZeroedThick,
        _ => vim_client::Provisioning::Thin,
    }
}

/// Restores a first class disk generation: creates the disk, writes its data, attaches it if
/// asked; a failure after the disk was created deletes it.
///
/// # Errors
/// Every failure (a restore is one target): nothing in the repository, an unknown datastore
/// or VM, a capacity that is not whole MiB, vCenter, VDDK and repository errors.
pub async fn restore_ivd(
    config: &Config,
    args: &RestoreOptions,
    selector: &str,
    cancel: &Cancel,
) -> Result<IvdRestoreResult> {
    let attach = match &args.attach {
        None => None,
        Some(t @ Target::Vm(_)) => Some(t.clone()),
        Some(other) => {
            return Err(Error::Other(format!(
                "--attach takes a VM (vm:NAME), not {other}"
            )))
        }
    };
    super::check_options(args)?;
    let (c, o, s) = (config.clone(), args.clone(), selector.to_string());
    let (repo, lock, key, manifest, meta) = blocking(move || load(&c, &o, &s)).await?;
    let record = manifest.disk(IVD_DISK_KEY).ok_or_else(|| {
        Error::NotInRepository(format!(
            "generation {} of {key} holds no disk",
            manifest.generation
        ))
    })?;
    let capacity = record.disk.capacity;
    const MIB: u64 = 1024 * 1024;
    if capacity % MIB != 0 {
        return Err(Error::Other(format!(
            "the saved disk has {capacity} bytes, not a whole number of MiB as CreateDisk needs"
        )));
    }
    let name = args.name.clone().unwrap_or_else(|| meta.name.clone());

    let vc = Vcenter::connect(config).await?;
    let result = async {
        let ds_name = args.datastore.clone().unwrap_or_else(|| meta.datastore.clone());
        let datastore = vc
            .client
            .find_by_name(InventoryKind::Datastore, &ds_name)
            .await?;
        let attach_vm = match &attach {
            Some(t) => Some(resolve(&vc, t).await?),
            None => None,
        };
        let vddk = VddkEndpoint::load(config, &vc).await?;
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let disk = vc
            .client
            .fcd_create(
                &name,
                &datastore,
                capacity / MIB,
                None,
                provisioning(meta.provisioning.as_deref()),
            )
            .await?;
        tracing::info!(ivd = %disk.id, %name, "first class disk created");
        let written = async {
            let path = disk.file_path.clone().ok_or_else(|| {
                Error::Other(format!("new first class disk {} has no file path", disk.id))
            })?;
            let job = DiskWrite {
                repo: repo.clone(),
                key: key.clone(),
                generation: manifest.generation,
                disk_key: IVD_DISK_KEY,
                to: DiskTarget::FirstClass {
                    id: disk.id.clone(),
                    datastore: datastore.value.clone(),
                    path: path.clone(),
                },
                label: format!("restore ivd {}", disk.id),
                shape: WriteShape::alone(),
            };
            let written = write_disk(&vddk, job, args.show_progress, cancel).await?;
            if let Some(vm) = &attach_vm {
                vc.client
                    .fcd_attach_to_vm(&vm.moref, &disk.id, &datastore, None, None)
                    .await?;
                tracing::info!(ivd = %disk.id, vm = %vm.name, "attached");
            }
            Ok::<_, Error>((path, written))
        }
        .await;
        match written {
            Ok((path, bytes_written)) => Ok(IvdRestoreResult {
                target: args.target.to_string(),
                generation: manifest.generation.0,
                name: name.clone(),
                id: disk.id.clone(),
                datastore: ds_name,
                path,
                capacity,
                bytes_written,
                attached_to: attach_vm.map(|v| v.name),
            }),
            Err(e) => {
                if let Err(d) = vc.client.fcd_delete(&disk.id, &datastore).await {
                    tracing::error!(ivd = %disk.id, "cannot delete the partially restored disk: {d}");
                }
                Err(Error::Other(format!(
                    "restore of {} failed and the new first class disk {} was deleted: {e}",
                    args.target, disk.id
                )))
            }
        }
    }
    .await;
    vc.logout().await;
    drop(lock);
    result
}
