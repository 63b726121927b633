//! `files ls|get`: partitions and files of a backed-up disk, read straight from the repository
//! (only the chunks the file system structures and the wanted files occupy are loaded).
//!
//! Extraction never writes outside the output folder: names from the guest are single path
//! components (a name with `/`, NUL, `.` or `..` is refused), symlinks are created, never
//! followed, existing folders must be real folders, and files are written to a temporary name
//! and linked into place, so an existing file (or symlink) is never replaced without
//! `--overwrite` and never written through.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use guest_fs::{Disk, Entry, EntryKind, GuestFs, PartitionTable, ReadAt, TableKind};
use repository_format::{CacheOptions, CachedDiskReader, RepositoryLock};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::repo;
use crate::target::Target;

/// Which disk of which generation.
#[derive(Debug, Clone)]
pub struct DiskChoice {
    /// The target.
    pub target: Target,
    /// Generation (default: the latest successful one).
    pub generation: Option<u64>,
    /// Disk number (from 0).
    pub disk: u32,
}

/// A backed-up disk opened for file access, with its generation pinned.
pub struct OpenDisk {
    /// The generation read.
    pub generation: u64,
    /// The disk as the file system readers see it.
    pub disk: Disk,
    /// Its partition table.
    pub table: PartitionTable,
    reader: Arc<RepositoryDisk>,
    _lock: RepositoryLock,
}

/// The repository reader as a guest disk: a damaged or missing chunk becomes the I/O error
/// the file system reader reports for the file it was reading.
struct RepositoryDisk(CachedDiskReader);

impl ReadAt for RepositoryDisk {
    fn size(&self) -> u64 {
        self.0.capacity()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0
            .read_at(offset, buf)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// A partition as `files ls` lists it.
#[derive(Debug, Serialize)]
pub struct PartitionInfo {
    /// Linux's number (0: the whole disk, no table).
    pub number: u32,
    /// Byte offset.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The table's type.
    pub r#type: String,
    /// GPT name.
    pub label: String,
    /// File system (or other content) found.
    pub content: String,
    /// Whether `files` can read it.
    pub readable: bool,
}

/// Opens a disk of a generation and reads its partition table.
///
/// # Errors
/// Unknown target, generation or disk; the lock; a damaged partition table.
pub fn open(config: &Config, choice: &DiskChoice) -> Result<OpenDisk> {
    let r = repo::open(config)?;
    let (summary, _) = repo::find_configured_target(&r, &choice.target, config)?;
    // Pinned for as long as the disk is open: prune keeps the generation, gc its chunks.
    let (lock, m) = crate::instant::pin::pick_and_pin(&r, config, &summary.key, choice.generation)?;
    let disk = m.disks.get(choice.disk as usize).ok_or_else(|| {
        Error::NotInRepository(format!(
            "generation {} of {} has {} disks (numbered from 0), no disk {}",
            m.generation,
            choice.target,
            m.disks.len(),
            choice.disk
        ))
    })?;
    // File systems read small scattered blocks: a modest cache, little read-ahead.
    let opts = CacheOptions {
        cache_bytes: 64 << 20,
        read_ahead: 4,
        read_ahead_threads: 2,
    };
    let reader = CachedDiskReader::open(&r, &summary.key, m.generation, disk.disk.key, opts)?;
    let reader = Arc::new(RepositoryDisk(reader));
    let disk: Disk = reader.clone();
    let table = PartitionTable::read(&disk)?;
    Ok(OpenDisk {
        generation: m.generation.0,
        disk,
        table,
        reader,
        _lock: lock,
    })
}

impl OpenDisk {
    /// Chunks read from the repository so far (the proof that a file costs its own chunks,
    /// not a disk read).
    pub fn chunks_read(&self) -> u64 {
        self.reader.0.chunks_loaded()
    }

    /// The partitions.
    pub fn partitions(&self) -> Vec<PartitionInfo> {
        self.table
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                number: p.number,
                start: p.start,
                size: p.size,
                r#type: p.type_name.clone(),
                label: p.label.clone(),
                content: p.content.name().to_string(),
                readable: p.content.readable(),
            })
            .collect()
    }

    /// Opens the file system of partition `number` (`None`: partition 0 of a disk without a
    /// table; with a table, the caller must choose).
    ///
    /// # Errors
    /// No such partition, a table without `--partition`, content that cannot be read.
    pub fn file_system(&self, number: Option<u32>) -> Result<Box<dyn GuestFs>> {
        let number = match number {
            Some(n) => n,
            None if self.table.kind == TableKind::None => 0,
            None => {
                let readable: Vec<String> = self
                    .table
                    .partitions
                    .iter()
                    .filter(|p| p.content.readable())
                    .map(|p| format!("{} ({})", p.number, p.content))
                    .collect();
                return Err(Error::Other(format!(
                    "the disk has a {} partition table: choose a partition with --partition N (readable: {})",
                    self.table.kind.name(),
                    if readable.is_empty() { "none".into() } else { readable.join(", ") }
                )));
            }
        };
        let p = self.table.get(number)?;
        Ok(guest_fs::open(&self.disk, p)?)
    }
}

