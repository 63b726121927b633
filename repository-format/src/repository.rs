//! Opening a repository and finding targets and generations in it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::blob::Codec;
use crate::catalog::{manifest_stamp, Catalog, CatalogEntry};
use crate::chunk_store::ChunkStore;
use crate::config::{Config, EncryptionMode, InitOptions};
use crate::error::{io_err, Error, Result};
use crate::fixed_index::FixedIndex;
use crate::format::{
    CHUNKS_DIR, CONFIG_FILE, INCOMPLETE_MARKER, KEYS_DIR, LOCKS_DIR, MANIFEST_FILE, TARGETS_DIR,
};
use crate::fsutil;
use crate::key::{Key, KeyFingerprint, Passphrase};
use crate::key_file::{KdfParams, KeyFile, KeyId};
use crate::lock::{LockMode, RepositoryLock, TargetLock};
use crate::manifest::{BackupMode, DiskStats, GenerationStatus, Manifest};
use crate::reader::DiskReader;
use crate::target::{GenerationId, TargetIdentity, TargetKey, TargetKind};

/// An open repository. Cheap to clone; every clone refers to the same folder.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
    config: Config,
    codec: Codec,
    store: ChunkStore,
    catalog: Option<std::sync::Arc<Catalog>>,
    /// The key file that unlocked an encrypted repository, and its KDF parameters (the
    /// default for key files added through this handle).
    unlocked_by: Option<(KeyId, KdfParams)>,
}

/// One line of [`Repository::targets`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    /// Folder name.
    pub key: TargetKey,
    /// Kind (from the newest readable manifest).
    pub kind: TargetKind,
    /// Name at the newest backup.
    pub name: String,
    /// Committed generations.
    pub generations: usize,
    /// Newest generation.
    pub latest: Option<GenerationId>,
    /// Time of the newest generation.
    #[serde(with = "time::serde::rfc3339::option")]
    pub latest_time: Option<OffsetDateTime>,
    /// Newest generation with status `succeeded`.
    pub latest_successful: Option<GenerationId>,
}

/// One line of [`Repository::generations`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GenerationSummary {
    /// Generation number.
    pub id: GenerationId,
    /// When it was started.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Outcome.
    pub status: GenerationStatus,
    /// Parent generation for incrementals.
    pub parent: Option<GenerationId>,
    /// Device keys of its disks.
    pub disks: Vec<i32>,
    /// Totals over its disks.
    pub stats: DiskStats,
}

impl GenerationSummary {
    fn from_manifest(m: &Manifest) -> Self {
        Self {
            id: m.generation,
            time: m.started,
            mode: m.mode,
            status: m.status,
            parent: m.parent,
            disks: m.disks.iter().map(|d| d.disk.key).collect(),
            stats: m.stats.disks,
        }
    }
}

/// A generation folder found on disk.
#[derive(Debug, Clone)]
pub(crate) struct GenerationDir {
    pub id: GenerationId,
    pub path: PathBuf,
    pub committed: bool,
}

impl Repository {
    /// Creates an unencrypted repository in `path` (which must not exist or be an empty
    /// folder). An encrypted one needs [`Repository::init_with`].
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for bad options, [`Error::PassphraseRequired`] if the options
    /// ask for encryption, [`Error::NotEmpty`], [`Error::Io`].
    pub fn init(path: impl AsRef<Path>, opts: &InitOptions) -> Result<Repository> {
        Self::init_with(path, opts, None)
    }

