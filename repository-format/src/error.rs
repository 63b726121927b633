//! The crate's error type. Every variant names the file or object it is about.

use std::path::PathBuf;

use crate::blob::BlobError;
use crate::digest::ChunkDigest;
use crate::lock::LockHolder;

/// Error reading from a [`crate::DiskSource`]; carries the source's own message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// What went wrong, in the source's words (e.g. a VDDK error text).
    pub message: String,
    /// The underlying error, when there is one.
    #[source]
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// A source error with a message and no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cause: None,
        }
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        Self {
            message: e.to_string(),
            cause: Some(Box::new(e)),
        }
    }
}

/// Where a chunk is used: the context named by chunk errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkUse {
    /// Target folder name.
    pub target: String,
    /// Generation number.
    pub generation: u64,
    /// Disk device key.
    pub disk: i32,
    /// Byte offset of the chunk in the disk.
    pub offset: u64,
}

impl std::fmt::Display for ChunkUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target {} generation {} disk {} offset {}",
            self.target, self.generation, self.disk, self.offset
        )
    }
}

/// A damaged or missing chunk, named with where it is used.
#[derive(Debug, thiserror::Error)]
#[error("chunk {digest} ({path}) used by {used_by}: {reason}")]
pub struct ChunkError {
    /// The chunk's digest.
    pub digest: ChunkDigest,
    /// The chunk file.
    pub path: PathBuf,
    /// Where the chunk is used.
    pub used_by: ChunkUse,
    /// What is wrong with it.
    pub reason: crate::chunk_store::ChunkFault,
}