/// An entry as `files ls` lists it.
#[derive(Debug, Serialize)]
pub struct EntryInfo {
    /// Name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, where the file system has them.
    pub mode: Option<u32>,
    /// Modification time (Unix seconds).
    pub mtime: Option<i64>,
    /// Symlink target.
    pub link_target: Option<String>,
}

impl From<Entry> for EntryInfo {
    fn from(e: Entry) -> Self {
        EntryInfo {
            name: e.name,
            kind: e.kind.name(),
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
            link_target: e.link_target,
        }
    }
}

/// The entries of folder `path` (or the one entry, if `path` is not a folder).
///
/// # Errors
/// Not found, or a read error naming the path.
pub fn list(fs: &mut dyn GuestFs, path: &str) -> Result<Vec<EntryInfo>> {
    let e = fs.stat(path)?;
    if e.kind != EntryKind::Dir {
        return Ok(vec![e.into()]);
    }
    Ok(fs.list(path)?.into_iter().map(EntryInfo::from).collect())
}

/// One extracted or failed path.
#[derive(Debug, Serialize)]
pub struct Extracted {
    /// Path in the guest.
    pub path: String,
    /// Where it was written.
    pub output: PathBuf,
    /// `file`, `dir`, `symlink`.
    pub kind: &'static str,
    /// Bytes (files).
    pub size: u64,
}

/// What `files get` did.
#[derive(Debug, Default, Serialize)]
pub struct GetReport {
    /// Everything written.
    pub extracted: Vec<Extracted>,
    /// Paths that failed, with why (the others were still extracted).
    pub failed: Vec<(String, String)>,
    /// Entries not extracted on purpose (devices, FIFOs, reparse points).
    pub skipped: Vec<String>,
}

/// Extracts `paths` (files or whole folders) into `output`, each under its own name.
///
/// # Errors
/// Only when `output` cannot be created; per-path failures are in the report.
pub fn get(
    fs: &mut dyn GuestFs,
    paths: &[String],
    output: &Path,
    overwrite: bool,
) -> Result<GetReport> {
    std::fs::create_dir_all(output)
        .map_err(|e| Error::io(format!("create {}", output.display()), e))?;
    let mut report = GetReport::default();
    for path in paths {
        let guest = normalize(path);
        match fs.stat(&guest) {
            Ok(e) => {
                let name = if guest == "/" {
                    String::new()
                } else {
                    e.name.clone()
                };
                let dest = if name.is_empty() {
                    output.to_path_buf()
                } else {
                    output.join(&name)
                };
                match check_name(&name) {
                    Ok(()) => extract(fs, &guest, e, &dest, overwrite, &mut report),
                    Err(why) => report.failed.push((guest, why)),
                }
            }
            Err(e) => report.failed.push((guest, e.to_string())),
        }
    }
    Ok(report)
}

fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// A guest name must be one path component.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!(
            "refusing the name {name:?}: it is not a single file name"
        ));
    }
    Ok(())
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Extracts one entry (recursively); failures go into the report.
fn extract(
    fs: &mut dyn GuestFs,
    guest: &str,
    e: Entry,
    dest: &Path,
    overwrite: bool,
    report: &mut GetReport,
) {
    let result = match e.kind {
        EntryKind::Dir => {
            if let Err(why) = make_dir(dest) {
                report.failed.push((guest.to_string(), why));
                return;
            }
            match fs.list(guest) {
                Ok(children) => {
                    for c in children {
                        let cp = child_path(guest, &c.name);
                        if let Err(why) = check_name(&c.name) {
                            report.failed.push((cp, why));
                            continue;
                        }
                        let cd = dest.join(&c.name);
                        extract(fs, &cp, c, &cd, overwrite, report);
                    }
                }
                Err(err) => report.failed.push((guest.to_string(), err.to_string())),
            }
            // After the children: writing them changed the folder's mtime.
            set_meta(dest, &e, true).map(|()| 0)
        }
        EntryKind::File => write_file(fs, guest, &e, dest, overwrite),
        EntryKind::Symlink => make_symlink(&e, dest, overwrite).map(|()| 0),
        EntryKind::Other => {
            report.skipped.push(guest.to_string());
            return;
        }
    };
    match result {
        Ok(size) => report.extracted.push(Extracted {
            path: guest.to_string(),
            output: dest.to_path_buf(),
            kind: e.kind.name(),
            size,
        }),
        Err(why) => report.failed.push((guest.to_string(), why)),
    }
}

