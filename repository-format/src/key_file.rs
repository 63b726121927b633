//! Key files: the master keys wrapped under a passphrase, one per file in `keys/<id>`.
//!
//! A key file is JSON (so an exported copy can be inspected):
//!
//! ```json
//! { "key_file_version": 1, "id": "3f9c0a1b2c3d4e5f", "repository_id": "8d9b...",
//!   "key_fingerprint": "…32 hex…", "created": "2026-11-27T12:00:00Z",
//!   "kdf": { "algorithm": "argon2id", "memory_kib": 65536, "iterations": 3,
//!            "parallelism": 1, "salt": "…32 hex…" },
//!   "cipher": "aes-256-gcm", "nonce": "…24 hex…", "wrapped": "…160 hex…" }
//! ```
//!
//! The wrapping key is Argon2id(passphrase, salt, parameters); `wrapped` is AES-256-GCM of the
//! 64 bytes of master keys with every other field as associated data, so a wrong passphrase and
//! a modified file are both a tag failure, never a wrong key. Several key files may wrap the
//! same master keys (one per person or per place); any one of them opens the repository.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key::{fill_random, Key, KeyFingerprint, Passphrase, MASTER_LEN, NONCE_LEN};

/// Version of the key file format.
pub const KEY_FILE_VERSION: u32 = 1;
/// Largest key file read (a valid one is well under 1 KiB).
pub const KEY_FILE_LIMIT: u64 = 64 * 1024;

/// The name of a key file under `keys/`: 16 random hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Validates a key id (16 lower-case hex digits).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for anything else.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(KeyId(s))
        } else {
            Err(Error::InvalidOption(format!(
                "invalid key id {s:?}: expected 16 lower-case hex digits"
            )))
        }
    }

    pub(crate) fn random() -> Result<Self> {
        let mut b = [0u8; 8];
        fill_random(&mut b)?;
        Ok(KeyId(hex::encode(b)))
    }

    /// The id as text (also the file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        KeyId::new(s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most memory a key file may ask the key derivation for (2 GiB, RFC 9106's first
/// recommended setting); checked before any is allocated, so a planted key file cannot make
/// `open` exhaust the machine.
pub const MAX_KDF_MEMORY_KIB: u32 = 2 * 1024 * 1024;
/// Most passes a key file may ask for.
pub const MAX_KDF_ITERATIONS: u32 = 16;
/// Most work (memory in KiB × passes) a key file may ask for: 4 GiB-passes, 21 times the
/// default (64 MiB × 3), seconds to a minute of one core; a planted file cannot make every
/// `open` spin for hours.
pub const MAX_KDF_COST_KIB: u64 = 4 * 1024 * 1024;

/// Argon2id parameters of a key file (the salt is generated per key file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB (default 64 MiB).
    pub memory_kib: u32,
    /// Passes over the memory (default 3).
    pub iterations: u32,
    /// Lanes (default 1: the cost is paid on one core, as an attacker pays it per guess).
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The smallest parameters accepted: only for tests, where the KDF would otherwise
    /// dominate the run time. Never use them for a real repository.
    pub fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Checks the bounds (also applied to key files read from disk, so a hostile key file
    /// cannot make `open` allocate gigabytes or spin for hours).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidOption(format!("key derivation: {what}")));
        if !(1..=16).contains(&self.parallelism) {
            return bad(format!(
                "parallelism {} is outside 1..=16",
                self.parallelism
            ));
        }
        if self.memory_kib < 8 * self.parallelism || self.memory_kib > MAX_KDF_MEMORY_KIB {
            return bad(format!(
                "memory {} KiB is outside {}..={MAX_KDF_MEMORY_KIB}",
                self.memory_kib,
                8 * self.parallelism
            ));
        }
        if !(1..=MAX_KDF_ITERATIONS).contains(&self.iterations) {
            return bad(format!(
                "{} iterations is outside 1..={MAX_KDF_ITERATIONS}",
                self.iterations
            ));
        }
        let cost = u64::from(self.memory_kib) * u64::from(self.iterations);
        if cost > MAX_KDF_COST_KIB {
            return bad(format!(
                "memory × iterations = {cost} KiB is above {MAX_KDF_COST_KIB} (about a minute \
                 of one core per try)"
            ));
        }
        Ok(())
    }
}

