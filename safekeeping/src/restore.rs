//! Restore of one generation as a VM: everything is checked first (generation, metadata,
//! placement, networks, an existing VM of that name), then the VM is built by
//! [`crate::restore_create`] or [`crate::restore_import`], then each new disk is opened
//! read-write through VDDK and only the non-zero chunks are written. A restore that fails
//! after creating the VM destroys it. With `--overwrite` the existing VM is only renamed aside
//! ([`set_aside`]) while the new one is built, in folders of its own ([`VmFolders`]); it is
//! destroyed once the new VM is complete, or put back when the restore fails. The repository
//! is only read.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use repository_format::{Manifest, Repository, TargetKey};
use serde::Serialize;
use vim_client::xml::Element;
use vim_client::{DatastorePath, FaultKind, MoRef, PowerState, VmConfig};

use crate::cancel::Cancel;
use crate::cli::{RestoreArgs, RestoreMode};
use crate::config::Config;
use crate::disk_writer::VddkSink;
use crate::error::{Error, Result};
use crate::inventory::{Inventory, NetworkKind, NetworkTarget};
use crate::mapping::{disk_datastores, NetworkMap};
use crate::metadata::{self, VmMetadata};
use crate::progress::Progress;
use crate::target::Target;
use crate::vcenter::Vcenter;
use crate::vddk_session::VddkEndpoint;

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
    /// Replacement NIC backing per original NIC key.
    pub nic_backings: HashMap<i32, Element>,
    /// Keep uuids and MACs.
    pub recovery: bool,
    /// Existing VM to replace (`--overwrite`), with its power state.
    pub replace: Option<(MoRef, PowerState)>,
    /// The shared repository lock, held until the restore ends so that no prune or gc
    /// removes chunks it still has to read.
    pub lock: repository_format::RepositoryLock,
}

/// What a restore did, as `restore --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    /// The target restored.
    pub target: String,
    /// The generation restored.
    pub generation: u64,
    /// Create or import.
    pub mode: RestoreMode,
    /// The new VM's name.
    pub name: String,
    /// The new VM's moref.
    pub moref: String,
    /// Per disk: index, new path, bytes written.
    pub disks: Vec<RestoredDisk>,
    /// Powered on at the end.
    pub powered_on: bool,
    /// Configuration fields vCenter reported that the rebuilt VM does not carry.
    pub dropped_fields: Vec<String>,
}

/// One restored disk.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredDisk {
    /// Index in the generation.
    pub index: usize,
    /// Datastore path of the new disk.
    pub path: String,
    /// Capacity.
    pub capacity: u64,
    /// Bytes of data written (zero chunks are skipped).
    pub bytes_written: u64,
}

/// Asynchronous VDDK writes kept in flight during a restore.
const WRITE_BEHIND: usize = 4;

/// Default name of a restored VM: `<name>-restored-<UTC>`.
pub fn default_name(original: &str, now: time::OffsetDateTime) -> String {
    format!(
        "{original}-restored-{}",
        crate::snapshot_name::compact_utc(now)
    )
}

fn read_metadata(repo: &Repository, key: &TargetKey, m: &Manifest, name: &str) -> Result<Vec<u8>> {
    if !m.metadata_files.iter().any(|f| f == name) {
        return Err(Error::NotInRepository(format!(
            "generation {} of {key} has no {name}",
            m.generation
        )));
    }
    Ok(repo.read_metadata(key, m.generation, name)?)
}

type Loaded = (
    Repository,
    repository_format::RepositoryLock,
    TargetKey,
    Manifest,
    Element,
    VmMetadata,
);

/// Takes the shared repository lock and reads the generation and its saved metadata (blocking).
fn load_generation(config: &Config, target: &Target, wanted: Option<u64>) -> Result<Loaded> {
    let repo = crate::repo::open(config)?;
    let wait = crate::repo::lock_wait(config);
    let lock = repo
        .lock_shared(wait)
        .map_err(|e| Error::from_lock("the repository".into(), wait.as_secs(), e))?;
    let (summary, _) = crate::repo::find_target(&repo, target)?;
    let key = summary.key;
    let manifest = crate::repo::pick_generation(&repo, &key, wanted)?;
    let xml = read_metadata(&repo, &key, &manifest, metadata::CONFIG_FILE)?;
    let saved_config = vim_client::xml::parse(&xml)?;
    let summary_json = read_metadata(&repo, &key, &manifest, metadata::SUMMARY_FILE)?;
    let saved: VmMetadata = serde_json::from_slice(&summary_json)
        .map_err(|e| Error::Other(format!("saved {}: {e}", metadata::SUMMARY_FILE)))?;
    Ok((repo, lock, key, manifest, saved_config, saved))
}

