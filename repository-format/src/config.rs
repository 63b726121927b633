//! The repository configuration, written once at `init`.

use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, Codec};
use crate::error::{Error, Result};
use crate::format::{
    self, CDC_BLOCK, CDC_MASK_BITS, CDC_MAX_CHUNK, CDC_MIN_CHUNK, CONFIG_FILE,
    FIXED_CHUNKS_FORMAT_VERSION, FORMAT_VERSION, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE,
};
use crate::key::KeyFingerprint;
use crate::key_file::KdfParams;
use crate::storage::Backend;

/// Encryption mode of a repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionMode {
    /// No encryption.
    #[default]
    None,
    /// AES-256-GCM blobs, HMAC-SHA-256 chunk ids, master keys wrapped in key files under
    /// `keys/` (see [`crate::key`] and [`crate::key_file`]).
    Aes256Gcm,
}

/// The name the task and the CLI use for [`EncryptionMode`].
pub type Encryption = EncryptionMode;

impl std::str::FromStr for EncryptionMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(EncryptionMode::None),
            "aes-256-gcm" => Ok(EncryptionMode::Aes256Gcm),
            other => Err(Error::InvalidOption(format!(
                "unknown encryption {other:?}: use \"none\" or \"aes-256-gcm\""
            ))),
        }
    }
}

/// How a repository cuts disks into chunks, recorded once in its config.
///
/// Serialised as `{"kind": "aligned-cdc", "block": 4096, ...}`; a fixed-chunk config has no
/// `chunking` field at all, so configs of format versions 1 to 3 stay byte for byte as they
/// were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Chunking {
    /// Every chunk is `chunk_size` bytes (the last one of a disk may be shorter): format
    /// versions 1 to 3.
    #[default]
    Fixed,
    /// Content-defined chunks cut only between `block`-byte blocks (format version 4): a chunk
    /// ends after a block whose cut hash has its low `mask_bits` bits zero once it holds at
    /// least `min` bytes, or when it reaches `max` bytes; an all-zero block ends the chunk
    /// before it and belongs to no chunk.
    AlignedCdc {
        /// Block size in bytes; 4096 in this version.
        block: u32,
        /// Smallest chunk a cut by hash may end, in bytes (a multiple of `block`).
        min: u32,
        /// Low bits of the cut hash that must be zero for a cut (1 to 24).
        mask_bits: u32,
        /// Largest chunk in bytes (a multiple of `block`; the config's `chunk_size`).
        max: u32,
        /// Seed of the cut hash in a plain repository, random at `init`, so chunk lengths do
        /// not follow from known content alone. `None` in an encrypted repository, which
        /// derives its seed from its master key instead (and so keeps it secret).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
}

impl Chunking {
    /// True for fixed-size chunks (format versions 1 to 3).
    pub fn is_fixed(&self) -> bool {
        matches!(self, Chunking::Fixed)
    }

    /// The content-defined chunking of a new repository with the measured defaults
    /// ([`CDC_MIN_CHUNK`], [`CDC_MASK_BITS`], [`CDC_MAX_CHUNK`]); a random seed when
    /// `encrypted` is false.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system's random generator fails.
    pub fn content_defined(encrypted: bool) -> Result<Self> {
        let seed = if encrypted {
            None
        } else {
            let mut b = [0u8; 8];
            crate::key::fill_random(&mut b)?;
            Some(u64::from_le_bytes(b))
        };
        Ok(Chunking::AlignedCdc {
            block: CDC_BLOCK,
            min: CDC_MIN_CHUNK,
            mask_bits: CDC_MASK_BITS,
            max: CDC_MAX_CHUNK,
            seed,
        })
    }

    /// Checks the chunking a config of `format_version` records against its `chunk_size` and
    /// encryption; the reason names what is wrong.
    fn validate(
        &self,
        format_version: u32,
        chunk_size: u32,
        encrypted: bool,
    ) -> std::result::Result<(), String> {
        let Chunking::AlignedCdc {
            block,
            min,
            mask_bits,
            max,
            seed,
        } = *self
        else {
            return if format_version <= FIXED_CHUNKS_FORMAT_VERSION {
                Ok(())
            } else {
                Err(format!(
                    "format version {format_version} needs content-defined chunking, but the \
                     config records none"
                ))
            };
        };
        if format_version <= FIXED_CHUNKS_FORMAT_VERSION {
            return Err(format!(
                "format version {format_version} has fixed chunks, but the config records \
                 content-defined chunking (which needs version 4)"
            ));
        }
        if block != CDC_BLOCK {
            return Err(format!(
                "chunking block of {block} bytes: this version cuts at {CDC_BLOCK}-byte blocks"
            ));
        }
        if min < block || min % block != 0 {
            return Err(format!(
                "smallest chunk {min} is not a positive multiple of the {block}-byte block"
            ));
        }
        if max % block != 0 || max < min {
            return Err(format!(
                "largest chunk {max} is not a multiple of the {block}-byte block at least the \
                 smallest chunk ({min})"
            ));
        }
        if chunk_size != max {
            return Err(format!(
                "chunk size {chunk_size} is not the largest content-defined chunk ({max})"
            ));
        }
        if !(1..=24).contains(&mask_bits) {
            return Err(format!("cut mask of {mask_bits} bits is outside 1..=24"));
        }
        match (seed, encrypted) {
            (Some(_), false) | (None, true) => Ok(()),
            (None, false) => {
                Err("no seed for the cut hash in a repository without encryption".into())
            }
            (Some(_), true) => Err(
                "a seed for the cut hash in an encrypted repository (it is derived from \
                 the key, never stored)"
                    .into(),
            ),
        }
    }
}