fn make_dir(dest: &Path) -> std::result::Result<(), String> {
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} exists and is not a folder", dest.display())),
        Err(_) => std::fs::create_dir(dest).map_err(|e| format!("create {}: {e}", dest.display())),
    }
}

/// A temporary name beside `dest`, unique to this process.
fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.safekeeping-{}.part", std::process::id()))
}

/// Moves the finished temporary file into place: without `overwrite` by a hard link, which
/// fails if anything (a file, a symlink) has the name; with it by a rename, which replaces
/// the name itself and never follows a symlink there.
fn put_in_place(tmp: &Path, dest: &Path, overwrite: bool) -> std::result::Result<(), String> {
    let r = if overwrite {
        if dest.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a folder has that name",
            ))
        } else {
            std::fs::rename(tmp, dest)
        }
    } else {
        std::fs::hard_link(tmp, dest).and_then(|()| std::fs::remove_file(tmp))
    };
    r.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            format!("{} exists (pass --overwrite to replace it)", dest.display())
        } else {
            format!("write {}: {e}", dest.display())
        }
    })
}

fn write_file(
    fs: &mut dyn GuestFs,
    guest: &str,
    e: &Entry,
    dest: &Path,
    overwrite: bool,
) -> std::result::Result<u64, String> {
    if !overwrite && dest.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists (pass --overwrite to replace it)",
            dest.display()
        ));
    }
    let tmp = temp_beside(dest);
    // create_new is O_CREAT | O_EXCL, which also refuses a symlink planted at that name.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|err| format!("create {}: {err}", tmp.display()))?;
    let mut out = SparseWriter { file, pos: 0 };
    let written = fs.read_file(guest, &mut out).and_then(|n| {
        out.finish()
            .map_err(|err| guest_fs::Error::Io {
                what: format!("write {}", tmp.display()),
                source: err,
            })
            .map(|()| n)
    });
    let n = match written {
        Ok(n) => n,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(err.to_string());
        }
    };
    set_meta(&tmp, e, false).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    put_in_place(&tmp, dest, overwrite)?;
    Ok(n)
}

fn make_symlink(e: &Entry, dest: &Path, overwrite: bool) -> std::result::Result<(), String> {
    let target = e.link_target.clone().unwrap_or_default();
    let tmp = temp_beside(dest);
    std::os::unix::fs::symlink(&target, &tmp)
        .map_err(|err| format!("create symlink {}: {err}", tmp.display()))?;
    put_in_place(&tmp, dest, overwrite)
}

/// Sets permissions (where recorded) and the modification time, never following symlinks.
fn set_meta(p: &Path, e: &Entry, dir: bool) -> std::result::Result<(), String> {
    // FAT and NTFS record no permissions: files get rw-r--r--, folders keep the default.
    if let Some(mode) = e.mode.or((!dir).then_some(0o644)) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|err| format!("set the mode of {}: {err}", p.display()))?;
    }
    if let Some(t) = e.mtime {
        let when = if t >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
        };
        let f = if dir {
            File::open(p)
        } else {
            OpenOptions::new().write(true).open(p)
        };
        f.and_then(|f| f.set_modified(when))
            .map_err(|err| format!("set the time of {}: {err}", p.display()))?;
    }
    Ok(())
}

/// Writes a file, leaving holes where whole 4 KiB blocks are zero (sparse guest files stay
/// sparse; the length is set at the end).
struct SparseWriter {
    file: File,
    pos: u64,
}

impl SparseWriter {
    fn finish(&mut self) -> io::Result<()> {
        self.file.set_len(self.pos)?;
        self.file.sync_all()
    }
}

impl Write for SparseWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Pieces end on the file's 4 KiB boundaries whatever the reader's read size (FAT
        // returns one cluster, often 512 bytes). The file only grows, so an all-zero piece
        // can always be skipped: nothing was written there before.
        let mut rest = buf;
        while !rest.is_empty() {
            let to_boundary = (4096 - (self.pos % 4096)) as usize;
            let (piece, tail) = rest.split_at(to_boundary.min(rest.len()));
            if piece.iter().all(|&b| b == 0) {
                self.file.seek(SeekFrom::Current(piece.len() as i64))?;
            } else {
                self.file.write_all(piece)?;
            }
            self.pos += piece.len() as u64;
            rest = tail;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sparse_writer_leaves_zero_blocks_unallocated_for_any_read_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut data = vec![0u8; 1 << 20];
        data[5000] = 1;
        data[(1 << 20) - 1] = 2;
        let mut w = SparseWriter {
            file: File::create(&p).unwrap(),
            pos: 0,
        };
        // 512-byte writes, as FAT delivers them.
        for piece in data.chunks(512) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let m = std::fs::metadata(&p).unwrap();
        assert!(
            m.blocks() * 512 <= 64 * 1024,
            "{} blocks allocated",
            m.blocks()
        );
    }
}
