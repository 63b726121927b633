//! A disk opened through its chain of delta disks, as VDDK opens a snapshot's disk.
//!
//! The lab's delta format (tests/lab/vcsim/chain.go writes it): a `vmfsSparse` descriptor
//! with a `parentFileNameHint` and one `VMFSSPARSE` extent. The extent holds the disk's
//! bytes at their own offsets in `[0, capacity)` (a sparse file, written only where the
//! guest wrote since the snapshot), then from [`map_offset`] an allocation bitmap: one bit
//! per 64 KiB grain, least significant bit first. A set bit means the grain's whole content
//! is in this delta; a clear bit means it is read from the parent.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Mutex;

use vddk_sys::*;

use crate::descriptor::Descriptor;
use crate::disk::SECTOR;

/// A delta's allocation unit in bytes (the lab's change tracking block).
pub const GRAIN: u64 = 64 * 1024;

/// Deepest chain followed; a descriptor naming itself as parent must not loop.
const MAX_DEPTH: usize = 255;

/// Where a delta extent's bitmap starts: after the data, rounded up to a grain.
pub fn map_offset(capacity: u64) -> u64 {
    capacity.div_ceil(GRAIN) * GRAIN
}

/// One file of a chain.
struct Layer {
    file: File,
    /// Byte offset of the disk's data inside the file (flat extents may have one).
    offset: u64,
    /// The bitmap's offset, for deltas.
    map: Option<u64>,
}

/// Alignment of `O_DIRECT` buffers (and the most any file system here asks of offsets).
const DIRECT_ALIGN: usize = 4096;
/// The device sector: `O_DIRECT` offsets and lengths must be multiples of it.
const DIRECT_SECTOR: u64 = 512;

thread_local! {
    /// Each writer thread's aligned bounce buffer for `O_DIRECT` writes (grown, never shrunk).
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A disk and its parents: `layers[0]` is the file opened, the last one the flat base.
pub struct Chain {
    layers: Vec<Layer>,
    /// The top file opened again with `O_DIRECT`, when it is a writable flat extent, direct
    /// writes are on and its file system takes them (see [`Chain::write`]).
    direct: Option<File>,
    capacity: u64,
    /// Serialises writes to a delta: copy on write and the bitmap update are
    /// read-modify-write.
    write_lock: Mutex<()>,
}

/// Writes `buf` at `pos` through the `O_DIRECT` file, from an aligned copy unless `buf` is
/// aligned already. `None` when the write cannot go direct (an offset or length that is not
/// whole device sectors, or a file system refusing it with `EINVAL`), so the caller writes
/// through the page cache instead.
fn write_direct(file: &File, buf: &[u8], pos: u64) -> Option<io::Result<()>> {
    if pos % DIRECT_SECTOR != 0 || buf.len() as u64 % DIRECT_SECTOR != 0 {
        return None;
    }
    let result = if buf.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
        file.write_all_at(buf, pos)
    } else {
        BOUNCE.with(|bounce| {
            let mut bounce = bounce.borrow_mut();
            if bounce.len() < buf.len() + DIRECT_ALIGN {
                bounce.resize(buf.len() + DIRECT_ALIGN, 0);
            }
            let start = bounce.as_ptr().align_offset(DIRECT_ALIGN);
            let aligned = &mut bounce[start..start + buf.len()];
            aligned.copy_from_slice(buf);
            file.write_all_at(aligned, pos)
        })
    };
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
        other => Some(other),
    }
}

fn open_error(path: &Path, e: io::Error) -> (VixError, String) {
    let code = match e.kind() {
        io::ErrorKind::NotFound => VIX_E_FILE_NOT_FOUND,
        io::ErrorKind::PermissionDenied => VIX_E_FILE_ACCESS_ERROR,
        _ => VIX_E_FILE_ERROR,
    };
    (code as VixError, format!("{}: {e}", path.display()))
}

