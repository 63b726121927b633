//! FAT12/16/32 (and EFI system partitions) through `fatfs`, opened without access-time
//! updates on a stream that refuses writes.

use std::io::{Read, Write};

use fatfs::{FileSystem, FsOptions};

use crate::disk::Window;
use crate::error::{Error, Result};
use crate::fs::{components, Entry, EntryKind, GuestFs};
use crate::probe::Content;

/// A FAT file system.
pub struct Fat {
    fs: FileSystem<Window>,
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// FAT stores local time without a zone; it is reported as if it were UTC.
fn unix_time(t: fatfs::DateTime) -> i64 {
    days_from_civil(
        i64::from(t.date.year),
        i64::from(t.date.month),
        i64::from(t.date.day),
    ) * 86_400
        + i64::from(t.time.hour) * 3600
        + i64::from(t.time.min) * 60
        + i64::from(t.time.sec)
}

fn not_found_or(path: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(path.to_string()),
        _ => Error::fs(path, e),
    }
}

impl Fat {
    /// Opens the file system in `w`.
    ///
    /// # Errors
    /// An invalid boot sector, an unreadable disk.
    pub fn open(w: Window) -> Result<Fat> {
        let fs = FileSystem::new(w, FsOptions::new().update_accessed_date(false))
            .map_err(|e| Error::fs("/", e))?;
        Ok(Fat { fs })
    }

    fn entry(e: &fatfs::DirEntry<'_, Window>) -> Entry {
        Entry {
            name: e.file_name(),
            kind: if e.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            },
            size: if e.is_dir() { 0 } else { e.len() },
            mode: None,
            mtime: Some(unix_time(e.modified())),
            link_target: None,
        }
    }
}

impl GuestFs for Fat {
    fn content(&self) -> Content {
        Content::Fat
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let parts = components(path)?;
        let root = self.fs.root_dir();
        let dir = if parts.is_empty() {
            root
        } else {
            root.open_dir(&parts.join("/"))
                .map_err(|e| not_found_or(path, e))?
        };
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|e| Error::fs(path, e))?;
            let name = e.file_name();
            // Volume labels are directory entries too.
            if name == "."
                || name == ".."
                || e.attributes().contains(fatfs::FileAttributes::VOLUME_ID)
            {
                continue;
            }
            out.push(Self::entry(&e));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        let parts = components(path)?;
        let Some((name, parent)) = parts.split_last() else {
            return Ok(Entry {
                name: String::new(),
                kind: EntryKind::Dir,
                size: 0,
                mode: None,
                mtime: None,
                link_target: None,
            });
        };
        let root = self.fs.root_dir();
        let dir = if parent.is_empty() {
            root
        } else {
            root.open_dir(&parent.join("/"))
                .map_err(|e| not_found_or(path, e))?
        };
        for e in dir.iter() {
            let e = e.map_err(|e| Error::fs(path, e))?;
            // FAT names are case-insensitive.
            if e.file_name().eq_ignore_ascii_case(name)
                || e.short_file_name().eq_ignore_ascii_case(name)
            {
                return Ok(Self::entry(&e));
            }
        }
        Err(Error::NotFound(path.to_string()))
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let parts = components(path)?;
        let mut f = self
            .fs
            .root_dir()
            .open_file(&parts.join("/"))
            .map_err(|e| not_found_or(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::fs(path, e))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("write {path}"), e))?;
            total += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::days_from_civil(1970, 1, 1), 0);
        assert_eq!(super::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(super::days_from_civil(2026, 12, 4), 20_791);
    }
}
