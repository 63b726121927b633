//! The manifest of a generation: JSON in an `M` blob. Its presence commits the generation.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::blob::{BlobKind, Codec};
use crate::error::{Error, Result};
use crate::target::{GenerationId, TargetIdentity};

/// Version of the manifest schema.
pub const MANIFEST_VERSION: u32 = 1;
pub(crate) const MANIFEST_LIMIT: usize = 64 << 20;

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// Every allocated area was read.
    Full,
    /// Only changed areas were read; the rest was copied from the parent's index.
    Incremental,
}

/// Outcome recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationStatus {
    /// Every disk and metadata file was stored.
    Succeeded,
    /// Committed, but some disk or file is missing (listed in the manifest by the caller);
    /// never counts as "latest successful".
    Partial,
}

/// Disk provisioning type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provisioning {
    /// Thin provisioned.
    Thin,
    /// Thick, lazily zeroed.
    Thick,
    /// Thick, eagerly zeroed.
    EagerZeroedThick,
    /// Not known.
    Unknown,
}

/// A virtual disk as the caller describes it before ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskDescriptor {
    /// Device key (e.g. 2000); unique per generation.
    pub key: i32,
    /// Device label ("Hard disk 1").
    #[serde(default)]
    pub label: String,
    /// Controller device key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_key: Option<i32>,
    /// Controller bus number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_number: Option<i32>,
    /// Unit number on the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_number: Option<i32>,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Provisioning type.
    pub provisioning: Provisioning,
    /// Datastore name.
    #[serde(default)]
    pub datastore: String,
    /// Disk file path (`[ds1] web01/web01.vmdk`).
    #[serde(default)]
    pub file_path: String,
    /// Change id the changed areas were computed from (incremental), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id_used: Option<String>,
    /// Change id of the snapshot just read (the next incremental starts here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
    /// The disk's own uuid (vCenter's `backing.uuid`, or a first class disk's id): a different
    /// uuid behind the same device key means another disk, so the next backup reads it in full
    /// instead of trusting a change id that belongs to the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_uuid: Option<String>,
    /// vCenter's disk mode (`persistent`, `independent_persistent`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mode: Option<String>,
    /// Anything else (kept through read-modify-write).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl DiskDescriptor {
    /// A descriptor with key and capacity; other fields empty.
    pub fn new(key: i32, capacity: u64) -> Self {
        Self {
            key,
            label: String::new(),
            controller_key: None,
            bus_number: None,
            unit_number: None,
            capacity,
            provisioning: Provisioning::Unknown,
            datastore: String::new(),
            file_path: String::new(),
            change_id_used: None,
            change_id: None,
            disk_uuid: None,
            disk_mode: None,
            extra: Default::default(),
        }
    }
}

/// Byte and chunk counts of one disk ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// Disk capacity (logical bytes the generation restores).
    pub logical_bytes: u64,
    /// Bytes read from the source in this run.
    pub read_bytes: u64,
    /// Bytes read that were all-zero chunks (not stored).
    pub zero_bytes: u64,
    /// Bytes read whose chunk was already in the repository.
    pub reused_bytes: u64,
    /// Bytes read whose chunk was new (uncompressed size).
    pub new_bytes: u64,
    /// Bytes written to the repository for new chunks (compressed, with headers).
    pub stored_bytes: u64,
    /// Chunks read.
    pub chunks_read: u64,
    /// New chunks written.
    pub new_chunks: u64,
    /// Chunk slots not read in this run (taken from the base index, or zero without one).
    pub chunks_not_read: u64,
}

impl DiskStats {
    /// Adds another disk's counts.
    pub fn add(&mut self, o: &DiskStats) {
        self.logical_bytes += o.logical_bytes;
        self.read_bytes += o.read_bytes;
        self.zero_bytes += o.zero_bytes;
        self.reused_bytes += o.reused_bytes;
        self.new_bytes += o.new_bytes;
        self.stored_bytes += o.stored_bytes;
        self.chunks_read += o.chunks_read;
        self.new_chunks += o.new_chunks;
        self.chunks_not_read += o.chunks_not_read;
    }

    /// Bytes read per byte that had to be stored as new data (∞ shown as read bytes).
    pub fn dedup_ratio(&self) -> f64 {
        self.read_bytes as f64 / self.new_bytes.max(1) as f64
    }

    /// Uncompressed new bytes per stored byte.
    pub fn compression_ratio(&self) -> f64 {
        self.new_bytes as f64 / self.stored_bytes.max(1) as f64
    }
}

/// A disk as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// The descriptor given to the ingest (flattened into this record).
    #[serde(flatten)]
    pub disk: DiskDescriptor,
    /// File name of the disk's fixed index in the generation folder.
    pub index_file: String,
    /// SHA-256 (hex) of the index file as stored: the index this generation was committed
    /// with. `None` in generations written by format version 1 (legacy, unbound indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    /// The uuid in the index's header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_id: Option<uuid::Uuid>,
    /// Ingest statistics.
    pub stats: DiskStats,
}

impl DiskRecord {
    /// Records the identity of the index file written for this disk: its uuid and the SHA-256
    /// of `blob`, the file's bytes.
    pub fn set_index_identity(&mut self, index_id: uuid::Uuid, blob: &[u8]) {
        self.index_id = Some(index_id);
        self.index_sha256 = Some(hex::encode(Sha256::digest(blob)));
    }

    /// Whether the generation recorded which index it was committed with (false for legacy
    /// generations of format version 1).
    pub fn index_is_bound(&self) -> bool {
        self.index_sha256.is_some() || self.index_id.is_some()
    }
}

/// Totals over a generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Sum over disks.
    pub disks: DiskStats,
    /// Bytes of metadata files.
    pub metadata_bytes: u64,
    /// Wall time from begin to commit, seconds.
    pub elapsed_seconds: f64,
}

