//! The local-folder backend: today's on-disk layout, one file per object.
//!
//! Writes go to a `.tmp-<random>` file in the destination folder, are fsynced, and are then
//! renamed (replace) or hard-linked (conditional create: `link` fails if the name exists, which
//! is atomic even on NFS) into place, and the folder is fsynced. Folders are created on demand
//! and made durable in their parent.
//!
//! Chunks ([`Backend::put_name_deferred`]) are made durable in batches instead (on Linux): each
//! is written to its temporary file without an fsync; once a batch holds [`FLUSH_BYTES`] or
//! [`FLUSH_FILES`], one `syncfs` makes every file of the batch durable at once and only then
//! are they renamed to their names, so a chunk that has its name is complete. The folders
//! holding new (and touched) chunks are made durable together by [`Backend::sync_names`] (the
//! last batch, then one more `syncfs`) before the generation that uses them commits. A crash
//! before that can only lose chunks or their names, which no committed generation references
//! yet; the next backup stores them again, and gc removes the temporary files left behind.
//! Per chunk this saves a file fsync and two folder fsyncs, each of which waits for the
//! device (and, on a journalled file system, a journal commit): on the benchmark machine the
//! fsyncs were about a tenth of a full backup's time. Elsewhere each chunk file is fsynced
//! before its rename and the folders are fsynced one by one.
//!
//! On Linux a chunk file is written with direct I/O (`O_DIRECT`) when the blob starts on a page
//! boundary (the ingest encodes into page-aligned buffers): its pages go from the buffer to the
//! device, not through the page cache (see [`direct_io`]).
//!
//! `syncfs` reports write-back errors since Linux 5.8; a failed batch fails every later
//! deferred write and [`Backend::sync_names`] of this backend, so no generation commits over
//! chunks that may not be on disk.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{check_key, too_large, Backend, DirListing, ObjectInfo};
use crate::format::TEMP_PREFIX;

/// A repository in a local (or mounted) folder.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
    /// Folders whose entries (new or found objects) must be fsynced by the next
    /// [`Backend::sync_names`]. Shared by clones: they are the same folder.
    pending: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Chunk files written but not yet made durable and named (see the module docs). Shared
    /// by clones.
    unflushed: Arc<Batch>,
    /// Whether chunk files are still written with direct I/O (see `direct_io::write_chunk_file`):
    /// cleared, for every clone, the first time the file system or device refuses it.
    direct: Arc<AtomicBool>,
}

/// A batch flush (`syncfs`, then the renames) starts once this many bytes wait in it.
pub(crate) const FLUSH_BYTES: u64 = 64 << 20;

/// ... or once this many files wait in it.
pub(crate) const FLUSH_FILES: usize = 512;

/// Chunk files of [`Backend::put_name_deferred`] waiting for their flush.
#[derive(Debug, Default)]
struct Batch {
    waiting: Mutex<Waiting>,
    /// Held for a whole flush (take, `syncfs`, renames), so that [`Backend::sync_names`]
    /// returns only after every flush started before it, whoever started it, has named its
    /// files.
    flushing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Waiting {
    /// (temporary file, its name once durable).
    files: Vec<(PathBuf, PathBuf)>,
    bytes: u64,
    /// A flush of a full batch runs (or waits to run) on a thread of its own.
    flush_started: bool,
    /// Why a flush failed, if one did: every later deferred write and sync fails with it
    /// (which chunks were lost is not known to the ingests that claimed them).
    failed: Option<(ErrorKind, String)>,
}

impl Batch {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A poisoned list is still a valid list of files.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> io::Result<()> {
        match &self.waiting().failed {
            Some((kind, msg)) => Err(io::Error::new(
                *kind,
                format!("an earlier batch of chunk files could not be made durable: {msg}"),
            )),
            None => Ok(()),
        }
    }

