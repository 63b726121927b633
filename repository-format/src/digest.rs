//! Chunk identifiers: the SHA-256 of a chunk's content.

use sha2::{Digest as _, Sha256};

/// The identity of a chunk: SHA-256 of its (uncompressed, unencrypted) content.
///
/// With encryption (a later format feature) the id becomes a keyed hash; the type stays the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkDigest(pub [u8; 32]);

impl ChunkDigest {
    /// The all-zero value, used in a fixed index to mark an all-zero chunk that is not stored.
    pub const ZERO_MARKER: ChunkDigest = ChunkDigest([0; 32]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkDigest(Sha256::digest(data).into())
    }

    /// Lower-case hex form, as used in chunk file names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-digit hex form; `None` if it is not one.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChunkDigest(out))
    }

    /// True for [`ChunkDigest::ZERO_MARKER`].
    pub fn is_zero_marker(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl std::fmt::Display for ChunkDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkDigest({})", self.to_hex())
    }
}

impl serde::Serialize for ChunkDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ChunkDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChunkDigest::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// True if every byte of `data` is zero. Word-at-a-time so it keeps up with hashing.
pub fn is_all_zero(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(64);
    let body = words.by_ref().all(|c| {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            acc |= u64::from_ne_bytes(b);
        }
        acc == 0
    });
    body && words.remainder().iter().all(|&b| b == 0)
}

/// Reads one byte of every 64-byte cache line of `data`, so that the lines are in this core's
/// cache before a pass that needs them one after another.
///
/// Why: SHA-256's rounds each depend on the previous one, so a hash of data that another core
/// has just written (the ingest's reader copies each chunk, a worker hashes it) waits for every
/// cache line in turn; on the 2-core benchmark machine it ran at 1.2-1.3 GB/s against
/// 1.7-1.9 GB/s on data this core had touched. These independent loads let the core fetch many
/// lines at once: in the ingest, hashing 1.32 GB took 1.12 CPU s before and 0.89 s after,
/// these loads included (docs/benchmarks.md, *Session 10*, the commit c5f09b2 part). Returns
/// nothing useful; the loads are kept by [`std::hint::black_box`].
pub fn warm(data: &[u8]) {
    let mut acc = 0u8;
    for line in data.chunks(64) {
        acc ^= line[0];
    }
    std::hint::black_box(acc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_takes_any_length() {
        // Lines are 64 bytes; a last short line (or none at all) must not index past the end.
        for n in [0usize, 1, 63, 64, 65, 4097] {
            warm(&vec![7u8; n]);
        }
    }

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[]));
        assert!(is_all_zero(&[0; 1000]));
        for i in [0usize, 63, 64, 500, 999] {
            let mut v = vec![0u8; 1000];
            v[i] = 1;
            assert!(!is_all_zero(&v), "byte {i}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let d = ChunkDigest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ChunkDigest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(ChunkDigest::from_hex("xyz"), None);
        assert_eq!(ChunkDigest::from_hex(&"g".repeat(64)), None);
    }
}