impl Chain {
    /// Opens the extent of `top` (the descriptor read from `file`) and, for a delta, its
    /// parents down to the flat base. Only the top file is opened for writing, and only
    /// when `writable`.
    ///
    /// With `direct_writes`, a writable flat top file is also opened with `O_DIRECT` for
    /// [`Chain::write`]; a file system that refuses it (tmpfs) keeps the page cache.
    pub fn open(
        file: &Path,
        top: &Descriptor,
        writable: bool,
        direct_writes: bool,
    ) -> Result<Self, (VixError, String)> {
        let capacity = top.capacity_sectors * SECTOR;
        let mut layers = Vec::new();
        let mut direct = None;
        let mut desc_path = file.to_path_buf();
        let mut desc = top.clone();
        loop {
            if layers.len() > MAX_DEPTH {
                return Err((
                    VIX_E_INCORRECT_FILE_TYPE as VixError,
                    format!("{}: chain deeper than {MAX_DEPTH} disks", file.display()),
                ));
            }
            if desc.capacity_sectors * SECTOR != capacity {
                return Err((
                    VIX_E_INCORRECT_FILE_TYPE as VixError,
                    format!(
                        "{}: capacity differs from its child's in the chain of {}",
                        desc_path.display(),
                        file.display()
                    ),
                ));
            }
            let extent = desc.extent_path(&desc_path);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(writable && layers.is_empty())
                .open(&extent)
                .map_err(|e| open_error(&extent, e))?;
            let parent = desc.parent_path(&desc_path);
            if writable && direct_writes && layers.is_empty() && parent.is_none() {
                use std::os::unix::fs::OpenOptionsExt;
                direct = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&extent)
                    .ok();
            }
            layers.push(Layer {
                file: f,
                offset: desc.extent_offset * SECTOR,
                map: parent.as_ref().map(|_| map_offset(capacity)),
            });
            let Some(parent) = parent else { break };
            desc = Descriptor::read(&parent).map_err(|e| {
                let code = if parent.exists() {
                    VIX_E_INCORRECT_FILE_TYPE
                } else {
                    VIX_E_FILE_NOT_FOUND
                };
                (
                    code as VixError,
                    format!("parent of {}: {e}", desc_path.display()),
                )
            })?;
            desc_path = parent;
        }
        Ok(Self {
            layers,
            direct,
            capacity,
            write_lock: Mutex::new(()),
        })
    }

    /// Files in the chain (1 for a flat disk).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Allocation bits of grains `[g0, g0 + n)` of a delta layer.
    fn bits(&self, layer: usize, g0: u64, n: u64) -> io::Result<Vec<bool>> {
        let l = &self.layers[layer];
        let Some(map) = l.map else {
            return Ok(vec![true; n as usize]);
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (g0 / 8, (g0 + n - 1) / 8);
        let mut buf = vec![0u8; (last - first + 1) as usize];
        read_full(&l.file, &mut buf, map + first)?;
        Ok((g0..g0 + n)
            .map(|g| buf[(g / 8 - first) as usize] & (1 << (g % 8)) != 0)
            .collect())
    }

    /// For each grain of `[g0, g0 + n)`, the first layer from `from` down that holds it.
    fn owners(&self, g0: u64, n: u64, from: usize) -> io::Result<Vec<usize>> {
        let mut out = vec![usize::MAX; n as usize];
        for li in from..self.layers.len() {
            let bits = self.bits(li, g0, n)?;
            for (o, b) in out.iter_mut().zip(bits) {
                if b && *o == usize::MAX {
                    *o = li;
                }
            }
            if self.layers[li].map.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Reads the disk's content at byte `off` through the chain.
    pub fn read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.read_from(buf, off, 0)
    }

    fn read_from(&self, buf: &mut [u8], off: u64, from: usize) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.layers.len() == 1 {
            return read_full(&self.layers[0].file, buf, self.layers[0].offset + off);
        }
        let end = off + buf.len() as u64;
        let g0 = off / GRAIN;
        let n = (end - 1) / GRAIN - g0 + 1;
        let own = self.owners(g0, n, from)?;
        let mut i = 0u64;
        while i < n {
            let mut j = i;
            while j + 1 < n && own[(j + 1) as usize] == own[i as usize] {
                j += 1;
            }
            let s = ((g0 + i) * GRAIN).max(off);
            let e = ((g0 + j + 1) * GRAIN).min(end);
            let l = &self.layers[own[i as usize]];
            read_full(
                &l.file,
                &mut buf[(s - off) as usize..(e - off) as usize],
                l.offset + s,
            )?;
            i = j + 1;
        }
        Ok(())
    }

    /// Writes at byte `off` into the top file. On a delta, a grain written only in part is
    /// first completed from the parents (copy on write), and grains are marked allocated
    /// after their data is written.
    pub fn write(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let top = &self.layers[0];
        let Some(map) = top.map else {
            if let Some(direct) = &self.direct {
                if let Some(done) = write_direct(direct, buf, top.offset + off) {
                    return done;
                }
            }
            return top.file.write_all_at(buf, top.offset + off);
        };
        if buf.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let end = off + buf.len() as u64;
        let g0 = off / GRAIN;
        let n = (end - 1) / GRAIN - g0 + 1;
        let have = self.bits(0, g0, n)?;
        for (i, had) in have.iter().enumerate() {
            let gs = (g0 + i as u64) * GRAIN;
            let ge = (gs + GRAIN).min(self.capacity);
            if *had || (off <= gs && end >= ge) {
                continue;
            }
            let mut grain = vec![0u8; (ge - gs) as usize];
            self.read_from(&mut grain, gs, 1)?;
            let (s, e) = (off.max(gs), end.min(ge));
            grain[(s - gs) as usize..(e - gs) as usize]
                .copy_from_slice(&buf[(s - off) as usize..(e - off) as usize]);
            top.file.write_all_at(&grain, gs)?;
        }
        top.file.write_all_at(buf, off)?;
        let (first, last) = (g0 / 8, (g0 + n - 1) / 8);
        let mut bits = vec![0u8; (last - first + 1) as usize];
        read_full(&top.file, &mut bits, map + first)?;
        for g in g0..g0 + n {
            bits[(g / 8 - first) as usize] |= 1 << (g % 8);
        }
        top.file.write_all_at(&bits, map + first)
    }

    /// Makes the top file durable (direct writes are on the device already; this also makes
    /// the extent allocation they caused durable).
    pub fn sync(&self) -> io::Result<()> {
        self.layers[0].file.sync_all()
    }

    /// Byte ranges of `[start, end)` that any file of the chain holds data for: the flat
    /// base's allocated ranges (SEEK_DATA/SEEK_HOLE) and every delta's allocated grains,
    /// sorted and merged.
    pub fn allocated(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        let mut ranges = Vec::new();
        for l in &self.layers {
            match l.map {
                Some(map) => {
                    let (g0, g1) = (start / GRAIN, end.div_ceil(GRAIN));
                    let mut bytes = vec![0u8; (g1.div_ceil(8) - g0 / 8) as usize];
                    read_full(&l.file, &mut bytes, map + g0 / 8)?;
                    for g in g0..g1 {
                        if bytes[(g / 8 - g0 / 8) as usize] & (1 << (g % 8)) != 0 {
                            ranges.push(((g * GRAIN).max(start), ((g + 1) * GRAIN).min(end)));
                        }
                    }
                }
                None => ranges.extend(
                    data_ranges(&l.file, l.offset + start, l.offset + end)?
                        .into_iter()
                        .map(|(s, e)| (s - l.offset, e - l.offset)),
                ),
            }
        }
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ok(out)
    }
}

