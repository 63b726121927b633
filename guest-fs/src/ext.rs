//! ext2/3/4 through `ext4-view` (read-only; the journal is replayed in memory, never written).

use std::io::Write;

use ext4_view::{Ext4, Ext4Error, Metadata};

use crate::disk::Window;
use crate::error::{Error, Result};
use crate::fs::{components, Entry, EntryKind, GuestFs};
use crate::probe::Content;

/// An ext2, ext3 or ext4 file system.
pub struct Ext {
    fs: Ext4,
    content: Content,
}

fn err(path: &str, e: Ext4Error) -> Error {
    match e {
        Ext4Error::NotFound => Error::NotFound(path.to_string()),
        Ext4Error::NotADirectory => Error::NotADirectory(path.to_string()),
        other => Error::fs(path, other),
    }
}

/// `/a/b` from any spelling of a path (`a/b`, `/a//b/`).
fn absolute(path: &str) -> Result<String> {
    Ok(format!("/{}", components(path)?.join("/")))
}

impl Ext {
    /// Opens the file system in `w`.
    ///
    /// # Errors
    /// A damaged superblock or group descriptors, an unreadable disk.
    pub fn open(w: Window, content: Content) -> Result<Ext> {
        let fs = Ext4::load(Box::new(w)).map_err(|e| Error::fs("/", e))?;
        Ok(Ext { fs, content })
    }

    fn entry(&self, name: String, path: &str, m: &Metadata) -> Result<Entry> {
        let ft = m.file_type();
        let kind = if ft.is_regular_file() {
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        let link_target = if kind == EntryKind::Symlink {
            let t = self.fs.read_link(path).map_err(|e| err(path, e))?;
            Some(String::from_utf8_lossy(t.as_ref()).into_owned())
        } else {
            None
        };
        Ok(Entry {
            name,
            kind,
            size: m.len(),
            mode: Some(u32::from(m.mode())),
            mtime: Some(m.modified().seconds()),
            link_target,
        })
    }
}

impl GuestFs for Ext {
    fn content(&self) -> Content {
        self.content
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let dir = absolute(path)?;
        let mut out = Vec::new();
        for e in self.fs.read_dir(dir.as_str()).map_err(|e| err(&dir, e))? {
            let e = e.map_err(|e| err(&dir, e))?;
            let name = String::from_utf8_lossy(e.file_name().as_ref()).into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let child = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            let m = e.metadata().map_err(|e| err(&child, e))?;
            out.push(self.entry(name, &child, &m)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        let p = absolute(path)?;
        let m = self
            .fs
            .symlink_metadata(p.as_str())
            .map_err(|e| err(&p, e))?;
        let name = p.rsplit('/').next().unwrap_or_default().to_string();
        self.entry(name, &p, &m)
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let p = absolute(path)?;
        let mut f = self.fs.open(p.as_str()).map_err(|e| err(&p, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = f.read_bytes(&mut buf).map_err(|e| err(&p, e))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("write {p}"), e))?;
            total += n as u64;
        }
    }
}