/// Checks everything and resolves the placement.
///
/// # Errors
/// Any unknown name (with candidates), a missing generation or metadata, a VM of that name
/// that exists (without `--overwrite`) or is powered on (without `--force`).
pub async fn plan(config: &Config, vc: &Vcenter, args: &RestoreArgs) -> Result<RestorePlan> {
    let c = config.clone();
    let target = args.target.clone();
    let wanted = args.generation;
    let (repo, lock, key, manifest, saved_config, saved) =
        tokio::task::spawn_blocking(move || load_generation(&c, &target, wanted))
            .await
            .map_err(|e| Error::Other(format!("worker thread failed: {e}")))??;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&manifest.target.name, time::OffsetDateTime::now_utc()));

    let dcs = crate::inventory::datacenters(vc).await?;
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
        nic_backings.insert(nic.key, nic_backing(target));
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
        recovery: args.recovery,
        replace,
        lock,
    })
}

fn metadata_datastore(path: &str) -> String {
    path.parse::<vim_client::DatastorePath>()
        .map(|p| p.datastore)
        .unwrap_or_default()
}

/// The `backing` element that attaches a NIC to `target`.
pub fn nic_backing(target: &NetworkTarget) -> Element {
    match &target.kind {
        NetworkKind::Standard => Element::vim("backing")
            .typed("VirtualEthernetCardNetworkBackingInfo")
            .text_child("deviceName", target.candidate.name.clone())
            .child(MoRef::new("Network", target.candidate.moref.clone()).to_element("network")),
        NetworkKind::Distributed {
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

/// Name an existing VM carries while `--overwrite` builds its replacement:
/// `<name>-replaced-<UTC>`.
pub fn aside_name(name: &str, now: time::OffsetDateTime) -> String {
    format!("{name}-replaced-{}", crate::snapshot_name::compact_utc(now))
}

/// The VM `--overwrite` replaces, renamed aside (and powered off) until the new VM is
/// complete: then it is destroyed; if the restore fails it gets its name (and power) back.
#[derive(Debug, Clone)]
pub struct SetAside {
    /// The old VM.
    pub vm: MoRef,
    /// Its name, which the new VM takes.
    pub name: String,
    /// The name it carries meanwhile.
    pub aside_name: String,
    /// Whether it was powered on (`--force` powered it off).
    pub was_on: bool,
}

/// Sets the VM the plan replaces aside, if there is one: powers it off (`--force` was
/// checked) and renames it to [`aside_name`], so that the new VM can take its name while the
/// old one still exists. Nothing of the old VM is deleted here.
///
/// # Errors
/// vCenter faults; a VM powered off here is powered on again when the rename fails.
pub async fn set_aside(vc: &Vcenter, plan: &RestorePlan) -> Result<Option<SetAside>> {
    let Some((vm, state)) = &plan.replace else {
        return Ok(None);
    };
    let was_on = *state == PowerState::PoweredOn;
    if was_on {
        tracing::warn!(vm = %plan.name, "--overwrite --force: powering off the existing VM");
        vc.client.power_off(vm).await?;
    }
    let aside = aside_name(&plan.name, time::OffsetDateTime::now_utc());
    if let Err(e) = vc.client.rename(vm, &aside).await {
        let mut msg = format!(
            "could not rename the existing VM `{}` aside to `{aside}` before restoring: {e}; nothing was restored",
            plan.name
        );
        if was_on {
            match vc.client.power_on(vm).await {
                Ok(()) => msg.push_str(", and the existing VM was powered on again"),
                Err(p) => {
                    let _ = write!(
                        msg,
                        ", and powering the existing VM on again failed: {p}; it is powered off"
                    );
                }
            }
        }
        return Err(Error::Other(msg));
    }
    tracing::warn!(
        vm = %plan.name,
        "--overwrite: the existing VM ({}) was renamed to `{aside}`; it is kept until the new VM is complete",
        vm.value
    );
    Ok(Some(SetAside {
        vm: vm.clone(),
        name: plan.name.clone(),
        aside_name: aside,
        was_on,
    }))
}

impl SetAside {
    /// Destroys the old VM once the new one is complete. Returns its (aside) name when that
    /// fails: the restore has still succeeded, and the old VM is left under that name.
    pub async fn discard(&self, vc: &Vcenter) -> Option<String> {
        match vc.client.destroy(&self.vm).await {
            Ok(()) => {
                tracing::warn!(vm = %self.name, "--overwrite: destroyed the replaced VM `{}`", self.aside_name);
                None
            }
            Err(e) => {
                tracing::warn!(
                    vm = %self.name,
                    "the new VM is complete, but the replaced VM `{}` ({}) could not be destroyed: {e}; remove it by hand",
                    self.aside_name,
                    self.vm.value
                );
                Some(self.aside_name.clone())
            }
        }
    }

    /// After a failed restore (the partial new VM already destroyed): gives the old VM its name
    /// back and powers it on again if it was on. Returns `cause`, extended by what became of
    /// the old VM (put back, or where it is when putting it back failed).
    pub async fn put_back(&self, vc: &Vcenter, cause: Error) -> Error {
        if let Err(e) = vc.client.rename(&self.vm, &self.name).await {
            tracing::error!(
                vm = %self.name,
                "could not give the old VM ({}) its name back: {e}",
                self.vm.value
            );
            return Error::Other(format!(
                "{cause}; the old VM could NOT be put back ({e}): it is still named `{}` ({}), powered off; rename it to `{}` by hand",
                self.aside_name, self.vm.value, self.name
            ));
        }
        if self.was_on {
            if let Err(e) = vc.client.power_on(&self.vm).await {
                tracing::error!(vm = %self.name, "could not power the old VM on again: {e}");
                return Error::Other(format!(
                    "{cause}; the old VM was put back as `{}` but could not be powered on again: {e}",
                    self.name
                ));
            }
        }
        tracing::warn!(vm = %self.name, "the old VM was put back");
        Error::Other(format!(
            "{cause}; the old VM was put back as `{}`{}",
            self.name,
            if self.was_on {
                " and powered on again"
            } else {
                ""
            }
        ))
    }
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

/// Writes every disk of the generation into the new VM's disks (matched in device order,
/// capacities checked), skipping zero chunks.
///
/// # Errors
/// A disk count or capacity mismatch, VDDK and repository errors, an interruption.
pub async fn write_disks(
    vc: &Vcenter,
    vddk: &VddkEndpoint,
    plan: &Arc<RestorePlan>,
    vm: &MoRef,
    cancel: &Cancel,
    show_progress: bool,
    max_connections: usize,
) -> Result<Vec<RestoredDisk>> {
    let config: VmConfig = vc.client.vm_config(vm).await?;
    let new_disks: Vec<(String, u64)> = config
        .disks()
        .map(|(_, d)| (d.backing.file_name.clone(), d.capacity_in_bytes))
        .collect();
    if new_disks.len() != plan.manifest.disks.len() {
        return Err(Error::Other(format!(
            "the new VM has {} disks, the generation {}",
            new_disks.len(),
            plan.manifest.disks.len()
        )));
    }
    // Every capacity is checked before anything is written.
    let mut jobs = Vec::with_capacity(new_disks.len());
    for (index, (record, (path, capacity))) in plan.manifest.disks.iter().zip(new_disks).enumerate()
    {
        if capacity != record.disk.capacity {
            return Err(Error::Other(format!(
                "new disk {index} ({path}) has {capacity} bytes, the backup {}",
                record.disk.capacity
            )));
        }
        jobs.push((index, record.disk.key, path, capacity));
    }
    // The disks are written at the same time, at most `max_connections` at once (one VDDK
    // connection each); the first failure stops the others.
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let disks_cancel = cancel.child();
    let writes = jobs.into_iter().map(|(index, disk_key, path, capacity)| {
        let limit = limit.clone();
        let disks_cancel = disks_cancel.clone();
        async move {
            let r = write_disk(
                vddk,
                plan,
                vm,
                (index, disk_key, path, capacity),
                limit,
                &disks_cancel,
                show_progress,
            )
            .await;
            if r.is_err() {
                disks_cancel.cancel();
            }
            r
        }
    });
    let out = crate::backup::first_failure(futures_util::future::join_all(writes).await)?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(out)
}

/// Writes one disk of the generation into the new VM's disk at `path`, once a connection
/// permit from `limit` is free.
async fn write_disk(
    vddk: &VddkEndpoint,
    plan: &Arc<RestorePlan>,
    vm: &MoRef,
    (index, disk_key, path, capacity): (usize, i32, String, u64),
    limit: Arc<tokio::sync::Semaphore>,
    cancel: &Cancel,
    show_progress: bool,
) -> Result<RestoredDisk> {
    let permit = tokio::select! {
        permit = limit.acquire_owned() => permit
            .map_err(|_| Error::Other("the VDDK connection limit was closed".into()))?,
        _ = cancel.cancelled() => return Err(Error::Interrupted),
    };
    let vddk = vddk.clone();
    let job_plan = plan.clone();
    let job_cancel = cancel.clone();
    let vm_id = vm.value.clone();
    let p = path.clone();
    let label = format!("restore {} disk {index}", plan.name);
    let written = tokio::task::spawn_blocking(move || -> Result<u64> {
        // Released when this closure returns, after the connection is closed.
        let _permit = permit;
        let plan = job_plan;
        let reader = plan
            .repo
            .disk_reader(&plan.key, plan.manifest.generation, disk_key)?;
        let conn = vddk.connect_writable(&vm_id)?;
        let disk = conn
            .open(&p, vddk::OpenFlags::NONE)
            .map_err(|e| Error::Vddk(format!("open {p} for writing: {e}")))?;
        write_stored_chunks(&reader, disk, &p, label, show_progress, &job_cancel)
    })
    .await
    .map_err(|e| Error::Other(format!("disk writer failed: {e}")))??;
    tracing::info!(vm = %plan.name, disk = index, %path, written, "disk restored");
    Ok(RestoredDisk {
        index,
        path,
        capacity,
        bytes_written: written,
    })
}

/// The restore's data step: writes every stored (non-zero) chunk of a disk of a generation into
/// a disk opened read-write through VDDK, with writes behind in flight, and returns the bytes
/// written. Blocking: call it on a blocking thread. Zero chunks are skipped, because a new disk
/// reads as zeros.
///
/// # Errors
/// Chunk read or verification errors, VDDK write errors, [`Error::Interrupted`] when `cancel`
/// fires.
pub(crate) fn write_stored_chunks(
    reader: &repository_format::DiskReader,
    disk: vddk::Disk,
    path: &str,
    label: String,
    show_progress: bool,
    cancel: &Cancel,
) -> Result<u64> {
    let mut sink = VddkSink::new(disk, path.to_string(), WRITE_BEHIND).with_cancel(cancel.clone());
    let stored =
        reader.index().stored_chunks().count() as u64 * u64::from(reader.index().chunk_size());
    let progress = Progress::new(label, stored, !show_progress);
    let mut written = 0u64;
    for chunk in reader.stream(crate::repo::read_threads()) {
        if cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let chunk = chunk?;
        let len = chunk.data.len() as u64;
        sink.write(chunk.offset, chunk.data)?;
        written += len;
        progress.add(len);
    }
    sink.finish()?;
    progress.finish();
    Ok(written)
}

/// Destroys a half-restored VM, logging (not failing) if that fails too; returns whether it
/// is gone.
pub async fn destroy_partial(vc: &Vcenter, vm: &MoRef, name: &str) -> bool {
    let _ = vc.client.power_off(vm).await;
    match vc.client.destroy(vm).await {
        Ok(()) => {
            tracing::warn!(vm = %name, "destroyed the partially restored VM");
            true
        }
        Err(e) => {
            tracing::error!(vm = %name, "could not destroy the partially restored VM {}: {e}; remove it by hand", vm.value);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Candidate;

    #[test]
    fn default_name_has_utc_stamp() {
        let t = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        assert_eq!(default_name("web01", t), "web01-restored-20261127T100000Z");
        assert_eq!(aside_name("web01", t), "web01-replaced-20261127T100000Z");
    }

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
    fn nic_backings_by_network_kind() {
        let std = NetworkTarget {
            candidate: Candidate {
                name: "VM Network".into(),
                moref: "network-7".into(),
            },
            kind: NetworkKind::Standard,
        };
        let b = nic_backing(&std);
        assert_eq!(b.type_name(), Some("VirtualEthernetCardNetworkBackingInfo"));
        assert_eq!(b.text_at("deviceName"), Some("VM Network"));
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
        let b = nic_backing(&dv);
        assert_eq!(b.text_at("port/portgroupKey"), Some("dvportgroup-9"));
        assert_eq!(b.text_at("port/switchUuid"), Some("50 aa"));
    }
}
