//! Fixed index: one digest per chunk of a disk, in an `I` blob.
//!
//! ```text
//! payload offset  size  field
//!              0     8  "SKFIDX02" ("SKFIDX01": a legacy index, see below)
//!              8    16  index uuid
//!             24     8  creation time, Unix seconds, i64 LE
//!             32     8  logical size in bytes, u64 LE
//!             40     4  chunk size in bytes, u32 LE
//!             44     4  flags, 0
//!             48    32  SHA-256 over the digest list that follows
//!             80     8  chunk count = ceil(size / chunk size), u64 LE
//!             88     8  generation the index belongs to, u64 LE          (version 2 only)
//!             96     4  disk (device key) it belongs to, i32 LE          (version 2 only)
//!            100     2  length t of the target key, u16 LE (1..=200)     (version 2 only)
//!            102     t  target key (the target's folder name), ASCII     (version 2 only)
//!        88 / 102+t  32*n  digests; all-zero = the chunk is all zeros and not stored
//! ```
//!
//! A version-2 index names its place ([`IndexBinding`]): a copy of it in another generation,
//! target or disk is detected on read. In an encrypted repository the place is also part of
//! the blob's associated data ([`IndexBinding::associated_data`]), so the index does not even
//! decrypt elsewhere. Version-1 indexes (written by format version 1) have no binding: they are
//! read as legacy, unbound indexes.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::blob::{BlobKind, Codec};
use crate::config::validate_chunk_size;
use crate::digest::ChunkDigest;
use crate::error::{Error, Result};
use crate::format::{INDEX_HEADER_LEN, INDEX_MAGIC, INDEX_MAGIC_V2, INDEX_V2_FIXED_LEN};
use crate::target::{GenerationId, TargetKey};

/// Where an index belongs: the target folder, generation and disk it was written for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexBinding {
    /// The target's folder name (keyed in an encrypted repository).
    pub target: TargetKey,
    /// The generation.
    pub generation: GenerationId,
    /// The disk's device key.
    pub disk: i32,
}

impl IndexBinding {
    /// The place an index belongs to.
    pub fn new(target: TargetKey, generation: GenerationId, disk: i32) -> Self {
        Self {
            target,
            generation,
            disk,
        }
    }

    /// The bytes appended to the associated data of the index blob in an encrypted repository.
    pub fn associated_data(&self) -> Vec<u8> {
        format!(
            "safekeeping index v2\0{}\0{}\0{}",
            self.target, self.generation.0, self.disk
        )
        .into_bytes()
    }
}

impl std::fmt::Display for IndexBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target {} generation {} disk {}",
            self.target, self.generation, self.disk
        )
    }
}

/// Largest decoded index accepted (128 M chunks: 128 TiB at 1 MiB chunks).
pub(crate) const INDEX_LIMIT: usize = INDEX_HEADER_LEN + 32 * (128 << 20);

/// The digests of every chunk of one disk in one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedIndex {
    uuid: uuid::Uuid,
    created: i64,
    size: u64,
    chunk_size: u32,
    digests: Vec<ChunkDigest>,
    /// Where it belongs; `None` for a legacy (version-1) index.
    binding: Option<IndexBinding>,
}

impl FixedIndex {
    /// An index for a disk of `size` bytes where every chunk is zero.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a bad chunk size or a disk too large for one index.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self> {
        validate_chunk_size(chunk_size)?;
        let count = size.div_ceil(chunk_size as u64);
        if INDEX_HEADER_LEN as u64 + count * 32 > INDEX_LIMIT as u64 {
            return Err(Error::InvalidOption(format!(
                "disk of {size} bytes needs {count} chunks of {chunk_size} bytes, more than one index holds"
            )));
        }
        Ok(Self {
            uuid: uuid::Uuid::new_v4(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            size,
            chunk_size,
            digests: vec![ChunkDigest::ZERO_MARKER; count as usize],
            binding: None,
        })
    }

