//! Key management of an encrypted repository: unlocking, and adding, re-wrapping, exporting,
//! listing and removing key files.
//!
//! Every change is one atomic object operation (a new key file created conditionally, a file
//! replaced atomically, or one delete), made under the `keys` lock, so the repository always has at
//! least one complete key file: a new passphrase is a new file written before anything else
//! changes, and the last key file that opens the repository's keys cannot be removed.

use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::{read_object, store_err, Error, Result};
use crate::format::{KEYS_DIR, TEMP_PREFIX};
use crate::key::{Key, KeyFingerprint, Passphrase};
use crate::key_file::{KdfParams, KeyFile, KeyId, KEY_FILE_LIMIT};
use crate::repository::Repository;
use crate::storage::Backend;

/// One line of [`Repository::key_list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key file's id (its name under `keys/`).
    pub id: KeyId,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Its Argon2id parameters.
    pub kdf: KdfParams,
    /// True for the key file that unlocked this handle.
    pub current: bool,
}

/// A key file found in `keys/`: parsed and checked to belong to this repository and keys.
struct Found {
    key: String,
    path: PathBuf,
    file: KeyFile,
}

/// Reads every key file of the repository. Files that do not parse or belong elsewhere are
/// returned as errors next to the good ones.
fn scan(
    backend: &dyn Backend,
    config: &Config,
    fp: &KeyFingerprint,
) -> Result<(Vec<Found>, Vec<Error>)> {
    let dir = format!("{KEYS_DIR}/");
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let entries = backend
        .list_dir(&dir)
        .map_err(store_err(backend, "list", KEYS_DIR))?
        .objects;
    for o in entries {
        let (name, key) = (o.name().to_string(), o.key.clone());
        let path = backend.display_path(&key);
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let file = match read_object(backend, &key, KEY_FILE_LIMIT)
            .and_then(|bytes| KeyFile::parse(&path, &bytes))
        {
            Ok(f) => f,
            Err(e) => {
                bad.push(e);
                continue;
            }
        };
        let reason = if file.id.as_str() != name {
            Some(format!(
                "holds key {}; rename it to keys/{}",
                file.id, file.id
            ))
        } else if file.repository_id != config.repository_id {
            Some(format!("belongs to repository {}", file.repository_id))
        } else if &file.key_fingerprint != fp {
            Some(format!(
                "wraps keys {}, the repository's are {fp}",
                file.key_fingerprint
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => bad.push(Error::KeyFile { path, reason }),
            None => good.push(Found { key, path, file }),
        }
    }
    good.sort_by(|a, b| a.file.id.cmp(&b.file.id));
    Ok((good, bad))
}

/// For `check`: how many good key files there are and what is wrong with the others.
pub(crate) fn scan_for_check(
    backend: &dyn Backend,
    config: &Config,
    fp: &KeyFingerprint,
) -> Result<(usize, Vec<Error>)> {
    let (good, bad) = scan(backend, config, fp)?;
    Ok((good.len(), bad))
}

/// Unlocks the repository's keys with `passphrase`, trying every key file.
pub(crate) fn unlock(
    backend: &dyn Backend,
    config: &Config,
    fp: &KeyFingerprint,
    passphrase: &Passphrase,
) -> Result<(Key, KeyId, KdfParams)> {
    let (mut good, mut bad) = scan(backend, config, fp)?;
    for e in &bad {
        tracing::warn!(error = %e, "skipping a key file that is not one of this repository's");
    }
    // Cheapest derivation first: a planted file with costly (but allowed) parameters does not
    // delay the files that open.
    good.sort_by_key(|f| {
        let p = f.file.kdf_params();
        u64::from(p.memory_kib) * u64::from(p.iterations)
    });
    let mut tried = 0;
    for f in &good {
        // One damaged or planted file (a bad nonce, keys that are not the ones it names) must
        // not keep the others from opening the repository: report it and go on.
        match f.file.unwrap_key(&f.path, passphrase) {
            Ok(Some(key)) => return Ok((key, f.file.id.clone(), f.file.kdf_params())),
            Ok(None) => tried += 1,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a damaged key file");
                bad.push(e);
            }
        }
    }
    if tried > 0 {
        return Err(Error::WrongPassphrase {
            dir: backend.display_path(KEYS_DIR),
            tried,
        });
    }
    if !bad.is_empty() {
        return Err(bad.swap_remove(0));
    }
    Err(Error::KeyFile {
        path: backend.display_path(KEYS_DIR),
        reason: "no key file: copy an exported key file to keys/<its id> (without a key file \
                 the repository cannot be read)"
            .into(),
    })
}

/// The lock serialising key changes.
struct KeysLock(#[allow(dead_code)] crate::lock::KeysLock);

impl KeysLock {
    fn take(repo: &Repository) -> Result<KeysLock> {
        Ok(KeysLock(crate::lock::KeysLock::acquire(
            repo.backend(),
            repo.lock_settings(),
        )?))
    }
}

impl Repository {
    fn keys_context(&self) -> Result<&KeyFingerprint> {
        self.key_fingerprint()
            .ok_or_else(|| Error::NotEncrypted(self.root().to_path_buf()))
    }

    /// The key file `current` opens (the passphrase is proven, not trusted).
    fn find_key_file(&self, current: &Passphrase) -> Result<Found> {
        let fp = self.keys_context()?;
        let (good, _) = scan(self.backend().as_ref(), self.config(), fp)?;
        let tried = good.len();
        for f in good {
            if f.file.unwrap_key(&f.path, current)?.is_some() {
                return Ok(f);
            }
        }
        Err(Error::WrongPassphrase {
            dir: self.backend().display_path(KEYS_DIR),
            tried,
        })
    }

    /// The key files of the repository.
    ///
    /// # Errors
    /// [`Error::NotEncrypted`], [`Error::Io`].
    pub fn key_list(&self) -> Result<Vec<KeyInfo>> {
        let fp = self.keys_context()?;
        let (good, bad) = scan(self.backend().as_ref(), self.config(), fp)?;
        for e in &bad {
            tracing::warn!(error = %e, "ignoring a file in keys/");
        }
        let current = self.unlocked_by().map(|(id, _)| id);
        Ok(good
            .into_iter()
            .map(|f| KeyInfo {
                current: Some(&f.file.id) == current,
                kdf: f.file.kdf_params(),
                created: f.file.created,
                id: f.file.id,
            })
            .collect())
    }

    /// The repository's master key wrapped under `new` as key file `id`, with the KDF
    /// parameters of `like` (the key file the current passphrase opened).
    fn wrap_master_key(&self, id: KeyId, new: &Passphrase, like: &KeyFile) -> Result<KeyFile> {
        let key = self.codec().key().expect("encrypted repository has a key");
        KeyFile::wrap(id, self.config().repository_id, key, new, like.kdf_params())
    }

    /// Adds a key file wrapping the repository's keys under `new` (with the KDF parameters
    /// of the key file `current` opens); returns its id. Both passphrases then work.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`] if `current` opens no key file, [`Error::InvalidOption`]
    /// for an empty `new`, [`Error::NotEncrypted`], [`Error::Io`].
    pub fn key_add(&self, current: &Passphrase, new: &Passphrase) -> Result<KeyId> {
        let _lock = KeysLock::take(self)?;
        let found = self.find_key_file(current)?;
        let id = KeyId::random()?;
        let file = self.wrap_master_key(id.clone(), new, &found.file)?;
        let k = format!("{KEYS_DIR}/{}", id.as_str());
        let be = self.backend().as_ref();
        be.create_new(&k, &file.to_bytes())
            .map_err(store_err(be, "create", &k))?;
        tracing::info!(key = %id, "key file added");
        Ok(id)
    }

    /// Changes the passphrase of the key file `current` opens to `new`: the file is rewritten
    /// (fresh salt and nonce) and atomically replaced, keeping its id, which is returned.
    ///
    /// # Errors
    /// As [`Repository::key_add`].
    pub fn key_passwd(&self, current: &Passphrase, new: &Passphrase) -> Result<KeyId> {
        let _lock = KeysLock::take(self)?;
        let found = self.find_key_file(current)?;
        let id = found.file.id.clone();
        let file = self.wrap_master_key(id.clone(), new, &found.file)?;
        // Verify the new file before it replaces the old one.
        let bytes = file.to_bytes();
        let check = KeyFile::parse(&found.path, &bytes)?;
        let key = self.codec().key().expect("encrypted repository has a key");
        if check.unwrap_key(&found.path, new)?.as_ref() != Some(key) {
            return Err(Error::KeyFile {
                path: found.path,
                reason: "the rewritten key file does not open with the new passphrase".into(),
            });
        }
        let be = self.backend().as_ref();
        be.put(&found.key, &bytes)
            .map_err(store_err(be, "replace", &found.key))?;
        tracing::info!(key = %id, "key file passphrase changed");
        Ok(id)
    }

    /// The content of the key file `current` opens, to keep offline (it stays protected by
    /// that passphrase). Without any key file the repository cannot be read: export one.
    ///
    /// # Errors
    /// As [`Repository::key_add`].
    pub fn key_export(&self, current: &Passphrase) -> Result<Vec<u8>> {
        let found = self.find_key_file(current)?;
        Ok(found.file.to_bytes())
    }

    /// Removes the key file `id`. Refused if no other key file of these keys would remain.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`], [`Error::KeyRemoveRefused`], [`Error::NotEncrypted`],
    /// [`Error::Io`].
    pub fn key_remove(&self, id: &KeyId) -> Result<()> {
        let fp = self.keys_context()?;
        let _lock = KeysLock::take(self)?;
        let (good, _) = scan(self.backend().as_ref(), self.config(), fp)?;
        let Some(target) = good.iter().find(|f| &f.file.id == id) else {
            return Err(Error::KeyNotFound(id.to_string()));
        };
        if good.len() < 2 {
            return Err(Error::KeyRemoveRefused {
                id: id.to_string(),
                reason: "it is the repository's last key file (add another one first)".into(),
            });
        }
        let be = self.backend().as_ref();
        be.delete(&target.key)
            .map_err(store_err(be, "remove", &target.key))?;
        tracing::info!(key = %id, "key file removed");
        Ok(())
    }
}