/// The KDF section of a key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KdfRecord {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// A key file as stored in `keys/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// [`KEY_FILE_VERSION`].
    pub key_file_version: u32,
    /// Its id (also its file name).
    pub id: KeyId,
    /// The repository whose keys it wraps.
    pub repository_id: uuid::Uuid,
    /// Fingerprint of the wrapped master keys.
    pub key_fingerprint: KeyFingerprint,
    /// When it was written (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    kdf: KdfRecord,
    cipher: String,
    nonce: String,
    wrapped: String,
}

impl KeyFile {
    /// Wraps `key` under `passphrase` with fresh salt and nonce.
    pub(crate) fn wrap(
        id: KeyId,
        repository_id: uuid::Uuid,
        key: &Key,
        passphrase: &Passphrase,
        params: KdfParams,
    ) -> Result<KeyFile> {
        if passphrase.is_empty() {
            return Err(Error::InvalidOption("the passphrase is empty".into()));
        }
        params.validate()?;
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let mut file = KeyFile {
            key_file_version: KEY_FILE_VERSION,
            id,
            repository_id,
            key_fingerprint: key.fingerprint().clone(),
            created: OffsetDateTime::now_utc(),
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                params,
                salt: hex::encode(salt),
            },
            cipher: "aes-256-gcm".into(),
            nonce: String::new(),
            wrapped: String::new(),
        };
        let wrapping = file.wrapping_key(passphrase)?;
        let mut sealed = Vec::new();
        wrapping.seal_into(&file.associated_data(), key.master(), &mut sealed)?;
        file.nonce = hex::encode(&sealed[..NONCE_LEN]);
        file.wrapped = hex::encode(&sealed[NONCE_LEN..]);
        Ok(file)
    }

    /// Unwraps the master keys with `passphrase`; `None` if the tag does not verify (a wrong
    /// passphrase or a modified file: the two cannot be told apart, by design).
    ///
    /// # Errors
    /// [`Error::KeyFile`] if the file is malformed or its keys are not the ones its
    /// fingerprint names.
    pub(crate) fn unwrap_key(
        &self,
        path: &std::path::Path,
        passphrase: &Passphrase,
    ) -> Result<Option<Key>> {
        let bad = |reason: String| Error::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let wrapping = self
            .wrapping_key(passphrase)
            .map_err(|e| bad(e.to_string()))?;
        let mut sealed = hex::decode(&self.nonce).map_err(|e| bad(format!("nonce: {e}")))?;
        if sealed.len() != NONCE_LEN {
            return Err(bad("nonce is not 12 bytes".into()));
        }
        sealed.extend(hex::decode(&self.wrapped).map_err(|e| bad(format!("wrapped: {e}")))?);
        let Some(master) = wrapping.open(&self.associated_data(), &sealed) else {
            return Ok(None);
        };
        let master = Zeroizing::new(master);
        let master: &[u8; MASTER_LEN] = master[..]
            .try_into()
            .map_err(|_| bad("wrapped key has the wrong length".into()))?;
        let key = Key::from_master(master);
        if key.fingerprint() != &self.key_fingerprint {
            return Err(bad(format!(
                "unwraps to keys with fingerprint {}, the file says {}",
                key.fingerprint(),
                self.key_fingerprint
            )));
        }
        Ok(Some(key))
    }

    /// The Argon2id parameters.
    pub fn kdf_params(&self) -> KdfParams {
        self.kdf.params
    }

    /// The wrapping key derived from the passphrase (an AES key; the chunk-id half is unused).
    fn wrapping_key(&self, passphrase: &Passphrase) -> Result<Key> {
        if self.kdf.algorithm != "argon2id" || self.cipher != "aes-256-gcm" {
            return Err(Error::InvalidOption(format!(
                "unsupported key derivation {:?} / cipher {:?}",
                self.kdf.algorithm, self.cipher
            )));
        }
        let p = self.kdf.params;
        p.validate()?;
        let salt =
            hex::decode(&self.kdf.salt).map_err(|e| Error::InvalidOption(format!("salt: {e}")))?;
        if !(8..=64).contains(&salt.len()) {
            return Err(Error::InvalidOption("salt must be 8 to 64 bytes".into()));
        }
        let mut master = Zeroizing::new([0u8; MASTER_LEN]);
        master[..32].copy_from_slice(&*derive(p, &salt, passphrase)?);
        Ok(Key::from_master(&master))
    }

    /// Everything but the nonce and the ciphertext, authenticated with the wrapped key.
    fn associated_data(&self) -> Vec<u8> {
        let k = &self.kdf;
        format!(
            "safekeeping key file v{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            self.key_file_version,
            self.id,
            self.repository_id,
            self.key_fingerprint,
            k.algorithm,
            k.params.memory_kib,
            k.params.iterations,
            k.params.parallelism,
            k.salt,
            self.cipher
        )
        .into_bytes()
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("key file serialises");
        v.push(b'\n');
        v
    }

    /// Parses a key file's bytes.
    ///
    /// # Errors
    /// [`Error::KeyFile`] naming `path` if it is not a key file of this version.
    pub fn parse(path: &std::path::Path, bytes: &[u8]) -> Result<KeyFile> {
        let f: KeyFile = serde_json::from_slice(bytes).map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!("not a key file: {e}"),
        })?;
        if f.key_file_version != KEY_FILE_VERSION {
            return Err(Error::KeyFile {
                path: path.to_path_buf(),
                reason: format!(
                    "key file version {} is not supported (this version reads {KEY_FILE_VERSION})",
                    f.key_file_version
                ),
            });
        }
        // Refused here, before anything is derived: a planted file with huge parameters is
        // damage to report and skip, not work to do.
        f.kdf.params.validate().map_err(|e| Error::KeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(f)
    }
}

