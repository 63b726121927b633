//! The repository's master keys and the passphrase that unlocks them.
//!
//! An encrypted repository has two random 256-bit keys, generated at `init` and never changed:
//!
//! - the **data key** encrypts every blob except the config (AES-256-GCM, a random 96-bit nonce
//!   per blob, the blob header as associated data; see [`crate::blob`]);
//! - the **chunk-id key** names chunks: a chunk's id is HMAC-SHA-256(chunk-id key, content), so
//!   equal content still deduplicates inside the repository but its name says nothing to
//!   someone without the key (no "does this repository hold this known file?" test). Target
//!   folder names are derived from it the same way.
//!
//! Both are stored only wrapped, in key files under `keys/` (see [`crate::key_file`]).

use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::digest::ChunkDigest;

/// Length of the AES-GCM nonce stored in front of every encrypted payload.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag stored after every encrypted payload.
pub const TAG_LEN: usize = 16;
/// Length of the wrapped master key material: data key then chunk-id key.
pub(crate) const MASTER_LEN: usize = 64;

/// The master keys of an encrypted repository (data key and chunk-id key).
///
/// Cheap to clone (shared); the key bytes are zeroed when the last clone is dropped. `Debug`
/// shows only the fingerprint.
#[derive(Clone)]
pub struct Key(Arc<KeyMaterial>);

struct KeyMaterial {
    /// Data key then chunk-id key.
    master: Zeroizing<[u8; MASTER_LEN]>,
    /// Expanded AES key schedule (zeroed on drop by `aes-gcm`'s `zeroize` feature).
    cipher: Aes256Gcm,
    fingerprint: KeyFingerprint,
}

/// A public, stable name of a repository's master keys: the first 16 bytes (hex) of SHA-256
/// over a keyed hash of a fixed label under the chunk-id key. It identifies the keys (the
/// config, every key file and every manifest record it) and reveals nothing about them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyFingerprint(pub String);

impl std::fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Key {
    /// Generates fresh random master keys from the operating system's generator.
    ///
    /// # Errors
    /// [`crate::Error::Random`] if the operating system's generator fails.
    pub fn generate() -> crate::Result<Key> {
        let mut master = Zeroizing::new([0u8; MASTER_LEN]);
        fill_random(&mut master[..])?;
        Ok(Key::from_master(&master))
    }

    pub(crate) fn from_master(master: &[u8; MASTER_LEN]) -> Key {
        let master = Zeroizing::new(*master);
        let cipher = Aes256Gcm::new_from_slice(&master[..32]).expect("32-byte AES key");
        let label = keyed(&master[32..], &[b"safekeeping key fingerprint v1"]);
        let digest = Sha256::digest(label);
        let fingerprint = KeyFingerprint(hex::encode(&digest[..16]));
        Key(Arc::new(KeyMaterial {
            master,
            cipher,
            fingerprint,
        }))
    }

    pub(crate) fn master(&self) -> &[u8; MASTER_LEN] {
        &self.0.master
    }

    /// The fingerprint recorded in the config, the key files and the manifests.
    pub fn fingerprint(&self) -> &KeyFingerprint {
        &self.0.fingerprint
    }

    /// The id of a chunk with this content: HMAC-SHA-256 under the chunk-id key.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkDigest {
        ChunkDigest(keyed(self.id_key(), &[data]))
    }

    /// The folder id of a target whose plain key is `plain_key` (128 bits of a keyed hash, hex),
    /// so folder names do not reveal VM names or uuids.
    pub(crate) fn target_folder_id(&self, plain_key: &str) -> String {
        let mac = keyed(
            self.id_key(),
            &[b"safekeeping target v1\0", plain_key.as_bytes()],
        );
        hex::encode(&mac[..16])
    }

    /// The seed of the content-defined cut hash in an encrypted repository: from the chunk-id
    /// key, so where chunks are cut is as secret as their ids (never stored anywhere).
    pub(crate) fn cut_seed(&self) -> u64 {
        let mac = keyed(self.id_key(), &[b"safekeeping cut seed v1\0"]);
        u64::from_le_bytes(mac[..8].try_into().expect("8 of 32 bytes"))
    }

    fn id_key(&self) -> &[u8] {
        &self.0.master[32..]
    }

    /// Appends `nonce ‖ AES-256-GCM(plaintext) ‖ tag` to `out` with `aad` authenticated.
    pub(crate) fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> crate::Result<()> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[start..])
            .map_err(|_| crate::Error::Random("AES-GCM refused the message length".into()))?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts and authenticates `nonce ‖ ciphertext ‖ tag`; `None` if it does not
    /// authenticate (modified, truncated, other associated data or another key).
    pub(crate) fn open(&self, aad: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = ct.to_vec();
        self.0
            .cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                &mut buf,
                Tag::from_slice(tag),
            )
            .ok()?;
        Some(buf)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(fingerprint {})", self.0.fingerprint)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.fingerprint == other.0.fingerprint
    }
}

