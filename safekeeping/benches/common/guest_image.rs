//! A guest-like disk image for the benchmarks: laid out the way a file system lays out a
//! used disk, from real data of the machine running the benchmark, so compression and
//! deduplication see what they see on a real VM rather than a flattering synthetic pattern:
//!
//! - files of this machine (`/usr/bin`, `/usr/lib`, `/usr/share`, in sorted path order:
//!   executables, shared libraries, text, compressed archives) each at a 4 KiB-aligned
//!   offset, its last block padded with zeros, as a file system stores them;
//! - "media" (a quarter of the written bytes; files are 55 %, duplicates 20 %): random bytes (incompressible, like photos, video or encrypted files), in
//!   extents of 256 KiB to 8 MiB;
//! - duplicates: an earlier extent copied again at another 4 KiB offset (a second copy of a
//!   file, a cloned template);
//! - about 40 % never written: gaps of 64 KiB to 8 MiB left as holes (unallocated for CBT).
//!
//! The layout choices come from a fixed seed; the file contents are the machine's, so the
//! figures of two machines differ a little (each run on one machine writes the same image).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Alignment of every extent: a file system block.
pub const BLOCK: u64 = 4096;
/// The share of the disk left unwritten.
const HOLE_SHARE: f64 = 0.40;
/// Shares of the written bytes: files of this machine, media; the rest are duplicates.
const FILE_SHARE: f64 = 0.55;
const MEDIA_SHARE: f64 = 0.25;

/// Bytes of each kind the generator wrote: holes, files, media, duplicates.
#[derive(Debug, Default, Clone, Copy)]
pub struct GuestCounts {
    /// Never written.
    pub holes: u64,
    /// Files of this machine.
    pub files: u64,
    /// Random (incompressible) extents.
    pub media: u64,
    /// Copies of earlier extents.
    pub duplicates: u64,
}

impl GuestCounts {
    /// Bytes written (everything but holes).
    pub fn written(&self) -> u64 {
        self.files + self.media + self.duplicates
    }
}

/// xorshift64*: the layout's deterministic choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Regular files below `roots`, in sorted path order (symbolic links are not followed).
fn machine_files(roots: &[&str]) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&e.path(), out);
            } else if ft.is_file() {
                if let Ok(m) = e.metadata() {
                    if m.len() > 0 {
                        out.push((e.path(), m.len()));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for r in roots {
        walk(Path::new(r), &mut out);
    }
    out
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Writes the guest-like image into `f`, which is already `size` bytes long and all zeros
/// (holes are skipped, so they stay holes), then syncs it.
///
/// # Errors
/// Reading the image back for a duplicate, or writing it.
pub fn fill_guest(f: &File, size: u64, seed: u64) -> std::io::Result<GuestCounts> {
    let files = machine_files(&["/usr/bin", "/usr/lib", "/usr/share"]);
    let mut rng = Rng(seed | 1);
    let mut counts = GuestCounts::default();
    // Extents written so far (offset, length), for duplicates.
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut next_file = 0usize;
    let mut unreadable = 0usize;
    let mut pos = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    while pos < size {
        let room = size - pos;
        // Holes keep pace with the written data, so the share holds for any size.
        if (counts.holes as f64) < HOLE_SHARE * pos as f64 {
            let gap = round_up(rng.between(64 << 10, 8 << 20)).min(room);
            counts.holes += gap;
            pos += gap;
            continue;
        }
        // The kind furthest below its share of the written bytes (files are small, media
        // extents large: choosing by count would make the image mostly media).
        let written = counts.written() as f64 + 1.0;
        let deficit = |share: f64, have: u64| share * written - have as f64;
        let file_deficit = if files.is_empty() {
            f64::MIN
        } else {
            deficit(FILE_SHARE, counts.files)
        };
        let media_deficit = deficit(MEDIA_SHARE, counts.media);
        let duplicate_deficit = if extents.is_empty() {
            f64::MIN
        } else {
            deficit(1.0 - FILE_SHARE - MEDIA_SHARE, counts.duplicates)
        };
        let len = if file_deficit >= media_deficit && file_deficit >= duplicate_deficit {
            // A file of this machine (cycling through them if the disk is larger than /usr).
            let (path, flen) = &files[next_file % files.len()];
            next_file += 1;
            let len = (*flen).min(room).min(64 << 20);
            let Ok(src) = File::open(path) else {
                unreadable += 1;
                if unreadable > files.len() {
                    return Err(std::io::Error::other(
                        "none of the machine's files is readable",
                    ));
                }
                continue;
            };
            buf.clear();
            buf.resize(len as usize, 0);
            let mut got = 0usize;
            while got < buf.len() {
                match src.read_at(&mut buf[got..], got as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            buf.truncate(got);
            if buf.is_empty() {
                continue;
            }
            counts.files += buf.len() as u64;
            buf.len() as u64
        } else if media_deficit >= duplicate_deficit {
            let len = round_up(rng.between(256 << 10, 8 << 20)).min(room);
            buf.clear();
            buf.resize(len as usize, 0);
            for w in buf.chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                w.copy_from_slice(&r[..w.len()]);
            }
            counts.media += len;
            len
        } else {
            let (src, slen) = extents[rng.between(0, extents.len() as u64 - 1) as usize];
            let len = slen.min(room);
            buf.clear();
            buf.resize(len as usize, 0);
            f.read_exact_at(&mut buf, src)?;
            counts.duplicates += len;
            len
        };
        f.write_all_at(&buf, pos)?;
        extents.push((pos, len));
        pos += round_up(len).min(room);
    }
    f.sync_all()?;
    Ok(counts)
}