    /// Creates a repository in `path`; with [`EncryptionMode::Aes256Gcm`], generates random
    /// master keys and stores them in a first key file wrapped under `passphrase`.
    ///
    /// # Errors
    /// As [`Repository::init`]; [`Error::PassphraseRequired`] for an encrypted repository
    /// without a passphrase, [`Error::InvalidOption`] for an empty one.
    pub fn init_with(
        path: impl AsRef<Path>,
        opts: &InitOptions,
        passphrase: Option<&Passphrase>,
    ) -> Result<Repository> {
        let root = path.as_ref();
        opts.validate()?;
        let key = match (opts.encryption, passphrase) {
            (EncryptionMode::None, _) => None,
            (EncryptionMode::Aes256Gcm, None) => {
                return Err(Error::PassphraseRequired {
                    path: root.to_path_buf(),
                })
            }
            (EncryptionMode::Aes256Gcm, Some(p)) if p.is_empty() => {
                return Err(Error::InvalidOption("the passphrase is empty".into()))
            }
            (EncryptionMode::Aes256Gcm, Some(_)) => Some(Key::generate()?),
        };
        match fs::read_dir(root) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::NotEmpty {
                        path: root.to_path_buf(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsutil::create_dir_durable(root)?;
            }
            Err(e) => return Err(io_err("open", root)(e)),
        }
        for d in [CHUNKS_DIR, TARGETS_DIR, LOCKS_DIR] {
            fs::create_dir(root.join(d)).map_err(io_err("create folder", root.join(d)))?;
        }
        let config = Config::new(opts, key.as_ref().map(|k| k.fingerprint().clone()));
        let mut unlocked_by = None;
        if let (Some(key), Some(pass)) = (&key, passphrase) {
            let keys = root.join(KEYS_DIR);
            fs::create_dir(&keys).map_err(io_err("create folder", &keys))?;
            let file = KeyFile::wrap(KeyId::random()?, config.repository_id, key, pass, opts.kdf)?;
            fsutil::write_new_atomic(&keys, file.id.as_str(), &file.to_bytes())?;
            unlocked_by = Some((file.id.clone(), opts.kdf));
        }
        fsutil::sync_dir(root)?;
        // The config goes last: a folder without it is not a repository.
        config.write(root)?;
        // Read back what was written; the key is the one just wrapped (deriving it again from
        // the passphrase would only cost another Argon2id run).
        let config = Config::read(root)?;
        Ok(Self::assemble(root.to_path_buf(), config, key, unlocked_by))
    }

    /// Opens an existing unencrypted repository; an encrypted one needs
    /// [`Repository::open_with`].
    ///
    /// # Errors
    /// [`Error::Config`]/[`Error::Blob`]/[`Error::Io`] naming the config file;
    /// [`Error::PassphraseRequired`] for an encrypted repository.
    pub fn open(path: impl AsRef<Path>) -> Result<Repository> {
        Self::open_with(path, None)
    }

    /// Opens an existing repository; an encrypted one is unlocked with `passphrase` (tried
    /// against every key file in `keys/`).
    ///
    /// # Errors
    /// As [`Repository::open`]; [`Error::WrongPassphrase`] if no key file opens with it,
    /// [`Error::KeyFile`] if the only key files are damaged or belong to other keys;
    /// [`Error::Config`] for a passphrase given to an unencrypted repository, or an
    /// unencrypted config next to a `keys/` folder (a downgrade: writing on would store plain
    /// text where encrypted data is expected).
    pub fn open_with(
        path: impl AsRef<Path>,
        passphrase: Option<&Passphrase>,
    ) -> Result<Repository> {
        let root = path.as_ref().to_path_buf();
        if !root.join(CONFIG_FILE).exists() {
            return Err(Error::Config {
                path: root.join(CONFIG_FILE),
                reason: "not found: this folder is not a safekeeping repository".into(),
            });
        }
        let config = Config::read(&root)?;
        for d in [CHUNKS_DIR, TARGETS_DIR, LOCKS_DIR] {
            if !root.join(d).is_dir() {
                return Err(Error::Config {
                    path: root.join(d),
                    reason: "folder missing: the repository is incomplete".into(),
                });
            }
        }
        let (key, unlocked_by) = match (&config.key_fingerprint, passphrase) {
            // A config edited to say "no encryption" must not make the next backup write
            // plain text: key files, or a passphrase the caller expects to need, say otherwise.
            (None, _) if root.join(KEYS_DIR).exists() => {
                return Err(Error::Config {
                    path: root.join(CONFIG_FILE),
                    reason: "says the repository is not encrypted, but it has a keys/ folder: \
                             refusing to open it (the config may have been altered)"
                        .into(),
                })
            }
            (None, Some(_)) => {
                return Err(Error::Config {
                    path: root.join(CONFIG_FILE),
                    reason: "the repository is not encrypted, but a passphrase was given: \
                             refusing to write unencrypted backups where encrypted ones are \
                             expected (remove the passphrase setting if this repository was \
                             created without encryption)"
                        .into(),
                })
            }
            (None, None) => (None, None),
            (Some(_), None) => return Err(Error::PassphraseRequired { path: root }),
            (Some(fp), Some(p)) => {
                let (key, id, kdf) = crate::keys::unlock(&root, &config, fp, p)?;
                (Some(key), Some((id, kdf)))
            }
        };
        Ok(Self::assemble(root, config, key, unlocked_by))
    }