/// Reads `buf.len()` bytes at `off`; past the file's end reads zeros.
fn read_full(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Allocated byte ranges of a file between `start` and `end` (SEEK_DATA/SEEK_HOLE).
fn data_ranges(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        // SAFETY: lseek on a file descriptor `file` owns; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after pos
        }
        let data = data as u64;
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            end
        } else {
            (hole as u64).min(end)
        };
        out.push((data, hole));
        pos = hole;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base of 4 grains + 100 bytes and a delta over it, in a temporary folder.
    fn fixture(dir: &Path) -> (Descriptor, std::path::PathBuf, u64) {
        let capacity = 4 * GRAIN + 512;
        let sectors = capacity / SECTOR;
        let base = format!(
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\
             RW {sectors} VMFS \"b-flat.vmdk\"\n"
        );
        std::fs::write(dir.join("b.vmdk"), base).unwrap();
        let flat = File::create(dir.join("b-flat.vmdk")).unwrap();
        flat.set_len(capacity).unwrap();
        flat.write_all_at(&[1u8; 4096], GRAIN).unwrap();
        let delta = format!(
            "# Disk DescriptorFile\nversion=1\nCID=2\nparentCID=1\ncreateType=\"vmfsSparse\"\n\
             parentFileNameHint=\"b.vmdk\"\nRW {sectors} VMFSSPARSE \"b-000001-delta.vmdk\"\n"
        );
        std::fs::write(dir.join("b-000001.vmdk"), &delta).unwrap();
        File::create(dir.join("b-000001-delta.vmdk"))
            .unwrap()
            .set_len(map_offset(capacity) + 1)
            .unwrap();
        (
            Descriptor::parse(&delta).unwrap(),
            dir.join("b-000001.vmdk"),
            capacity,
        )
    }

    #[test]
    fn writes_land_in_the_delta_with_copy_on_write() {
        let dir = std::env::temp_dir().join(format!("fake-vddk-chain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (desc, path, capacity) = fixture(&dir);
        let chain = Chain::open(&path, &desc, true, true).unwrap();
        assert_eq!(chain.depth(), 2);
        // 512 bytes inside grain 1, whose other bytes the base holds.
        chain.write(&[9u8; 512], GRAIN + 1024).unwrap();
        let mut got = vec![0u8; 8192];
        chain.read(&mut got, GRAIN).unwrap();
        assert!(got[..1024].iter().all(|&b| b == 1), "copied from the base");
        assert!(got[1024..1536].iter().all(|&b| b == 9), "the write");
        assert!(got[1536..4096].iter().all(|&b| b == 1));
        assert!(got[4096..].iter().all(|&b| b == 0));
        // The base is untouched.
        let base = File::open(dir.join("b-flat.vmdk")).unwrap();
        let mut b = vec![0u8; 4096];
        base.read_exact_at(&mut b, GRAIN).unwrap();
        assert!(b.iter().all(|&x| x == 1));
        // The last, short grain.
        chain.write(&[7u8; 512], 4 * GRAIN).unwrap();
        let mut tail = [0u8; 512];
        chain.read(&mut tail, 4 * GRAIN).unwrap();
        assert_eq!(tail, [7u8; 512]);
        let alloc = chain.allocated(0, capacity).unwrap();
        assert_eq!(alloc, vec![(GRAIN, 2 * GRAIN), (4 * GRAIN, capacity)]);
        drop(chain);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_writes_to_a_flat_disk_read_back() {
        let dir = std::env::temp_dir().join(format!("fake-vddk-direct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let capacity = 8 * GRAIN;
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\
             RW {} VMFS \"f-flat.vmdk\"\n",
            capacity / SECTOR
        );
        std::fs::write(dir.join("f.vmdk"), &text).unwrap();
        File::create(dir.join("f-flat.vmdk"))
            .unwrap()
            .set_len(capacity)
            .unwrap();
        let desc = Descriptor::parse(&text).unwrap();
        let chain = Chain::open(&dir.join("f.vmdk"), &desc, true, true).unwrap();
        // A source buffer deliberately off the 4 KiB alignment (bounced), one aligned slice
        // of a larger buffer, and a write that is not whole device sectors (page cache).
        let data: Vec<u8> = (0..GRAIN + 1).map(|i| (i % 251) as u8).collect();
        let unaligned = &data[1..];
        chain.write(unaligned, GRAIN).unwrap();
        let mut big = vec![5u8; 3 * DIRECT_ALIGN];
        let at = big.as_ptr().align_offset(DIRECT_ALIGN);
        chain.write(&big[at..at + DIRECT_ALIGN], 3 * GRAIN).unwrap();
        big.clear();
        chain.write(&[6u8; 100], 4 * GRAIN).unwrap();
        chain.sync().unwrap();
        let mut got = vec![0u8; capacity as usize];
        File::open(dir.join("f-flat.vmdk"))
            .unwrap()
            .read_exact_at(&mut got, 0)
            .unwrap();
        let g = GRAIN as usize;
        assert!(got[..g].iter().all(|&b| b == 0));
        assert_eq!(&got[g..2 * g], unaligned);
        assert!(got[2 * g..3 * g].iter().all(|&b| b == 0));
        assert!(got[3 * g..3 * g + DIRECT_ALIGN].iter().all(|&b| b == 5));
        assert!(got[4 * g..4 * g + 100].iter().all(|&b| b == 6));
        assert!(got[4 * g + 100..].iter().all(|&b| b == 0));
        drop(chain);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
