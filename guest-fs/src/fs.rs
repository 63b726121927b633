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
    let content = partition.content;
    let opened: Result<Box<dyn GuestFs>> = match content {
        Content::Ext2 | Content::Ext3 | Content::Ext4 => {
            guarded("/", || Ok(Box::new(crate::ext::Ext::open(w, content)?) as Box<dyn GuestFs>))
        }
        Content::Fat => guarded("/", || Ok(Box::new(crate::fat::Fat::open(w)?) as Box<dyn GuestFs>)),
        Content::Ntfs => guarded("/", || Ok(Box::new(crate::ntfs::Ntfs::open(w)?) as Box<dyn GuestFs>)),
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
    };
    opened.map(|inner| {
        Box::new(Guarded {
            inner,
            poisoned: false,
        }) as Box<dyn GuestFs>
    })
}

/// Runs a file system crate's code, turning a panic (a crate's assertion tripped by a damaged
/// or hostile file system) into an error for the path: a bad guest disk must not abort the
/// process.
fn guarded<T>(path: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::FileSystem {
            path: path.to_string(),
            message:
                "the file system reader stopped on inconsistent data (the file system is damaged)"
                    .into(),
        })
    })
}

/// A file system whose calls are [`guarded`]; after a panic it refuses further calls, since
/// the reader's state can no longer be trusted.
struct Guarded {
    inner: Box<dyn GuestFs>,
    poisoned: bool,
}

impl Guarded {
    fn call<T>(&mut self, path: &str, f: impl FnOnce(&mut dyn GuestFs) -> Result<T>) -> Result<T> {
        if self.poisoned {
            return Err(Error::FileSystem {
                path: path.to_string(),
                message: "not read: the file system reader stopped earlier on damaged data".into(),
            });
        }
        let inner = self.inner.as_mut();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(inner)));
        r.unwrap_or_else(|_| {
            self.poisoned = true;
            Err(Error::FileSystem {
                path: path.to_string(),
                message: "the file system reader stopped on inconsistent data (the file system is damaged)".into(),
            })
        })
    }
}

impl GuestFs for Guarded {
    fn content(&self) -> Content {
        self.inner.content()
    }
    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        self.call(path, |fs| fs.list(path))
    }
    fn stat(&mut self, path: &str) -> Result<Entry> {
        self.call(path, |fs| fs.stat(path))
    }
    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        self.call(path, |fs| fs.read_file(path, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panicky;
    impl GuestFs for Panicky {
        fn content(&self) -> Content {
            Content::Fat
        }
        fn list(&mut self, _: &str) -> Result<Vec<Entry>> {
            panic!("index out of bounds in a file system crate")
        }
        fn stat(&mut self, _: &str) -> Result<Entry> {
            Err(Error::NotFound("x".into()))
        }
        fn read_file(&mut self, _: &str, _: &mut dyn Write) -> Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_panicking_reader_becomes_an_error_and_is_not_used_again() {
        let mut g = Guarded {
            inner: Box::new(Panicky),
            poisoned: false,
        };
        let e = g.list("/etc").unwrap_err().to_string();
        assert!(e.contains("/etc") && e.contains("damaged"), "{e}");
        let e = g.stat("/x").unwrap_err().to_string();
        assert!(e.contains("stopped earlier"), "{e}");
    }
}