    fn assemble(
        root: PathBuf,
        config: Config,
        key: Option<Key>,
        unlocked_by: Option<(KeyId, KdfParams)>,
    ) -> Repository {
        let codec = Codec::new(config.compression_level, key);
        let store = ChunkStore::new(root.join(CHUNKS_DIR), codec.clone(), config.chunk_size);
        // The catalog caches target names and generation summaries in plain text: an
        // encrypted repository goes without it.
        let catalog = if config.encryption == EncryptionMode::None {
            Catalog::open(&root).map(std::sync::Arc::new)
        } else {
            None
        };
        Repository {
            root,
            config,
            codec,
            store,
            catalog,
            unlocked_by,
        }
    }

    /// True for an encrypted repository.
    pub fn is_encrypted(&self) -> bool {
        self.codec.key().is_some()
    }

    /// The fingerprint of an encrypted repository's master keys.
    pub fn key_fingerprint(&self) -> Option<&KeyFingerprint> {
        self.codec.key().map(|k| k.fingerprint())
    }

    pub(crate) fn unlocked_by(&self) -> Option<&(KeyId, KdfParams)> {
        self.unlocked_by.as_ref()
    }

    /// The folder name (key) of `identity`'s target in this repository: its plain key
    /// ([`TargetIdentity::key`]) in an unencrypted repository; in an encrypted one the kind
    /// prefix followed by 32 hex digits of a keyed hash of the plain key, so folder names do
    /// not reveal VM names or uuids (`vm-3f9c…`). Use this, not `identity.key()`, to find a
    /// target's history or to lock it.
    ///
    /// # Errors
    /// [`Error::InvalidTargetKey`] if the identity has no usable id.
    pub fn target_key(&self, identity: &TargetIdentity) -> Result<TargetKey> {
        let plain = identity.key()?;
        match self.codec.key() {
            None => Ok(plain),
            Some(k) => TargetKey::new(format!(
                "{}-{}",
                identity.kind.prefix(),
                k.target_folder_id(plain.as_str())
            )),
        }
    }

    /// The file name under `metadata/` of the metadata file `name` (the name itself, or in an
    /// encrypted repository `m-` and 32 hex digits of a keyed hash, since names like
    /// `web01.vmx` carry the VM name; the manifest holds the real names).
    pub(crate) fn metadata_file_name(&self, name: &str) -> String {
        match self.codec.key() {
            None => name.to_string(),
            Some(k) => format!("m-{}", k.target_folder_id(&format!("metadata\0{name}"))),
        }
    }

    /// The repository folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The chunk store.
    pub fn chunk_store(&self) -> &ChunkStore {
        &self.store
    }

    pub(crate) fn codec(&self) -> &Codec {
        &self.codec
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join(LOCKS_DIR)
    }

    pub(crate) fn targets_dir(&self) -> PathBuf {
        self.root.join(TARGETS_DIR)
    }

    pub(crate) fn target_dir(&self, key: &TargetKey) -> PathBuf {
        self.targets_dir().join(key.as_str())
    }

    pub(crate) fn generation_dir(&self, key: &TargetKey, id: GenerationId) -> PathBuf {
        self.target_dir(key).join(id.folder_name())
    }

    /// Takes the shared lock (backup, restore, check), waiting up to `wait`.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holders if it is not free in time.
    pub fn lock_shared(&self, wait: Duration) -> Result<RepositoryLock> {
        RepositoryLock::acquire(
            &self.locks_dir(),
            self.config.repository_id,
            LockMode::Shared,
            wait,
        )
    }

