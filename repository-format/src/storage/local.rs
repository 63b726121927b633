//! The local-folder backend: today's on-disk layout, one file per object.
//!
//! Writes go to a `.tmp-<random>` file in the destination folder, are fsynced, and are then
//! renamed (replace) or hard-linked (conditional create: `link` fails if the name exists, which
//! is atomic even on NFS) into place, and the folder is fsynced. Folders are created on demand
//! and made durable in their parent.
//!
//! Chunks ([`Backend::put_name_deferred`]) skip the folder fsyncs: the file is fsynced before
//! its rename, so a chunk that has its name is complete; the folders holding new (and touched)
//! chunks are fsynced together by [`Backend::sync_names`] before the generation that uses them
//! commits. A crash before that can only lose a chunk's name, which no committed generation
//! references yet; the next backup stores it again. Per chunk this saves two folder fsyncs
//! (its prefix folder, and `chunks/` when the prefix folder is new): each waits for a journal
//! commit.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
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
}

impl LocalBackend {
    /// A backend for the folder `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pending: Arc::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        // A poisoned set is still a valid set of folders to sync.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
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
        let dir = target.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        match result {
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

/// Folders fsynced at once by [`Backend::sync_names`]. Each folder fsync waits for the
/// device's cache flush even when the folder's entries are already in the journal (about
/// 1 ms on the benchmark machine's disk): one after another, the 1,300 prefix folders of a
/// 1.3 GiB full backup took 1-4 s of its commit. Concurrent flushes are merged by the block
/// layer, so a few threads make it several times shorter; the fsyncs are the same ones.
const SYNC_THREADS: usize = 16;

/// `dirs` grouped by depth, deepest group first: every folder of a group is synced before
/// any folder of the next, so a new folder is durable before the entry naming it in its
/// parent.
fn deepest_first(dirs: &BTreeSet<PathBuf>) -> Vec<Vec<PathBuf>> {
    let mut levels: std::collections::BTreeMap<usize, Vec<PathBuf>> = Default::default();
    for d in dirs {
        levels
            .entry(d.components().count())
            .or_default()
            .push(d.clone());
    }
    levels.into_values().rev().collect()
}

/// [`sync_dir`] of every folder of `dirs` on up to [`SYNC_THREADS`] threads; one result per
/// folder, in order.
fn sync_dirs(dirs: &[PathBuf]) -> Vec<io::Result<()>> {
    if dirs.len() <= 1 {
        return dirs.iter().map(|d| sync_dir(d)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<io::Result<()>>>> =
        dirs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..SYNC_THREADS.min(dirs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(dir) = dirs.get(i) else { break };
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(sync_dir(dir));
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err(io::Error::other("folder sync thread stopped")))
        })
        .collect()
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
        self.ensure_parent_deferred(&target)?;
        // The content is fsynced before the rename: a name never points at a partial file.
        let tmp = Self::write_temp(&target, data)?;
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.pending()
            .insert(target.parent().unwrap_or(&self.root).to_path_buf());
        Ok(())
    }

    fn sync_names(&self) -> io::Result<()> {
        // Held while syncing: a concurrent caller waits until the folders it may rely on (put
        // or found by another thread of this process) are durable, rather than finding the set
        // already emptied by us.
        let mut pending = self.pending();
        // Deepest first, so a new folder is durable before the entry naming it in its parent.
        // The folders of one depth are independent and are synced at the same time.
        for level in deepest_first(&pending) {
            let mut first_error = None;
            for (dir, result) in level.iter().zip(sync_dirs(&level)) {
                match result {
                    Ok(()) => {
                        pending.remove(dir);
                    }
                    // Removed since (gc of an emptied folder): nothing of ours is in it.
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        pending.remove(dir);
                    }
                    // The failed folder stays pending (and so do the shallower levels, whose
                    // entries would name something not yet durable).
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
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

    #[test]
    fn deferred_names_are_visible_at_once_and_synced_together() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalBackend::new(&root);
        b.put("chunks/.keep", b"").unwrap();
        b.put_name_deferred("chunks/ab12/ab12ff", b"chunk").unwrap();
        b.put_name_deferred("chunks/ab12/ab12ee", b"other").unwrap();
        // Readable (and complete) at once; no temporary file left beside it.
        assert_eq!(b.get("chunks/ab12/ab12ff", 10).unwrap(), b"chunk");
        let names: Vec<String> = b
            .list("chunks/ab12/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(names, ["chunks/ab12/ab12ee", "chunks/ab12/ab12ff"]);
        // The new prefix folder and `chunks/` (its new entry) wait for one sync.
        let pending: Vec<PathBuf> = b.pending().iter().cloned().collect();
        assert_eq!(pending, [root.join("chunks"), root.join("chunks/ab12")]);
        // A clone is the same folder: it syncs the same pending set.
        b.clone().sync_names().unwrap();
        assert!(b.pending().is_empty());
        // A chunk found by touch (perhaps another process's, not yet durable) is synced too.
        assert!(b.touch("chunks/ab12/ab12ff", 1).unwrap());
        assert!(!b.touch("chunks/cd34/cd34aa", 1).unwrap());
        assert_eq!(
            b.pending().iter().cloned().collect::<Vec<_>>(),
            [root.join("chunks/ab12")]
        );
        // A pending folder removed meanwhile (gc of an emptied prefix) is not an error.
        b.put_name_deferred("chunks/ef56/ef5600", b"x").unwrap();
        fs::remove_dir_all(root.join("chunks/ef56")).unwrap();
        b.sync_names().unwrap();
        assert!(b.pending().is_empty());
    }

    #[test]
    fn many_pending_folders_are_synced_together_and_results_keep_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalBackend::new(&root);
        b.put("chunks/.keep", b"").unwrap();
        for i in 0..40u32 {
            b.put_name_deferred(&format!("chunks/{i:04x}/{i:04x}00"), b"c")
                .unwrap();
        }
        assert_eq!(b.pending().len(), 41, "40 prefix folders and chunks/");
        // One of them gone meanwhile (gc): the others are still synced, without an error.
        fs::remove_dir_all(root.join("chunks/0007")).unwrap();
        b.sync_names().unwrap();
        assert!(b.pending().is_empty());
        // Each folder's own result, in order: the missing one in the middle says NotFound.
        let dirs = [
            root.join("chunks/0001"),
            root.join("chunks/0007"),
            root.join("chunks"),
        ];
        let results = sync_dirs(&dirs);
        assert!(results[0].is_ok() && results[2].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn names_are_synced_deepest_folders_first() {
        let dirs: BTreeSet<PathBuf> = [
            "/r/chunks",
            "/r/chunks/ab12",
            "/r/targets/t/gen-000001",
            "/r/chunks/ffff",
            "/r",
            "/r/targets/t",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let levels = deepest_first(&dirs);
        let depth = |level: &Vec<PathBuf>| level[0].components().count();
        assert_eq!(
            levels.iter().map(depth).collect::<Vec<_>>(),
            [5, 4, 3, 2],
            "{levels:?}"
        );
        assert_eq!(levels[1].len(), 3, "{levels:?}");
        assert_eq!(levels.iter().map(Vec::len).sum::<usize>(), dirs.len());
    }

    #[test]
    fn many_pending_folders_are_all_synced() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("r"));
        for i in 0..100u32 {
            b.put_name_deferred(&format!("chunks/{i:04x}/{i:04x}aa"), b"c")
                .unwrap();
        }
        // 100 prefix folders, `chunks/` and the root (new entries), and the root's parent.
        assert_eq!(b.pending().len(), 103);
        b.sync_names().unwrap();
        assert!(b.pending().is_empty());
        // A folder that cannot be opened (a file is in the way: ENOTDIR) stays pending and
        // is the error; the others of its level are synced and leave the set.
        let root = dir.path().join("r");
        let bad = root.join("chunks/0001/0001aa/sub");
        b.pending().insert(bad.clone());
        let good = root.join("chunks/0002/d1/d2");
        fs::create_dir_all(&good).unwrap();
        b.pending().insert(good);
        let e = b.sync_names().unwrap_err();
        assert_ne!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(b.pending().iter().cloned().collect::<Vec<_>>(), [bad]);
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
