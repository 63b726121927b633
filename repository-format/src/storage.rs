//! The storage layer: one small object-store interface with two implementations, a local folder
//! ([`LocalBackend`]) and an S3-compatible bucket ([`S3Backend`]).
//!
//! Everything the repository stores is an *object* named by a key relative to the repository
//! root (`config`, `chunks/1a2b/1a2b…`, `targets/vm-x/gen-000001/manifest`, …). The interface
//! has exactly what the format needs and nothing that only a file system can do:
//!
//! - [`Backend::create_new`]: a conditional create that fails with
//!   [`std::io::ErrorKind::AlreadyExists`] if the key exists (a hard link locally,
//!   `PUT If-None-Match: *` on S3). Manifests, key files, the config and lock records are
//!   written this way, which is what makes a commit atomic and never an overwrite;
//! - [`Backend::put`] for the few objects that are replaced (lock records being renewed, the
//!   gc state, a key file whose passphrase changes);
//! - [`Backend::get`] with a size limit checked *before* the body is read;
//! - [`Backend::head`], [`Backend::list`] (recursive, with sizes and modification times as the
//!   store reports them) and [`Backend::list_dir`] (one level, like an S3 delimiter listing);
//! - [`Backend::delete`] (deleting a missing object is not an error).
//!
//! Every method is synchronous: the repository is called from plain threads (and from tokio's
//! `spawn_blocking` threads); the S3 backend runs its async client on a runtime it owns.
//! Errors are `std::io::Error`s whose kind says what callers branch on (`NotFound`,
//! `AlreadyExists`, `FileTooLarge`, `PermissionDenied`) and whose inner error is the original.

use std::fmt;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

mod local;
pub mod location;
#[cfg(feature = "s3")]
mod s3;

pub use local::LocalBackend;
pub(crate) use local::{sweep_file, sync_dir, SweepHooks};
pub use location::{RepositoryLocation, S3Credentials, S3Location};
#[cfg(feature = "s3")]
pub use s3::S3Backend;

/// One stored object as a listing or a head request reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key relative to the repository root (`chunks/1a2b/1a2b…`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification as the *store* reports it (file mtime, S3 `Last-Modified`); the lock
    /// and gc rules compare these with each other, never with the local clock.
    pub modified: SystemTime,
}

impl ObjectInfo {
    /// The last path component of the key.
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// One level of a listing: the "folders" (common prefixes) and objects directly under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    /// Names (last component, no slash) of the sub-prefixes.
    pub dirs: Vec<String>,
    /// Objects directly under the prefix.
    pub objects: Vec<ObjectInfo>,
}