    /// Takes the exclusive lock (gc, prune, reindex, delete), waiting up to `wait`.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holders if it is not free in time.
    pub fn lock_exclusive(&self, wait: Duration) -> Result<RepositoryLock> {
        RepositoryLock::acquire(
            &self.locks_dir(),
            self.config.repository_id,
            LockMode::Exclusive,
            wait,
        )
    }

    /// Takes the per-target lock that keeps two backups of one target apart.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder if it is not free in time.
    pub fn lock_target(&self, key: &TargetKey, wait: Duration) -> Result<TargetLock> {
        TargetLock::acquire(&self.locks_dir(), self.config.repository_id, key, wait)
    }

    /// Generation folders of a target, committed or not, sorted by id.
    pub(crate) fn generation_dirs(&self, key: &TargetKey) -> Result<Vec<GenerationDir>> {
        let mut out = Vec::new();
        for (name, path) in fsutil::list_dir(&self.target_dir(key))? {
            if let Some(id) = GenerationId::from_folder_name(&name) {
                let committed = path.join(MANIFEST_FILE).exists();
                out.push(GenerationDir {
                    id,
                    path,
                    committed,
                });
            }
        }
        out.sort_by_key(|g| g.id);
        Ok(out)
    }

    /// Keys of every target folder (invalid folder names are skipped; `check` reports them).
    pub fn target_keys(&self) -> Result<Vec<TargetKey>> {
        Ok(fsutil::list_dir(&self.targets_dir())?
            .into_iter()
            .filter(|(_, p)| p.is_dir())
            .filter_map(|(n, _)| TargetKey::new(n).ok())
            .collect())
    }

    /// Every target with at least one committed generation.
    ///
    /// Unreadable manifests are skipped here (with a warning); `check` reports them.
    ///
    /// # Errors
    /// [`Error::Io`] if the folders cannot be listed.
    pub fn targets(&self) -> Result<Vec<TargetSummary>> {
        let mut out = Vec::new();
        for key in self.target_keys()? {
            let gens = self.generation_entries(&key)?;
            let Some(latest) = gens.last() else { continue };
            out.push(TargetSummary {
                key: key.clone(),
                kind: latest.kind,
                name: latest.name.clone(),
                generations: gens.len(),
                latest: Some(latest.summary.id),
                latest_time: Some(latest.summary.time),
                latest_successful: gens
                    .iter()
                    .rev()
                    .find(|e| e.summary.status == GenerationStatus::Succeeded)
                    .map(|e| e.summary.id),
            });
        }
        Ok(out)
    }

    /// Summaries of the committed generations of a target, from the catalog where it is valid,
    /// else from the manifests (refreshing the catalog).
    fn generation_entries(&self, key: &TargetKey) -> Result<Vec<CatalogEntry>> {
        let mut out = Vec::new();
        for g in self.generation_dirs(key)? {
            if !g.committed {
                continue;
            }
            let path = g.path.join(MANIFEST_FILE);
            let ckey = format!("{key}/{}", g.id.folder_name());
            let stamp = manifest_stamp(&path);
            if let (Some(cat), Some(stamp)) = (&self.catalog, stamp) {
                if let Some(e) = cat.get(&ckey, stamp).filter(|e| e.summary.id == g.id) {
                    out.push(e);
                    continue;
                }
            }
            let m = match self.manifest(key, g.id) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable manifest");
                    continue;
                }
            };
            let entry = CatalogEntry {
                summary: GenerationSummary::from_manifest(&m),
                kind: m.target.kind,
                name: m.target.name.clone(),
                manifest_len: stamp.map(|s| s.0).unwrap_or(0),
                manifest_mtime_ns: stamp.map(|s| s.1).unwrap_or(0),
            };
            if let (Some(cat), Some(_)) = (&self.catalog, stamp) {
                cat.put(&ckey, &entry);
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Whether this handle has the catalog cache open (another process may hold it).
    pub fn has_catalog(&self) -> bool {
        self.catalog.is_some()
    }

    pub(crate) fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_deref()
    }