    /// Makes every waiting file durable and gives it its name; adds the folders of the new
    /// names to `pending` (for [`Backend::sync_names`]) before another flush or sync can
    /// start. On failure the batch's temporary files are removed and the failure is kept (see
    /// [`Waiting::failed`]).
    fn flush(&self, pending: &Mutex<BTreeSet<PathBuf>>) -> io::Result<()> {
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let files = {
            let mut w = self.waiting();
            w.bytes = 0;
            w.flush_started = false;
            std::mem::take(&mut w.files)
        };
        let mut dirs = BTreeSet::new();
        if files.is_empty() {
            return self.check();
        }
        let synced = sync_filesystems(files.iter().filter_map(|(tmp, _)| tmp.parent()));
        let mut result = synced;
        for (tmp, target) in &files {
            if result.is_ok() {
                match fs::rename(tmp, target) {
                    Ok(()) => {
                        dirs.insert(target.parent().unwrap_or(Path::new(".")).to_path_buf());
                        continue;
                    }
                    Err(e) => result = Err(e),
                }
            }
            let _ = fs::remove_file(tmp);
        }
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(dirs);
        if let Err(e) = result {
            let mut w = self.waiting();
            w.failed.get_or_insert((e.kind(), e.to_string()));
            return Err(e);
        }
        self.check()
    }
}

impl Drop for Batch {
    /// Files never flushed (the ingest stopped, or the process gives up the repository) are
    /// not chunks yet: nothing names them, so they are removed rather than left for gc.
    fn drop(&mut self) {
        let w = self.waiting.get_mut().unwrap_or_else(|p| p.into_inner());
        for (tmp, _) in w.files.drain(..) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// One `syncfs` per file system holding one of `dirs` (a repository may have a folder
/// mounted from another disk).
#[cfg(target_os = "linux")]
fn sync_filesystems<'a>(dirs: impl Iterator<Item = &'a Path>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut devices = Vec::new();
    for dir in dirs {
        if seen.insert(dir) {
            let d = File::open(dir)?;
            let dev = d.metadata()?.dev();
            if !devices.iter().any(|(known, _)| *known == dev) {
                devices.push((dev, d));
            }
        }
    }
    for (_, d) in devices {
        nix::unistd::syncfs(d.as_raw_fd()).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Without `syncfs`: each folder is fsynced, deepest first (a new folder is durable before
/// the entry naming it in its parent); the files were fsynced when written.
#[cfg(not(target_os = "linux"))]
fn sync_filesystems<'a>(dirs: impl Iterator<Item = &'a Path>) -> io::Result<()> {
    let mut dirs: Vec<&Path> = dirs.collect::<BTreeSet<_>>().into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.into_iter().try_for_each(sync_dir)
}

impl LocalBackend {
    /// A backend for the folder `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pending: Arc::default(),
            unflushed: Arc::default(),
            direct: Arc::new(AtomicBool::new(cfg!(target_os = "linux"))),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        // A poisoned set is still a valid set of folders to sync.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the chunk blob `data` to a fresh temporary file beside `target`: on Linux without
    /// an fsync (a batch flush makes it durable) and with direct I/O where it can
    /// (`direct_io::write_chunk_file`); elsewhere through the page cache, with an fsync.
    fn write_temp_unsynced(&self, target: &Path, data: &[u8]) -> io::Result<PathBuf> {
        #[cfg(target_os = "linux")]
        if self.direct.load(Ordering::Relaxed) && direct_io::suits(data) {
            return Self::with_temp_file(target, |tmp| {
                direct_io::write_chunk_file(tmp, data, &self.direct)
            });
        }
        Self::write_temp_file(target, data, !cfg!(target_os = "linux"))
    }

    /// Creates the folder of `path` (and its parents inside the root), leaving the new
    /// entries' durability to [`Backend::sync_names`].
    fn ensure_parent_deferred(&self, path: &Path) -> io::Result<()> {
        let Some(dir) = path.parent() else {
            return Ok(());
        };
        if dir.is_dir() {
            return Ok(());
        }
        if dir != self.root {
            self.ensure_parent_deferred(dir)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    self.pending().insert(parent.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn dir_path(&self, prefix: &str) -> io::Result<PathBuf> {
        let p = prefix.trim_end_matches('/');
        if p.is_empty() {
            return Ok(self.root.clone());
        }
        self.path(p)
    }

    /// Creates the folder of `path` (and its parents inside the root) durably.
    fn ensure_parent(&self, path: &Path) -> io::Result<()> {
        let Some(dir) = path.parent() else {
            return Ok(());
        };
        if dir.is_dir() {
            return Ok(());
        }
        if dir != self.root {
            self.ensure_parent(dir)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes `data` to a fresh temporary file beside `target` and fsyncs it.
    fn write_temp(target: &Path, data: &[u8]) -> io::Result<PathBuf> {
        Self::write_temp_file(target, data, true)
    }

    /// Writes `data` to a fresh temporary file beside `target`, fsynced if `sync`; a failed
    /// write leaves no file behind.
    fn write_temp_file(target: &Path, data: &[u8], sync: bool) -> io::Result<PathBuf> {
        Self::with_temp_file(target, |tmp| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
            f.write_all(data)?;
            if sync {
                f.sync_all()?;
            }
            Ok(())
        })
    }

    /// Runs `write` on a fresh temporary file name beside `target` and returns the name; a
    /// failed write leaves no file behind.
    fn with_temp_file(
        target: &Path,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        match write(&tmp) {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn walk(&self, dir: &Path, key_prefix: &str, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("{key_prefix}{name}");
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Removed since the listing (a concurrent gc or commit).
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                self.walk(&entry.path(), &format!("{key}/"), out)?;
            } else {
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
        Ok(())
    }
}

/// fsync of a folder, so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Test hooks between the steps of [`sweep_file`].
#[derive(Default)]
pub(crate) struct SweepHooks<'a> {
    pub after_first_stat: Option<&'a dyn Fn()>,
    pub after_rename: Option<&'a dyn Fn()>,
    /// Called by gc between listing the chunks and listing the generations again.
    pub after_scan: Option<&'a dyn Fn()>,
}

/// Deletes `path` only if its mtime is older than `cutoff`, with a rename-recheck so that a
/// touch racing with the sweep is never lost: stat; rename to a temporary name; stat again and
/// rename back if it was touched meanwhile; else unlink. Returns the bytes freed.
pub(crate) fn sweep_file(
    path: &Path,
    cutoff: SystemTime,
    hooks: &SweepHooks<'_>,
) -> io::Result<Option<u64>> {
    let t = match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if t >= cutoff {
        return Ok(None);
    }
    if let Some(h) = hooks.after_first_stat {
        h();
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let trash = dir.join(format!("{TEMP_PREFIX}gc-{}", uuid::Uuid::new_v4().simple()));
    match fs::rename(path, &trash) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    if let Some(h) = hooks.after_rename {
        h();
    }
    let m = fs::metadata(&trash)?;
    if m.modified()? >= cutoff {
        // Touched between the first stat and the rename: it is in use, put it back.
        fs::rename(&trash, path)?;
        return Ok(None);
    }
    fs::remove_file(&trash)?;
    Ok(Some(m.len()))
}

impl Backend for LocalBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn display_path(&self, key: &str) -> PathBuf {
        if key.is_empty() {
            self.root.clone()
        } else {
            self.root.join(key)
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn create_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let target = self.path(key)?;
        self.ensure_parent(&target)?;
        let tmp = Self::write_temp(&target, data)?;
        let result = match fs::hard_link(&tmp, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
            // File systems without hard links (some SMB and FUSE mounts): a rename that
            // refuses to replace is just as exclusive.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Unsupported | ErrorKind::PermissionDenied
                ) =>
            {
                rename_noreplace(&tmp, &target)
            }
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&tmp);
        result?;
        sync_dir(target.parent().unwrap_or(&self.root))
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let target = self.path(key)?;
        self.ensure_parent(&target)?;
        let tmp = Self::write_temp(&target, data)?;
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(target.parent().unwrap_or(&self.root))
    }

    fn put_name_deferred(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let target = self.path(key)?;
        self.unflushed.check()?;
        self.ensure_parent_deferred(&target)?;
        let tmp = self.write_temp_unsynced(&target, data)?;
        let (start, wait) = {
            let mut w = self.unflushed.waiting();
            w.files.push((tmp, target));
            w.bytes += data.len() as u64;
            let full = w.bytes >= FLUSH_BYTES || w.files.len() >= FLUSH_FILES;
            let start = full && !w.flush_started;
            w.flush_started |= start;
            // Writing faster than flushes finish: this writer flushes itself, and so waits.
            let wait = w.bytes >= FLUSH_BYTES * 4 || w.files.len() >= FLUSH_FILES * 4;
            (start, wait)
        };
        if wait {
            return self.unflushed.flush(&self.pending);
        }
        if start {
            // The flush waits for the device; on a thread of its own, so that this writer (and
            // the chunk buffer it would hold meanwhile) carries on. Its failure is kept in the
            // batch and reported by the next write or sync.
            let batch = Arc::clone(&self.unflushed);
            let pending = Arc::clone(&self.pending);
            let spawned = std::thread::Builder::new()
                .name("chunk-flush".into())
                .spawn(move || {
                    let _ = batch.flush(&pending);
                });
            if spawned.is_err() {
                return self.unflushed.flush(&self.pending);
            }
        }
        Ok(())
    }

    fn sync_names(&self) -> io::Result<()> {
        // The chunks still waiting in a batch first, after any flush already running.
        self.unflushed.flush(&self.pending)?;
        // Held while syncing: a concurrent caller waits until the folders it may rely on (put
        // or found by another thread of this process) are durable, rather than finding the set
        // already emptied by us.
        let mut pending = self.pending();
        // One `syncfs` per file system makes every pending folder's entries durable at once,
        // deepest or not (the kernel writes all of a file system's dirty metadata). A folder
        // removed meanwhile (gc of an emptied prefix) holds nothing of ours.
        let existing: Vec<PathBuf> = pending.iter().filter(|d| d.exists()).cloned().collect();
        sync_filesystems(existing.iter().map(PathBuf::as_path))?;
        pending.clear();
        Ok(())
    }

    fn get(&self, key: &str, limit: u64) -> io::Result<Vec<u8>> {
        let path = self.path(key)?;
        let f = File::open(&path)?;
        let len = f.metadata()?.len();
        if len > limit {
            return Err(too_large(len, limit));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(too_large(buf.len() as u64, limit));
        }
        Ok(buf)
    }

    fn get_into(
        &self,
        key: &str,
        limit: u64,
        prefix: usize,
        out: &mut crate::aligned_buf::AlignedBuf,
    ) -> io::Result<usize> {
        let path = self.path(key)?;
        #[cfg(target_os = "linux")]
        if self.direct.load(Ordering::Relaxed) {
            if let Some(read) = direct_io::read_blob(&path, limit, prefix, out, &self.direct) {
                return read;
            }
        }
        let mut f = File::open(&path)?;
        let len = f.metadata()?.len();
        if len > limit {
            return Err(too_large(len, limit));
        }
        // `len <= limit`, a buffer size: it fits a usize.
        let len = len as usize;
        let want = prefix.min(crate::aligned_buf::HEADROOM);
        let prefix = want.min(len);
        // One read of the file's size, into place.
        f.read_exact(out.with_prefix(prefix, len - prefix))?;
        // As `get`: a file that grew since its size was taken is read whole (and then fails
        // its blob check), not silently cut at the old size.
        let mut rest = Vec::new();
        (&mut f)
            .take(limit + 1 - len as u64)
            .read_to_end(&mut rest)?;
        if rest.is_empty() {
            return Ok(len);
        }
        let total = len + rest.len();
        if total as u64 > limit {
            return Err(too_large(total as u64, limit));
        }
        let mut whole = out.prefixed(prefix).to_vec();
        whole.extend_from_slice(&rest);
        let prefix = want.min(total);
        out.with_prefix(prefix, total - prefix)
            .copy_from_slice(&whole);
        Ok(total)
    }

    fn head(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                modified: m.modified()?,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        let dir = self.dir_path(prefix)?;
        let key_prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let mut out = Vec::new();
        self.walk(&dir, &key_prefix, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_dir(&self, prefix: &str) -> io::Result<DirListing> {
        let dir = self.dir_path(prefix)?;
        let key_prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DirListing::default()),
            Err(e) => return Err(e),
        };
        let mut out = DirListing::default();
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                out.dirs.push(name);
            } else {
                out.objects.push(ObjectInfo {
                    key: format!("{key_prefix}{name}"),
                    size: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
        out.dirs.sort();
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn touch(&self, key: &str, min_len: u64) -> io::Result<bool> {
        let path = self.path(key)?;
        // Set-then-stat: what makes the rename-recheck sweep safe (see `sweep_file`).
        match filetime::set_file_mtime(&path, filetime::FileTime::now()) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        match fs::metadata(&path) {
            Ok(m) => {
                // Found: possibly just written by another process whose folder fsync is still
                // to come; our commit must not rely on its name before it is durable.
                self.pending()
                    .insert(path.parent().unwrap_or(&self.root).to_path_buf());
                Ok(m.len() >= min_len)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn delete_if_older(&self, key: &str, cutoff: SystemTime) -> io::Result<Option<u64>> {
        sweep_file(&self.path(key)?, cutoff, &SweepHooks::default())
    }

    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        let dir = self.dir_path(prefix)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // Drop emptied parent folders below the top level (`targets/<key>` once its last
        // generation goes), never the top-level folders themselves.
        let mut parent = dir.parent();
        while let Some(cur) = parent {
            sync_dir(cur)?;
            let deep = cur
                .strip_prefix(&self.root)
                .is_ok_and(|r| r.components().count() >= 2);
            if !deep || fs::remove_dir(cur).is_err() {
                break;
            }
            parent = cur.parent();
        }
        Ok(())
    }

    fn move_new(&self, from: &str, to: &str, _limit: u64) -> io::Result<()> {
        let from_path = self.path(from)?;
        let to_path = self.path(to)?;
        if fs::symlink_metadata(&to_path).is_ok() {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists", to_path.display()),
            ));
        }
        self.ensure_parent(&to_path)?;
        rename_noreplace(&from_path, &to_path)?;
        sync_dir(to_path.parent().unwrap_or(&self.root))?;
        sync_dir(from_path.parent().unwrap_or(&self.root))
    }

    fn store_time(&self) -> io::Result<SystemTime> {
        // The file system's clock is the host's (or the file server's, which sets mtimes on
        // NFS): a probe file tells which.
        let probe = self.root.join(crate::format::LOCKS_DIR).join(format!(
            "{TEMP_PREFIX}clock-{}",
            uuid::Uuid::new_v4().simple()
        ));
        if let Some(dir) = probe.parent() {
            if !dir.is_dir() {
                return Ok(SystemTime::now());
            }
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        let t = f.metadata()?.modified();
        drop(f);
        let _ = fs::remove_file(&probe);
        t
    }
}

/// Chunk files written with direct I/O.
///
/// A backup writes each new chunk once and reads it again only when restoring, usually much
/// later: through the page cache every chunk byte is copied into a newly allocated page cache
/// page and written back by the kernel later, and a large backup evicts the backup host's
/// useful cache. Written directly, the blob's whole pages go from the ingest's buffer to the
/// device during `write`, and only the last partial page (and the metadata) is left for the
/// batch's `syncfs`, which also flushes the device's write cache: durability is unchanged.
/// Measured on the benchmark disk (docs/benchmarks.md, session 11): a full backup's kernel time
/// 0.42–0.47 s against 0.51–1.19 s (once 8.2 s) through the page cache, and a data phase that
/// no longer depends on how quickly the kernel finds free pages for the page cache.
#[cfg(target_os = "linux")]
mod direct_io {
    use std::fs::{File, OpenOptions};
    use std::io::{self, ErrorKind};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::fcntl::{fcntl, FcntlArg, OFlag};

    /// Alignment of the memory, file offsets and lengths of a direct write: a page, which
    /// covers every logical block size Linux file systems use for it.
    pub(super) const ALIGN: usize = 4096;

    /// Whether `data` can be written directly: it starts on a page boundary and holds at least
    /// one whole page (a smaller blob goes through the page cache whole).
    pub(super) fn suits(data: &[u8]) -> bool {
        data.len() >= ALIGN && data.as_ptr().align_offset(ALIGN) == 0
    }

    /// Writes `data` into the new file `tmp`: its whole pages with `O_DIRECT`, the last
    /// partial page through the page cache. A file system that refuses `O_DIRECT` at open
    /// (`EINVAL`: tmpfs, some FUSE and network file systems), or a device that refuses the
    /// first direct write, clears `direct` and gets the whole blob through the page cache.
    pub(super) fn write_chunk_file(tmp: &Path, data: &[u8], direct: &AtomicBool) -> io::Result<()> {
        let f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(tmp)
        {
            Ok(f) => f,
            Err(e) if refused(&e) => {
                direct.store(false, Ordering::Relaxed);
                // The refused open may have created the file: the name is ours (random).
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(tmp)?;
                return f.write_all_at(data, 0);
            }
            Err(e) => return Err(e),
        };
        let body = data.len() / ALIGN * ALIGN;
        let mut done = 0;
        while done < body {
            match f.write_at(&data[done..body], done as u64) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                // A short direct write (rare: a signal, or the device's limits) continues while
                // it stays page-aligned; otherwise the rest goes through the page cache.
                Ok(n) if (done + n) % ALIGN == 0 => done += n,
                Ok(n) => {
                    done += n;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if done == 0 && refused(&e) => {
                    direct.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        buffered(&f)?;
        f.write_all_at(&data[done..], done as u64)
    }

    /// Reads the blob file `path` into `out` as [`super::Backend::get_into`] does, directly from
    /// the device: a restore reads each chunk once, usually long after the backup wrote it, so
    /// the page cache would only add a copy and a page allocation per page, and evict the
    /// host's useful cache. `None` when the caller should read through the page cache instead:
    /// a file smaller than a page, a buffer that is not page-aligned, a file that changed size
    /// while read (the buffered read reports it), or a file system without direct I/O (which
    /// also clears `direct`).
    pub(super) fn read_blob(
        path: &Path,
        limit: u64,
        prefix: usize,
        out: &mut crate::aligned_buf::AlignedBuf,
        direct: &AtomicBool,
    ) -> Option<io::Result<usize>> {
        let f = match OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
        {
            Ok(f) => f,
            Err(e) if refused(&e) => {
                direct.store(false, Ordering::Relaxed);
                return None;
            }
            Err(e) => return Some(Err(e)),
        };
        let len = match f.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Some(Err(e)),
        };
        if len > limit {
            return Some(Err(super::too_large(len, limit)));
        }
        // `len <= limit`, a buffer size: it fits a usize.
        let len = len as usize;
        if len < ALIGN {
            return None;
        }
        let region = out.direct_read_region(len)?;
        let mut done = 0;
        loop {
            match f.read_at(&mut region[done..], done as u64) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    if done >= len {
                        break;
                    }
                    // A short read off a page boundary before the end: not one direct I/O can
                    // continue; read it the usual way.
                    if done % ALIGN != 0 {
                        return None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if done == 0 && refused(&e) => {
                    direct.store(false, Ordering::Relaxed);
                    return None;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        // More than the size taken: the file is not the one measured; the usual read reports it.
        if done != len {
            return None;
        }
        out.settle_read(len, prefix);
        Some(Ok(len))
    }

    /// `EINVAL`: what Linux answers to a direct I/O it does not support (at open) or whose
    /// alignment it rejects (at write); `EOPNOTSUPP`, what some FUSE and network file systems
    /// answer instead.
    fn refused(e: &io::Error) -> bool {
        use nix::errno::Errno;
        matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(Errno::EINVAL | Errno::EOPNOTSUPP)
        )
    }

    /// Turns `O_DIRECT` off on `f`, so the unaligned rest is written through the page cache.
    fn buffered(f: &File) -> io::Result<()> {
        let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_DIRECT;
        fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        Ok(())
    }
}

/// Renames `from` to `to` only if `to` does not exist (Linux `renameat2(RENAME_NOREPLACE)`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        nix::fcntl::renameat2(
            None,
            from,
            None,
            to,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(io::Error::from)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        if to.exists() {
            return Err(io::Error::new(ErrorKind::AlreadyExists, "exists"));
        }
        fs::rename(from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aligned_buf::AlignedBuf;
    #[cfg(target_os = "linux")]
    use std::os::unix::fs::OpenOptionsExt;

    /// Blobs of every length around a page boundary, aligned (written directly where the file
    /// system allows) or not (through the page cache), read back byte for byte once named.
    #[test]
    fn deferred_chunks_of_any_length_and_alignment_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        let mut expected = Vec::new();
        for (i, len) in [
            0,
            1,
            4095,
            4096,
            4097,
            3 * 4096 + 100,
            (1 << 20) + 5,
            2 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j * 7 + i * 13) as u8).collect();
            let mut aligned = AlignedBuf::zeroed(len);
            aligned.copy_from_slice(&data);
            assert!(aligned.is_aligned());
            // The same bytes one byte off a page boundary: never written directly.
            let mut shifted = vec![0u8; len + 1];
            shifted[1..].copy_from_slice(&data);
            let aligned_key = format!("chunks/{i:04x}/a");
            let shifted_key = format!("chunks/{i:04x}/s");
            b.put_name_deferred(&aligned_key, &aligned).unwrap();
            b.put_name_deferred(&shifted_key, &shifted[1..]).unwrap();
            expected.push((aligned_key, data.clone()));
            expected.push((shifted_key, data));
        }
        b.sync_names().unwrap();
        let mut out = AlignedBuf::zeroed(0);
        for (key, data) in &expected {
            assert_eq!(&b.get(key, 4 << 20).unwrap(), data, "{key}");
            // And as a restore reads them (directly, from a page up): the first 24 bytes in
            // front of the aligned data start.
            assert_eq!(b.get_into(key, 4 << 20, 24, &mut out).unwrap(), data.len());
            assert_eq!(out.prefixed(data.len().min(24)), &data[..], "{key}");
            assert_eq!(&out[..], &data[data.len().min(24)..], "{key}");
            assert!(out.is_aligned());
        }
        let last = &expected.last().unwrap().0;
        let too_large = b.get_into(last, (2 << 20) - 1, 24, &mut out).unwrap_err();
        assert_eq!(too_large.kind(), ErrorKind::FileTooLarge);
        assert!(temp_files(&b, "chunks/").is_empty());
    }

    /// A direct write the kernel refuses (here: memory off a page boundary, which ext4 and
    /// most file systems reject with `EINVAL`) is written through the page cache instead, whole
    /// and in place, and direct I/O is not tried again.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_direct_write_falls_back_to_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * 4096 + 17).map(|j| (j % 253) as u8).collect();
        let mut shifted = vec![0u8; data.len() + 8];
        shifted[8..].copy_from_slice(&data);
        let direct = AtomicBool::new(true);
        let tmp = dir.path().join("t");
        direct_io::write_chunk_file(&tmp, &shifted[8..], &direct).unwrap();
        assert_eq!(fs::read(&tmp).unwrap(), data);
        // Where the file system does refuse it (ext4, the usual test folder), the backend stops
        // trying; a file system that accepts any alignment leaves it on.
        let refuses = {
            let probe = dir.path().join("probe");
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
                .open(&probe);
            match f {
                Ok(f) => {
                    std::os::unix::fs::FileExt::write_at(&f, &shifted[8..8 + 4096], 0).is_err()
                }
                Err(_) => true,
            }
        };
        assert_eq!(direct.load(Ordering::Relaxed), !refuses);
    }

    /// On a file system without direct I/O (tmpfs before Linux 6.6), chunks are still written
    /// and named.
    #[cfg(target_os = "linux")]
    #[test]
    fn chunks_are_written_where_direct_io_is_not_supported() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let b = LocalBackend::new(dir.path());
        let mut blob = AlignedBuf::zeroed(2 * 4096 + 3);
        blob.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
        b.put_name_deferred("chunks/0a0a/x", &blob).unwrap();
        b.sync_names().unwrap();
        assert_eq!(b.get("chunks/0a0a/x", 1 << 20).unwrap(), &blob[..]);
    }

    #[test]
    fn get_into_puts_the_header_in_front_of_aligned_data() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        let object: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        b.put("chunks/0001/x", &object).unwrap();
        let mut out = AlignedBuf::zeroed(0);
        assert_eq!(
            b.get_into("chunks/0001/x", 1 << 20, 24, &mut out).unwrap(),
            10_000
        );
        assert!(out.is_aligned());
        assert_eq!(&out[..], &object[24..]);
        assert_eq!(out.prefixed(24), &object[..]);
        // Shorter than the header: all of it in front, no data.
        b.put("chunks/0001/y", b"short").unwrap();
        assert_eq!(
            b.get_into("chunks/0001/y", 1 << 20, 24, &mut out).unwrap(),
            5
        );
        assert!(out.is_empty());
        assert_eq!(out.prefixed(5), b"short");
        // Over the limit, or missing: as `get`.
        let big = b
            .get_into("chunks/0001/x", 9_999, 24, &mut out)
            .unwrap_err();
        assert_eq!(big.kind(), ErrorKind::FileTooLarge);
        let gone = b
            .get_into("chunks/0001/z", 1 << 20, 24, &mut out)
            .unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
    }

    /// The temporary files of `dir` (recursively).
    fn temp_files(b: &LocalBackend, prefix: &str) -> Vec<String> {
        b.list(prefix)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.rsplit('/').next().unwrap().starts_with(TEMP_PREFIX))
            .collect()
    }

    /// Waits (10 s at most) until no temporary file is left under `chunks/`.
    fn wait_for_flush(b: &LocalBackend) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !temp_files(b, "chunks/").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch was not flushed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn deferred_chunks_are_named_by_the_sync_of_their_batch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalBackend::new(&root);
        b.put("chunks/.keep", b"").unwrap();
        b.put_name_deferred("chunks/ab12/ab12ff", b"chunk").unwrap();
        b.put_name_deferred("chunks/ab12/ab12ee", b"other").unwrap();
        // Not named before their flush: nothing can find a chunk that may not be on disk.
        assert_eq!(
            b.get("chunks/ab12/ab12ff", 10).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(!b.touch("chunks/ab12/ab12ff", 1).unwrap());
        assert_eq!(temp_files(&b, "chunks/").len(), 2);
        // A clone is the same folder: its sync flushes the same batch.
        b.clone().sync_names().unwrap();
        assert_eq!(b.get("chunks/ab12/ab12ff", 10).unwrap(), b"chunk");
        let names: Vec<String> = b
            .list("chunks/ab12/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(names, ["chunks/ab12/ab12ee", "chunks/ab12/ab12ff"]);
        assert!(b.pending().is_empty());
        // A chunk found by touch (perhaps another process's, not yet durable) waits for the
        // next sync too.
        assert!(b.touch("chunks/ab12/ab12ff", 1).unwrap());
        assert!(!b.touch("chunks/cd34/cd34aa", 1).unwrap());
        assert_eq!(
            b.pending().iter().cloned().collect::<Vec<_>>(),
            [root.join("chunks/ab12")]
        );
        // A pending folder removed meanwhile (gc of an emptied prefix) is not an error.
        b.put_name_deferred("chunks/ef56/ef5600", b"x").unwrap();
        b.sync_names().unwrap();
        fs::remove_dir_all(root.join("chunks/ef56")).unwrap();
        b.pending().insert(root.join("chunks/ef56"));
        b.sync_names().unwrap();
        assert!(b.pending().is_empty());
    }

    #[test]
    fn a_full_batch_is_flushed_and_named_without_waiting_for_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("r"));
        for i in 0..FLUSH_FILES as u32 {
            b.put_name_deferred(&format!("chunks/{:04x}/{i:08x}", i % 3), b"c")
                .unwrap();
        }
        // The last file filled the batch: its flush (on a thread of its own) names them all and
        // leaves no temporary file.
        wait_for_flush(&b);
        assert!(b.unflushed.waiting().files.is_empty());
        assert_eq!(b.list("chunks/").unwrap().len(), FLUSH_FILES);
        assert!(temp_files(&b, "chunks/").is_empty());
        // Their folders still wait for the sync (their new entries).
        assert!(b.pending().contains(&dir.path().join("r/chunks/0001")));
        b.sync_names().unwrap();
        assert!(b.pending().is_empty());
        // Bytes fill a batch too.
        let big = vec![7u8; (FLUSH_BYTES / 2) as usize + 1];
        b.put_name_deferred("chunks/0009/big1", &big).unwrap();
        assert_eq!(temp_files(&b, "chunks/").len(), 1);
        b.put_name_deferred("chunks/0009/big2", &big).unwrap();
        wait_for_flush(&b);
        assert_eq!(b.get("chunks/0009/big2", FLUSH_BYTES).unwrap(), big);
    }

    #[test]
    fn a_failed_flush_fails_every_later_write_and_sync_and_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalBackend::new(&root);
        b.put_name_deferred("chunks/ab12/ab12ff", b"chunk").unwrap();
        b.put_name_deferred("chunks/cd34/cd34ff", b"other").unwrap();
        // Its folder (and the file in it) vanish before the flush: it cannot be made durable.
        fs::remove_dir_all(root.join("chunks/ab12")).unwrap();
        let e = b.sync_names().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        // The other chunk of the batch is not named either, and its file is gone.
        assert!(b.head("chunks/cd34/cd34ff").unwrap().is_none());
        assert!(temp_files(&b, "chunks/").is_empty());
        // Whoever claimed a chunk of that batch cannot commit over it: every later write and
        // sync of this backend (and its clones) fails with the first failure.
        let later = b
            .clone()
            .put_name_deferred("chunks/ef56/ef56ff", b"x")
            .unwrap_err();
        assert!(
            later.to_string().contains("could not be made durable"),
            "{later}"
        );
        assert!(b.sync_names().is_err());
    }

    #[test]
    fn unflushed_files_are_removed_when_the_backend_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalBackend::new(&root);
        b.put_name_deferred("chunks/ab12/ab12ff", b"chunk").unwrap();
        let clone = b.clone();
        drop(b);
        // A clone still holds the batch.
        assert_eq!(temp_files(&clone, "chunks/").len(), 1);
        drop(clone);
        let left: Vec<_> = fs::read_dir(root.join("chunks/ab12")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn create_new_is_exclusive_and_put_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("r"));
        b.create_new("a/b/c", b"one").unwrap();
        let e = b.create_new("a/b/c", b"two").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(b.get("a/b/c", 10).unwrap(), b"one");
        b.put("a/b/c", b"three").unwrap();
        assert_eq!(b.get("a/b/c", 10).unwrap(), b"three");
        assert_eq!(
            b.get("a/b/c", 4).unwrap_err().kind(),
            ErrorKind::FileTooLarge
        );
        assert_eq!(b.get("a/b/x", 4).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(b.head("a/b/x").unwrap().is_none());
        assert_eq!(b.head("a/b/c").unwrap().unwrap().size, 5);
        let l = b.list_dir("a/").unwrap();
        assert_eq!(l.dirs, vec!["b".to_string()]);
        assert!(l.objects.is_empty());
        let all = b.list("").unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].key, "a/b/c");
        b.delete("a/b/c").unwrap();
        b.delete("a/b/c").unwrap();
        assert!(b.list("a/").unwrap().is_empty());
        assert!(b.get("../x", 10).is_err());
    }

    #[test]
    fn concurrent_creates_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..8 {
                let (b, wins) = (&b, &wins);
                s.spawn(move || {
                    if b.create_new("x/manifest", format!("{i}").as_bytes())
                        .is_ok()
                    {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
    }
}
