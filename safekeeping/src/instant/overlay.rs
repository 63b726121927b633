//! `serve --overlay FILE`: clients' writes go to a local copy-on-write file, never to the
//! repository.
//!
//! `FILE` is a sparse image of the whole disk; `FILE.map` records which 4 KiB blocks of it
//! hold written data (a bitmap with the disk size, the export it belongs to and a SHA-256 of
//! the whole record). The map is replaced atomically on every flush and at stop, so serving
//! again with the same overlay continues where the clients left off; an overlay of another
//! disk or generation is refused. Blocks not in the map are read from the repository.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use nbd_server::{BlockDevice, Extent};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::instant::device::RepositoryDisk;

/// Overlay granularity: the page size, so a guest's 4 KiB writes need no read of the base.
const BLOCK: u64 = 4096;
const MAGIC: &[u8; 8] = b"SKOVL01\n";

struct State {
    written: Vec<u64>,
    dirty: bool,
}

impl State {
    fn get(&self, b: u64) -> bool {
        self.written[(b / 64) as usize] & (1 << (b % 64)) != 0
    }
    fn set(&mut self, b: u64) {
        self.written[(b / 64) as usize] |= 1 << (b % 64);
    }
}

/// The base disk with a copy-on-write overlay file in front.
pub struct OverlayDisk {
    base: Arc<RepositoryDisk>,
    file: File,
    path: PathBuf,
    identity: String,
    state: RwLock<State>,
}

impl std::fmt::Debug for OverlayDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayDisk")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn map_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".map");
    PathBuf::from(p)
}

fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK)
}

impl OverlayDisk {
    /// Opens the overlay at `path` for the export named `identity`: creates it (and its map)
    /// when neither exists, continues it when both exist and belong to this export.
    ///
    /// # Errors
    /// A file that is not an overlay of this disk (never overwritten), or I/O errors.
    pub fn create(base: Arc<RepositoryDisk>, path: &Path, identity: &str) -> Result<OverlayDisk> {
        let size = base.size();
        let words = blocks(size).div_ceil(64) as usize;
        let mp = map_path(path);
        let exists = path.symlink_metadata().is_ok();
        let (file, written) = if exists {
            let rec = std::fs::read(&mp).map_err(|e| {
                Error::Other(format!(
                    "{} exists but {} cannot be read ({e}): it is not an overlay written by serve; choose another file",
                    path.display(),
                    mp.display()
                ))
            })?;
            let written = decode_map(&rec, size, identity).map_err(|why| {
                Error::Other(format!(
                    "{} cannot continue {}: {why}",
                    mp.display(),
                    path.display()
                ))
            })?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            (file, written)
        } else {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            file.set_len(size)
                .map_err(|e| Error::io(format!("size {}", path.display()), e))?;
            (file, vec![0u64; words])
        };
        let o = OverlayDisk {
            base,
            file,
            path: path.to_path_buf(),
            identity: identity.to_string(),
            state: RwLock::new(State {
                written,
                dirty: !exists,
            }),
        };
        o.flush_all()?;
        Ok(o)
    }

    /// Syncs the overlay file and replaces its map (temp file, fsync, rename, fsync of the
    /// folder).
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn flush_all(&self) -> Result<()> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("sync {}", self.path.display()), e))?;
        if !st.dirty {
            return Ok(());
        }
        let mp = map_path(&self.path);
        let mut tmp = mp.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let rec = encode_map(&st.written, self.base.size(), &self.identity);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&rec)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &mp)?;
            if let Some(dir) = mp.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| Error::io(format!("write {}", mp.display()), e))?;
        st.dirty = false;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of block-aligned runs: overlay where written.
    fn read_runs(&self, st: &State, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let mine = st.get(b);
            // Extend the run while the blocks come from the same side.
            let mut run_end = ((b + 1) * BLOCK).min(end);
            while run_end < end && st.get(run_end / BLOCK) == mine {
                run_end = ((run_end / BLOCK + 1) * BLOCK).min(end);
            }
            let out = &mut buf[(pos - offset) as usize..(run_end - offset) as usize];
            if mine {
                self.file.read_exact_at(out, pos)?;
            } else {
                self.base.read_at(pos, out)?;
            }
            pos = run_end;
        }
        Ok(())
    }

    fn write_locked(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let end = offset + data.len() as u64;
        let first = offset / BLOCK;
        let last = (end - 1) / BLOCK;
        // Partial edge blocks not yet in the overlay get their base bytes first, so the block
        // is whole once it is marked.
        for b in [first, last] {
            let (bs, be) = (b * BLOCK, ((b + 1) * BLOCK).min(self.base.size()));
            if !st.get(b) && (offset > bs || end < be) {
                let mut whole = vec![0u8; (be - bs) as usize];
                self.base.read_at(bs, &mut whole)?;
                self.file.write_all_at(&whole, bs)?;
            }
        }
        self.file.write_all_at(data, offset)?;
        for b in first..=last {
            st.set(b);
        }
        st.dirty = true;
        Ok(())
    }
}

