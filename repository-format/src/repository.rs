//! Opening a repository and finding targets and generations in it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::blob::Codec;
use crate::catalog::{manifest_stamp, Catalog, CatalogEntry};
use crate::chunk_store::ChunkStore;
use crate::config::{Chunking, ChunkingChoice, Config, EncryptionMode, InitOptions};
use crate::error::{io_err, read_object, store_err, Error, Result};
use crate::fixed_index::{FixedIndex, IndexBinding};
use crate::format::{
    CHUNKS_DIR, CONFIG_FILE, INCOMPLETE_MARKER, KEYS_DIR, LOCKS_DIR, MANIFEST_FILE, TARGETS_DIR,
};
use crate::key::{Key, KeyFingerprint, Passphrase};
use crate::key_file::{KdfParams, KeyFile, KeyId};
use crate::lock::{LockMode, LockSettings, RepositoryLock, TargetLock};
use crate::manifest::{BackupMode, DiskRecord, DiskStats, GenerationStatus, Manifest};
use crate::object_lock::OBJECT_LOCK_DAYS;
use crate::reader::DiskReader;
use crate::storage::{Backend, LocalBackend, ObjectInfo, RepositoryLocation};
use crate::target::{GenerationId, TargetIdentity, TargetKey, TargetKind};

/// An open repository. Cheap to clone; every clone refers to the same storage.
#[derive(Debug, Clone)]
pub struct Repository {
    /// The local folder, or the display name (`s3://bucket/prefix`) of an object store.
    root: PathBuf,
    backend: Arc<dyn Backend>,
    location: RepositoryLocation,
    lock_settings: LockSettings,
    /// Chunk uploads in flight per disk ingest (object stores; local writes use 4).
    upload_concurrency: usize,
    /// The budget this handle's ingests draw their chunk buffers from (the process's unless
    /// set otherwise).
    memory_budget: Arc<crate::memory_budget::MemoryBudget>,
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

/// A generation folder found in the store.
#[derive(Debug, Clone)]
pub(crate) struct GenerationDir {
    pub id: GenerationId,
    /// Its key prefix, `targets/<key>/gen-NNNNNN/`.
    pub prefix: String,
    pub committed: bool,
    /// The manifest object, when committed.
    pub manifest: Option<ObjectInfo>,
    /// The `incomplete.json` marker, while being written.
    pub marker: Option<ObjectInfo>,
    /// Every object in the folder.
    pub objects: Vec<ObjectInfo>,
}

impl GenerationDir {
    /// The newest store time of its objects (`None` for an empty local folder).
    pub fn newest(&self) -> Option<std::time::SystemTime> {
        self.objects.iter().map(|o| o.modified).max()
    }
}

/// Default number of chunk uploads in flight per disk ingest on an object store.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 16;

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
        Self::init_location(
            &RepositoryLocation::Local(path.as_ref().to_path_buf()),
            opts,
            passphrase,
        )
    }

    /// Creates a repository at `location`: a local folder (as [`Repository::init_with`]) or
    /// an S3 bucket prefix. The bucket is created if it does not exist; the prefix must hold
    /// no objects. The config is written last, with a conditional create, so two `init`s
    /// racing for one place cannot both succeed.
    ///
    /// # Errors
    /// As [`Repository::init_with`]; [`Error::Io`] naming the bucket for connection,
    /// permission and bucket-creation failures.
    pub fn init_location(
        location: &RepositoryLocation,
        opts: &InitOptions,
        passphrase: Option<&Passphrase>,
    ) -> Result<Repository> {
        Self::init_location_keyed(location, opts, passphrase, None, None)
    }

    /// Creates a repository at `location` with the key material of `keys_from` (its chunk-id
    /// key and data key, wrapped here under `passphrase` in this repository's own key file),
    /// its chunk size and its encryption mode, so that chunks, target folders and metadata
    /// names are the same in both and [`Repository::copy_to`] moves chunk blobs as they are.
    /// The new repository has its own id, config and key files; `opts` gives the compression
    /// level and the key file's KDF parameters. An unencrypted `keys_from` makes an
    /// unencrypted repository (plain SHA-256 ids are already shared).
    ///
    /// # Errors
    /// As [`Repository::init_location`].
    pub fn init_location_sharing_keys(
        location: &RepositoryLocation,
        opts: &InitOptions,
        passphrase: Option<&Passphrase>,
        keys_from: &Repository,
    ) -> Result<Repository> {
        let from = &keys_from.config;
        let opts = InitOptions {
            chunk_size: from.chunk_size,
            chunking: if from.chunking.is_fixed() {
                ChunkingChoice::Fixed
            } else {
                ChunkingChoice::ContentDefined
            },
            encryption: from.encryption,
            ..opts.clone()
        };
        // The same chunking too (a plain repository's cut seed included): both cut a disk at
        // the same places, so copies deduplicate against what either repository holds.
        Self::init_location_keyed(
            location,
            &opts,
            passphrase,
            keys_from.codec().key(),
            Some(from.chunking),
        )
    }

    /// [`Repository::init_location`] with the master keys given (`Some`) or generated, and
    /// the chunking given (`Some`, from the repository the keys come from) or made from `opts`.
    fn init_location_keyed(
        location: &RepositoryLocation,
        opts: &InitOptions,
        passphrase: Option<&Passphrase>,
        shared_key: Option<&Key>,
        shared_chunking: Option<Chunking>,
    ) -> Result<Repository> {
        opts.validate()?;
        let root = PathBuf::from(location.display());
        let key = match (opts.encryption, passphrase) {
            (EncryptionMode::None, _) => None,
            (EncryptionMode::Aes256Gcm, None) => {
                return Err(Error::PassphraseRequired { path: root })
            }
            (EncryptionMode::Aes256Gcm, Some(p)) if p.is_empty() => {
                return Err(Error::InvalidOption("the passphrase is empty".into()))
            }
            (EncryptionMode::Aes256Gcm, Some(_)) => match shared_key {
                Some(k) => Some(k.clone()),
                None => Some(Key::generate()?),
            },
        };
        let backend: Arc<dyn Backend> = match location {
            RepositoryLocation::Local(dir) => {
                prepare_local_folder(dir)?;
                Arc::new(LocalBackend::new(dir))
            }
            #[cfg(feature = "s3")]
            RepositoryLocation::S3(s3) => {
                let b = crate::storage::S3Backend::connect(s3).map_err(|source| Error::Io {
                    op: "connect to",
                    path: root.clone(),
                    source,
                })?;
                b.ensure_bucket().map_err(|source| Error::Io {
                    op: "prepare the bucket of",
                    path: root.clone(),
                    source,
                })?;
                let existing = b.list_dir("").map_err(|source| Error::Io {
                    op: "list",
                    path: root.clone(),
                    source,
                })?;
                if !existing.dirs.is_empty() || !existing.objects.is_empty() {
                    return Err(Error::NotEmpty { path: root });
                }
                Arc::new(b)
            }
            #[cfg(not(feature = "s3"))]
            RepositoryLocation::S3(_) => {
                return Err(Error::InvalidOption(format!(
                    "{}: this build has no S3 support (feature `s3` of repository-format)",
                    root.display()
                )))
            }
        };
        let mut config = Config::new(opts, key.as_ref().map(|k| k.fingerprint().clone()))?;
        if let Some(chunking) = shared_chunking {
            config.chunking = chunking;
        }
        let object_lock_days = match location {
            RepositoryLocation::S3(s3) => s3.object_lock_days,
            RepositoryLocation::Local(_) => None,
        };
        if let Some(days) = object_lock_days {
            // Every later open takes the lock from here (crate::object_lock).
            config.extra.insert(OBJECT_LOCK_DAYS.into(), days.into());
        }
        // The first retained write tells whether the bucket has object lock enabled: stores
        // answer 400 InvalidRequest (AWS: "Bucket is missing Object Lock Configuration").
        let refused = |e: Error| match (object_lock_days, e) {
            (Some(_), Error::Io { source, path, .. })
                if format!("{source} {source:?}").contains("InvalidRequest")
                    || format!("{source}").contains("Object Lock") =>
            {
                Error::InvalidOption(format!(
                    "{}: the store refused a write with an object lock retention ({source}): \
                     the bucket needs object lock enabled",
                    path.display()
                ))
            }
            (_, e) => e,
        };
        let mut unlocked_by = None;
        if let (Some(key), Some(pass)) = (&key, passphrase) {
            let file = KeyFile::wrap(KeyId::random()?, config.repository_id, key, pass, opts.kdf)?;
            let k = format!("{KEYS_DIR}/{}", file.id.as_str());
            backend
                .create_new(&k, &file.to_bytes())
                .map_err(store_err(backend.as_ref(), "create", &k))
                .map_err(refused)?;
            unlocked_by = Some((file.id.clone(), opts.kdf));
        }
        // The config goes last: a place without it is not a repository.
        config.write(backend.as_ref()).map_err(refused)?;
        // Read back what was written; the key is the one just wrapped (deriving it again from
        // the passphrase would only cost another Argon2id run).
        let config = Config::read(backend.as_ref())?;
        Ok(Self::assemble(
            location.clone(),
            backend,
            config,
            key,
            unlocked_by,
        ))
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
        Self::open_location(
            &RepositoryLocation::Local(path.as_ref().to_path_buf()),
            passphrase,
        )
    }

    /// Opens an existing repository at `location` (a local folder or an S3 bucket prefix);
    /// an encrypted one is unlocked with `passphrase`.
    ///
    /// # Errors
    /// As [`Repository::open_with`]; for S3, [`Error::Io`] naming the repository for
    /// connection failures and refused credentials (`PermissionDenied`), [`Error::Config`]
    /// when no config exists under the prefix.
    pub fn open_location(
        location: &RepositoryLocation,
        passphrase: Option<&Passphrase>,
    ) -> Result<Repository> {
        let backend = location.backend()?;
        let be = backend.as_ref();
        let config_path = be.display_path(CONFIG_FILE);
        let config = match Config::read(be) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config {
                    path: config_path,
                    reason: format!(
                        "not found: {} is not a safekeeping repository",
                        location.display()
                    ),
                })
            }
            r => r?,
        };
        // A repository initialised with object lock keeps writing with it.
        let (location, backend) =
            crate::object_lock::with_recorded_lock(location, backend, &config)?;
        let (location, be) = (&location, backend.as_ref());
        if let Some(root) = be.local_root() {
            for d in [CHUNKS_DIR, TARGETS_DIR, LOCKS_DIR] {
                if !root.join(d).is_dir() {
                    return Err(Error::Config {
                        path: root.join(d),
                        reason: "folder missing: the repository is incomplete".into(),
                    });
                }
            }
        }
        let has_keys = !be
            .list_dir(&format!("{KEYS_DIR}/"))
            .map_err(store_err(be, "list", KEYS_DIR))?
            .objects
            .is_empty()
            || be.local_root().is_some_and(|r| r.join(KEYS_DIR).exists());
        let (key, unlocked_by) = match (&config.key_fingerprint, passphrase) {
            // A config edited to say "no encryption" must not make the next backup write
            // plain text: key files, or a passphrase the caller expects to need, say otherwise.
            (None, _) if has_keys => {
                return Err(Error::Config {
                    path: config_path,
                    reason: "says the repository is not encrypted, but it has a keys/ folder: \
                             refusing to open it (the config may have been altered)"
                        .into(),
                })
            }
            (None, Some(_)) => {
                return Err(Error::Config {
                    path: config_path,
                    reason: "the repository is not encrypted, but a passphrase was given: \
                             refusing to write unencrypted backups where encrypted ones are \
                             expected (remove the passphrase setting if this repository was \
                             created without encryption)"
                        .into(),
                })
            }
            (None, None) => (None, None),
            (Some(_), None) => {
                return Err(Error::PassphraseRequired {
                    path: PathBuf::from(location.display()),
                })
            }
            (Some(fp), Some(p)) => {
                let (key, id, kdf) = crate::keys::unlock(be, &config, fp, p)?;
                (Some(key), Some((id, kdf)))
            }
        };
        Ok(Self::assemble(
            location.clone(),
            backend,
            config,
            key,
            unlocked_by,
        ))
    }

    fn assemble(
        location: RepositoryLocation,
        backend: Arc<dyn Backend>,
        config: Config,
        key: Option<Key>,
        unlocked_by: Option<(KeyId, KdfParams)>,
    ) -> Repository {
        let codec = Codec::new(config.compression_level, key);
        // Object stores: a local cache of known chunk ids saves a HEAD per chunk (see
        // `chunk_cache`); a local folder answers a stat as fast as a cache would.
        let chunk_cache = match &location {
            RepositoryLocation::Local(_) => None,
            RepositoryLocation::S3(s3) => s3
                .cache_dir_for(&config.repository_id)
                .and_then(|d| {
                    crate::chunk_cache::ChunkCache::open(&d.join("known-chunks"), backend.clone())
                })
                .map(Arc::new),
        };
        let store = ChunkStore::new(
            backend.clone(),
            codec.clone(),
            config.chunk_size,
            chunk_cache,
        );
        // The catalog caches target names and generation summaries in plain text: an
        // encrypted repository goes without it. It is local: in the repository folder, or in
        // the cache folder for an object store.
        let catalog_dir = match &location {
            RepositoryLocation::Local(p) => Some(p.join(crate::catalog::CATALOG_DIR)),
            RepositoryLocation::S3(s3) => s3
                .cache_dir_for(&config.repository_id)
                .map(|d| d.join(crate::catalog::CATALOG_DIR)),
        };
        let catalog = match catalog_dir {
            Some(dir) if config.encryption == EncryptionMode::None => {
                Catalog::open(&dir).map(std::sync::Arc::new)
            }
            _ => None,
        };
        Repository {
            root: backend.display_path(""),
            backend,
            location,
            lock_settings: LockSettings::default(),
            upload_concurrency: DEFAULT_UPLOAD_CONCURRENCY,
            memory_budget: crate::memory_budget::MemoryBudget::process().clone(),
            config,
            codec,
            store,
            catalog,
            unlocked_by,
        }
    }

    /// How many chunk ids the local cache of an object store lists (validated against the
    /// store's cache epoch first, rebuilt from a listing if stale); `None` without a cache
    /// (local folders, or a cache another process holds).
    pub fn cached_chunk_count(&self) -> Option<u64> {
        self.store.cache().and_then(|c| c.len())
    }

    /// After chunks were deleted or moved: replaces the repository's cache epoch so every
    /// host's chunk cache is rebuilt before it is trusted again.
    pub(crate) fn chunks_removed(&self) -> Result<()> {
        if self.backend.local_root().is_some() {
            return Ok(());
        }
        crate::chunk_cache::bump_epoch(self.backend.as_ref()).map_err(store_err(
            self.backend.as_ref(),
            "write",
            crate::chunk_cache::CACHE_EPOCH,
        ))?;
        if let Some(c) = self.store.cache() {
            c.invalidate();
        }
        Ok(())
    }

    /// Where this repository lives.
    pub fn location(&self) -> &RepositoryLocation {
        &self.location
    }

    /// The storage backend (for tools that inspect objects; the repository's own rules for
    /// writing them are in this crate).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Sets the time after which a lock holder of this handle that stopped renewing is
    /// considered gone by others (default [`crate::lock::DEFAULT_LOCK_TTL`]); its heartbeat
    /// is renewed every third of it.
    pub fn set_lock_ttl(&mut self, ttl: Duration) {
        self.lock_settings.ttl = ttl.max(Duration::from_secs(1));
    }

    /// Sets how many chunk uploads a disk ingest keeps in flight on an object store
    /// (default [`DEFAULT_UPLOAD_CONCURRENCY`]); memory grows by one chunk per upload.
    pub fn set_upload_concurrency(&mut self, n: usize) {
        self.upload_concurrency = n.clamp(1, 256);
    }

    /// Makes this handle's ingests (and those of its clones made afterwards) draw their chunk
    /// buffers from `budget` instead of the process's [`crate::MemoryBudget::process`].
    pub fn set_memory_budget(&mut self, budget: Arc<crate::memory_budget::MemoryBudget>) {
        self.memory_budget = budget;
    }

    /// The budget this handle's ingests draw their chunk buffers from.
    pub fn memory_budget(&self) -> &Arc<crate::memory_budget::MemoryBudget> {
        &self.memory_budget
    }

    /// The writer threads an ingest uses: 4 for a local folder (fsync latency), the upload
    /// concurrency for an object store, fewer for large chunks so that at most about 256 MiB
    /// of blobs are in flight (16 at 1 to 8 MiB chunks, 8 at 16 MiB).
    pub(crate) fn ingest_writers(&self) -> Option<usize> {
        if self.backend.local_root().is_some() {
            return None;
        }
        // Each writer holds one blob and the queue in front of them as many again: at most
        // about 2 × 128 MiB of blobs in flight, whatever the chunk size.
        let cap = ((128usize << 20) / self.config.chunk_size as usize).max(2);
        Some(self.upload_concurrency.min(cap))
    }

    pub(crate) fn lock_settings(&self) -> LockSettings {
        self.lock_settings
    }

    /// Reads an object of the repository, limited to `limit` bytes.
    pub(crate) fn read_object(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        read_object(self.backend.as_ref(), key, limit)
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

    /// The repository folder (for an object store, its display name `s3://bucket/prefix`,
    /// which is no local path).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How this repository cuts disks into chunks: the content-defined rule of a format-4
    /// repository (its cut-hash seed from the config, or from the key when encrypted), `None`
    /// for fixed chunks.
    ///
    /// # Errors
    /// [`Error::Config`] for an encrypted format-4 repository opened without its key, or
    /// chunking parameters the rule refuses.
    pub fn cut_rule(&self) -> Result<Option<crate::chunker::CutRule>> {
        let crate::config::Chunking::AlignedCdc {
            min,
            mask_bits,
            max,
            seed,
            ..
        } = self.config.chunking
        else {
            return Ok(None);
        };
        let bad = |reason: String| Error::Config {
            path: self.backend.display_path(crate::format::CONFIG_FILE),
            reason,
        };
        let seed = match (seed, self.codec.key()) {
            (_, Some(key)) => key.cut_seed(),
            (Some(seed), None) => seed,
            (None, None) => {
                return Err(bad(
                    "content-defined chunks without a cut seed and without a key".into(),
                ))
            }
        };
        crate::chunker::CutRule::new(min, max, mask_bits, seed)
            .map(Some)
            .map_err(|e| bad(e.to_string()))
    }

    /// The chunk store.
    pub fn chunk_store(&self) -> &ChunkStore {
        &self.store
    }

    pub(crate) fn codec(&self) -> &Codec {
        &self.codec
    }

    pub(crate) fn target_prefix(&self, key: &TargetKey) -> String {
        format!("{TARGETS_DIR}/{key}/")
    }

    pub(crate) fn generation_prefix(&self, key: &TargetKey, id: GenerationId) -> String {
        format!("{TARGETS_DIR}/{key}/{}/", id.folder_name())
    }

    /// Takes the shared lock (backup, restore, check), waiting up to `wait`.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holders if it is not free in time.
    pub fn lock_shared(&self, wait: Duration) -> Result<RepositoryLock> {
        RepositoryLock::acquire(
            &self.backend,
            self.config.repository_id,
            LockMode::Shared,
            wait,
            self.lock_settings,
        )
    }

    /// Takes the shared lock for a command that only reads (restore, export, check without
    /// repair), waiting up to `wait`. On a repository that cannot be written — a read-only
    /// mount, a snapshot of the backup volume, read-only credentials — no lock can be recorded:
    /// it then returns a lock that is not held ([`RepositoryLock::is_held`]) and logs a
    /// warning, and the caller reads without one (a gc, prune or delete elsewhere does not see
    /// it; on a read-only copy none can run). Nothing that writes accepts such a lock.
    ///
    /// # Errors
    /// As [`Repository::lock_shared`], except a store that refuses the lock's write as
    /// read-only (`ReadOnlyFilesystem`) or not permitted (`PermissionDenied`).
    pub fn lock_shared_for_reading(&self, wait: Duration) -> Result<RepositoryLock> {
        match self.lock_shared(wait) {
            Err(Error::Io { op, path, source })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                let reason = format!("{op} {}: {source}", path.display());
                tracing::warn!(
                    repository = %self.root.display(),
                    error = %reason,
                    "could not lock the repository (it cannot be written here); reading it \
                     without a lock"
                );
                Ok(RepositoryLock::not_held(self.config.repository_id, reason))
            }
            r => r,
        }
    }

    /// Takes the exclusive lock (gc, prune, reindex, delete), waiting up to `wait`.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holders if it is not free in time.
    pub fn lock_exclusive(&self, wait: Duration) -> Result<RepositoryLock> {
        RepositoryLock::acquire(
            &self.backend,
            self.config.repository_id,
            LockMode::Exclusive,
            wait,
            self.lock_settings,
        )
    }

    /// Pins generation `id` of `key` for a long reader (`serve`, `files`): a
    /// [`LockMode::Pin`] record in the repository lock, taken once no exclusive holder runs.
    /// Prune, delete and gc keep running and keep the pinned generation (see
    /// [`crate::lock`]). Read the generation's manifest only after this returns.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the exclusive holder if it does not finish within `wait`.
    pub fn pin_generation(
        &self,
        key: &TargetKey,
        id: GenerationId,
        wait: Duration,
    ) -> Result<RepositoryLock> {
        RepositoryLock::acquire_pin(
            &self.backend,
            self.config.repository_id,
            crate::lock::PinnedGeneration {
                target: key.clone(),
                generation: id.0,
            },
            wait,
            self.lock_settings,
        )
    }

    /// The live pins of this repository's generations ([`Repository::pin_generation`]),
    /// stale ones left out.
    ///
    /// # Errors
    /// Storage errors listing `locks/repository/`.
    pub fn pins(&self) -> Result<Vec<crate::LockHolder>> {
        crate::lock::live_pins(self.backend.as_ref())
    }

    /// Takes the per-target lock that keeps two backups of one target apart.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holder if it is not free in time.
    pub fn lock_target(&self, key: &TargetKey, wait: Duration) -> Result<TargetLock> {
        TargetLock::acquire(
            &self.backend,
            self.config.repository_id,
            key,
            wait,
            self.lock_settings,
        )
    }

    /// The runs that hold a live (not stale) record of this repository's lock, shared or
    /// exclusive. A run missing here has ended: its record was released, or it stopped
    /// renewing it for longer than its ttl, or its process is gone from this machine.
    ///
    /// # Errors
    /// Storage errors listing `locks/repository/`.
    pub fn live_runs(&self) -> Result<Vec<crate::LockHolder>> {
        crate::lock::live_holders(self.backend.as_ref(), "repository")
    }

    /// Generation folders of a target, committed or not, sorted by id, with their objects
    /// (one recursive listing of the target).
    pub(crate) fn generation_dirs(&self, key: &TargetKey) -> Result<Vec<GenerationDir>> {
        let tprefix = self.target_prefix(key);
        let be = self.backend.as_ref();
        let mut by_id: std::collections::BTreeMap<GenerationId, GenerationDir> = Default::default();
        fn add<'a>(
            by_id: &'a mut std::collections::BTreeMap<GenerationId, GenerationDir>,
            tprefix: &str,
            name: &str,
        ) -> Option<&'a mut GenerationDir> {
            let id = GenerationId::from_folder_name(name)?;
            Some(by_id.entry(id).or_insert_with(|| {
                let prefix = format!("{tprefix}{name}/");
                GenerationDir {
                    id,
                    prefix,
                    committed: false,
                    manifest: None,
                    marker: None,
                    objects: Vec::new(),
                }
            }))
        }
        // Empty local folders (a crash between mkdir and the marker) show only here.
        if be.local_root().is_some() {
            for name in be
                .list_dir(&tprefix)
                .map_err(store_err(be, "list", &tprefix))?
                .dirs
            {
                add(&mut by_id, &tprefix, &name);
            }
        }
        for o in be.list(&tprefix).map_err(store_err(be, "list", &tprefix))? {
            let rest = &o.key[tprefix.len()..];
            let Some((gname, inner)) = rest.split_once('/') else {
                continue;
            };
            let Some(g) = add(&mut by_id, &tprefix, gname) else {
                continue;
            };
            if inner == MANIFEST_FILE {
                g.committed = true;
                g.manifest = Some(o.clone());
            } else if inner == INCOMPLETE_MARKER {
                g.marker = Some(o.clone());
            }
            g.objects.push(o);
        }
        Ok(by_id.into_values().collect())
    }

    /// Keys of every target folder (invalid folder names are skipped; `check` reports them).
    pub fn target_keys(&self) -> Result<Vec<TargetKey>> {
        let p = format!("{TARGETS_DIR}/");
        Ok(self
            .backend
            .list_dir(&p)
            .map_err(store_err(self.backend.as_ref(), "list", &p))?
            .dirs
            .into_iter()
            .filter_map(|n| TargetKey::new(n).ok())
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
            let ckey = format!("{key}/{}", g.id.folder_name());
            let stamp = g.manifest.as_ref().and_then(manifest_stamp);
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
        let tprefix = self.target_prefix(key);
        let listing = self.backend.list_dir(&tprefix).map_err(store_err(
            self.backend.as_ref(),
            "list",
            &tprefix,
        ))?;
        if listing.dirs.is_empty() && listing.objects.is_empty() {
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
        let mkey = format!("{}{MANIFEST_FILE}", self.generation_prefix(key, id));
        let path = self.backend.display_path(&mkey);
        let bytes = match self.read_object(&mkey, crate::manifest::MANIFEST_LIMIT as u64) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::GenerationNotFound {
                    target: key.to_string(),
                    generation: id.0,
                })
            }
            r => r?,
        };
        let m = Manifest::decode(&path, &bytes, &self.codec)?;
        if let Some(reason) = self.manifest_misplaced(key, id, &m) {
            return Err(Error::Manifest { path, reason });
        }
        Ok(m)
    }

    /// Why manifest `m`, read from the folder of generation `id` of target `key`, does not
    /// belong there (another generation, repository or target), or `None` if it does. A
    /// manifest copied into another folder would otherwise restore another target's data.
    pub(crate) fn manifest_misplaced(
        &self,
        key: &TargetKey,
        id: GenerationId,
        m: &Manifest,
    ) -> Option<String> {
        if m.generation != id || m.repository_id != self.config.repository_id {
            return Some(format!(
                "records generation {} of repository {}, expected generation {id} of {}",
                m.generation, m.repository_id, self.config.repository_id
            ));
        }
        match self.target_key(&m.target) {
            Ok(k) if &k == key => None,
            Ok(k) => Some(format!(
                "records target {:?} (folder {k}) but lies in folder {key}: it was moved or \
                 copied here",
                m.target.name
            )),
            Err(e) => Some(format!("records a target without a usable key: {e}")),
        }
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
        self.read_index(key, m.generation, rec)
    }

    /// Reads the index of disk record `rec` of generation `generation` of target `key`, and
    /// verifies that it is the index that generation was committed with and belongs there:
    /// the SHA-256 and uuid the manifest recorded, the place in its header (and, encrypted, in
    /// the blob's associated data), and the disk's size. A generation written by format
    /// version 1 recorded no identity: its legacy index is accepted unbound (size only); a
    /// bound index found there must still name this place.
    ///
    /// # Errors
    /// [`Error::Io`] (a missing file: `NotFound`), [`Error::Blob`] for envelope damage,
    /// [`Error::Index`] naming the file for an index that is damaged, not the one recorded,
    /// or another place's; [`Error::IndexKind`] for an index of the other chunking than the
    /// repository's.
    pub(crate) fn read_index(
        &self,
        key: &TargetKey,
        generation: GenerationId,
        rec: &DiskRecord,
    ) -> Result<FixedIndex> {
        let ikey = format!(
            "{}{}",
            self.generation_prefix(key, generation),
            rec.index_file
        );
        let path = self.backend.display_path(&ikey);
        let bytes = self.read_object(&ikey, crate::fixed_index::INDEX_LIMIT as u64 + 4096)?;
        let place = IndexBinding::new(key.clone(), generation, rec.disk.key);
        let bad = |reason: String| Error::Index {
            path: path.clone(),
            reason,
        };
        let decoded = FixedIndex::decode_at(
            &path,
            &bytes,
            &self.codec,
            rec.index_is_bound().then_some(&place),
        );
        let recorded = rec
            .index_sha256
            .as_ref()
            .map(|want| (want, hex::encode(Sha256::digest(&bytes))));
        let not_recorded = |found: String| {
            format!(
                "is not the index generation {generation} was committed with for disk {} (its \
                 SHA-256 is not the one the manifest recorded): {found}",
                rec.disk.key
            )
        };
        let idx = match (decoded, recorded) {
            // Encrypted: another place's index does not even authenticate here.
            (
                Err(
                    e @ Error::Blob {
                        reason: crate::blob::BlobError::Authentication,
                        ..
                    },
                ),
                Some((want, have)),
            ) if *want != have => return Err(bad(not_recorded(format!("replaced ({e})")))),
            (Err(e), _) => return Err(e),
            (Ok(idx), Some((want, have))) if *want != have => {
                let found = match idx.binding() {
                    Some(b) if b != &place => format!("it was copied here from {b}"),
                    Some(_) => "it was rewritten".to_string(),
                    None => "a legacy index without a place was put here".to_string(),
                };
                return Err(bad(not_recorded(found)));
            }
            (Ok(idx), _) => idx,
        };
        match idx.binding() {
            Some(b) if b != &place => {
                return Err(bad(format!(
                    "belongs to {b}, not to {place}: it was copied here"
                )))
            }
            None if rec.index_is_bound() => {
                return Err(bad(format!(
                    "is a legacy index without a place, but generation {generation} was \
                     committed with a bound one"
                )))
            }
            _ => {}
        }
        if let Some(id) = rec.index_id.filter(|id| *id != idx.uuid()) {
            return Err(bad(format!(
                "has id {}, but generation {generation} recorded {id} for disk {}",
                idx.uuid(),
                rec.disk.key
            )));
        }
        // Fixed-chunk repositories (versions 1 to 3) hold fixed indexes only, content-defined
        // ones (version 4) variable indexes only: anything else was not written here.
        if idx.is_variable() == self.config.chunking.is_fixed() {
            return Err(Error::IndexKind {
                path: path.clone(),
                reason: if idx.is_variable() {
                    "is a content-defined (version 4) index, but the repository has fixed chunks"
                        .to_string()
                } else {
                    "is a fixed-chunk index, but the repository has content-defined chunks"
                        .to_string()
                },
            });
        }
        if idx.size() != rec.disk.capacity {
            return Err(bad(format!(
                "covers {} bytes but the manifest says the disk has {}",
                idx.size(),
                rec.disk.capacity
            )));
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
        let mkey = format!(
            "{}{}/{}",
            self.generation_prefix(key, id),
            crate::format::METADATA_DIR,
            self.metadata_file_name(name)
        );
        let path = self.backend.display_path(&mkey);
        let bytes = self.read_object(&mkey, crate::writer::METADATA_LIMIT as u64 + 4096)?;
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
        // A pin taken before this exclusive lock is visible now (see `crate::lock`), and no
        // pin can be taken while the lock is held: a served generation is never deleted.
        if let Some(h) = self.pins()?.into_iter().find(|h| {
            h.pin
                .as_ref()
                .is_some_and(|p| &p.target == key && p.generation == id.0)
        }) {
            return Err(Error::GenerationPinned {
                target: key.to_string(),
                generation: id.0,
                holder: Box::new(h),
            });
        }
        let prefix = self.generation_prefix(key, id);
        let mkey = format!("{prefix}{MANIFEST_FILE}");
        let be = self.backend.as_ref();
        if be
            .head(&mkey)
            .map_err(store_err(be, "stat", &mkey))?
            .is_none()
        {
            return Err(Error::GenerationNotFound {
                target: key.to_string(),
                generation: id.0,
            });
        }
        // The manifest goes first: the generation stops existing in one step.
        be.delete(&mkey).map_err(store_err(be, "remove", &mkey))?;
        if let Some(cat) = &self.catalog {
            cat.remove(&format!("{key}/{}", id.folder_name()));
        }
        self.remove_generation_dir(&prefix)
    }

    /// Removes every object of a generation folder (the manifest, if any, must go first:
    /// callers delete it before).
    pub(crate) fn remove_generation_dir(&self, prefix: &str) -> Result<()> {
        let be = self.backend.as_ref();
        be.delete_prefix(prefix)
            .map_err(store_err(be, "remove", prefix.trim_end_matches('/')))
    }
}

/// Prepares a local folder for `init`: it must not exist or be empty; the top-level folders
/// are made so a local repository looks as it always did.
fn prepare_local_folder(root: &Path) -> Result<()> {
    match std::fs::read_dir(root) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::NotEmpty {
                    path: root.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root).map_err(io_err("create folder", root))?;
            if let Some(parent) = root.parent() {
                crate::storage::sync_dir(parent).map_err(io_err("fsync folder", parent))?;
            }
        }
        Err(e) => return Err(io_err("open", root)(e)),
    }
    for d in [CHUNKS_DIR, TARGETS_DIR, LOCKS_DIR] {
        std::fs::create_dir(root.join(d)).map_err(io_err("create folder", root.join(d)))?;
    }
    crate::storage::sync_dir(root).map_err(io_err("fsync folder", root))
}
