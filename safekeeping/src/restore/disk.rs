//! The restore's data step, shared by every target kind: the generation's disk index →
//! verified, decompressed chunks (read by several threads, each distinct chunk once) → VDDK
//! writes into the new disk at every offset holding the chunk, with writes behind in flight.
//! Zero chunks, and the all-zero 64 KiB blocks of stored chunks, are skipped: a new disk
//! reads as zeros. A VM's disks are written at the same time, within one limit of VDDK
//! connections; the first failure stops the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use repository_format::{GenerationId, Repository, TargetKey};
use vddk::{Connection, Disk};
use vim_client::{MoRef, VmConfig};

use crate::cancel::{first_failure, Cancel};
use crate::disk_io::writer::Gathering;
use crate::disk_io::{VddkEndpoint, VddkSink};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::restore::plan::{saved_disk_keys, RestorePlan};
use crate::vsphere::Vcenter;
use serde::Serialize;

/// Asynchronous VDDK writes kept in flight by a disk restored alone.
const WRITE_BEHIND: usize = 4;

/// Reading threads of a disk restored alone, at least: more than two cores' worth, because a
/// thread waits for each chunk file it reads (from the device: a local repository reads with
/// direct I/O, and a restore's chunks are rarely in memory; or from the network). On the
/// benchmark's two cores, a restore whose chunks were not in memory took 1.67–1.89 s with two
/// threads, 1.53–1.67 s with three and 1.54–1.57 s with four.
const READ_THREADS_ALONE: usize = 4;

/// What one disk's restore keeps in flight, and so what it takes from the restore's chunk
/// memory (`[performance] restore_memory_mib`, shared by every disk the restore writes).
/// A disk restored alone reads further ahead and gathers more; disks restored side by side
/// each take less, so that more of them fit in the same memory, and a disk whose memory is
/// not free waits for it (first come, first served) before it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteShape {
    /// Threads reading, decompressing and verifying chunks.
    pub threads: usize,
    /// Chunks read ahead of the writes.
    pub ahead: usize,
    /// Asynchronous VDDK writes in flight.
    pub depth: usize,
    /// How runs of data are gathered into writes.
    pub gathering: Gathering,
}

impl WriteShape {
    /// A disk restored alone: every core reading, and at least `READ_THREADS_ALONE`
    /// threads, four chunks ahead per core, four writes in flight, four gathered writes of up
    /// to 4 MiB. About 70 MiB with 2 MiB chunks on two cores.
    pub fn alone() -> WriteShape {
        let cores = crate::repo::read_threads();
        WriteShape {
            threads: cores.max(READ_THREADS_ALONE),
            ahead: cores * 4,
            depth: WRITE_BEHIND,
            gathering: Gathering::DEFAULT,
        }
    }

    /// One of several disks restored at once: two reading threads (so that a VM's one large
    /// disk, left alone once its small siblings are done, still uses two cores), two chunks
    /// ahead, four writes in flight (a transport's latency is paid per request: a restore
    /// over NBD is bound by requests in flight times their size), one gathered write of up to
    /// 2 MiB. About 30 MiB with 2 MiB chunks: six such disks fit in the default 200 MiB.
    pub fn shared() -> WriteShape {
        WriteShape {
            threads: 2,
            ahead: 2,
            depth: WRITE_BEHIND,
            gathering: Gathering {
                writes: 1,
                bytes: 2 << 20,
            },
        }
    }

    /// The shape for one of `disks` disks restored at once.
    pub fn for_disks(disks: usize) -> WriteShape {
        if disks > 1 {
            WriteShape::shared()
        } else {
            WriteShape::alone()
        }
    }

    /// The most chunk memory a restore of this shape holds, for chunk buffers of
    /// `buffer_bytes` each: the stream's buffers (each thread's, those read ahead, and those
    /// behind writes in flight and the one being written) and the sink's gather buffers.
    pub fn memory_bytes(&self, buffer_bytes: u64) -> u64 {
        let held = self.depth + 1;
        repository_format::DiskReader::stream_buffers(self.threads, self.ahead, held) as u64
            * buffer_bytes
            + self.gathering.memory_bytes(self.depth)
    }
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
    /// Bytes of data written (zero chunks and the all-zero 64 KiB blocks of stored ones are skipped).
    pub bytes_written: u64,
    /// The transport mode VDDK chose for this disk.
    pub transport: Option<String>,
}