/// The manifest of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Schema version ([`MANIFEST_VERSION`]).
    pub manifest_version: u32,
    /// Repository this generation belongs to.
    pub repository_id: uuid::Uuid,
    /// Who was backed up.
    pub target: TargetIdentity,
    /// This generation's number.
    pub generation: GenerationId,
    /// When the writer began (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When the manifest was committed.
    #[serde(with = "time::serde::rfc3339")]
    pub finished: OffsetDateTime,
    /// Full or incremental.
    pub mode: BackupMode,
    /// The generation whose indexes incremental disks started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<GenerationId>,
    /// Outcome.
    pub status: GenerationStatus,
    /// Chunk size of every index in this generation.
    pub chunk_size: u32,
    /// Disks, in ingest order.
    pub disks: Vec<DiskRecord>,
    /// Metadata file names (in the generation's `metadata/` folder).
    pub metadata_files: Vec<String>,
    /// Totals.
    pub stats: GenerationStats,
    /// Caller-defined fields (kept through read-modify-write).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// The disk with device key `key`.
    pub fn disk(&self, key: i32) -> Option<&DiskRecord> {
        self.disks.iter().find(|d| d.disk.key == key)
    }

    pub(crate) fn encode(&self, codec: &Codec) -> Result<Vec<u8>> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serialises");
        codec.try_encode(BlobKind::Manifest, &json)
    }

    /// The fingerprint of the keys an encrypted repository's generation was written with
    /// (recorded as `key_fingerprint`; never the key).
    pub fn key_fingerprint(&self) -> Option<&str> {
        self.extra.get("key_fingerprint").and_then(|v| v.as_str())
    }

    pub(crate) fn decode(path: &Path, bytes: &[u8], codec: &Codec) -> Result<Self> {
        let json = codec
            .decode(BlobKind::Manifest, bytes, MANIFEST_LIMIT)
            .map_err(|reason| Error::Blob {
                path: path.to_path_buf(),
                reason,
            })?;
        let m: Manifest = serde_json::from_slice(&json).map_err(|e| Error::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        if m.manifest_version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {} is not supported",
                m.manifest_version
            )));
        }
        let mut keys = std::collections::HashSet::new();
        for d in &m.disks {
            if !keys.insert(d.disk.key) {
                return Err(bad(format!("disk {} is listed twice", d.disk.key)));
            }
            if let Some(h) = &d.index_sha256 {
                if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(bad(format!(
                        "disk {}: index_sha256 {h:?} is not 64 lower-case hex digits",
                        d.disk.key
                    )));
                }
            }
            if !is_plain_file_name(&d.index_file) {
                return Err(bad(format!(
                    "index file name {:?} is not a plain file name",
                    d.index_file
                )));
            }
        }
        if let Some(n) = m.metadata_files.iter().find(|n| !is_plain_file_name(n)) {
            return Err(bad(format!(
                "metadata file name {n:?} is not a plain file name"
            )));
        }
        Ok(m)
    }
}

/// A name that stays inside its folder: no separators, not empty, not starting with `.`.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::TargetKind;

    #[test]
    fn unknown_fields_survive_read_modify_write() {
        let mut disk = DiskDescriptor::new(2000, 1 << 30);
        disk.label = "Hard disk 1".into();
        let m = Manifest {
            manifest_version: MANIFEST_VERSION,
            repository_id: uuid::Uuid::new_v4(),
            target: TargetIdentity::new(TargetKind::Vm, "web01"),
            generation: GenerationId(1),
            started: OffsetDateTime::UNIX_EPOCH,
            finished: OffsetDateTime::UNIX_EPOCH,
            mode: BackupMode::Full,
            parent: None,
            status: GenerationStatus::Succeeded,
            chunk_size: 1 << 20,
            disks: vec![DiskRecord {
                disk,
                index_file: "disk-2000.fidx".into(),
                index_sha256: None,
                index_id: None,
                stats: DiskStats::default(),
            }],
            metadata_files: vec!["vm.xml".into()],
            stats: GenerationStats::default(),
            extra: Default::default(),
        };
        let mut v = serde_json::to_value(&m).unwrap();
        v["future_field"] = serde_json::json!({"a": 1});
        v["disks"][0]["rdm"] = serde_json::json!(false);
        v["target"]["vcenter"] = serde_json::json!("vc1");
        let back: Manifest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back.extra["future_field"]["a"], 1);
        assert_eq!(back.disks[0].disk.extra["rdm"], false);
        assert_eq!(back.target.extra["vcenter"], "vc1");
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        let codec = Codec::new(1, None);
        let blob = back.encode(&codec).unwrap();
        let again = Manifest::decode(Path::new("m"), &blob, &codec).unwrap();
        assert_eq!(again, back);
        let mut bad = blob.clone();
        let n = bad.len() - 3;
        bad[n] ^= 0x40;
        assert!(Manifest::decode(Path::new("m"), &bad, &codec).is_err());

        // Names that would leave the generation folder are refused.
        let mut evil = back.clone();
        evil.disks[0].index_file = "../../../config".into();
        let err =
            Manifest::decode(Path::new("m"), &evil.encode(&codec).unwrap(), &codec).unwrap_err();
        assert!(err.to_string().contains("plain file name"), "{err}");
        let mut evil = back.clone();
        evil.metadata_files = vec!["/etc/passwd".into()];
        assert!(Manifest::decode(Path::new("m"), &evil.encode(&codec).unwrap(), &codec).is_err());
        let mut twice = back;
        twice.disks.push(twice.disks[0].clone());
        assert!(Manifest::decode(Path::new("m"), &twice.encode(&codec).unwrap(), &codec).is_err());
    }
}
