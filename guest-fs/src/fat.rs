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

/// Checks the boot sector's geometry before `fatfs` computes with it: its sums are done in
/// `u32` and overflow (a panic in checked builds) on hostile values (found by fuzzing).
fn check_boot_sector(b: &[u8; 512], len: u64) -> std::result::Result<(), String> {
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let bytes_per_sector = u16_at(11);
    let per_cluster = u64::from(b[13]);
    let (reserved, fats, root_entries) = (u16_at(14), u64::from(b[16]), u16_at(17));
    let total = match u16_at(19) {
        0 => u32_at(32),
        n => n,
    };
    let per_fat = match u16_at(22) {
        0 => u32_at(36),
        n => n,
    };
    if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
        return Err(format!("invalid sector size {bytes_per_sector}"));
    }
    if !per_cluster.is_power_of_two() || !(1..=2).contains(&fats) || reserved == 0 || per_fat == 0 {
        return Err("invalid boot sector geometry".into());
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let first_data = reserved + fats * per_fat + root_sectors;
    if total == 0
        || total * bytes_per_sector > len
        || first_data >= total
        || total > u64::from(u32::MAX)
    {
        return Err(format!(
            "the boot sector describes {total} sectors (data from {first_data}) in a {len}-byte partition"
        ));
    }
    Ok(())
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
        let mut boot = [0u8; 512];
        w.read_exact_at(0, &mut boot)
            .map_err(|e| Error::io("read the FAT boot sector", e))?;
        check_boot_sector(&boot, w.len()).map_err(|why| Error::fs("/", why))?;
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
    fn hostile_geometry_is_refused_before_fatfs_sees_it() {
        let mut b = [0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[14..16].copy_from_slice(&1u16.to_le_bytes());
        b[16] = 2;
        b[32..36].copy_from_slice(&100_000u32.to_le_bytes());
        b[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            super::check_boot_sector(&b, 100_000 * 512).is_err(),
            "2 FATs of 2^32 sectors"
        );
        b[36..40].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(super::check_boot_sector(&b, 100_000 * 512), Ok(()));
        assert!(
            super::check_boot_sector(&b, 1000 * 512).is_err(),
            "larger than its partition"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::days_from_civil(1970, 1, 1), 0);
        assert_eq!(super::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(super::days_from_civil(2026, 12, 4), 20_791);
    }
}
