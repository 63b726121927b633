//! Step 5 of a backup, for one disk: VDDK reads (with read-ahead) → hash → dedup → compress →
//! store chunk → disk index, through [`GenerationWriter::ingest_disk`]. VM disks (`vm:`) and
//! first class disks (`ivd:`) differ only in how VDDK connects to their snapshot
//! ([`SnapshotDisk`]); the rest of the step is this one function.

use std::sync::Arc;

use repository_format::{Area, DiskDescriptor, DiskStats, FixedIndex, GenerationWriter};
use vddk::{Connection, Disk};
use vim_client::MoRef;

use crate::backup::BackupContext;
use crate::cancel::Cancel;
use crate::changed_areas;
use crate::disk_reader::VddkSource;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::vddk_session::VddkEndpoint;

/// Asynchronous VDDK reads kept in flight ahead of the ingest.
const READ_AHEAD: usize = 4;

/// The frozen disk VDDK reads: where to connect and which file to open.
#[derive(Debug, Clone)]
pub enum SnapshotDisk {
    /// A VM's disk at a VM snapshot.
    Vm {
        /// The VM.
        vm: MoRef,
        /// The backup's snapshot of it.
        snapshot: MoRef,
        /// The disk's file as the snapshot names it.
        path: String,
    },
    /// A first class disk at one of its own snapshots.
    FirstClass {
        /// The disk's id.
        id: String,
        /// Its datastore's managed object id.
        datastore: String,
        /// The disk snapshot's id.
        snapshot: String,
        /// The disk's file.
        path: String,
    },
}

impl SnapshotDisk {
    /// Connects read-only to the snapshot and opens the disk. Blocking.
    fn open(&self, vddk: &VddkEndpoint) -> Result<(Connection, Disk)> {
        match self {
            SnapshotDisk::Vm { vm, snapshot, path } => {
                let conn = vddk.connect_snapshot(&vm.value, &snapshot.value)?;
                let disk = conn
                    .open(path, vddk::OpenFlags::READ_ONLY)
                    .map_err(|e| Error::Vddk(format!("open {path}: {e}")))?;
                Ok((conn, disk))
            }
            SnapshotDisk::FirstClass {
                id,
                datastore,
                snapshot,
                path,
            } => {
                let conn = vddk.connect_fcd(id, datastore, Some(snapshot))?;
                let disk = conn
                    .open(path, vddk::OpenFlags::READ_ONLY)
                    .map_err(|e| Error::Vddk(format!("open first class disk {id}: {e}")))?;
                Ok((conn, disk))
            }
        }
    }
}

/// One disk to read into a generation.
#[derive(Debug)]
pub struct DiskIngest {
    /// Where VDDK reads it.
    pub source: SnapshotDisk,
    /// The disk as the manifest records it (its capacity bounds the reads).
    pub descriptor: DiskDescriptor,
    /// The previous generation's index of this disk, for an incremental.
    pub base: Option<FixedIndex>,
    /// The areas to read (all allocated areas for a full, the changed ones otherwise).
    pub areas: Vec<Area>,
    /// The progress bar's label.
    pub progress_label: String,
}

/// Reads one disk into `writer` on a blocking thread that owns its VDDK connection, with
/// [`READ_AHEAD`] asynchronous reads in flight and a progress bar unless `-q`.
///
/// The disk first takes one of the run's VDDK connection permits
/// ([`BackupContext::vddk_connections`]) and holds it until its connection is closed, so the
/// disks read at once, across every target of the run, never exceed `max_vddk_connections`.
/// Several disks may be read into the same `writer` at the same time.
///
/// # Errors
/// VDDK connect, open and read failures, repository write failures, and
/// [`Error::Interrupted`] when `cancel` ended the wait or the reads.
pub async fn ingest_disk(
    ctx: &BackupContext,
    writer: Arc<GenerationWriter>,
    job: DiskIngest,
    cancel: &Cancel,
) -> Result<DiskStats> {
    let permit = tokio::select! {
        permit = ctx.vddk_connections.clone().acquire_owned() => permit
            .map_err(|_| Error::Other("the VDDK connection limit was closed".into()))?,
        _ = cancel.cancelled() => return Err(Error::Interrupted),
    };
    let vddk = ctx.vddk.clone();
    let cancel = cancel.clone();
    let show = ctx.options.show_progress;
    let chunk_size = ctx.repo.config().chunk_size;
    tokio::task::spawn_blocking(move || {
        // Released when this closure returns, after the connection is closed.
        let _permit = permit;
        let (conn, disk) = job.source.open(&vddk)?;
        let reads = read_plan(&job.areas, job.descriptor.capacity, chunk_size)?;
        let mut source = VddkSource::new(disk, cancel.clone()).with_read_ahead(reads, READ_AHEAD);
        let to_read = changed_areas::total(&job.areas);
        let progress = Progress::new(job.progress_label, to_read, !show);
        let stats = writer.ingest_disk(
            job.descriptor,
            job.base.as_ref(),
            &job.areas,
            &mut source,
            &|n| progress.add(n),
        );
        progress.finish();
        // The disk closes before its connection.
        drop(source);
        drop(conn);
        stats.map_err(|e| {
            if cancel.is_cancelled() {
                Error::Interrupted
            } else {
                e.into()
            }
        })
    })
    .await
    .map_err(|e| Error::Other(format!("disk worker failed: {e}")))?
}

/// The `(offset, length)` reads the ingest will ask for, in order: every chunk slot that
/// `areas` touch, the last chunk of the disk cut at `capacity`.
fn read_plan(areas: &[Area], capacity: u64, chunk_size: u32) -> Result<Vec<(u64, usize)>> {
    let chunk = u64::from(chunk_size);
    Ok(
        repository_format::ingest::chunk_ranges(areas, capacity, chunk_size)?
            .into_iter()
            .flat_map(|(first, end)| first..end)
            .map(|slot| {
                let offset = slot * chunk;
                (offset, (capacity - offset).min(chunk) as usize)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn read_plan_covers_touched_chunks_and_cuts_the_last_one() {
        // 2.5 chunks of 1 MiB; one area in chunk 0 and one spanning into the short tail.
        let capacity = 2 * MIB + MIB / 2;
        let areas = [Area::new(4096, 4096), Area::new(2 * MIB - 512, 1024)];
        let plan = read_plan(&areas, capacity, MIB as u32).unwrap();
        assert_eq!(
            plan,
            vec![
                (0, MIB as usize),
                (MIB, MIB as usize),
                (2 * MIB, (MIB / 2) as usize)
            ]
        );
    }

    #[test]
    fn read_plan_refuses_an_area_past_the_end() {
        assert!(read_plan(&[Area::new(3 * MIB, 2 * MIB)], 4 * MIB, MIB as u32).is_err());
    }

    #[test]
    fn read_plan_of_no_areas_reads_nothing() {
        assert!(read_plan(&[], 4 * MIB, MIB as u32).unwrap().is_empty());
    }
}
