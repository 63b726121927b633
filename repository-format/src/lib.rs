//! The safekeeping repository: a verified, deduplicated chunk store for disk images.
//!
//! A repository is a set of objects in a local folder or under a prefix of an S3-compatible
//! bucket (specified in `docs/repository-format.md`; S3 in `docs/object-storage.md`), reached
//! through one storage layer ([`storage::Backend`]: [`LocalBackend`], [`S3Backend`]). Open one
//! with [`Repository::open`] (a folder) or [`Repository::open_location`] (a
//! [`RepositoryLocation`], e.g. parsed from `s3://bucket/prefix`):
//!
//! ```text
//! config                                   K blob: format version, id, chunk size, hash, compression, encryption
//! chunks/<4 hex>/<64 hex>                  C blobs, named by the SHA-256 of their content
//!                                          (encrypted: HMAC-SHA-256 under the chunk-id key)
//! keys/<key id>                            encrypted only: master keys wrapped under a passphrase
//! targets/<target key>/gen-NNNNNN/         one folder per generation
//!     manifest                             M blob (JSON); its presence commits the generation
//!     disk-<device key>.fidx               I blob: fixed index, one digest per chunk
//!     metadata/<name>                      F blobs: vm config, .vmx, .nvram, ...
//!     incomplete.json                      only while being written
//! locks/<name>/<run id>.claim|.alive      lock claims and heartbeats (any backend)
//! cache-epoch                              S3: replaced when chunks are deleted (chunk cache)
//! quarantine/<4 hex>/<64 hex>              damaged chunks moved aside by `check --repair`
//! quarantine/targets/<key>/gen-NNNNNN/…    damaged or misplaced indexes moved aside by it
//! runs/<YYYYMMDDTHHMMSS.mmmZ>-<run id>     F blob (JSON): the record of one backup run
//! catalog/                                 local sled cache of generation listings (not part of the format;
//!                                          for S3 in the local cache folder)
//! ```
//!
//! Every object is written once and atomically (locally: temp file, fsync, rename or link, fsync
//! of the folder; on S3 one `PUT`); manifests, key files, the config and lock claims with a
//! conditional create. Every read is verified (CRC32 of the blob, SHA-256 of index lists and
//! chunks, and that the object is the one asked for: a chunk's content hashes to its name, a
//! manifest names its folder's target and generation, an index is the one its manifest
//! recorded and names its place — [`fixed_index::IndexBinding`]).
//!
//! An encrypted repository ([`InitOptions::encryption`], [`Repository::init_with`] and
//! [`Repository::open_with`] with a [`Passphrase`]) seals every blob but the config with
//! AES-256-GCM, names chunks, target folders and metadata files by keyed hashes, and keeps its
//! keys wrapped in key files under `keys/` ([`key`], [`key_file`]; key management on
//! [`Repository`]: `key_add`, `key_passwd`, `key_export`, `key_list`, `key_remove`). Callers
//! name targets with [`Repository::target_key`], which is the plain key only in unencrypted
//! repositories.
//!
//! # Example
//! ```
//! use repository_format::*;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let repo = Repository::init(dir.path().join("repo"), &InitOptions { chunk_size: 64 * 1024, ..Default::default() })?;
//! let lock = repo.lock_shared(Duration::from_secs(5))?;
//! let mut id = TargetIdentity::new(TargetKind::Vm, "web01");
//! id.instance_uuid = Some("5012abcd-0000-1111-2222-333344445555".into());
//! let key = repo.target_key(&id)?;
//! let mut w = repo.begin_generation(&lock, repo.lock_target(&key, Duration::ZERO)?, id, BackupMode::Full, None)?;
//! let mut disk = MemorySource::new(vec![7u8; 200_000]);
//! w.ingest_disk(DiskDescriptor::new(2000, 200_000), None, &[Area::new(0, 200_000)], &mut disk, &|_| {})?;
//! let gen = w.commit(GenerationStatus::Succeeded, Default::default())?;
//! let mut r = repo.disk_reader(&key, gen, 2000)?;
//! let mut buf = [0u8; 10];
//! r.read_at(199_990, &mut buf)?;
//! assert_eq!(buf, [7u8; 10]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aligned_buf;
pub mod blob;
pub mod catalog;
pub mod check;
mod chunk_cache;
pub mod chunk_store;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod digest;
pub mod disk_reader;
pub mod error;
pub mod fixed_index;
pub mod format;
mod fsutil;
pub mod gc;
pub mod ingest;
pub mod key;
pub mod key_file;
mod keys;
pub mod lock;
pub mod manifest;
pub mod memory_budget;
pub mod object_lock;
pub mod prune;
pub mod reader;
pub mod reindex;
pub mod repository;
pub mod runs;
pub mod source;
pub mod stats;
pub mod storage;
pub mod target;
pub mod writer;

#[cfg(test)]
mod variable_index_tests;

pub use aligned_buf::{AlignedBuf, BufPool};
pub use blob::{BlobError, BlobKind, Codec, Encoding, Key};
pub use check::{
    CheckOptions, CheckProgress, CheckReport, DamagedGeneration, Problem, ProblemKind,
    QuarantinedChunk, ReadSubset, REPAIR_NOTE,
};
pub use chunk_store::{ChunkFault, ChunkStore, QUARANTINE_DIR};
pub use config::{Chunking, ChunkingChoice, Config, Encryption, EncryptionMode, InitOptions};
pub use copy::{CopiedSet, CopyOptions, CopyProgress, CopyReport, GenerationCopy};
pub use digest::ChunkDigest;
pub use disk_reader::{CacheOptions, CachedDiskReader, DiskExtent};
pub use error::{ChunkError, ChunkUse, Error, Result, SourceError};
pub use fixed_index::{FixedIndex, IndexRun};
pub use gc::{GcOptions, GcProgress, GcReport};
pub use ingest::{Area, DiskSource, IngestTuning};
pub use key::{KeyFingerprint, Passphrase};
pub use key_file::{KdfParams, KeyFile, KeyId};
pub use keys::KeyInfo;
pub use lock::{LockHolder, LockMode, PinnedGeneration, RepositoryLock, TargetLock};
pub use manifest::{
    BackupMode, DiskDescriptor, DiskRecord, DiskStats, GenerationStats, GenerationStatus, Manifest,
    Provisioning,
};
pub use memory_budget::{MemoryBudget, Reservation, DEFAULT_MEMORY_BUDGET};
pub use object_lock::RefreshReport;
pub use prune::{GenerationDecision, PruneReport, RetentionPolicy, TargetPrunePlan};
pub use reader::{ChunkStream, DiskChunk, DiskReader};
pub use reindex::ReindexReport;
pub use repository::{GenerationSummary, Repository, TargetSummary};
pub use runs::{RunListing, RunRecord, RunRetention, RunStatus, RunTarget, RUNS_DIR};
pub use source::{FileSource, MemorySource};
pub use stats::{RepositoryStats, SpaceStats, TargetStats};
#[cfg(feature = "s3")]
pub use storage::S3Backend;
pub use storage::{Backend, LocalBackend, RepositoryLocation, S3Credentials, S3Location};
pub use target::{GenerationId, TargetIdentity, TargetKey, TargetKind};
pub use writer::{GenerationWriter, ReadPlan, WriterRecord};