    /// A copy of `base` with a new uuid and creation time and no binding: the start of an
    /// incremental index (bound to its own place when it is written).
    pub fn derive(base: &FixedIndex) -> Self {
        Self {
            uuid: uuid::Uuid::new_v4(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
            binding: None,
            ..base.clone()
        }
    }

    /// Binds the index to its place: it is then encoded as a version-2 index naming it.
    pub fn bind(&mut self, binding: IndexBinding) {
        self.binding = Some(binding);
    }

    /// Where the index belongs; `None` for a legacy (version-1) index.
    pub fn binding(&self) -> Option<&IndexBinding> {
        self.binding.as_ref()
    }

    /// Index uuid.
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }
    /// Creation time, Unix seconds.
    pub fn created(&self) -> i64 {
        self.created
    }
    /// Logical disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }
    /// Number of chunks.
    pub fn chunk_count(&self) -> usize {
        self.digests.len()
    }

    /// Digest of chunk `i`; `None` for an all-zero chunk.
    ///
    /// # Panics
    /// If `i >= chunk_count()`.
    pub fn slot(&self, i: usize) -> Option<ChunkDigest> {
        let d = self.digests[i];
        (!d.is_zero_marker()).then_some(d)
    }

    /// Sets chunk `i` (`None` = all zeros).
    ///
    /// # Panics
    /// If `i >= chunk_count()`.
    pub fn set(&mut self, i: usize, digest: Option<ChunkDigest>) {
        self.digests[i] = digest.unwrap_or(ChunkDigest::ZERO_MARKER);
    }

    /// Byte offset and length of chunk `i` (the last chunk may be short).
    pub fn chunk_range(&self, i: usize) -> (u64, usize) {
        let off = i as u64 * self.chunk_size as u64;
        let len = (self.size - off).min(self.chunk_size as u64) as usize;
        (off, len)
    }