/// The new disk a restore writes into, and how VDDK reaches it.
#[derive(Debug, Clone)]
pub enum DiskTarget {
    /// A disk of a (new) VM.
    Vm {
        /// The VM's moref value.
        vm: String,
        /// The disk's datastore path.
        path: String,
    },
    /// A (new) first class disk.
    FirstClass {
        /// The disk's id.
        id: String,
        /// Its datastore's moref value.
        datastore: String,
        /// The disk's datastore path.
        path: String,
    },
}

impl DiskTarget {
    /// The disk's datastore path.
    pub fn path(&self) -> &str {
        match self {
            DiskTarget::Vm { path, .. } | DiskTarget::FirstClass { path, .. } => path,
        }
    }

    /// Connects read-write and opens the disk. Blocking.
    fn open(&self, vddk: &VddkEndpoint) -> Result<(Connection, Disk)> {
        let conn = match self {
            DiskTarget::Vm { vm, .. } => vddk.connect_writable(vm)?,
            DiskTarget::FirstClass { id, datastore, .. } => {
                vddk.connect_fcd(id, datastore, None)?
            }
        };
        let path = self.path();
        let disk = conn
            .open(path, vddk::OpenFlags::NONE)
            .map_err(|e| Error::vddk(format!("open {path} for writing"), e))?;
        Ok((conn, disk))
    }
}

/// One disk of a generation to write: where it is stored and where it goes.
#[derive(Debug, Clone)]
pub struct DiskWrite {
    /// The repository.
    pub repo: Repository,
    /// The target's key.
    pub key: TargetKey,
    /// The generation.
    pub generation: GenerationId,
    /// The disk's device key in the generation.
    pub disk_key: i32,
    /// The new disk.
    pub to: DiskTarget,
    /// The progress bar's label.
    pub label: String,
    /// What the disk's restore keeps in flight ([`WriteShape::for_disks`]).
    pub shape: WriteShape,
}

/// Writes one disk of a generation into its new disk, on a blocking thread that owns the VDDK
/// connection, and returns the bytes written.
///
/// # Errors
/// Chunk read or verification errors, VDDK connect, open and write errors,
/// [`Error::Interrupted`] when `cancel` fires.
pub async fn write_disk(
    vddk: &VddkEndpoint,
    job: DiskWrite,
    show_progress: bool,
    cancel: &Cancel,
) -> Result<u64> {
    // A child: a failed write cancels its token to stop sibling disks (a VM's), which a
    // caller restoring one disk does not have.
    Ok(write_disk_via(vddk, job, show_progress, &cancel.child())
        .await?
        .0)
}

/// [`write_disk`], also returning the transport mode VDDK chose for the disk (logged).
///
/// # Errors
/// As [`write_disk`].
pub async fn write_disk_via(
    vddk: &VddkEndpoint,
    job: DiskWrite,
    show_progress: bool,
    cancel: &Cancel,
) -> Result<(u64, Option<String>)> {
    let (vddk, cancel) = (vddk.clone(), cancel.clone());
    tokio::task::spawn_blocking(move || -> Result<(u64, Option<String>)> {
        let started = Instant::now();
        let reader = job
            .repo
            .disk_reader(&job.key, job.generation, job.disk_key)?;
        let index_read = started.elapsed();
        // The disk's chunks in flight come out of the run's chunk memory, as a backup's do:
        // disks restored side by side wait their turn instead of adding up past the limit.
        // Taken before connecting, so a waiting disk holds no VDDK connection.
        let memory = job.shape.memory_bytes(reader.buffer_bytes());
        let budget = job.repo.memory_budget().clone();
        let _memory = budget.reserve(memory);
        tracing::debug!(
            disk = %job.to.path(),
            memory,
            wait_ms = (started.elapsed() - index_read).as_millis() as u64,
            "chunk memory taken"
        );
        let (conn, disk) = job.to.open(&vddk)?;
        let transport = disk.transport_mode();
        tracing::info!(disk = %job.to.path(), transport = transport.as_deref().unwrap_or("unknown"), "VDDK transport mode");
        // Where a disk's restore time goes, for `-v` and the benchmark's breakdown.
        tracing::debug!(
            disk = %job.to.path(),
            index_ms = index_read.as_millis() as u64,
            open_ms = (started.elapsed() - index_read).as_millis() as u64,
            "disk index read, VDDK connected and disk opened"
        );
        let written = write_stored_chunks(
            &reader,
            disk,
            job.to.path(),
            (job.label, job.shape),
            show_progress,
            &cancel,
        );
        // The disk is closed (by write_stored_chunks) before its connection.
        drop(conn);
        written.map(|w| (w, transport))
    })
    .await
    .map_err(|e| Error::Other(format!("disk writer failed: {e}")))?
}