/// Everything that can go wrong in the repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a repository file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`"read"`, `"create"`, `"rename"`, ...).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// A stored object is truncated, corrupted or not what it should be.
    #[error("{path}: {reason}")]
    Blob {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: BlobError,
    },
    /// A fixed index decodes as a blob but its content is inconsistent.
    #[error("index {path}: {reason}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An index of the other chunking than the repository's config (a fixed-chunk index in a
    /// content-defined repository, or the reverse). Either the index or the config is not what
    /// was written, so a repair moves neither: it is reported, and the index is not used.
    #[error("index {path}: {reason}")]
    IndexKind {
        /// The index file.
        path: PathBuf,
        /// Which kind it is and which the repository has.
        reason: String,
    },
    /// A change to an index that would break it (a splice that cuts a stored chunk, chunks
    /// out of order, a fixed-chunk edit of a content-defined index): a bug in the caller or
    /// a base index that does not fit, refused before anything changes.
    #[error("index edit refused: {0}")]
    IndexEdit(String),
    /// A manifest decodes as a blob but is not a valid manifest.
    #[error("manifest {path}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository configuration is missing, damaged or unsupported.
    #[error("repository config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `init` was pointed at a folder that is not empty.
    #[error("cannot create a repository in {path}: the folder exists and is not empty")]
    NotEmpty {
        /// The folder.
        path: PathBuf,
    },
    /// An option has a value outside its allowed range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A chunk a generation refers to is damaged or missing.
    #[error(transparent)]
    Chunk(Box<ChunkError>),
    /// A lock could not be taken within the allowed wait.
    #[error("{lock} is held{}", format_holders(.holders))]
    Locked {
        /// The lock file.
        lock: PathBuf,
        /// The recorded holders (may be empty if a holder has not written its record yet).
        holders: Vec<LockHolder>,
    },
    /// An operation was called with the wrong kind of lock, or a lock of another repository.
    #[error("{operation} needs {needed}")]
    LockRequired {
        /// The operation.
        operation: &'static str,
        /// The lock it needs.
        needed: &'static str,
    },
    /// A target key is not a safe folder name.
    #[error("invalid target key {0:?}: use lower-case letters, digits, '-', '_' and '.', at most 200 characters, not starting with '.'")]
    InvalidTargetKey(String),
    /// No such target in the repository.
    #[error("target {0} not found in the repository")]
    TargetNotFound(String),
    /// A name matches several targets.
    #[error("{name} matches several targets: {}; use a target key", keys.join(", "))]
    AmbiguousTarget {
        /// The name given.
        name: String,
        /// Keys of the matching targets.
        keys: Vec<String>,
    },
    /// No such committed generation.
    #[error("generation {generation} of target {target} not found")]
    GenerationNotFound {
        /// Target key.
        target: String,
        /// Generation number.
        generation: u64,
    },
    /// A generation is pinned by a running reader (`serve`, `files`) and cannot be deleted.
    #[error("generation {generation} of target {target} is in use by {holder}; it can be deleted once that run ends")]
    GenerationPinned {
        /// Target key.
        target: String,
        /// Generation number.
        generation: u64,
        /// The pinning run.
        holder: Box<LockHolder>,
    },
    /// gc found a pin of a generation that has no manifest any more (deleted by a version
    /// that did not know pins): its chunks cannot be marked, so nothing is deleted.
    #[error("generation {generation} of target {target} is read by {holder} but its manifest is gone; gc deletes nothing until that run ends")]
    PinnedGenerationMissing {
        /// Target key.
        target: String,
        /// Generation number.
        generation: u64,
        /// The pinning run.
        holder: Box<LockHolder>,
    },
    /// No such disk in a generation.
    #[error("disk {disk} not found in generation {generation} of target {target}")]
    DiskNotFound {
        /// Target key.
        target: String,
        /// Generation number.
        generation: u64,
        /// Device key asked for.
        disk: i32,
    },
    /// An ingest area or read lies outside the disk.
    #[error("{what}: range {offset}+{len} lies outside the disk of {capacity} bytes")]
    OutOfRange {
        /// What was out of range.
        what: &'static str,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Disk capacity.
        capacity: u64,
    },
    /// A base (parent) index cannot be used for this disk.
    #[error("base index {path} does not fit disk {disk}: {reason}")]
    BaseIndex {
        /// The base index file.
        path: PathBuf,
        /// Disk device key.
        disk: i32,
        /// Why it does not fit.
        reason: String,
    },
    /// Reading from the disk source failed.
    #[error("reading disk {disk} at offset {offset}: {source}")]
    Source {
        /// Disk device key.
        disk: i32,
        /// Offset of the failed read.
        offset: u64,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// A disk was ingested twice into one generation, or a metadata name was reused.
    #[error("{0} was already written to this generation")]
    Duplicate(String),
    /// A metadata file name is not a plain file name.
    #[error("invalid metadata file name {0:?}")]
    InvalidMetadataName(String),
    /// A generation cannot be deleted by this operation.
    #[error("refusing to delete generation {generation} of target {target}: {reason}")]
    DeleteRefused {
        /// Target key.
        target: String,
        /// Generation number.
        generation: u64,
        /// Why.
        reason: String,
    },
    /// The operating system's random generator failed (keys and nonces need it).
    #[error("random number generator failed: {0}")]
    Random(String),
    /// The repository is encrypted and no passphrase was given.
    #[error("repository {path} is encrypted: its passphrase is needed to open it (the safekeeping command reads it from the environment or from a passphrase file, never from its arguments)")]
    PassphraseRequired {
        /// The repository folder.
        path: PathBuf,
    },
    /// No key file of the repository opens with the passphrase given.
    #[error("wrong passphrase: none of the {tried} key file(s) in {dir} opens with it")]
    WrongPassphrase {
        /// The `keys/` folder.
        dir: PathBuf,
        /// How many key files were tried.
        tried: usize,
    },
    /// A key file is malformed or does not belong to this repository.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No such key file.
    #[error("key {0} not found in the repository")]
    KeyNotFound(String),
    /// Removing this key file would leave the repository without a usable one.
    #[error("refusing to remove key {id}: {reason}")]
    KeyRemoveRefused {
        /// The key id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A key operation on a repository that is not encrypted.
    #[error("repository {0} is not encrypted: it has no keys")]
    NotEncrypted(PathBuf),
    /// A worker thread of the ingest pipeline panicked (a bug).
    #[error("ingest worker failed: {0}")]
    Worker(String),
    /// No generation number is left after the target's highest one (a folder such as
    /// `gen-18446744073709551615`, which safekeeping never writes, was planted or damaged).
    #[error("target {target}: no generation number follows {folder} (the highest possible); that folder was not written by safekeeping: move it out of the repository and run check")]
    GenerationLimit {
        /// Target key.
        target: String,
        /// The folder with the highest number.
        folder: String,
    },
}

fn format_holders(holders: &[LockHolder]) -> String {
    if holders.is_empty() {
        return " (holder not recorded yet)".to_string();
    }
    let parts: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    format!(" by {}", parts.join("; "))
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Helper to build [`Error::Io`] from a closure-friendly position.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}

/// Like [`io_err`] for a storage-layer call on `key`: the error names the object by its
/// display path (`/srv/repo/config`, `s3://bucket/prefix/config`).
pub(crate) fn store_err<'a>(
    backend: &'a dyn crate::storage::Backend,
    op: &'static str,
    key: &'a str,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: backend.display_path(key),
        source,
    }
}

/// Reads the object `key` of at most `limit` bytes; an object above the limit is a blob error
/// (`TooLarge`), like a damaged file.
pub(crate) fn read_object(
    backend: &dyn crate::storage::Backend,
    key: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    backend.get(key, limit).map_err(|source| {
        if source.kind() == std::io::ErrorKind::FileTooLarge {
            Error::Blob {
                path: backend.display_path(key),
                reason: BlobError::TooLarge {
                    limit: limit as usize,
                },
            }
        } else {
            Error::Io {
                op: "read",
                path: backend.display_path(key),
                source,
            }
        }
    })
}
