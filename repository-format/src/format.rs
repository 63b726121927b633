//! Every magic number, size limit and file name of the on-disk format, in one place.
//!
//! The layout is specified in `docs/repository-format.md`; this module is its source of truth.

/// Version of the repository format written by this crate into a new repository's `config`.
///
/// Version 2 adds the binding of every index to its place (version-2 index header, the index's
/// SHA-256 and id in the manifest, the place in the associated data of an encrypted index).
/// A version-1 repository stays version 1 in its `config` (the config is written once); this
/// crate reads it, treats its old indexes as legacy and unbound, and writes bound indexes into
/// its new generations.
///
/// Version 3 stores an index as runs of stored chunks (`SKFIDX03`): an all-zero or
/// unallocated stretch of a disk costs nothing, so the index of a 16 TiB disk with 1 GiB
/// written is kilobytes. Version-2 indexes stay readable; new generations of a version-1 or
/// version-2 repository get version-3 indexes.
///
/// Version 4 cuts disks into content-defined chunks at 4 KiB boundaries (`"chunking"` in the
/// config, index `SKFIDX04` listing each chunk's length), so copies of data at other 4 KiB-aligned
/// offsets deduplicate; chunk ids are still the SHA-256 (HMAC-SHA-256 when encrypted) of a
/// chunk's bytes. A repository chooses once, at `init`: fixed chunks write version 3, as before,
/// and repositories of versions 1 to 3 keep fixed chunks for good.
pub const FORMAT_VERSION: u32 = 4;
/// The newest format version with fixed-size chunks: what a repository initialised with
/// fixed chunks records, byte for byte what releases before version 4 wrote, so they can still
/// open it.
pub const FIXED_CHUNKS_FORMAT_VERSION: u32 = 3;
/// Oldest repository format version this crate opens.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Smallest chunk size a repository may use (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk size a repository may use (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Default chunk size, chosen by measurement (see `docs/repository-format.md`).
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// Block of content-defined chunking: cuts fall only between 4 KiB blocks, the block size of
/// ext4, XFS and NTFS, so a file and its copies start at block boundaries.
pub const CDC_BLOCK: u32 = 4096;
/// Smallest content-defined chunk (128 KiB) before a cut by hash may end it (a chunk before an
/// all-zero block or at the disk's end may be shorter). With [`CDC_MASK_BITS`] and
/// [`CDC_MAX_CHUNK`], measured on the benchmark's guest-like disk: 604 MiB stored, 0.95–0.97×
/// restic's, against 733 MiB with fixed 1 MiB chunks, at 1.33× their chunk count
/// (`docs/benchmarks.md`, *Stored size: what costs what*; `docs/repository-format.md`).
pub const CDC_MIN_CHUNK: u32 = 128 * 1024;
/// Low bits of a block's cut hash that must be zero to end a chunk there: 7 gives a mean chunk
/// of about 600 KiB on the measured disk (see [`CDC_MIN_CHUNK`]).
pub const CDC_MASK_BITS: u32 = 7;
/// Largest content-defined chunk (2 MiB): it bounds buffers and decompression, and is the
/// config's `chunk_size` in a version-4 repository (see [`CDC_MIN_CHUNK`] for the measurement).
pub const CDC_MAX_CHUNK: u32 = 2 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// Length of a blob header: magic (8), CRC32 (4), flags (4), payload length (8).
pub const BLOB_HEADER_LEN: usize = 24;

/// Length of the version-1 fixed index header inside its blob payload (also the common part
/// every index version starts with).
pub const INDEX_HEADER_LEN: usize = 8 + 16 + 8 + 8 + 4 + 4 + 32 + 8;
/// Magic at the start of a version-1 fixed index payload (inside the blob): written by format
/// version 1, read as a legacy index that is not bound to its place.
pub const INDEX_MAGIC: [u8; 8] = *b"SKFIDX01";
/// Magic at the start of a version-2 fixed index payload: the header also names the target,
/// generation and disk the index belongs to (see `fixed_index`).
pub const INDEX_MAGIC_V2: [u8; 8] = *b"SKFIDX02";
/// Magic at the start of a version-3 fixed index payload: the version-2 header, then runs of
/// stored chunks instead of one id per chunk (see `fixed_index`).
pub const INDEX_MAGIC_V3: [u8; 8] = *b"SKFIDX03";
/// Magic at the start of a version-4 index payload (content-defined chunks): the version-3
/// header, then runs of stored chunks with each chunk's length (see `fixed_index`).
pub const INDEX_MAGIC_V4: [u8; 8] = *b"SKFIDX04";
/// Length of the version-2 header before the target key: the version-1 header, then the
/// generation (8), the disk key (4) and the target key's length (2).
pub const INDEX_V2_FIXED_LEN: usize = INDEX_HEADER_LEN + 8 + 4 + 2;

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