/// Writes every disk of the plan's generation into the new VM's disks (matched in device
/// order, capacities checked first), at most `max_connections` at once; the first failure
/// stops the others.
///
/// # Errors
/// A disk count or capacity mismatch, VDDK and repository errors, an interruption.
pub async fn write_vm_disks(
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
    // The new VM's disks come in the saved configuration's order, which holds the disks the
    // backup left out too (unless dropped): pair them by original device key.
    let saved_keys = saved_disk_keys(&plan.saved_config);
    if new_disks.len() != saved_keys.len() {
        return Err(Error::Other(format!(
            "the new VM has {} disks, its saved configuration {}",
            new_disks.len(),
            saved_keys.len()
        )));
    }
    let by_key: HashMap<i32, (String, u64)> = saved_keys.into_iter().zip(new_disks).collect();
    let new_disk = |key: i32| {
        by_key.get(&key).cloned().ok_or_else(|| {
            Error::Other(format!(
                "the new VM has no disk for the generation's disk with device key {key}"
            ))
        })
    };
    for x in plan.excluded.iter().filter(|_| !plan.drop_excluded) {
        let (path, capacity) = new_disk(x.key)?;
        if capacity != x.capacity {
            return Err(Error::Other(format!(
                "recreated disk {} ({path}) has {capacity} bytes, the VM had {}",
                x.index, x.capacity
            )));
        }
        tracing::warn!(vm = %plan.name, disk = x.index, %path, capacity, "disk {} ({}) was not backed up ({}); recreated empty", x.index, x.label, x.note);
    }
    // Every capacity is checked before anything is written.
    let mut jobs = Vec::with_capacity(plan.manifest.disks.len());
    let shape = WriteShape::for_disks(plan.manifest.disks.len().min(max_connections.max(1)));
    for (index, record) in plan.manifest.disks.iter().enumerate() {
        let (path, capacity) = new_disk(record.disk.key)?;
        if capacity != record.disk.capacity {
            return Err(Error::Other(format!(
                "new disk {index} ({path}) has {capacity} bytes, the backup {}",
                record.disk.capacity
            )));
        }
        let job = DiskWrite {
            repo: plan.repo.clone(),
            key: plan.key.clone(),
            generation: plan.manifest.generation,
            disk_key: record.disk.key,
            to: DiskTarget::Vm {
                vm: vm.value.clone(),
                path,
            },
            label: format!("restore {} disk {index}", plan.name),
            shape,
        };
        jobs.push((index, capacity, job));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let disks_cancel = cancel.child();
    let writes = jobs.into_iter().map(|(index, capacity, job)| {
        let limit = limit.clone();
        let disks_cancel = disks_cancel.clone();
        async move {
            let r = async {
                // One VDDK connection per permit, held until the disk's connection is closed.
                let _permit = tokio::select! {
                    permit = limit.acquire_owned() => permit
                        .map_err(|_| Error::Other("the VDDK connection limit was closed".into()))?,
                    _ = disks_cancel.cancelled() => return Err(Error::Interrupted),
                };
                let path = job.to.path().to_string();
                let (written, transport) =
                    write_disk_via(vddk, job, show_progress, &disks_cancel).await?;
                tracing::info!(vm = %plan.name, disk = index, %path, written, "disk restored");
                Ok(RestoredDisk {
                    index,
                    path,
                    capacity,
                    bytes_written: written,
                    transport,
                })
            }
            .await;
            if r.is_err() {
                disks_cancel.cancel();
            }
            r
        }
    });
    let out = first_failure(futures_util::future::join_all(writes).await)?;
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    Ok(out)
}

/// The restore's data step: writes every stored (non-zero) chunk of a disk of a generation into
/// a disk opened read-write through VDDK, with writes behind in flight, and returns the bytes
/// written. A chunk the disk holds at several offsets is read and verified once. Blocking:
/// call it on a blocking thread. Zero chunks, and the all-zero blocks of stored chunks
/// ([`crate::disk_io::writer::HOLE_BLOCK`]), are skipped: a new disk reads as zeros.
///
/// # Errors
/// Chunk read or verification errors, VDDK write errors, [`Error::Interrupted`] when `cancel`
/// fires.
fn write_stored_chunks(
    reader: &repository_format::DiskReader,
    disk: vddk::Disk,
    path: &str,
    (label, shape): (String, WriteShape),
    show_progress: bool,
    cancel: &Cancel,
) -> Result<u64> {
    let mut sink = VddkSink::new(disk, path.to_string(), shape.depth)
        .with_gathering(shape.gathering)
        .with_cancel(cancel.clone());
    let stored = reader.index().stored_bytes();
    let progress = Progress::new(label, stored, !show_progress);
    let mut written = 0u64;
    let started = Instant::now();
    let streamed = (|| -> Result<()> {
        // Each distinct chunk is read and verified once and written at every offset that
        // holds it (a guest's duplicate files): the disk is written out of order, which a
        // VDDK disk takes as well as in order.
        let mut offsets = Vec::new();
        for chunk in reader.stream_distinct_ahead(shape.threads, shape.ahead) {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let chunk = chunk?;
            offsets.clear();
            offsets.push(chunk.offset);
            offsets.extend_from_slice(&chunk.copies);
            let len = chunk.data.len() as u64 * offsets.len() as u64;
            written += sink.write_data_at(&offsets, chunk.data)?;
            progress.add(len);
        }
        Ok(())
    })();
    if let Err(e) = streamed {
        // Stop the VM's other disks now: dropping the sink waits for this disk's writes still
        // in flight, and the others must not go on writing meanwhile (the restore fails; its
        // VM is removed).
        cancel.cancel();
        drop(sink);
        return Err(e);
    }
    let submitted = started.elapsed();
    sink.finish()?;
    progress.finish();
    tracing::debug!(
        disk = %path,
        written,
        data_ms = submitted.as_millis() as u64,
        flush_ms = (started.elapsed() - submitted).as_millis() as u64,
        "disk written and flushed"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A 2 MiB-chunk buffer as a stream allocates it (blob header, alignment and headroom).
    const BUFFER: u64 = 2 * MIB + 24 + 8192;

    /// The shares the user guide states: a disk alone about 70 MiB, a disk beside others
    /// about 30 MiB, six of which fit in the default restore limit and seven do not.
    #[test]
    fn restore_shapes_take_what_the_guide_says() {
        let shared = WriteShape::shared().memory_bytes(BUFFER);
        assert!((30 * MIB..31 * MIB).contains(&shared), "{shared}");
        let budget = crate::config::DEFAULT_RESTORE_MEMORY_MIB * MIB;
        assert!(6 * shared <= budget && 7 * shared > budget, "{shared}");
        // Alone on two cores: four reading threads, eight chunks ahead (the shape follows
        // the core count).
        let alone = WriteShape {
            threads: 4,
            ahead: 8,
            ..WriteShape::alone()
        }
        .memory_bytes(BUFFER);
        assert!((70 * MIB..71 * MIB).contains(&alone), "{alone}");
        assert!(WriteShape::alone().threads >= READ_THREADS_ALONE);
        assert!(alone <= budget);
    }

    #[test]
    fn one_disk_is_restored_alone_and_several_share() {
        assert_eq!(WriteShape::for_disks(1), WriteShape::alone());
        assert_eq!(WriteShape::for_disks(0), WriteShape::alone());
        assert_eq!(WriteShape::for_disks(2), WriteShape::shared());
    }
}
