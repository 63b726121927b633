//! Every magic number, size limit and file name of the on-disk format, in one place.
//!
//! The layout is specified in `docs/repository-format.md`; this module is its source of truth.

/// Version of the repository format written by this crate (stored in `config`).
pub const FORMAT_VERSION: u32 = 1;

/// Smallest chunk size a repository may use (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk size a repository may use (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default chunk size, chosen by measurement (see `docs/repository-format.md`).
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Length of a blob header: magic (8), CRC32 (4), flags (4), payload length (8).
pub const BLOB_HEADER_LEN: usize = 24;

/// Length of the fixed index header inside its blob payload.
pub const INDEX_HEADER_LEN: usize = 8 + 16 + 8 + 8 + 4 + 4 + 32 + 8;
/// Magic at the start of a fixed index payload (inside the blob).
pub const INDEX_MAGIC: [u8; 8] = *b"SKFIDX01";

/// Name of the configuration file at the repository root.
pub const CONFIG_FILE: &str = "config";
/// Folder holding every chunk, fanned out by the first four hex digits of the digest.
pub const CHUNKS_DIR: &str = "chunks";
/// Folder holding one folder per target.
pub const TARGETS_DIR: &str = "targets";
/// Folder holding the key files of an encrypted repository (`keys/<key id>`).
pub const KEYS_DIR: &str = "keys";
/// Lock file serialising key management (`locks/keys.lock`).
pub const KEYS_LOCK: &str = "keys.lock";
/// Folder holding lock files and lock holder records.
pub const LOCKS_DIR: &str = "locks";
/// Name of the manifest inside a generation folder; its presence commits the generation.
pub const MANIFEST_FILE: &str = "manifest";
/// Marker left in a generation folder while it is being written.
pub const INCOMPLETE_MARKER: &str = "incomplete.json";
/// Folder inside a generation folder holding metadata files (vm config, .vmx, .nvram, ...).
pub const METADATA_DIR: &str = "metadata";
/// Prefix of generation folder names (`gen-000001`).
pub const GENERATION_PREFIX: &str = "gen-";
/// Prefix of every temporary file name; such files are never part of the repository.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Extension of fixed index files (`disk-2000.fidx`).
pub const INDEX_EXTENSION: &str = "fidx";

/// Age after which a lock holder record from another host is reported as possibly stale.
pub const STALE_LOCK_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Default grace period subtracted from the garbage collection cutoff (clock skew between
/// hosts sharing a repository, coarse file system timestamps).
pub const DEFAULT_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(5 * 60);