/// Which chunking [`crate::Repository::init`] gives a new repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkingChoice {
    /// Fixed-size chunks of `chunk_size` (format version 3, readable by older releases).
    #[default]
    Fixed,
    /// Content-defined chunks at 4 KiB boundaries (format version 4), with the measured
    /// defaults; the chunk size is then the largest chunk, [`CDC_MAX_CHUNK`].
    ContentDefined,
}

impl std::str::FromStr for ChunkingChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed" => Ok(ChunkingChoice::Fixed),
            "content-defined" => Ok(ChunkingChoice::ContentDefined),
            other => Err(Error::InvalidOption(format!(
                "unknown chunking {other:?}: use \"content-defined\" or \"fixed\""
            ))),
        }
    }
}

impl std::fmt::Display for ChunkingChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkingChoice::Fixed => "fixed",
            ChunkingChoice::ContentDefined => "content-defined",
        })
    }
}

/// The repository configuration (`config` at the root, a `K` blob holding JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version; this crate reads and writes [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Random id of this repository.
    pub repository_id: uuid::Uuid,
    /// Chunk size in bytes (power of two, 64 KiB to 16 MiB); with content-defined chunking,
    /// the largest chunk.
    pub chunk_size: u32,
    /// How disks are cut into chunks; absent (fixed) in versions 1 to 3.
    #[serde(default, skip_serializing_if = "Chunking::is_fixed")]
    pub chunking: Chunking,
    /// Chunk id hash; always `"sha256"` in this version.
    pub hash: String,
    /// Compression algorithm; always `"zstd"`.
    pub compression: String,
    /// zstd level (0 stores everything plain).
    pub compression_level: i32,
    /// Encryption mode.
    pub encryption: EncryptionMode,
    /// Fingerprint of the master keys of an encrypted repository (never the keys: they are
    /// only in the key files under `keys/`, wrapped). Key ids are not recorded here because
    /// the config is written once; `keys/` is the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<KeyFingerprint>,
    /// When the repository was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created: time::OffsetDateTime,
    /// Fields written by newer versions, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Options of [`crate::Repository::init`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitOptions {
    /// Chunk size in bytes (power of two, 64 KiB to 16 MiB); must be [`CDC_MAX_CHUNK`] with
    /// content-defined chunking.
    pub chunk_size: u32,
    /// Fixed (format version 3) or content-defined chunks (format version 4). The default is
    /// fixed, which the library's tests rely on; the command line creates content-defined
    /// repositories ([`InitOptions::content_defined`]).
    #[serde(default)]
    pub chunking: ChunkingChoice,
    /// zstd level, 0 (no compression) to 19.
    pub compression_level: i32,
    /// Encryption; [`EncryptionMode::Aes256Gcm`] needs a passphrase at
    /// [`crate::Repository::init_with`].
    #[serde(default)]
    pub encryption: EncryptionMode,
    /// Argon2id parameters of the first key file (encrypted repositories only).
    #[serde(default)]
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            chunk_size: format::DEFAULT_CHUNK_SIZE,
            chunking: ChunkingChoice::Fixed,
            compression_level: format::DEFAULT_COMPRESSION_LEVEL,
            encryption: EncryptionMode::None,
            kdf: KdfParams::default(),
        }
    }
}

