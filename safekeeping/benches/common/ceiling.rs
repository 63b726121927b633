//! The machine's ceiling for a backup's data phase, measured on the benchmark disk itself: every
//! non-zero chunk hashed (SHA-256) and compressed (zstd at the repository's level) on all cores,
//! from the page cache, with nothing written. A backup cannot do less work per chunk without
//! skipping the hash or the compression, so its data phase is compared with this.
//!
//! Also what the stored size is made of (measured once per run): unique 1 MiB chunks, their
//! size at zstd levels 1 and 3, chunks compression cannot shrink, and how much a 4 KiB-aligned
//! deduplication would find that 1 MiB fixed chunks miss.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Chunk size of the measurement (safekeeping's default).
pub const CHUNK: usize = 1 << 20;

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `work(thread, chunk_index, bytes)` over the non-zero chunks of `flat` on every core,
/// chunk `i` on thread `i % threads`; returns each thread's result.
fn over_chunks<T: Send>(
    flat: &Path,
    init: impl Fn() -> T + Sync,
    work: impl Fn(&mut T, u64, &[u8]) + Sync,
) -> std::io::Result<Vec<T>> {
    let f = File::open(flat)?;
    let size = f.metadata()?.len();
    let chunks = size.div_ceil(CHUNK as u64);
    let n = threads() as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let (f, init, work) = (&f, &init, &work);
                s.spawn(move || -> std::io::Result<T> {
                    let mut state = init();
                    let mut buf = vec![0u8; CHUNK];
                    let mut i = t;
                    while i < chunks {
                        let off = i * CHUNK as u64;
                        let len = (size - off).min(CHUNK as u64) as usize;
                        f.read_exact_at(&mut buf[..len], off)?;
                        if !all_zero(&buf[..len]) {
                            work(&mut state, i, &buf[..len]);
                        }
                        i += n;
                    }
                    Ok(state)
                })
            })
            .collect();
        handles.into_iter().map(joined).collect()
    })
}

/// A measuring thread's result; its panic as an error.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, std::io::Result<T>>) -> std::io::Result<T> {
    h.join()
        .map_err(|_| std::io::Error::other("thread panicked"))?
}

/// One measurement of the ceiling.
pub struct Ceiling {
    /// Wall seconds for hashing and compressing every non-zero chunk on all cores.
    pub secs: f64,
    /// Bytes of the non-zero chunks.
    pub bytes: u64,
}

/// Hashes and compresses (zstd `level`) every non-zero chunk of `flat` on all cores.
///
/// # Errors
/// Reading the file.
pub fn measure(flat: &Path, level: i32) -> std::io::Result<Ceiling> {
    // Read once untimed, so the ceiling is what its name says, from the page cache: after a
    // round's restores have written three new disks, the page cache may no longer hold the
    // benchmark disk, and reading it from the device made the ceiling up to 25 % slower
    // (1.51 s in a first round, 1.90 s in the next two), which flattered the ratio. The backup
    // measured after it finds the disk in the page cache too.
    over_chunks(flat, || (), |_, _, _| {})?;
    let t = Instant::now();
    let per_thread = over_chunks(
        flat,
        || (zstd::bulk::Compressor::new(level).ok(), 0u64),
        |(c, bytes), _, data| {
            let digest = Sha256::digest(data);
            std::hint::black_box(digest);
            if let Some(c) = c.as_mut() {
                std::hint::black_box(c.compress(data).ok());
            }
            *bytes += data.len() as u64;
        },
    )?;
    Ok(Ceiling {
        secs: t.elapsed().as_secs_f64(),
        bytes: per_thread.iter().map(|(_, b)| b).sum(),
    })
}

/// What the stored size of the disk is made of.
#[derive(Default)]
pub struct SizeBreakdown {
    /// Bytes of non-zero 1 MiB chunks.
    pub nonzero: u64,
    /// Bytes of the distinct ones.
    pub unique: u64,
    /// Distinct chunks stored with zstd level 1 (raw when that is not smaller).
    pub zstd1: u64,
    /// The same at zstd level 3.
    pub zstd3: u64,
    /// Distinct chunks that zstd-1 shrinks by less than 2 %, and their bytes.
    pub incompressible: u64,
    /// Distinct non-zero 4 KiB blocks, in bytes (what a 4 KiB-aligned deduplication keeps).
    pub unique_4k: u64,
}

/// Measures [`SizeBreakdown`] of `flat`.
///
/// # Errors
/// Reading the file.
pub fn breakdown(flat: &Path) -> std::io::Result<SizeBreakdown> {
    type State = (
        Option<zstd::bulk::Compressor<'static>>,
        Option<zstd::bulk::Compressor<'static>>,
        Vec<[u8; 32]>,
        Vec<([u8; 32], u64, u64, u64)>,
    );
    let per_thread = over_chunks(
        flat,
        || -> State {
            (
                zstd::bulk::Compressor::new(1).ok(),
                zstd::bulk::Compressor::new(3).ok(),
                Vec::new(),
                Vec::new(),
            )
        },
        |(c1, c3, blocks, chunks), _, data| {
            for b in data.chunks(4096) {
                if !all_zero(b) {
                    blocks.push(Sha256::digest(b).into());
                }
            }
            let len = data.len() as u64;
            let size = |c: &mut Option<zstd::bulk::Compressor<'static>>| {
                c.as_mut()
                    .and_then(|c| c.compress(data).ok())
                    .map_or(len, |z| (z.len() as u64).min(len))
            };
            let (z1, z3) = (size(c1), size(c3));
            chunks.push((Sha256::digest(data).into(), len, z1, z3));
        },
    )?;
    let mut out = SizeBreakdown::default();
    let mut seen_chunks = HashSet::new();
    let mut seen_blocks = HashSet::new();
    for (_, _, blocks, chunks) in per_thread {
        for (id, len, z1, z3) in chunks {
            out.nonzero += len;
            if seen_chunks.insert(id) {
                out.unique += len;
                out.zstd1 += z1;
                out.zstd3 += z3;
                if z1 * 100 >= len * 98 {
                    out.incompressible += len;
                }
            }
        }
        for b in blocks {
            if seen_blocks.insert(b) {
                out.unique_4k += 4096;
            }
        }
    }
    Ok(out)
}

