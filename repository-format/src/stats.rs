//! What the repository holds, in figures: per target and in all, how much data its generations
//! describe, how much of it is distinct, and what that takes on the store — so an admin can see
//! where the space goes and how much deduplication and compression save.
//!
//! Read-only: manifests, every committed generation's index (verified like any other read) and
//! one listing of `chunks/` for the stored sizes.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::chunk_store::ChunkEntry;
use crate::digest::ChunkDigest;
use crate::error::Result;
use crate::repository::Repository;
use crate::target::TargetKey;

/// The figures of one target, or of the whole repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpaceStats {
    /// Committed generations counted.
    pub generations: u64,
    /// Bytes the generations describe: the sum of every generation's disk capacities, what
    /// restoring each of them would write.
    pub logical_bytes: u64,
    /// Bytes in distinct stored chunks, uncompressed (zero chunks are not stored).
    pub unique_bytes: u64,
    /// Distinct stored chunks.
    pub unique_chunks: u64,
    /// What those chunks take on the store (compressed, encrypted if so).
    pub stored_bytes: u64,
    /// `logical_bytes ÷ unique_bytes`: what deduplication (and not storing zeros) saves.
    pub dedup_ratio: Option<f64>,
    /// `unique_bytes ÷ stored_bytes`: what compression saves.
    pub compression_ratio: Option<f64>,
}

impl SpaceStats {
    fn finish(mut self) -> SpaceStats {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        self.dedup_ratio = ratio(self.logical_bytes, self.unique_bytes);
        self.compression_ratio = ratio(self.unique_bytes, self.stored_bytes);
        self
    }
}

/// One target's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStats {
    /// The target's folder key.
    pub key: TargetKey,
    /// Its figures. A chunk shared with other targets counts for each of them.
    #[serde(flatten)]
    pub space: SpaceStats,
}

/// The figures of a repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepositoryStats {
    /// Per target (only the one asked for, when one was).
    pub targets: Vec<TargetStats>,
    /// All targets together (each chunk counted once).
    pub total: SpaceStats,
    /// Every chunk object on the store, referenced or not (gc removes the rest).
    pub chunk_objects: u64,
    /// Their size on the store.
    pub chunk_object_bytes: u64,
}

impl Repository {
    /// Counts what the committed generations of `only` (else every target) describe and store.
    /// Hold at least the shared lock.
    ///
    /// # Errors
    /// A manifest or index that cannot be read or verified (run `check`), store errors.
    pub fn stats(&self, only: Option<&TargetKey>) -> Result<RepositoryStats> {
        let mut stored: HashMap<ChunkDigest, u64> = HashMap::new();
        let (mut chunk_objects, mut chunk_object_bytes) = (0u64, 0u64);
        self.chunk_store().scan(|e| {
            if let ChunkEntry::Chunk(d, o) = e {
                chunk_objects += 1;
                chunk_object_bytes += o.size;
                stored.insert(d, o.size);
            }
            Ok(())
        })?;
        let keys = match only {
            Some(k) => vec![k.clone()],
            None => self.target_keys()?,
        };
        let mut all_seen: HashSet<ChunkDigest> = HashSet::new();
        let mut total = SpaceStats::default();
        let mut targets = Vec::new();
        for key in keys {
            let mut seen: HashSet<ChunkDigest> = HashSet::new();
            let mut space = SpaceStats::default();
            for g in self.generations(&key)? {
                let m = self.manifest(&key, g.id)?;
                space.generations += 1;
                for d in &m.disks {
                    space.logical_bytes += d.disk.capacity;
                    let idx = self.read_index(&key, g.id, d)?;
                    for (slot, digest) in idx.stored_chunks() {
                        let (_, len) = idx.chunk_range(slot);
                        let size = stored.get(&digest).copied().unwrap_or(0);
                        if seen.insert(digest) {
                            space.unique_chunks += 1;
                            space.unique_bytes += len as u64;
                            space.stored_bytes += size;
                        }
                        if all_seen.insert(digest) {
                            total.unique_chunks += 1;
                            total.unique_bytes += len as u64;
                            total.stored_bytes += size;
                        }
                    }
                }
            }
            total.generations += space.generations;
            total.logical_bytes += space.logical_bytes;
            targets.push(TargetStats {
                key,
                space: space.finish(),
            });
        }
        Ok(RepositoryStats {
            targets,
            total: total.finish(),
            chunk_objects,
            chunk_object_bytes,
        })
    }
}