impl InitOptions {
    /// The options of a new repository with content-defined chunks (format version 4) and the
    /// measured defaults: what `safekeeping repo init` creates unless told `--chunking fixed`,
    /// because it stores less (0.95–0.97× restic's against 1.15× with fixed 1 MiB chunks on
    /// the benchmark disk).
    pub fn content_defined() -> Self {
        Self {
            chunk_size: CDC_MAX_CHUNK,
            chunking: ChunkingChoice::ContentDefined,
            ..Self::default()
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        validate_chunk_size(self.chunk_size)?;
        if self.chunking == ChunkingChoice::ContentDefined && self.chunk_size != CDC_MAX_CHUNK {
            return Err(Error::InvalidOption(format!(
                "chunk size {} with content-defined chunks: their largest chunk is \
                 {CDC_MAX_CHUNK} bytes (a chunk size applies to fixed chunks)",
                self.chunk_size
            )));
        }
        if !(0..=19).contains(&self.compression_level) {
            return Err(Error::InvalidOption(format!(
                "compression level {} is outside 0..=19",
                self.compression_level
            )));
        }
        if self.encryption == EncryptionMode::Aes256Gcm {
            self.kdf.validate()?;
        }
        Ok(())
    }
}

pub(crate) fn validate_chunk_size(size: u32) -> Result<()> {
    if !size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        return Err(Error::InvalidOption(format!(
            "chunk size {size} must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
        )));
    }
    Ok(())
}

impl Config {
    /// The config of a new repository: version 3 with fixed chunks (exactly what earlier
    /// releases wrote), version 4 with content-defined ones (a fresh seed when plain).
    ///
    /// # Errors
    /// [`Error::Random`] if no seed can be drawn.
    pub(crate) fn new(opts: &InitOptions, key_fingerprint: Option<KeyFingerprint>) -> Result<Self> {
        let (format_version, chunking) = match opts.chunking {
            ChunkingChoice::Fixed => (FIXED_CHUNKS_FORMAT_VERSION, Chunking::Fixed),
            ChunkingChoice::ContentDefined => (
                FORMAT_VERSION,
                Chunking::content_defined(opts.encryption != EncryptionMode::None)?,
            ),
        };
        Ok(Self {
            format_version,
            repository_id: uuid::Uuid::new_v4(),
            chunk_size: opts.chunk_size,
            chunking,
            hash: "sha256".into(),
            compression: "zstd".into(),
            compression_level: opts.compression_level,
            encryption: opts.encryption,
            key_fingerprint,
            created: time::OffsetDateTime::now_utc(),
            extra: Default::default(),
        })
    }