fn encode_map(written: &[u64], size: u64, identity: &str) -> Vec<u8> {
    let mut rec = MAGIC.to_vec();
    rec.extend_from_slice(&size.to_le_bytes());
    rec.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    rec.extend_from_slice(identity.as_bytes());
    for w in written {
        rec.extend_from_slice(&w.to_le_bytes());
    }
    let sum = Sha256::digest(&rec);
    rec.extend_from_slice(&sum);
    rec
}

fn decode_map(rec: &[u8], size: u64, identity: &str) -> std::result::Result<Vec<u64>, String> {
    if rec.len() < 8 + 8 + 4 + 32 || &rec[..8] != MAGIC {
        return Err("not an overlay map".into());
    }
    let (body, sum) = rec.split_at(rec.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("the map is damaged (checksum mismatch)".into());
    }
    let got_size = u64::from_le_bytes(body[8..16].try_into().map_err(|_| "short")?);
    let n = u32::from_le_bytes(body[16..20].try_into().map_err(|_| "short")?) as usize;
    let name = body.get(20..20 + n).ok_or("short map")?;
    if got_size != size || name != identity.as_bytes() {
        return Err(format!(
            "it belongs to {} ({} bytes), not to {identity} ({size} bytes)",
            String::from_utf8_lossy(name),
            got_size
        ));
    }
    let words = &body[20 + n..];
    if words.len() as u64 != blocks(size).div_ceil(64) * 8 {
        return Err("the map has the wrong length".into());
    }
    Ok(words
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

impl BlockDevice for OverlayDisk {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn writable(&self) -> bool {
        true
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        self.read_runs(&st, offset, buf)
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Extent> = Vec::new();
        let mut push = |len: u64, hole: bool| match out.last_mut() {
            Some(e) if e.hole == hole => e.len += len,
            _ => out.push(Extent { len, hole }),
        };
        let mut pos = offset;
        for e in self.base.extents(offset, len)? {
            let end = pos + e.len;
            if !e.hole {
                push(e.len, false);
            } else {
                // A hole of the base is data where the overlay has blocks.
                while pos < end {
                    let next = ((pos / BLOCK + 1) * BLOCK).min(end);
                    push(next - pos, !st.get(pos / BLOCK));
                    pos = next;
                }
            }
            pos = end;
        }
        Ok(out)
    }

    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.write_locked(offset, data)?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(zeros.len() as u64) as usize;
            self.write_locked(pos, &zeros[..n])?;
            pos += n as u64;
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        // Trimmed blocks read as zeros, which the protocol allows and guests expect.
        self.write_zeroes(offset, len, false)
    }

    fn flush(&self) -> io::Result<()> {
        self.flush_all()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_and_refusals() {
        let w = vec![5u64, 0, u64::MAX];
        let size = 3 * 64 * BLOCK;
        let rec = encode_map(&w, size, "vm:a-gen1-disk0");
        assert_eq!(decode_map(&rec, size, "vm:a-gen1-disk0"), Ok(w));
        assert!(decode_map(&rec, size, "vm:a-gen2-disk0")
            .unwrap_err()
            .contains("belongs to"));
        assert!(decode_map(&rec, size + BLOCK * 64, "vm:a-gen1-disk0").is_err());
        let mut bad = rec.clone();
        bad[30] ^= 1;
        assert!(decode_map(&bad, size, "vm:a-gen1-disk0")
            .unwrap_err()
            .contains("damaged"));
    }
}