impl Eq for Key {}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
fn keyed(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Fills `buf` from the operating system's random generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> crate::Result<()> {
    getrandom::getrandom(buf).map_err(|e| crate::Error::Random(e.to_string()))
}

/// A passphrase that unlocks a key file. Its bytes are zeroed on drop and never printed:
/// `Debug` shows `Passphrase(<redacted>)`.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// A passphrase from its bytes (any bytes; it is not required to be UTF-8).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Passphrase(Zeroizing::new(bytes))
    }

    /// Reads a passphrase file: its whole content minus one trailing newline (`\n` or
    /// `\r\n`), so `echo secret > file` works.
    ///
    /// # Errors
    /// [`crate::Error::Io`] naming the file, [`crate::Error::InvalidOption`] if it is empty.
    pub fn read_file(path: &std::path::Path) -> crate::Result<Self> {
        let mut bytes = Zeroizing::new(
            std::fs::read(path).map_err(crate::error::io_err("read passphrase file", path))?,
        );
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let p = Passphrase(Zeroizing::new(std::mem::take(&mut *bytes)));
        if p.is_empty() {
            return Err(crate::Error::InvalidOption(format!(
                "passphrase file {} is empty",
                path.display()
            )));
        }
        Ok(p)
    }

    /// True for the empty passphrase (refused when creating key files).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Passphrase {
    fn from(s: String) -> Self {
        Passphrase::from_bytes(s.into_bytes())
    }
}

impl From<&str> for Passphrase {
    fn from(s: &str) -> Self {
        Passphrase::from_bytes(s.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Key::generate().unwrap();
        let mut out = Vec::new();
        k.seal_into(b"aad", b"hello world", &mut out).unwrap();
        assert_eq!(out.len(), NONCE_LEN + 11 + TAG_LEN);
        assert_eq!(k.open(b"aad", &out).unwrap(), b"hello world");
        assert!(k.open(b"aae", &out).is_none(), "other associated data");
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(k.open(b"aad", &bad).is_none(), "flip at {i}");
        }
        assert!(k.open(b"aad", &out[..out.len() - 1]).is_none());
        let other = Key::generate().unwrap();
        assert!(other.open(b"aad", &out).is_none());
    }

    #[test]
    fn nonces_differ() {
        let k = Key::generate().unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        k.seal_into(b"", b"same", &mut a).unwrap();
        k.seal_into(b"", b"same", &mut b).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_keyed_and_fingerprints_stable() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        assert_eq!(a.chunk_id(b"x"), a.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), b.chunk_id(b"x"));
        assert_ne!(a.chunk_id(b"x"), ChunkDigest::of(b"x"));
        let again = Key::from_master(a.master());
        assert_eq!(again.fingerprint(), a.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().0.len(), 32);
        assert!(!format!("{a:?}").contains(&hex::encode(&a.master()[..8])));
    }

    #[test]
    fn passphrase_is_redacted_and_file_trimmed() {
        let p = Passphrase::from("correct horse");
        assert_eq!(format!("{p:?}"), "Passphrase(<redacted>)");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\r\n").unwrap();
        assert_eq!(Passphrase::read_file(&f).unwrap().bytes(), b"s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(Passphrase::read_file(&f).is_err());
    }
}