/// Where a repository's objects live. See the module docs.
///
/// Keys use `/` as separator, never start with `/`, and have no empty, `.` or `..` component;
/// [`check_key`] enforces that so a key can never leave the repository.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A human-readable name of the repository location (`/srv/backup` or
    /// `s3://bucket/prefix`), never holding credentials.
    fn describe(&self) -> String;

    /// The name of `key` in error messages and reports (a path for the local backend,
    /// `s3://bucket/prefix/key` for S3).
    fn display_path(&self, key: &str) -> PathBuf;

    /// The folder of a local repository (`None` for object stores).
    fn local_root(&self) -> Option<&Path> {
        None
    }

    /// Stores `data` under `key` only if no object has that key.
    ///
    /// # Errors
    /// `AlreadyExists` if the key exists (the existing object is untouched); any other error
    /// leaves either no object or (local) no visible object.
    fn create_new(&self, key: &str, data: &[u8]) -> io::Result<()>;

    /// Stores `data` under `key`, replacing an existing object atomically.
    ///
    /// # Errors
    /// The store's error.
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;

    /// Like [`Backend::put`] (atomic: readers see all of the object or none of it, and an
    /// object that has its name holds all of its bytes durably), but the object need only
    /// have its name, durably, after the next [`Backend::sync_names`]: until then it may be
    /// invisible, and a crash may lose it, never leave it partial. For many new objects
    /// written before one commit (chunks), so the local backend makes them durable in
    /// batches rather than with an fsync each. Object stores: the same as `put`.
    ///
    /// # Errors
    /// The store's error, possibly an earlier batch's (which then fails every later call).
    fn put_name_deferred(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.put(key, data)
    }

    /// Names, durably, every object written with [`Backend::put_name_deferred`] and makes
    /// durable the names of every object [`Backend::touch`] found, by this process, so far.
    /// Called at the end of each disk's ingest and before a commit. Nothing to do for object
    /// stores.
    ///
    /// # Errors
    /// The store's error; the names not yet made durable stay pending.
    fn sync_names(&self) -> io::Result<()> {
        Ok(())
    }

    /// Reads a whole object of at most `limit` bytes; the size is checked before the content
    /// is read, so a hostile object cannot exhaust memory.
    ///
    /// # Errors
    /// `NotFound`, `FileTooLarge` above `limit`, or the store's error.
    fn get(&self, key: &str, limit: u64) -> io::Result<Vec<u8>>;

    /// [`Backend::get`] into `out`, returning the object's length `n`: its first `prefix`
    /// bytes (at most [`crate::aligned_buf::HEADROOM`]) go in front of `out`'s aligned data
    /// start and the rest becomes its data, so a blob's payload lands aligned (see
    /// [`crate::aligned_buf`]); the whole object is then `out.prefixed(prefix.min(n))` (an
    /// object shorter than `prefix` is all in front, with empty data). The default copies what
    /// `get` returns; a local folder reads the file straight in.
    ///
    /// # Errors
    /// As [`Backend::get`].
    fn get_into(
        &self,
        key: &str,
        limit: u64,
        prefix: usize,
        out: &mut crate::aligned_buf::AlignedBuf,
    ) -> io::Result<usize> {
        let bytes = self.get(key, limit)?;
        let prefix = prefix.min(bytes.len()).min(crate::aligned_buf::HEADROOM);
        out.with_prefix(prefix, bytes.len() - prefix)
            .copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// The object's size and time, or `None` if it does not exist.
    ///
    /// # Errors
    /// The store's error (not "not found").
    fn head(&self, key: &str) -> io::Result<Option<ObjectInfo>>;

    /// Every object whose key starts with `prefix` (which ends with `/`, or is empty for the
    /// whole repository), at any depth, sorted by key.
    ///
    /// # Errors
    /// The store's error; a missing prefix is an empty list.
    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>>;

    /// One level under `prefix` (ends with `/` or is empty), sorted by name.
    ///
    /// # Errors
    /// The store's error; a missing prefix is empty.
    fn list_dir(&self, prefix: &str) -> io::Result<DirListing>;

    /// Deletes an object; a missing one is not an error.
    ///
    /// # Errors
    /// The store's error.
    fn delete(&self, key: &str) -> io::Result<()>;

    /// The dedup check of an existing chunk: true if the object exists (and is at least
    /// `min_len` bytes). The local backend also sets its mtime to now first, which is what its
    /// rename-recheck garbage collection relies on; an object store has no touch.
    ///
    /// # Errors
    /// The store's error (not "not found").
    fn touch(&self, key: &str, min_len: u64) -> io::Result<bool> {
        Ok(self.head(key)?.is_some_and(|i| i.size >= min_len))
    }

    /// Deletes the object only if the store still reports it older than `cutoff`; returns its
    /// size when deleted. The local backend does this with rename, stat and unlink so a touch
    /// that races with it is never lost; on an object store it is a head then a delete (the
    /// exclusive lock keeps writers away; see `docs/repository-format.md`, Garbage collection).
    ///
    /// # Errors
    /// The store's error.
    fn delete_if_older(&self, key: &str, cutoff: SystemTime) -> io::Result<Option<u64>> {
        match self.head(key)? {
            Some(i) if i.modified < cutoff => {
                self.delete(key)?;
                Ok(Some(i.size))
            }
            _ => Ok(None),
        }
    }

    /// The object lock of this store: every object [`is_retained`] names is written with a
    /// compliance-mode retention of this long (plus up to [`RETENTION_MARGIN`]); `None`
    /// without object lock (and always for a local folder).
    fn object_lock(&self) -> Option<std::time::Duration> {
        None
    }

    /// Until when the object `info` describes cannot be deleted because of the object lock
    /// (measured from its store modification time); `None` when it can be.
    fn locked_until(&self, info: &ObjectInfo) -> Option<SystemTime> {
        let days = self.object_lock()?;
        if !is_retained(&info.key) {
            return None;
        }
        let until = info.modified + days + RETENTION_MARGIN;
        (until > SystemTime::now()).then_some(until)
    }

    /// Removes every object under `prefix` (and, locally, the emptied folders).
    ///
    /// # Errors
    /// The store's error.
    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        for o in self.list(prefix)? {
            self.delete(&o.key)?;
        }
        Ok(())
    }

    /// Moves an object to a key that must not exist yet (quarantine).
    ///
    /// # Errors
    /// `AlreadyExists` if `to` exists, `NotFound` if `from` does not.
    fn move_new(&self, from: &str, to: &str, limit: u64) -> io::Result<()> {
        let data = self.get(from, limit)?;
        self.create_new(to, &data)?;
        self.delete(from)
    }

    /// The store's current time: the modification time it gives a small object written now.
    /// Lock expiry and the gc cutoff are measured with it, so hosts with skewed clocks agree.
    ///
    /// # Errors
    /// The store's error.
    fn store_time(&self) -> io::Result<SystemTime> {
        let key = format!("locks/clock-{}", uuid::Uuid::new_v4().simple());
        self.create_new(&key, b"clock probe")?;
        let t = self.head(&key)?.map(|i| i.modified);
        let _ = self.delete(&key);
        t.ok_or_else(|| io::Error::new(ErrorKind::NotFound, "clock probe vanished"))
    }
}

/// How much longer than the configured lock an object may be retained: the retention date
/// sent with a write is fixed for up to an hour (see the S3 backend), and a host's clock may
/// be a little ahead of the store's. Deletions are refused for this much longer too.
pub const RETENTION_MARGIN: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// Whether an object is written with the object lock's retention: everything but the objects
/// that must be deleted or replaced while a run goes on (lock claims and heartbeats, the
/// in-progress marker of a generation, the chunk cache epoch, temporary files).
pub fn is_retained(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    !(key.starts_with(&format!("{}/", crate::format::LOCKS_DIR))
        || key == crate::chunk_cache::CACHE_EPOCH
        || name == crate::format::INCOMPLETE_MARKER
        || name.starts_with(crate::format::TEMP_PREFIX))
}

/// Refuses keys that could name something outside the repository.
///
/// # Errors
/// `InvalidInput` naming the key.
pub fn check_key(key: &str) -> io::Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("invalid object key {key:?}"),
        ));
    }
    Ok(())
}

/// A `FileTooLarge` error for an object above a read limit.
pub(crate) fn too_large(size: u64, limit: u64) -> io::Error {
    io::Error::new(
        ErrorKind::FileTooLarge,
        format!("object is {size} bytes, more than the {limit} allowed"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for k in ["", "/etc", "a//b", "a/../b", "..", "a/.", "a\\b", "x\0"] {
            assert!(check_key(k).is_err(), "{k:?}");
        }
        for k in [
            "config",
            "chunks/abcd/abcd00",
            "targets/vm-x/gen-000001/manifest",
        ] {
            check_key(k).unwrap();
        }
    }
}