    /// Finds the target a user means by `name`: a target key, or the name (at its newest
    /// generation) of exactly one target of `kind`.
    ///
    /// # Errors
    /// [`Error::TargetNotFound`], or [`Error::AmbiguousTarget`] listing the matching keys.
    pub fn resolve_target(&self, kind: TargetKind, name: &str) -> Result<TargetKey> {
        let targets = self.targets()?;
        if let Some(t) = targets.iter().find(|t| t.key.as_str() == name) {
            return Ok(t.key.clone());
        }
        let matches: Vec<&TargetSummary> = targets
            .iter()
            .filter(|t| t.kind == kind && t.name == name)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.key.clone()),
            [] => Err(Error::TargetNotFound(name.to_string())),
            many => Err(Error::AmbiguousTarget {
                name: name.to_string(),
                keys: many.iter().map(|t| t.key.to_string()).collect(),
            }),
        }
    }

    /// Committed generations of a target, oldest first.
    ///
    /// # Errors
    /// [`Error::TargetNotFound`] or [`Error::Io`].
    pub fn generations(&self, key: &TargetKey) -> Result<Vec<GenerationSummary>> {
        if !self.target_dir(key).is_dir() {
            return Err(Error::TargetNotFound(key.to_string()));
        }
        Ok(self
            .generation_entries(key)?
            .into_iter()
            .map(|e| e.summary)
            .collect())
    }

    /// The manifest of a committed generation.
    ///
    /// # Errors
    /// [`Error::GenerationNotFound`], or the manifest's damage naming its file.
    pub fn manifest(&self, key: &TargetKey, id: GenerationId) -> Result<Manifest> {
        let path = self.generation_dir(key, id).join(MANIFEST_FILE);
        if !path.exists() {
            return Err(Error::GenerationNotFound {
                target: key.to_string(),
                generation: id.0,
            });
        }
        let m = Manifest::read(&path, &self.codec)?;
        if m.generation != id || m.repository_id != self.config.repository_id {
            return Err(Error::Manifest {
                path,
                reason: format!(
                    "records generation {} of repository {}, expected generation {id} of {}",
                    m.generation, m.repository_id, self.config.repository_id
                ),
            });
        }
        Ok(m)
    }

    /// The newest generation with status `succeeded` (the parent for the next incremental).
    ///
    /// # Errors
    /// As [`Repository::generations`].
    pub fn latest_successful(&self, key: &TargetKey) -> Result<Option<GenerationSummary>> {
        Ok(self
            .generations(key)?
            .into_iter()
            .rev()
            .find(|g| g.status == GenerationStatus::Succeeded))
    }

    /// The verified fixed index of one disk of a generation (the base for an incremental).
    ///
    /// # Errors
    /// [`Error::GenerationNotFound`], [`Error::DiskNotFound`], index damage naming the file.
    pub fn fixed_index(&self, key: &TargetKey, id: GenerationId, disk: i32) -> Result<FixedIndex> {
        let m = self.manifest(key, id)?;
        self.index_of(key, &m, disk)
    }

    pub(crate) fn index_of(&self, key: &TargetKey, m: &Manifest, disk: i32) -> Result<FixedIndex> {
        let rec = m.disk(disk).ok_or_else(|| Error::DiskNotFound {
            target: key.to_string(),
            generation: m.generation.0,
            disk,
        })?;
        let path = self.generation_dir(key, m.generation).join(&rec.index_file);
        let idx = FixedIndex::read(&path, &self.codec)?;
        if idx.size() != rec.disk.capacity {
            return Err(Error::Index {
                path,
                reason: format!(
                    "covers {} bytes but the manifest says the disk has {}",
                    idx.size(),
                    rec.disk.capacity
                ),
            });
        }
        Ok(idx)
    }

    /// A verified random-access reader of one disk of a generation.
    ///
    /// # Errors
    /// As [`Repository::fixed_index`].
    pub fn disk_reader(&self, key: &TargetKey, id: GenerationId, disk: i32) -> Result<DiskReader> {
        let idx = self.fixed_index(key, id, disk)?;
        Ok(DiskReader::new(
            self.store.clone(),
            idx,
            key.clone(),
            id,
            disk,
        ))
    }

    /// Reads a metadata file stored with a generation.
    ///
    /// # Errors
    /// [`Error::GenerationNotFound`], [`Error::Io`], or [`Error::Blob`] naming the file.
    pub fn read_metadata(&self, key: &TargetKey, id: GenerationId, name: &str) -> Result<Vec<u8>> {
        let m = self.manifest(key, id)?;
        if !m.metadata_files.iter().any(|n| n == name) {
            return Err(Error::InvalidMetadataName(name.to_string()));
        }
        let path = self
            .generation_dir(key, id)
            .join(crate::format::METADATA_DIR)
            .join(self.metadata_file_name(name));
        let bytes = fsutil::read_limited(&path, crate::writer::METADATA_LIMIT as u64 + 4096)?;
        self.codec
            .decode(
                crate::blob::BlobKind::Metadata,
                &bytes,
                crate::writer::METADATA_LIMIT,
            )
            .map_err(|reason| Error::Blob { path, reason })
    }

    /// Starts writing a new generation of `identity`'s target.
    ///
    /// Needs the shared (or exclusive) repository lock and the target's lock, which the writer
    /// keeps until it is committed or dropped. Keep `lock` alive until then as well.
    ///
    /// # Errors
    /// [`Error::LockRequired`] for a lock of another target or repository,
    /// [`Error::GenerationNotFound`] for a missing parent, [`Error::Io`].
    pub fn begin_generation(
        &self,
        lock: &RepositoryLock,
        target_lock: TargetLock,
        identity: TargetIdentity,
        mode: BackupMode,
        parent: Option<GenerationId>,
    ) -> Result<crate::writer::GenerationWriter> {
        lock.require(self.config.repository_id, "begin_generation", false)?;
        let key = self.target_key(&identity)?;
        if target_lock.key() != &key || target_lock.repository_id() != self.config.repository_id {
            return Err(Error::LockRequired {
                operation: "begin_generation",
                needed: "the lock of this target",
            });
        }
        if let Some(p) = parent {
            self.manifest(&key, p)?;
        }
        crate::writer::GenerationWriter::begin(
            self.clone(),
            target_lock,
            identity,
            key,
            mode,
            parent,
        )
    }

    /// Deletes one committed generation: the manifest goes first (the generation stops
    /// existing atomically), then its folder. Chunks are freed by the next `gc`.
    ///
    /// # Errors
    /// [`Error::LockRequired`] without the exclusive lock, [`Error::GenerationNotFound`].
    pub fn delete_generation(
        &self,
        lock: &RepositoryLock,
        key: &TargetKey,
        id: GenerationId,
    ) -> Result<()> {
        lock.require(self.config.repository_id, "delete_generation", true)?;
        let dir = self.generation_dir(key, id);
        let manifest = dir.join(MANIFEST_FILE);
        if !manifest.exists() {
            return Err(Error::GenerationNotFound {
                target: key.to_string(),
                generation: id.0,
            });
        }
        fs::remove_file(&manifest).map_err(io_err("remove", &manifest))?;
        fsutil::sync_dir(&dir)?;
        if let Some(cat) = &self.catalog {
            cat.remove(&format!("{key}/{}", id.folder_name()));
        }
        self.remove_generation_dir(key, &dir)
    }

    pub(crate) fn remove_generation_dir(&self, key: &TargetKey, dir: &Path) -> Result<()> {
        fs::remove_dir_all(dir).map_err(io_err("remove", dir))?;
        let tdir = self.target_dir(key);
        fsutil::sync_dir(&tdir)?;
        // Drop the target folder once it holds nothing.
        if fsutil::list_dir(&tdir)?.is_empty() && fs::remove_dir(&tdir).is_ok() {
            fsutil::sync_dir(&self.targets_dir())?;
        }
        Ok(())
    }

    /// The writer record of an incomplete generation folder, if readable.
    pub(crate) fn incomplete_writer(&self, dir: &Path) -> Option<crate::writer::WriterRecord> {
        let bytes = fs::read(dir.join(INCOMPLETE_MARKER)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