/// The granularity of a restore's writes: the hole block (safekeeping writes only the 4 KiB
/// blocks holding data, as a thin disk needs) and the direct-I/O alignment.
const WRITE_BLOCK: usize = 4096;

/// The longest write of [`write_floor`]: safekeeping's restore gathers its data into writes
/// of up to 4 MiB (`VddkSink`), and longer ones did not write faster on this machine.
const FLOOR_WRITE: usize = 4 << 20;

/// The runs of non-zero 4 KiB blocks of `flat`, as `(offset, length)`: what a restore of it
/// must write.
pub fn data_runs(flat: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let f = File::open(flat)?;
    let size = f.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut off = 0u64;
    while off < size {
        let len = (size - off).min(CHUNK as u64) as usize;
        f.read_exact_at(&mut buf[..len], off)?;
        for (i, block) in buf[..len].chunks(WRITE_BLOCK).enumerate() {
            if all_zero(block) {
                continue;
            }
            let at = off + (i * WRITE_BLOCK) as u64;
            match runs.last_mut() {
                Some((o, l)) if *o + *l == at => *l += block.len() as u64,
                _ => runs.push((at, block.len() as u64)),
            }
        }
        off += len as u64;
    }
    Ok(runs)
}

/// The machine's floor for a restore's data phase: `runs` written in place into a new file in
/// `dir`, in `O_DIRECT` writes of up to 4 MiB, one after another, then fsynced; nothing read,
/// decoded or verified. This is how the lab's VDDK writes a restored disk (as ESXi writes a
/// VMFS disk, with no page cache), so no restore through it can be faster; restic and borg
/// write into the page cache instead and return before their data is on the device.
/// Returns the wall seconds; the file is removed afterwards.
///
/// # Errors
/// Creating, writing or syncing the file.
pub fn write_floor(dir: &Path, runs: &[(u64, u64)]) -> std::io::Result<f64> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("write-floor-{}.tmp", std::process::id()));
    // An aligned window of a larger buffer: direct I/O wants the memory aligned too. The
    // content is not zero, so nothing between here and the device can skip it.
    let mut raw = vec![0u8; FLOOR_WRITE + WRITE_BLOCK];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8) | 1;
    }
    let start = raw.as_ptr().align_offset(WRITE_BLOCK);
    let buf = &raw[start..start + FLOOR_WRITE];
    let t = Instant::now();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let written = (|| {
        for &(offset, len) in runs {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(FLOOR_WRITE as u64) as usize;
                // Runs are whole 4 KiB blocks except, perhaps, the disk's last one.
                let n = n.next_multiple_of(WRITE_BLOCK).min(FLOOR_WRITE);
                f.write_all_at(&buf[..n], offset + done)?;
                done += n as u64;
            }
        }
        f.sync_all()
    })();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    written.map(|()| secs)
}

/// Reads every file under `dir` (a repository's chunk files) with `O_DIRECT` on `threads`
/// threads, as a local repository's restore reads its chunks; returns the bytes read.
///
/// # Errors
/// Listing or reading the files.
fn read_direct(dir: &Path, threads: usize) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let (files, next) = (&files, &next);
                s.spawn(move || -> std::io::Result<u64> {
                    let mut raw = vec![0u8; (8 << 20) + WRITE_BLOCK];
                    let start = raw.as_ptr().align_offset(WRITE_BLOCK);
                    let buf = &mut raw[start..start + (8 << 20)];
                    let mut bytes = 0;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(path) = files.get(i) else {
                            return Ok(bytes);
                        };
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_DIRECT)
                            .open(path)?;
                        let len = f.metadata()?.len() as usize;
                        let want = len.next_multiple_of(WRITE_BLOCK).min(buf.len());
                        let mut done = 0;
                        while done < len.min(want) {
                            let n = f.read_at(&mut buf[done..want], done as u64)?;
                            if n == 0 {
                                break;
                            }
                            done += n;
                        }
                        bytes += done as u64;
                    }
                })
            })
            .collect();
        handles.into_iter().map(joined).sum()
    })
}

/// The machine's floor for a restore from a local repository whose chunks are not in memory
/// (safekeeping reads and writes with direct I/O): every chunk file under `chunks` read with
/// `O_DIRECT` on four threads while [`write_floor`] writes `runs`, both on the same device at
/// once. Returns the wall seconds until both are done and the bytes read.
///
/// # Errors
/// As [`read_direct`] and [`write_floor`].
pub fn restore_floor(
    datastore: &Path,
    runs: &[(u64, u64)],
    chunks: &Path,
) -> std::io::Result<(f64, u64)> {
    let t = Instant::now();
    let (read, written) = std::thread::scope(|s| {
        let reader = s.spawn(|| read_direct(chunks, 4));
        let written = write_floor(datastore, runs);
        let read = joined(reader);
        (read, written)
    });
    let secs = t.elapsed().as_secs_f64();
    written?;
    Ok((secs, read?))
}
