//! Restore of a first class disk generation (`restore ivd:NAME|ID`): a new first class disk
//! (CreateDisk) of the saved capacity and provisioning, on the original datastore or
//! `--datastore`, named as the original or `--name`; the non-zero chunks written through VDDK;
//! optionally attached to a VM (`--attach vm:NAME`). A restore that fails after the disk was
//! created deletes it.

use std::fmt::Write as _;

use repository_format::{Manifest, Repository, RepositoryLock, TargetKey, TargetKind};
use serde::Serialize;
use vim_client::{InventoryKind, MoRef};

use crate::cancel::Cancel;
use crate::cli::RestoreArgs;
use crate::commands::list::human_bytes;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fcd::{IvdMetadata, METADATA_FILE};
use crate::ivd_backup::IVD_DISK_KEY;
use crate::outcome::Outcome;
use crate::report::Report;
use crate::resolve::resolve;
use crate::target::{is_uuid, Target};
use crate::vcenter::Vcenter;
use crate::vddk_session::VddkEndpoint;

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

/// Finds the `ivd` target `selector` (a disk id or name) in the repository.
///
/// # Errors
/// [`Error::NotInRepository`] when none or several match.
pub fn find_ivd(
    repo: &Repository,
    selector: &str,
) -> Result<(repository_format::TargetSummary, Manifest)> {
    let mut found = Vec::new();
    let mut have = Vec::new();
    for s in repo.targets()? {
        if s.kind != TargetKind::Ivd {
            continue;
        }
        let Some(latest) = s.latest else { continue };
        let m = repo.manifest(&s.key, latest)?;
        let id = m.target.instance_uuid.clone().unwrap_or_default();
        have.push(format!("ivd:{} ({id})", m.target.name));
        let hit = if is_uuid(selector) {
            id.eq_ignore_ascii_case(selector)
        } else {
            m.target.name == selector
        };
        if hit {
            found.push((s, m));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::NotInRepository(format!(
            "the repository has no backup of ivd:{selector}; first class disks: {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))),
        n => Err(Error::NotInRepository(format!(
            "ivd:{selector} matches {n} first class disks in the repository ({}); use ivd:ID",
            have.join(", ")
        ))),
    }
}

type Loaded = (Repository, RepositoryLock, TargetKey, Manifest, IvdMetadata);

fn load(config: &Config, selector: &str, wanted: Option<u64>) -> Result<Loaded> {
    let repo = crate::repo::open(config)?;
    let wait = crate::repo::lock_wait(config);
    let lock = repo
        .lock_shared(wait)
        .map_err(|e| Error::from_lock("the repository".into(), wait.as_secs(), e))?;
    let key = find_ivd(&repo, selector)?.0.key;
    let manifest = crate::repo::pick_generation(&repo, &key, wanted)?;
    if !manifest.metadata_files.iter().any(|f| f == METADATA_FILE) {
        return Err(Error::NotInRepository(format!(
            "generation {} of {key} has no {METADATA_FILE}",
            manifest.generation
        )));
    }
    let raw = repo.read_metadata(&key, manifest.generation, METADATA_FILE)?;
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

/// Runs `restore ivd:...`.
///
/// # Errors
/// Every failure (a restore is one target): nothing in the repository, an unknown datastore
/// or VM, a capacity that is not whole MiB, vCenter, VDDK and repository errors.
pub async fn run(config: Config, args: RestoreArgs, cancel: Cancel, quiet: bool) -> Result<Report> {
    let Target::Ivd(selector) = &args.target else {
        return Err(Error::Other(format!(
            "{} is not an ivd: target",
            args.target
        )));
    };
    let attach = match &args.attach {
        None => None,
        Some(t @ Target::Vm(_)) => Some(t.clone()),
        Some(other) => {
            return Err(Error::Other(format!(
                "--attach takes a VM (vm:NAME), not {other}"
            )))
        }
    };
    let (c, s, g) = (config.clone(), selector.clone(), args.generation);
    let (repo, lock, key, manifest, meta) = tokio::task::spawn_blocking(move || load(&c, &s, g))
        .await
        .map_err(|e| Error::Other(format!("worker thread failed: {e}")))??;
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

    let vc = Vcenter::connect(&config).await?;
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
        let vddk = VddkEndpoint::load(&config, &vc).await?;
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
            let written = write_disk(
                &vddk, &repo, &key, &manifest, &disk.id, &datastore, &path, &cancel, !quiet,
            )
            .await?;
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
    let r = result?;
    let mut text = format!(
        "restored {} generation {} as first class disk `{}` ({}) on {}: {} , {} written\n",
        r.target,
        r.generation,
        r.name,
        r.id,
        r.datastore,
        human_bytes(r.capacity),
        human_bytes(r.bytes_written)
    );
    if let Some(vm) = &r.attached_to {
        let _ = writeln!(text, "  attached to VM `{vm}`");
    }
    Ok(Report::new(Outcome::Success, &r, text))
}

#[allow(clippy::too_many_arguments)]
async fn write_disk(
    vddk: &VddkEndpoint,
    repo: &Repository,
    key: &TargetKey,
    manifest: &Manifest,
    id: &str,
    datastore: &MoRef,
    path: &str,
    cancel: &Cancel,
    show_progress: bool,
) -> Result<u64> {
    let (vddk, repo, key, generation) =
        (vddk.clone(), repo.clone(), key.clone(), manifest.generation);
    let (id, ds, path, cancel) = (
        id.to_string(),
        datastore.value.clone(),
        path.to_string(),
        cancel.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let reader = repo.disk_reader(&key, generation, IVD_DISK_KEY)?;
        let conn = vddk.connect_fcd(&id, &ds, None)?;
        let disk = conn
            .open(&path, vddk::OpenFlags::NONE)
            .map_err(|e| Error::Vddk(format!("open {path} for writing: {e}")))?;
        crate::restore::write_stored_chunks(
            &reader,
            disk,
            &path,
            format!("restore ivd {id}"),
            show_progress,
            &cancel,
        )
    })
    .await
    .map_err(|e| Error::Other(format!("disk writer failed: {e}")))?
}
