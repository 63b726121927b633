//! A scratch repository on disk for the decoders that are only reachable through files
//! (`Repository::open` reads the config, `Repository::manifest` reads a manifest).
//!
//! One folder per process under the system temporary folder, named with the process id;
//! folders of processes that are gone are removed when a new one is made, because libFuzzer
//! ends its process with `exit()` and nothing else would clean up.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use repository_format::{EncryptionMode, InitOptions, KdfParams, Passphrase, Repository};

const PREFIX: &str = "decoder-regressions-";

/// The scratch folders of this process.
pub(crate) struct Scratch {
    /// A real repository whose `targets/` the manifest harness writes into.
    pub(crate) repo: Repository,
    /// A folder laid out as a repository whose `config` the config harness replaces.
    pub(crate) config_root: PathBuf,
    /// An encrypted repository (passphrase [`PASSPHRASE`]) whose `keys/` the key file
    /// harness replaces.
    pub(crate) encrypted_root: PathBuf,
    /// The genuine key file of the encrypted repository: (file name, bytes).
    pub(crate) genuine_key: (String, Vec<u8>),
}

/// Passphrase of the scratch encrypted repository.
pub(crate) const PASSPHRASE: &[u8] = b"correct horse battery staple";

/// The scratch folders, locked: harnesses run from parallel test threads share them.
pub(crate) fn scratch() -> MutexGuard<'static, Scratch> {
    static SCRATCH: OnceLock<Mutex<Scratch>> = OnceLock::new();
    SCRATCH
        .get_or_init(|| Mutex::new(create()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn create() -> Scratch {
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    let root = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("scratch folder");
    let repo = Repository::init(root.join("repo"), &InitOptions::default()).expect("scratch repo");
    let config_root = root.join("config-only");
    for d in ["chunks", "targets", "locks"] {
        std::fs::create_dir_all(config_root.join(d)).expect("scratch folders");
    }
    let encrypted_root = root.join("encrypted");
    let options = InitOptions {
        encryption: EncryptionMode::Aes256Gcm,
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let passphrase = Passphrase::from_bytes(PASSPHRASE.to_vec());
    Repository::init_with(&encrypted_root, &options, Some(&passphrase))
        .expect("scratch encrypted repo");
    let keys = encrypted_root.join("keys");
    let genuine_key = std::fs::read_dir(&keys)
        .expect("keys folder")
        .flatten()
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("key file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .next()
        .expect("one key file");
    Scratch {
        repo,
        config_root,
        encrypted_root,
        genuine_key,
    }
}

/// Removes scratch folders whose process no longer runs.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
