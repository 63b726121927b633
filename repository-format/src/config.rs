//! The repository configuration, written once at `init`.

use serde::{Deserialize, Serialize};

use crate::blob::{BlobKind, Codec};
use crate::error::{Error, Result};
use crate::format::{self, CONFIG_FILE, FORMAT_VERSION, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
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

/// The repository configuration (`config` at the root, a `K` blob holding JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Format version; this crate reads and writes [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Random id of this repository.
    pub repository_id: uuid::Uuid,
    /// Chunk size in bytes (power of two, 64 KiB to 16 MiB).
    pub chunk_size: u32,
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
    /// Chunk size in bytes (power of two, 64 KiB to 16 MiB).
    pub chunk_size: u32,
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
            compression_level: format::DEFAULT_COMPRESSION_LEVEL,
            encryption: EncryptionMode::None,
            kdf: KdfParams::default(),
        }
    }
}

impl InitOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        validate_chunk_size(self.chunk_size)?;
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
    pub(crate) fn new(opts: &InitOptions, key_fingerprint: Option<KeyFingerprint>) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            repository_id: uuid::Uuid::new_v4(),
            chunk_size: opts.chunk_size,
            hash: "sha256".into(),
            compression: "zstd".into(),
            compression_level: opts.compression_level,
            encryption: opts.encryption,
            key_fingerprint,
            created: time::OffsetDateTime::now_utc(),
            extra: Default::default(),
        }
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
