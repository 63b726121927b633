//! NTFS through the `ntfs` crate (read-only by design). Only the unnamed `$DATA` stream of a
//! file is extracted; Windows junctions and symlinks (reparse points) are listed as "other",
//! Interix symlinks (what ntfs-3g writes) as symlinks; none is followed.

use std::io::{BufReader, Write};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{NtfsFile, NtfsReadSeek};

use crate::disk::Window;
use crate::error::{Error, Result};
use crate::fs::{components, Entry, EntryKind, GuestFs};
use crate::probe::Content;

/// Records below this are NTFS's own metadata files (`$MFT`, `$Bitmap`, the root's `.`...).
const FIRST_USER_RECORD: u64 = 16;
/// Seconds from 1601-01-01 (NTFS's epoch) to 1970-01-01.
const NT_TO_UNIX: i64 = 11_644_473_600;

/// An NTFS file system.
pub struct Ntfs {
    ntfs: ntfs::Ntfs,
    fs: BufReader<Window>,
}

fn nt_seconds(t: ntfs::NtfsTime) -> i64 {
    (t.nt_timestamp() / 10_000_000) as i64 - NT_TO_UNIX
}

impl Ntfs {
    /// Opens the file system in `w` and reads its upcase table (case-insensitive lookups).
    ///
    /// # Errors
    /// An invalid boot sector or `$MFT`, an unreadable disk.
    pub fn open(w: Window) -> Result<Ntfs> {
        let mut fs = BufReader::with_capacity(64 * 1024, w);
        let mut ntfs = ntfs::Ntfs::new(&mut fs).map_err(|e| Error::fs("/", e))?;
        ntfs.read_upcase_table(&mut fs)
            .map_err(|e| Error::fs("/", e))?;
        Ok(Ntfs { ntfs, fs })
    }

    /// The file at `path` (the root for no components).
    fn lookup<'n>(
        ntfs: &'n ntfs::Ntfs,
        fs: &mut BufReader<Window>,
        path: &str,
    ) -> Result<NtfsFile<'n>> {
        let mut file = ntfs.root_directory(fs).map_err(|e| Error::fs(path, e))?;
        for c in components(path)? {
            if !file.is_directory() {
                return Err(Error::NotADirectory(path.to_string()));
            }
            let index = file.directory_index(fs).map_err(|e| Error::fs(path, e))?;
            let mut finder = index.finder();
            let entry = NtfsFileNameIndex::find(&mut finder, ntfs, fs, c)
                .ok_or_else(|| Error::NotFound(path.to_string()))?
                .map_err(|e| Error::fs(path, e))?;
            if entry.file_reference().file_record_number() < FIRST_USER_RECORD {
                return Err(Error::NotFound(path.to_string()));
            }
            file = entry.to_file(ntfs, fs).map_err(|e| Error::fs(path, e))?;
        }
        Ok(file)
    }

    fn entry(
        fs: &mut BufReader<Window>,
        name: String,
        file: &NtfsFile<'_>,
        path: &str,
    ) -> Result<Entry> {
        let info = file.info().map_err(|e| Error::fs(path, e))?;
        let kind = if info
            .file_attributes()
            .contains(NtfsFileAttributeFlags::REPARSE_POINT)
        {
            EntryKind::Other
        } else if file.is_directory() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        let size = if kind == EntryKind::File {
            match file.data(fs, "") {
                Some(item) => {
                    let item = item.map_err(|e| Error::fs(path, e))?;
                    let attr = item.to_attribute().map_err(|e| Error::fs(path, e))?;
                    attr.value(fs).map_err(|e| Error::fs(path, e))?.len()
                }
                None => 0,
            }
        } else {
            0
        };
        let mut entry = Entry {
            name,
            kind,
            size,
            mode: None,
            mtime: Some(nt_seconds(info.modification_time())),
            link_target: None,
        };
        // ntfs-3g (Linux) writes symlinks as Interix links: a small system file holding
        // "IntxLNK\1" and the UTF-16 target.
        if kind == EntryKind::File
            && info
                .file_attributes()
                .contains(NtfsFileAttributeFlags::SYSTEM)
            && (10..=8192).contains(&size)
        {
            let mut data = Vec::new();
            Self::read_data(fs, file, path, &mut data)?;
            if let Some(rest) = data.strip_prefix(b"IntxLNK\x01") {
                let units: Vec<u16> = rest
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let target = String::from_utf16_lossy(&units);
                entry.kind = EntryKind::Symlink;
                entry.size = target.len() as u64;
                entry.link_target = Some(target);
            }
        }
        Ok(entry)
    }

    fn read_data(
        fs: &mut BufReader<Window>,
        file: &NtfsFile<'_>,
        path: &str,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let Some(item) = file.data(fs, "") else {
            return Ok(0);
        };
        let item = item.map_err(|e| Error::fs(path, e))?;
        let attr = item.to_attribute().map_err(|e| Error::fs(path, e))?;
        let mut value = attr.value(fs).map_err(|e| Error::fs(path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = value.read(fs, &mut buf).map_err(|e| Error::fs(path, e))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io(format!("write {path}"), e))?;
            total += n as u64;
        }
    }
}

impl GuestFs for Ntfs {
    fn content(&self) -> Content {
        Content::Ntfs
    }

    fn list(&mut self, path: &str) -> Result<Vec<Entry>> {
        let Ntfs { ntfs, fs } = self;
        let dir = Self::lookup(ntfs, fs, path)?;
        if !dir.is_directory() {
            return Err(Error::NotADirectory(path.to_string()));
        }
        let index = dir.directory_index(fs).map_err(|e| Error::fs(path, e))?;
        let mut iter = index.entries();
        let mut out = Vec::new();
        while let Some(e) = iter.next(fs) {
            let e = e.map_err(|e| Error::fs(path, e))?;
            let Some(key) = e.key() else { continue };
            let key = key.map_err(|e| Error::fs(path, e))?;
            // Every long name has a DOS 8.3 twin in the index; list each file once.
            if key.namespace() == NtfsFileNamespace::Dos
                || e.file_reference().file_record_number() < FIRST_USER_RECORD
            {
                continue;
            }
            let name = key.name().to_string_lossy();
            let child = format!("{}/{name}", path.trim_end_matches('/'));
            let file = e.to_file(ntfs, fs).map_err(|e| Error::fs(&child, e))?;
            out.push(Self::entry(fs, name, &file, &child)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&mut self, path: &str) -> Result<Entry> {
        let Ntfs { ntfs, fs } = self;
        let file = Self::lookup(ntfs, fs, path)?;
        let name = components(path)?
            .last()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Self::entry(fs, name, &file, path)
    }

    fn read_file(&mut self, path: &str, out: &mut dyn Write) -> Result<u64> {
        let Ntfs { ntfs, fs } = self;
        let file = Self::lookup(ntfs, fs, path)?;
        Self::read_data(fs, &file, path, out)
    }
}