    /// Every stored (non-zero) chunk as (index, digest).
    pub fn stored_chunks(&self) -> impl Iterator<Item = (usize, ChunkDigest)> + '_ {
        self.digests
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.is_zero_marker())
            .map(|(i, d)| (i, *d))
    }

    fn list_hash(digests: &[ChunkDigest]) -> [u8; 32] {
        let mut h = Sha256::new();
        for d in digests {
            h.update(d.0);
        }
        h.finalize().into()
    }

    /// Serialises into an index blob.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails while encrypting; the writer
    /// uses [`FixedIndex::payload`] with [`Codec::try_encode`] instead.
    pub fn encode(&self, codec: &Codec) -> Vec<u8> {
        self.try_encode(codec)
            .expect("operating system random generator failed")
    }

    /// Serialises into an index blob; a bound index is bound in the blob's associated data
    /// too (encrypted repositories).
    ///
    /// # Errors
    /// [`Error::Random`] if no nonce can be drawn (encrypted repositories only).
    pub fn try_encode(&self, codec: &Codec) -> Result<Vec<u8>> {
        let place = self
            .binding
            .as_ref()
            .map(IndexBinding::associated_data)
            .unwrap_or_default();
        codec.try_encode_bound(BlobKind::Index, &self.payload(), &place)
    }

    /// The payload of the index blob (header and digest list, before compression or
    /// encryption): version 2 for a bound index, version 1 (legacy) otherwise.
    pub fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(INDEX_V2_FIXED_LEN + 200 + 32 * self.digests.len());
        p.extend_from_slice(if self.binding.is_some() {
            &INDEX_MAGIC_V2
        } else {
            &INDEX_MAGIC
        });
        p.extend_from_slice(self.uuid.as_bytes());
        p.extend_from_slice(&self.created.to_le_bytes());
        p.extend_from_slice(&self.size.to_le_bytes());
        p.extend_from_slice(&self.chunk_size.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&Self::list_hash(&self.digests));
        p.extend_from_slice(&(self.digests.len() as u64).to_le_bytes());
        if let Some(b) = &self.binding {
            let t = b.target.as_str().as_bytes();
            p.extend_from_slice(&b.generation.0.to_le_bytes());
            p.extend_from_slice(&b.disk.to_le_bytes());
            // Target keys are at most 200 bytes (`TargetKey::new`).
            p.extend_from_slice(&(t.len() as u16).to_le_bytes());
            p.extend_from_slice(t);
        }
        for d in &self.digests {
            p.extend_from_slice(&d.0);
        }
        p
    }

    /// Parses and verifies an index blob read from `path` (named in errors).
    ///
    /// # Errors
    /// [`Error::Blob`] for envelope damage, [`Error::Index`] for inconsistent content.
    pub fn decode(path: &Path, bytes: &[u8], codec: &Codec) -> Result<Self> {
        Self::decode_at(path, bytes, codec, None)
    }

    /// Parses and verifies an index blob expected to belong to `place`: in an encrypted
    /// repository the blob must authenticate for that place. (Whether the binding in the
    /// header names `place` is the caller's check: [`FixedIndex::binding`].) A legacy index
    /// is decoded without a place; `place` = `None` decodes without one too.
    ///
    /// # Errors
    /// As [`FixedIndex::decode`].
    pub fn decode_at(
        path: &Path,
        bytes: &[u8],
        codec: &Codec,
        place: Option<&IndexBinding>,
    ) -> Result<Self> {
        let aad = place.map(IndexBinding::associated_data).unwrap_or_default();
        let p = codec
            .decode_bound(BlobKind::Index, bytes, INDEX_LIMIT, &aad)
            .map_err(|reason| Error::Blob {
                path: path.to_path_buf(),
                reason,
            })?;
        let bad = |reason: String| Error::Index {
            path: path.to_path_buf(),
            reason,
        };
        if p.len() < INDEX_HEADER_LEN {
            return Err(bad(format!("header truncated ({} bytes)", p.len())));
        }
        let bound = if p[..8] == INDEX_MAGIC_V2 {
            true
        } else if p[..8] == INDEX_MAGIC {
            false
        } else {
            return Err(bad("wrong index magic".into()));
        };
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().expect("8 bytes"));
        let uuid = uuid::Uuid::from_slice(&p[8..24]).expect("16 bytes");
        let created = u64_at(24) as i64;
        let size = u64_at(32);
        let chunk_size = u32::from_le_bytes(p[40..44].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(p[44..48].try_into().expect("4 bytes"));
        let list_hash: [u8; 32] = p[48..80].try_into().expect("32 bytes");
        let count = u64_at(80);
        validate_chunk_size(chunk_size).map_err(|e| bad(e.to_string()))?;
        if flags != 0 {
            return Err(bad(format!("unknown flags {flags:#x}")));
        }
        if count != size.div_ceil(chunk_size as u64) {
            return Err(bad(format!(
                "{count} chunks do not cover {size} bytes in chunks of {chunk_size}"
            )));
        }
        let (binding, body_start) = if bound {
            if p.len() < INDEX_V2_FIXED_LEN {
                return Err(bad(format!("header truncated ({} bytes)", p.len())));
            }
            let generation = GenerationId(u64_at(INDEX_HEADER_LEN));
            let disk = i32::from_le_bytes(
                p[INDEX_HEADER_LEN + 8..INDEX_HEADER_LEN + 12]
                    .try_into()
                    .expect("4 bytes"),
            );
            let tlen = u16::from_le_bytes(
                p[INDEX_HEADER_LEN + 12..INDEX_V2_FIXED_LEN]
                    .try_into()
                    .expect("2 bytes"),
            ) as usize;
            let end = INDEX_V2_FIXED_LEN + tlen;
            if p.len() < end {
                return Err(bad(format!("header truncated ({} bytes)", p.len())));
            }
            let target = std::str::from_utf8(&p[INDEX_V2_FIXED_LEN..end])
                .ok()
                .and_then(|t| TargetKey::new(t).ok())
                .ok_or_else(|| bad("the target key in the header is not a valid key".into()))?;
            (
                Some(IndexBinding {
                    target,
                    generation,
                    disk,
                }),
                end,
            )
        } else {
            (None, INDEX_HEADER_LEN)
        };
        let body = &p[body_start..];
        if body.len() as u64 != count * 32 {
            return Err(bad(format!(
                "digest list has {} bytes, expected {}",
                body.len(),
                count * 32
            )));
        }
        let digests: Vec<ChunkDigest> = body
            .chunks_exact(32)
            .map(|c| ChunkDigest(c.try_into().expect("32 bytes")))
            .collect();
        if Self::list_hash(&digests) != list_hash {
            return Err(bad(
                "SHA-256 of the digest list does not match the header".into()
            ));
        }
        Ok(Self {
            uuid,
            created,
            size,
            chunk_size,
            digests,
            binding,
        })
    }

    /// Reads and verifies the index file at `path`.
    ///
    /// # Errors
    /// As [`FixedIndex::decode`], plus [`Error::Io`].
    pub fn read(path: &Path, codec: &Codec) -> Result<Self> {
        let bytes = crate::fsutil::read_limited(path, INDEX_LIMIT as u64 + 4096)?;
        Self::decode(path, &bytes, codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_index() -> impl Strategy<Value = FixedIndex> {
        (
            0u64..(40 << 16),
            proptest::collection::vec(any::<Option<u8>>(), 0..64),
        )
            .prop_map(|(size, fill)| {
                let mut idx = FixedIndex::new(size, 1 << 16).unwrap();
                for i in 0..idx.chunk_count() {
                    let f = fill.get(i % fill.len().max(1)).copied().flatten();
                    idx.set(i, f.map(|b| ChunkDigest::of(&[b, i as u8])));
                }
                idx
            })
    }

    proptest! {
        #[test]
        fn round_trip(idx in arb_index(), level in 0i32..3) {
            let codec = Codec::new(level, None);
            let blob = idx.encode(&codec);
            let back = FixedIndex::decode(Path::new("i"), &blob, &codec).unwrap();
            prop_assert_eq!(back, idx);
        }

        #[test]
        fn truncation_or_flip_detected(idx in arb_index(), cut in any::<prop::sample::Index>(), flip in any::<bool>()) {
            let codec = Codec::new(0, None);
            let blob = idx.encode(&codec);
            let n = cut.index(blob.len());
            let damaged = if flip { let mut b = blob.clone(); b[n] ^= 0x10; b } else { blob[..n].to_vec() };
            prop_assert!(FixedIndex::decode(Path::new("i"), &damaged, &codec).is_err());
        }

        /// Incremental semantics: derive from the parent, replace the re-read slots; every other
        /// slot equals the parent's, every replaced slot equals the new value.
        #[test]
        fn incremental_replaces_only_reread_slots(parent in arb_index(), changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<Option<u8>>()), 0..20)) {
            prop_assume!(parent.chunk_count() > 0);
            let mut child = FixedIndex::derive(&parent);
            let mut expected: Vec<Option<ChunkDigest>> = (0..parent.chunk_count()).map(|i| parent.slot(i)).collect();
            for (pos, v) in &changes {
                let i = pos.index(parent.chunk_count());
                let d = v.map(|b| ChunkDigest::of(&[b, 0xEE]));
                child.set(i, d);
                expected[i] = d;
            }
            prop_assert_ne!(child.uuid(), parent.uuid());
            prop_assert_eq!(child.size(), parent.size());
            for (i, e) in expected.iter().enumerate() {
                prop_assert_eq!(child.slot(i), *e);
            }
            let codec = Codec::new(1, None);
            let back = FixedIndex::decode(Path::new("i"), &child.encode(&codec), &codec).unwrap();
            prop_assert_eq!(back, child);
        }
    }

    #[test]
    fn short_tail_chunk() {
        let idx = FixedIndex::new(3 * 65536 + 100, 65536).unwrap();
        assert_eq!(idx.chunk_count(), 4);
        assert_eq!(idx.chunk_range(3), (3 * 65536, 100));
        assert_eq!(idx.chunk_range(0), (0, 65536));
        assert!(FixedIndex::new(10, 1000).is_err());
    }
}