/// Argon2id of `passphrase` under `salt` and `params`, computed once per process for the same
/// three inputs.
///
/// Why: one command opens its repository more than once (the run history before and after
/// the run, the run itself), and each opening unwraps a key file: 0.11 s of Argon2id at the
/// default 64 MiB on the benchmark machine, paid two or three times for what is a pure function
/// of these inputs. The memo answers only an identical (parameters, salt, passphrase): a wrong
/// passphrase, another key file or a rewritten one (new salt) is derived afresh and unwrapped
/// as before, so no check is skipped. It keeps the passphrase bytes (not a fast hash of them,
/// which would make guessing cheap for whoever reads a core dump) beside the derived key, both
/// wiped if the memo ever drops them; the process holds the passphrase and the master keys
/// anyway while it works.
fn derive(params: KdfParams, salt: &[u8], passphrase: &Passphrase) -> Result<Zeroizing<[u8; 32]>> {
    struct Derived {
        params: KdfParams,
        salt: Vec<u8>,
        passphrase: Zeroizing<Vec<u8>>,
        key: Zeroizing<[u8; 32]>,
    }
    /// A command unlocks one or two repositories (`copy`); a few entries cover it. Tests wrap
    /// and unwrap on many threads at once: there, keep enough that none is evicted while a
    /// test counts its own derivations.
    const KEPT: usize = if cfg!(test) { 4096 } else { 4 };
    static MEMO: std::sync::Mutex<Vec<Derived>> = std::sync::Mutex::new(Vec::new());
    let lock = || MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = lock()
        .iter()
        .find(|d| d.params == params && d.salt == salt && *d.passphrase == passphrase.bytes())
    {
        return Ok(d.key.clone());
    }
    let argon2_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::InvalidOption(format!("key derivation: {e}")))?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2_params,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.bytes(), salt, &mut key[..])
        .map_err(|e| Error::InvalidOption(format!("key derivation: {e}")))?;
    #[cfg(test)]
    DERIVATIONS.with(|n| n.set(n.get() + 1));
    let mut memo = lock();
    if memo.len() >= KEPT {
        memo.remove(0);
    }
    memo.push(Derived {
        params,
        salt: salt.to_vec(),
        passphrase: Zeroizing::new(passphrase.bytes().to_vec()),
        key: key.clone(),
    });
    Ok(key)
}