    /// Writes the config with a conditional create: two `init`s racing for one place cannot
    /// both succeed.
    pub(crate) fn write(&self, backend: &dyn Backend) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("config serialises");
        let blob = Codec::new(0, None).encode(BlobKind::Config, &json);
        backend
            .create_new(CONFIG_FILE, &blob)
            .map_err(crate::error::store_err(backend, "create", CONFIG_FILE))
    }

    pub(crate) fn read(backend: &dyn Backend) -> Result<Self> {
        let path = backend.display_path(CONFIG_FILE);
        let bytes = crate::error::read_object(backend, CONFIG_FILE, 1 << 20)?;
        let json = Codec::new(0, None)
            .decode(BlobKind::Config, &bytes, 1 << 20)
            .map_err(|reason| Error::Blob {
                path: path.clone(),
                reason,
            })?;
        let cfg: Config = serde_json::from_slice(&json).map_err(|e| Error::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::Config {
            path: path.clone(),
            reason,
        };
        if !(format::OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&cfg.format_version) {
            return Err(bad(format!(
                "format version {} is not supported (this version reads {}..={FORMAT_VERSION})",
                cfg.format_version,
                format::OLDEST_FORMAT_VERSION,
            )));
        }
        validate_chunk_size(cfg.chunk_size).map_err(|e| bad(e.to_string()))?;
        cfg.chunking
            .validate(
                cfg.format_version,
                cfg.chunk_size,
                cfg.encryption != EncryptionMode::None,
            )
            .map_err(bad)?;
        if cfg.hash != "sha256" || cfg.compression != "zstd" {
            return Err(bad(format!(
                "hash {:?} / compression {:?} not supported",
                cfg.hash, cfg.compression
            )));
        }
        match (cfg.encryption, &cfg.key_fingerprint) {
            (EncryptionMode::None, None) => {}
            (EncryptionMode::Aes256Gcm, Some(fp)) => {
                if fp.0.len() != 32 || !fp.0.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(bad(format!(
                        "key fingerprint {:?} is not 32 hex digits",
                        fp.0
                    )));
                }
            }
            (EncryptionMode::None, Some(_)) => {
                return Err(bad(
                    "a key fingerprint in a repository without encryption".into()
                ))
            }
            (EncryptionMode::Aes256Gcm, None) => {
                return Err(bad("encrypted, but records no key fingerprint".into()))
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalBackend;

    /// A config as a release of format version 3 wrote it.
    const V3: &str = r#"{
  "format_version": 3,
  "repository_id": "39704f05-a0d3-4010-a60e-6a7c7a52ddba",
  "chunk_size": 1048576,
  "hash": "sha256",
  "compression": "zstd",
  "compression_level": 1,
  "encryption": "none",
  "created": "2026-12-04T19:15:41.676752576Z"
}"#;

    fn v4() -> serde_json::Value {
        serde_json::json!({
            "format_version": 4,
            "repository_id": "3b6b10f4-fad8-484f-8f5b-47ecd2c5918d",
            "chunk_size": 2097152,
            "chunking": {"kind": "aligned-cdc", "block": 4096, "min": 131072,
                         "mask_bits": 7, "max": 2097152, "seed": 4704071100689515826u64},
            "hash": "sha256",
            "compression": "zstd",
            "compression_level": 1,
            "encryption": "none",
            "created": "2026-12-04T19:15:41.570990744Z"
        })
    }

    /// Reads `json` as the config of a repository folder.
    fn read(json: &[u8]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let blob = Codec::new(0, None).encode(BlobKind::Config, json);
        std::fs::write(dir.path().join(CONFIG_FILE), blob).unwrap();
        Config::read(&LocalBackend::new(dir.path()))
    }

    #[test]
    fn a_fixed_chunk_config_stays_byte_identical() {
        let cfg = read(V3.as_bytes()).unwrap();
        assert_eq!(cfg.chunking, Chunking::Fixed);
        assert_eq!(serde_json::to_string_pretty(&cfg).unwrap(), V3);
        let new = Config::new(&InitOptions::default(), None).unwrap();
        assert_eq!(new.format_version, 3);
        let json = serde_json::to_value(&new).unwrap();
        assert!(json.get("chunking").is_none(), "{json}");
    }

    #[test]
    fn a_content_defined_config_has_the_measured_defaults_and_a_seed_when_plain() {
        let cfg = read(&serde_json::to_vec(&v4()).unwrap()).unwrap();
        assert!(matches!(
            cfg.chunking,
            Chunking::AlignedCdc {
                seed: Some(4704071100689515826),
                ..
            }
        ));
        let plain = Config::new(&InitOptions::content_defined(), None).unwrap();
        assert_eq!(plain.format_version, FORMAT_VERSION);
        assert_eq!(plain.chunk_size, CDC_MAX_CHUNK);
        let Chunking::AlignedCdc {
            block,
            min,
            mask_bits,
            max,
            seed,
        } = plain.chunking
        else {
            panic!("{:?}", plain.chunking)
        };
        assert_eq!((block, min, mask_bits, max), (4096, 128 << 10, 7, 2 << 20));
        assert!(seed.is_some());
        let encrypted = Config::new(
            &InitOptions {
                encryption: EncryptionMode::Aes256Gcm,
                ..InitOptions::content_defined()
            },
            None,
        )
        .unwrap();
        assert!(matches!(
            encrypted.chunking,
            Chunking::AlignedCdc { seed: None, .. }
        ));
        assert!(InitOptions {
            chunk_size: 1 << 20,
            ..InitOptions::content_defined()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn every_bad_chunking_is_refused_with_its_reason() {
        let cdc = |field: &str, value: serde_json::Value| {
            let mut j = v4();
            j["chunking"][field] = value;
            j
        };
        let mut v3_with_cdc = v4();
        v3_with_cdc["format_version"] = 3.into();
        let mut v4_fixed = v4();
        v4_fixed.as_object_mut().unwrap().remove("chunking");
        let mut v5 = v4();
        v5["format_version"] = 5.into();
        let mut wrong_size = v4();
        wrong_size["chunk_size"] = (1 << 20).into();
        let mut no_seed = v4();
        no_seed["chunking"].as_object_mut().unwrap().remove("seed");
        let mut encrypted_with_seed = v4();
        encrypted_with_seed["encryption"] = "aes256-gcm".into();
        encrypted_with_seed["key_fingerprint"] = "0123456789abcdef0123456789abcdef".into();
        for (json, why) in [
            (v3_with_cdc, "which needs version 4"),
            (v4_fixed, "needs content-defined chunking"),
            (v5, "format version 5 is not supported"),
            (cdc("block", 8192.into()), "4096-byte blocks"),
            (cdc("min", 100_000.into()), "smallest chunk 100000"),
            (cdc("min", 0.into()), "smallest chunk 0"),
            (cdc("min", (4 << 20).into()), "at least the smallest"),
            (cdc("max", (1 << 20).into()), "is not the largest"),
            (cdc("mask_bits", 0.into()), "outside 1..=24"),
            (cdc("mask_bits", 25.into()), "outside 1..=24"),
            (no_seed, "no seed"),
            (encrypted_with_seed, "derived from the key"),
        ] {
            let e = read(&serde_json::to_vec(&json).unwrap()).unwrap_err();
            assert!(
                matches!(&e, Error::Config { reason, .. } if reason.contains(why)),
                "{why}: {e}"
            );
        }
    }
}
