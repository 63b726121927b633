//! One interface over the file system readers.

use std::io::Write;

use crate::disk::{Disk, Window};
use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::probe::Content;

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A device, FIFO, socket, or an NTFS reparse point: listed, not extracted.
    Other,
}

impl EntryKind {
    /// One-word name.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// A directory entry with what the file system records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name within its folder.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes (files; the target's length for symlinks).
    pub size: u64,
    /// Unix permission bits (`0o7777`), where the file system has them (ext).
    pub mode: Option<u32>,
    /// Modification time, seconds since the Unix epoch (FAT: local time read as UTC).
    pub mtime: Option<i64>,
    /// A symlink's target.
    pub link_target: Option<String>,
}

/// A guest file system opened read-only. Paths are absolute, `/`-separated.
pub trait GuestFs {
    /// The kind found.
    fn content(&self) -> Content;

    /// The entries of the folder at `path` (without `.` and `..`), sorted by name.
    ///
    /// # Errors
    /// Not found, not a folder, or a read error naming the path.
    fn list(&mut self, path: &str) -> Result<Vec<Entry>>;

    /// The entry at `path` itself (a symlink is not followed).
    ///
    /// # Errors
    /// Not found, or a read error naming the path.
    fn stat(&mut self, path: &str) -> Result<Entry>;

    /// Writes the content of the file at `path` to `out`; returns its length.
    ///
    /// # Errors
    /// Not a file, or a read error (a damaged chunk of the backup) naming the path.
    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64>;
}

/// Splits a path into its components, refusing `..` (paths name entries, they never climb).
pub(crate) fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::NotFound(path.to_string()));
    }
    Ok(parts)
}

/// Opens the file system of `partition`.
///
/// # Errors
/// [`Error::Unsupported`] naming what was found (LVM, LUKS, xfs, unknown...), or the file
/// system's own error when it cannot be opened.
pub fn open(disk: &Disk, partition: &Partition) -> Result<Box<dyn GuestFs>> {
    let w = Window::new(disk.clone(), partition.start, partition.size);
    match partition.content {
        Content::Ext2 | Content::Ext3 | Content::Ext4 => Ok(Box::new(crate::ext::Ext::open(w, partition.content)?)),
        Content::Fat => Ok(Box::new(crate::fat::Fat::open(w)?)),
        Content::Ntfs => Ok(Box::new(crate::ntfs::Ntfs::open(w)?)),
        other => Err(Error::Unsupported {
            number: partition.number,
            found: match other {
                Content::Unknown => format!("no file system safekeeping recognises (type {})", partition.type_name),
                c => c.name().to_string(),
            },
            hint: match other {
                Content::Lvm => "; LVM volumes are not assembled here: serve the disk (`safekeeping serve`) and use the host's tools (vgscan, lvchange -ay, mount), or `export` it",
                _ => "; serve the disk (`safekeeping serve`) or `export` it and mount it with the host's tools",
            },
        }),
    }
}