#[cfg(test)]
thread_local! {
    /// Argon2id computations on this thread (tests run on threads of their own).
    static DERIVATIONS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn wrap(pass: &str) -> (Key, KeyFile) {
        let key = Key::generate().unwrap();
        let f = KeyFile::wrap(
            KeyId::random().unwrap(),
            uuid::Uuid::new_v4(),
            &key,
            &Passphrase::from(pass),
            KdfParams::insecure_for_tests(),
        )
        .unwrap();
        (key, f)
    }

    #[test]
    fn wrap_unwrap_and_wrong_passphrase() {
        let (key, f) = wrap("open sesame");
        let back = KeyFile::parse(Path::new("k"), &f.to_bytes()).unwrap();
        let k2 = back
            .unwrap_key(Path::new("k"), &Passphrase::from("open sesame"))
            .unwrap()
            .unwrap();
        assert_eq!(k2.master(), key.master());
        assert!(back
            .unwrap_key(Path::new("k"), &Passphrase::from("open sesamE"))
            .unwrap()
            .is_none());
        let text = String::from_utf8(f.to_bytes()).unwrap();
        assert!(!text.contains(&hex::encode(&key.master()[..16])));
    }

    /// Unwrapping the same file with the same passphrase again derives nothing new; a wrong
    /// passphrase and another file (another salt) are derived afresh, and the wrong one still
    /// fails.
    #[test]
    fn the_same_derivation_is_computed_once() {
        let derivations = || DERIVATIONS.with(|n| n.get());
        let (key, f) = wrap("memo pass");
        let after_wrap = derivations();
        let pass = Passphrase::from("memo pass");
        for _ in 0..3 {
            let k = f.unwrap_key(Path::new("k"), &pass).unwrap().unwrap();
            assert_eq!(k.master(), key.master());
        }
        assert_eq!(
            derivations(),
            after_wrap,
            "the wrap's derivation was reused"
        );
        assert!(f
            .unwrap_key(Path::new("k"), &Passphrase::from("memo pasS"))
            .unwrap()
            .is_none());
        assert_eq!(
            derivations(),
            after_wrap + 1,
            "a wrong passphrase is derived"
        );
        let (_, other) = wrap("memo pass");
        assert_eq!(derivations(), after_wrap + 2, "another salt is derived");
        assert!(other.unwrap_key(Path::new("k"), &pass).unwrap().is_some());
        assert_eq!(derivations(), after_wrap + 2);
    }

    #[test]
    fn modified_fields_fail_authentication() {
        let (_, f) = wrap("pw");
        let pw = Passphrase::from("pw");
        let mut g = f.clone();
        g.repository_id = uuid::Uuid::new_v4();
        assert!(g.unwrap_key(Path::new("k"), &pw).unwrap().is_none());
        let mut g = f.clone();
        g.kdf.params.iterations = 2;
        assert!(g.unwrap_key(Path::new("k"), &pw).unwrap().is_none());
        let mut g = f.clone();
        g.kdf.params.memory_kib = u32::MAX;
        assert!(matches!(
            g.unwrap_key(Path::new("k"), &pw),
            Err(Error::KeyFile { .. })
        ));
        let mut g = f;
        g.wrapped.replace_range(0..2, "00");
        g.wrapped.replace_range(2..4, "ff");
        assert!(!matches!(g.unwrap_key(Path::new("k"), &pw), Ok(Some(_))));
    }

    #[test]
    fn empty_passphrase_refused_and_ids_checked() {
        let key = Key::generate().unwrap();
        assert!(KeyFile::wrap(
            KeyId::random().unwrap(),
            uuid::Uuid::new_v4(),
            &key,
            &Passphrase::from(""),
            KdfParams::insecure_for_tests()
        )
        .is_err());
        assert!(KeyId::new("../../etc/passwd").is_err());
        assert!(KeyId::new("0123456789abcdef").is_ok());
        assert!(KeyId::new("0123456789ABCDEF").is_err());
        assert!(KeyFile::parse(Path::new("k"), b"{}").is_err());
    }
}
