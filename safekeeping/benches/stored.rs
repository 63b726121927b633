//! Stored size: what costs what, on the guest-like disk of the backup benchmark, without the lab.
//!
//! `cargo bench -p safekeeping --bench stored` writes the same guest-like image as
//! `benches/backup.rs` (`common/guest_image.rs`, same layout seed, `SAFEKEEPING_BENCH_SIZE`,
//! default `2G`) into `target/bench-stored/guest.img` and prints, as markdown tables:
//!
//! 1. **real repositories**: the image ingested through the library into fresh repositories of
//!    fixed 256 KiB, 1 MiB and 4 MiB chunks (`SAFEKEEPING_BENCH_CHUNKS`) and of content-defined
//!    chunks (the default of `repo init`), plain and encrypted (`SAFEKEEPING_BENCH_ENCRYPTED=0`
//!    leaves the encrypted one out), and `restic backup` of the same file
//!    (restic's defaults) into `SAFEKEEPING_BENCH_ROUNDS` (default 3) fresh repositories, since
//!    restic's chunker polynomial is random per repository; each measured twice, as apparent
//!    bytes (the sum of file lengths, what the other benchmarks call "stored") and as allocated
//!    bytes (`du`: blocks of files and folders), with file and folder counts;
//! 2. **compression levels** on the distinct non-zero 1 MiB chunks, split into the chunks
//!    zstd-1 shrinks by 2 % or more (compressible) and the rest (incompressible): bytes at zstd
//!    -1, 1, 3, 6, 9 and 19, and the CPU each level costs relative to zstd-1, on a sample of
//!    every `SAFEKEEPING_BENCH_SAMPLE`-th compressible chunk (default 16) held in memory, levels
//!    interleaved over `SAFEKEEPING_BENCH_ROUNDS` rounds (levels 9 and 19 are sized on that
//!    sample only, scaled by their ratio to zstd-1 on it); incompressible chunks raw against a
//!    zstd frame;
//! 3. **chunking**: fixed chunks of the same sizes against content-defined chunks whose cut
//!    points lie only on 4 KiB boundaries, chosen from a hash of each 4 KiB block (8 bytes of
//!    its SHA-256) with minimum, mean and maximum sizes, and cut around all-zero blocks (holes),
//!    each deduplicated and compressed at zstd-1 offline; and the ideal: every distinct 4 KiB
//!    block once, packed in 1 MiB groups and compressed;
//! 4. **incrementals**: what a CBT incremental would read again and store after the backup
//!    benchmark's change (3 % in 4 MiB pieces) and after 1,000 scattered 4–64 KiB writes, fixed
//!    1 MiB chunks against aligned content-defined chunks, from the block hashes;
//! 5. **the cut hash's cost**: xxh3 and SipHash-1-3 of every 4 KiB block against the SHA-256
//!    of 1 MiB chunks every backup already computes, one thread, in memory.
//!
//! `SAFEKEEPING_BENCH_PARTS` (default `1,2,3,4,5`) chooses the parts. Sizes are MiB (2^20 bytes). Nothing here is timed against a target: the CPU figures are
//! ratios within the run (the machine is shared), and the ingest seconds are for orientation
//! only (`--profile dev` runs the repository code unoptimised).

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use repository_format::{
    Area, BackupMode, DiskDescriptor, DiskSource, Encryption, FileSource, GenerationStatus,
    InitOptions, KdfParams, Passphrase, Repository, TargetIdentity, TargetKind,
};
use sha2::{Digest, Sha256};

#[path = "../../repository-format/benches/common/mixed_image.rs"]
#[allow(dead_code)]
mod mixed_image;
use mixed_image::{parse_size, Rng};

mod common {
    pub mod guest_image;
    #[allow(dead_code)]
    pub mod timing;
}
use common::guest_image::{fill_guest, BLOCK};
use common::timing::{process_cpu_secs, BoxResult};

/// Layout seed of the guest image (the backup benchmark's, so both measure the same disk).
const SEED: u64 = 0x005A_FE53;
/// Blob header per stored object (`format::BLOB_HEADER_LEN`).
const BLOB_HEADER: u64 = 24;
/// What encryption adds to a blob: nonce and tag.
const SEAL: u64 = 12 + 16;
/// A chunk counts as incompressible when zstd-1 saves less than this share (in percent).
const INCOMPRESSIBLE_PERCENT: u64 = 98;
/// zstd levels compared.
const LEVELS: [i32; 6] = [-1, 1, 3, 6, 9, 19];
/// Levels measured on a sample only (too slow for the whole disk on two shared cores).
const SAMPLED_LEVELS: [i32; 2] = [9, 19];

const B4K: usize = BLOCK as usize;
const MIB: f64 = (1u64 << 20) as f64;

fn mib(b: u64) -> f64 {
    b as f64 / MIB
}

/// A stretch of the image: offset and length.
#[derive(Clone, Copy)]
struct Extent {
    off: u64,
    len: usize,
}

/// Per 4 KiB block of the image: its SHA-256, or `None` for an all-zero block.
struct Blocks {
    digests: Vec<Option<[u8; 32]>>,
}

impl Blocks {
    fn scan(f: &File, size: u64) -> std::io::Result<Self> {
        let mut digests = Vec::with_capacity((size / BLOCK) as usize);
        let mut buf = vec![0u8; 4 << 20];
        let mut off = 0u64;
        while off < size {
            let len = (size - off).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..len], off)?;
            for b in buf[..len].chunks(B4K) {
                digests.push(if b.iter().all(|&x| x == 0) {
                    None
                } else {
                    Some(Sha256::digest(b).into())
                });
            }
            off += len as u64;
        }
        Ok(Self { digests })
    }

    /// The id of blocks `range` as one chunk (SHA-256 of the block digests, zero blocks as
    /// zeros): equal exactly when the chunks' contents are equal (up to SHA-256 collisions).
    fn chunk_id(&self, range: std::ops::Range<usize>) -> Option<[u8; 32]> {
        let mut h = Sha256::new();
        let mut any = false;
        for d in &self.digests[range] {
            match d {
                Some(d) => {
                    any = true;
                    h.update(d);
                }
                None => h.update([0u8; 32]),
            }
        }
        any.then(|| h.finalize().into())
    }
}

/// The distinct non-zero chunks of a chunking (first occurrence of each), and all non-zero ones.
struct Chunking {
    /// Every non-zero chunk, as a range of blocks, in disk order.
    ranges: Vec<std::ops::Range<usize>>,
    distinct: Vec<Extent>,
    nonzero_chunks: usize,
    nonzero_bytes: u64,
}

impl Chunking {
    fn from_ranges(blocks: &Blocks, ranges: impl Iterator<Item = std::ops::Range<usize>>) -> Self {
        let mut seen = HashSet::new();
        let mut out = Chunking {
            ranges: Vec::new(),
            distinct: Vec::new(),
            nonzero_chunks: 0,
            nonzero_bytes: 0,
        };
        for r in ranges {
            let Some(id) = blocks.chunk_id(r.clone()) else {
                continue;
            };
            let ext = Extent {
                off: r.start as u64 * BLOCK,
                len: r.len() * B4K,
            };
            out.ranges.push(r.clone());
            out.nonzero_chunks += 1;
            out.nonzero_bytes += ext.len as u64;
            if seen.insert(id) {
                out.distinct.push(ext);
            }
        }
        out
    }

    fn fixed(blocks: &Blocks, chunk: usize) -> Self {
        let per = chunk / B4K;
        let n = blocks.digests.len();
        Self::from_ranges(
            blocks,
            (0..n.div_ceil(per)).map(|i| i * per..((i + 1) * per).min(n)),
        )
    }

    /// Content-defined chunks cut only between 4 KiB blocks: after a block whose hash has its
    /// low `bits` bits zero once the chunk holds `min` blocks, always at `max` blocks, and
    /// around every all-zero block (a hole in the index, never stored).
    fn aligned_cdc(blocks: &Blocks, min: usize, bits: u32, max: usize) -> Self {
        let mask = (1u64 << bits) - 1;
        let mut ranges = Vec::new();
        let mut start = 0usize;
        for (i, d) in blocks.digests.iter().enumerate() {
            match d {
                None => {
                    if start < i {
                        ranges.push(start..i);
                    }
                    start = i + 1;
                }
                Some(d) => {
                    let len = i + 1 - start;
                    let h = u64::from_le_bytes(d[24..32].try_into().expect("8 bytes"));
                    if len >= max || (len >= min && h & mask == 0) {
                        ranges.push(start..i + 1);
                        start = i + 1;
                    }
                }
            }
        }
        if start < blocks.digests.len() {
            ranges.push(start..blocks.digests.len());
        }
        Self::from_ranges(blocks, ranges.into_iter())
    }

    fn distinct_bytes(&self) -> u64 {
        self.distinct.iter().map(|e| e.len as u64).sum()
    }
}

/// Compressed size of each extent at `level` (`usize::MAX` where zstd failed), on all cores.
fn compressed_sizes(f: &File, extents: &[Extent], level: i32) -> std::io::Result<Vec<usize>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let mut out = vec![0usize; extents.len()];
    let results: Vec<Vec<(usize, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                s.spawn(move || -> std::io::Result<Vec<(usize, usize)>> {
                    let mut c = zstd::bulk::Compressor::new(level)?;
                    let mut buf = Vec::new();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(e) = extents.get(i) else { break };
                        buf.resize(e.len, 0);
                        f.read_exact_at(&mut buf, e.off)?;
                        let z = c.compress(&buf).map_or(usize::MAX, |z| z.len());
                        mine.push((i, z));
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
            })
            .collect::<std::io::Result<_>>()
    })?;
    for (i, z) in results.into_iter().flatten() {
        out[i] = z;
    }
    Ok(out)
}

/// Stored bytes of chunks of lengths `lens` compressed to `z`: the smaller of the two, plus
/// the blob header (what `Codec` writes).
fn stored(lens: impl Iterator<Item = usize>, z: &[usize]) -> u64 {
    lens.zip(z)
        .map(|(l, &z)| z.min(l) as u64 + BLOB_HEADER)
        .sum()
}

/// Apparent and allocated bytes of everything below `p`, and the files and folders counted.
#[derive(Default, Clone, Copy)]
struct DiskUse {
    apparent: u64,
    allocated: u64,
    files: u64,
    dirs: u64,
}

fn disk_use(p: &Path) -> DiskUse {
    let mut u = DiskUse::default();
    fn walk(p: &Path, u: &mut DiskUse) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            u.allocated += m.blocks() * 512;
            if m.is_dir() {
                u.dirs += 1;
                walk(&e.path(), u);
            } else {
                u.files += 1;
                u.apparent += m.len();
            }
        }
    }
    walk(p, &mut u);
    u
}

/// Ingests `image` into a fresh repository at `repo` made with `opts` (encrypted when it says
/// so), returning the wall seconds.
fn ingest(image: &Path, repo: &Path, opts: InitOptions) -> BoxResult<f64> {
    let _ = fs::remove_dir_all(repo);
    // The passphrase is a benchmark fixture; the KDF does not change any stored size.
    let pass = (opts.encryption == Encryption::Aes256Gcm).then(|| Passphrase::from("bench only"));
    let repo = Repository::init_with(
        repo,
        &InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..opts
        },
        pass.as_ref(),
    )?;
    let lock = repo.lock_shared(Duration::from_secs(10))?;
    let mut id = TargetIdentity::new(TargetKind::Vm, "bench");
    id.instance_uuid = Some("bench".into());
    let key = repo.target_key(&id)?;
    let tl = repo.lock_target(&key, Duration::from_secs(10))?;
    let mut src = FileSource::open(image)?;
    let cap = src.capacity();
    let t = Instant::now();
    let w = repo.begin_generation(&lock, tl, id, BackupMode::Full, None)?;
    w.ingest_disk(
        DiskDescriptor::new(2000, cap),
        None,
        &[Area::new(0, cap)],
        &mut src,
        &|_| {},
    )?;
    w.commit(GenerationStatus::Succeeded, Default::default())?;
    Ok(t.elapsed().as_secs_f64())
}

/// `restic init` + `restic backup IMAGE` into a fresh repository at `repo` (restic 0.14
/// defaults); wall seconds, or `None` without restic.
fn restic(image: &Path, repo: &Path) -> BoxResult<Option<f64>> {
    let cache = repo.with_extension("cache");
    let _ = fs::remove_dir_all(repo);
    let _ = fs::remove_dir_all(&cache);
    let cmd = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.args(args)
            .arg("--repo")
            .arg(repo)
            .arg("--cache-dir")
            .arg(&cache)
            // A benchmark fixture, through the environment (never an argument).
            .env("RESTIC_PASSWORD", "bench only")
            .stdout(Stdio::null());
        c
    };
    match cmd(&["init"]).status() {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("restic init: {s}").into()),
        Err(_) => return Ok(None),
    }
    let t = Instant::now();
    let s = cmd(&["backup", "--quiet"]).arg(image).status()?;
    if !s.success() {
        return Err(format!("restic backup: {s}").into());
    }
    Ok(Some(t.elapsed().as_secs_f64()))
}

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("stored: benchmark");
        return Ok(());
    }
    let size =
        parse_size(&std::env::var("SAFEKEEPING_BENCH_SIZE").unwrap_or_else(|_| "2G".into()))?;
    let sample: usize = std::env::var("SAFEKEEPING_BENCH_SAMPLE")
        .unwrap_or_else(|_| "16".into())
        .parse()?;
    let rounds: usize = std::env::var("SAFEKEEPING_BENCH_ROUNDS")
        .unwrap_or_else(|_| "3".into())
        .parse()?;
    let encrypted = std::env::var("SAFEKEEPING_BENCH_ENCRYPTED").map_or(true, |v| v != "0");
    let chunk_sizes = std::env::var("SAFEKEEPING_BENCH_CHUNKS")
        .unwrap_or_else(|_| "256K,1M,4M".into())
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<u64>, _>>()?;
    let sk = PathBuf::from(env!("CARGO_BIN_EXE_safekeeping"));
    let base = sk
        .parent()
        .ok_or("no binary directory")?
        .join("..")
        .join("bench-stored");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;

    let image = base.join("guest.img");
    eprintln!("filling {} with the guest-like image ...", image.display());
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&image)?;
    f.set_len(size)?;
    let counts = fill_guest(&f, size, SEED)?;
    println!(
        "guest-like image: {} MiB, written {:.0} MiB (files {:.0}, media {:.0}, duplicates {:.0}), never written {:.0}",
        size >> 20,
        mib(counts.written()),
        mib(counts.files),
        mib(counts.media),
        mib(counts.duplicates),
        mib(counts.holes),
    );

    // SAFEKEEPING_BENCH_PARTS=1,3 runs only those parts (default: all five).
    let parts = std::env::var("SAFEKEEPING_BENCH_PARTS").unwrap_or_else(|_| "1,2,3,4,5".into());
    let part = |n: &str| parts.split(',').any(|p| p.trim() == n);
    if part("1") {
        real_repositories(&image, &base, &chunk_sizes, encrypted, rounds)?;
    }
    eprintln!("hashing every 4 KiB block ...");
    let blocks = Blocks::scan(&f, size)?;
    if part("2") {
        levels(&f, &blocks, sample, rounds)?;
    }
    if part("3") {
        chunkings(&f, &blocks, &chunk_sizes)?;
    }
    if part("4") {
        incrementals(&blocks, size);
    }
    if part("5") {
        cut_hash_cost(&f, &blocks, rounds)?;
    }
    let _ = fs::remove_dir_all(&base);
    Ok(())
}

/// Part 1: real repositories and restic, apparent vs allocated.
fn real_repositories(
    image: &Path,
    base: &Path,
    chunk_sizes: &[u64],
    encrypted: bool,
    restic_runs: usize,
) -> BoxResult<()> {
    println!(
        "\n## Real repositories (apparent = file lengths; allocated = du, files and folders)\n"
    );
    println!("| repository | apparent MiB | allocated MiB | files | folders | ingest s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let fixed = |chunk_size: u32, encryption: Encryption| InitOptions {
        chunk_size,
        encryption,
        ..Default::default()
    };
    let mut runs: Vec<(String, PathBuf, InitOptions)> = chunk_sizes
        .iter()
        .map(|&c| {
            (
                format!("safekeeping, fixed {} KiB chunks, zstd-1", c >> 10),
                base.join(format!("repo-{}k", c >> 10)),
                fixed(c as u32, Encryption::None),
            )
        })
        .collect();
    // The default of `repo init` (format 4): 4 KiB-aligned content-defined chunks.
    runs.push((
        "safekeeping, content-defined chunks (the default), zstd-1".into(),
        base.join("repo-cdc"),
        InitOptions::content_defined(),
    ));
    if encrypted {
        runs.push((
            "safekeeping, content-defined chunks, zstd-1, AES-256-GCM".into(),
            base.join("repo-cdc-enc"),
            InitOptions {
                encryption: Encryption::Aes256Gcm,
                ..InitOptions::content_defined()
            },
        ));
    }
    for (name, repo, opts) in runs {
        eprintln!("ingesting into {} ...", repo.display());
        let secs = ingest(image, &repo, opts)?;
        let u = disk_use(&repo);
        println!(
            "| {name} | {:.1} | {:.1} | {} | {} | {secs:.1} |",
            mib(u.apparent),
            mib(u.allocated),
            u.files,
            u.dirs
        );
        let _ = fs::remove_dir_all(&repo);
    }
    // restic draws a random chunker polynomial per repository, so its cut points and what it
    // deduplicates differ from one repository to the next: several fresh repositories.
    let repo = base.join("restic-repo");
    let version = Command::new("restic")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for run in 1..=restic_runs.max(1) {
        eprintln!("restic backup {run} ...");
        match restic(image, &repo)? {
            Some(secs) => {
                let u = disk_use(&repo);
                println!(
                    "| {version} (defaults), repository {run} | {:.1} | {:.1} | {} | {} | {secs:.1} |",
                    mib(u.apparent),
                    mib(u.allocated),
                    u.files,
                    u.dirs
                );
            }
            None => {
                println!("| restic | not installed | | | | |");
                break;
            }
        }
    }
    let _ = fs::remove_dir_all(&repo);
    let _ = fs::remove_dir_all(repo.with_extension("cache"));
    Ok(())
}

/// Part 2: compression levels on the distinct 1 MiB chunks, by class.
fn levels(f: &File, blocks: &Blocks, sample: usize, rounds: usize) -> BoxResult<()> {
    let chunking = Chunking::fixed(blocks, 1 << 20);
    eprintln!(
        "compressing {} distinct 1 MiB chunks at zstd-1 ...",
        chunking.distinct.len()
    );
    let z1 = compressed_sizes(f, &chunking.distinct, 1)?;
    let (mut comp, mut incomp) = (Vec::new(), Vec::new());
    let mut comp_z1 = 0u64;
    for (e, &z) in chunking.distinct.iter().zip(&z1) {
        if (z as u64) * 100 < e.len as u64 * INCOMPRESSIBLE_PERCENT {
            comp_z1 += z as u64 + BLOB_HEADER;
            comp.push(*e);
        } else {
            incomp.push(*e);
        }
    }
    let raw = |v: &[Extent]| v.iter().map(|e| e.len as u64).sum::<u64>();
    // The samples are read into memory once, so the CPU figures are compression alone.
    let load = |v: &[Extent]| -> std::io::Result<Vec<Vec<u8>>> {
        v.iter()
            .step_by(sample.max(1))
            .map(|e| {
                let mut b = vec![0u8; e.len];
                f.read_exact_at(&mut b, e.off)?;
                Ok(b)
            })
            .collect()
    };
    let comp_sample = load(&comp)?;
    let incomp_sample = load(&incomp)?;
    let bytes = |v: &[Vec<u8>]| v.iter().map(|b| b.len() as u64).sum::<u64>();
    // CPU seconds of this thread compressing `data` at `level` (the other threads are idle),
    // and the stored bytes (the smaller of frame and raw, as the blob keeps).
    let cpu = |level: i32, data: &[Vec<u8>]| -> BoxResult<(f64, u64)> {
        let mut c = zstd::bulk::Compressor::new(level)?;
        let mut total = 0u64;
        let before = process_cpu_secs(u64::from(std::process::id()));
        for b in data {
            total += c.compress(b).map_or(b.len(), |z| z.len().min(b.len())) as u64;
        }
        Ok((
            process_cpu_secs(u64::from(std::process::id())) - before,
            total,
        ))
    };
    // Rounds interleave the levels, so a burst of load on the shared machine hits them alike;
    // the medians are compared.
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); LEVELS.len()];
    let mut sample_z = vec![0u64; LEVELS.len()];
    let mut incomp_secs = Vec::new();
    for round in 0..rounds.max(1) {
        eprintln!("CPU per level, round {} ...", round + 1);
        for (i, &level) in LEVELS.iter().enumerate() {
            let (s, z) = cpu(level, &comp_sample)?;
            secs[i].push(s);
            sample_z[i] = z;
            if level == 1 {
                incomp_secs.push(cpu(1, &incomp_sample)?.0);
            }
        }
    }
    let med = |v: &[f64]| -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let one = LEVELS
        .iter()
        .position(|&l| l == 1)
        .expect("level 1 is measured");
    let cpu1 = med(&secs[one]).max(1e-9);
    println!(
        "\n## Compression levels, distinct 1 MiB chunks ({} compressible, {:.0} MiB raw; {} incompressible, {:.0} MiB raw)\n",
        comp.len(),
        mib(raw(&comp)),
        incomp.len(),
        mib(raw(&incomp))
    );
    println!(
        "CPU: one thread compressing every {sample}th compressible chunk ({} chunks, {:.0} MiB, in memory), median of {rounds} interleaved rounds, relative to zstd-1 (zstd-1: {:.0} MB/s).\n",
        comp_sample.len(),
        mib(bytes(&comp_sample)),
        bytes(&comp_sample) as f64 / 1e6 / cpu1,
    );
    println!("| zstd level | compressible MiB | incompressible MiB (smaller of raw and frame) | total MiB | vs zstd-1 | CPU vs zstd-1 |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let incomp_z1: u64 = stored(
        incomp.iter().map(|e| e.len),
        &compressed_sizes(f, &incomp, 1)?,
    );
    let mut total1 = 0u64;
    for (i, &level) in LEVELS.iter().enumerate() {
        let sampled = SAMPLED_LEVELS.contains(&level);
        let comp_bytes = if sampled {
            // Scaled by the ratio to zstd-1 on the same sample.
            (comp_z1 as f64 * sample_z[i] as f64 / sample_z[one] as f64) as u64
        } else if level == 1 {
            comp_z1
        } else {
            stored(
                comp.iter().map(|e| e.len),
                &compressed_sizes(f, &comp, level)?,
            )
        };
        // Incompressible chunks stay raw at any level; the slow levels are not run on them.
        let incomp_bytes = if level == 1 || sampled {
            incomp_z1
        } else {
            stored(
                incomp.iter().map(|e| e.len),
                &compressed_sizes(f, &incomp, level)?,
            )
        };
        let total = comp_bytes + incomp_bytes;
        if level == 1 {
            total1 = total;
        }
        println!(
            "| {level}{} | {:.1} | {:.1} | {:.1} | {} | {:.2}x |",
            if sampled { " (sample)" } else { "" },
            mib(comp_bytes),
            mib(incomp_bytes),
            mib(total),
            if total1 == 0 {
                "".to_string()
            } else {
                format!("{:.3}", total as f64 / total1 as f64)
            },
            med(&secs[i]) / cpu1
        );
    }
    // Incompressible chunks: what a frame would cost, and what compressing them costs.
    let frames = compressed_sizes(f, &incomp, 1)?;
    let frame_bytes: u64 = frames.iter().map(|&z| z as u64).sum();
    let kept_frames = frames
        .iter()
        .zip(&incomp)
        .filter(|(&z, e)| z < e.len)
        .count();
    println!(
        "\nIncompressible chunks: raw {:.2} MiB, as zstd-1 frames {:.2} MiB ({:+.3} %; {} of {} frames are smaller than raw and so kept); zstd-1 on them runs at {:.0} MB/s of one thread, against {:.0} MB/s on the compressible sample.",
        mib(raw(&incomp)),
        mib(frame_bytes),
        (frame_bytes as f64 / raw(&incomp).max(1) as f64 - 1.0) * 100.0,
        kept_frames,
        incomp.len(),
        bytes(&incomp_sample) as f64 / 1e6 / med(&incomp_secs).max(1e-9),
        bytes(&comp_sample) as f64 / 1e6 / cpu1,
    );
    Ok(())
}

/// Part 4: what an incremental reads and stores after a change, fixed 1 MiB chunks against
/// aligned content-defined chunks, computed from the block hashes (the changed blocks get new,
/// distinct hashes, as random guest writes would).
///
/// With content-defined chunks an incremental must read every chunk of the new chunking that
/// is not an old chunk with the same blocks: the chunk holding a change, and the ones after it
/// until the cuts meet the old ones again. (Starting from the old chunk that holds the first
/// changed block gives exactly the chunking a full read would: cuts depend only on the blocks
/// after a cut.)
fn incrementals(blocks: &Blocks, size: u64) {
    println!("\n## Incrementals after a change (offline; read = chunks the backup must read again, new = bytes of chunks not stored before, before compression)\n");
    println!("| change | changed MiB | fixed 1 MiB: read MiB | fixed 1 MiB: new MiB | aligned CDC min 128 KiB, b = 7, max 2 MiB: read MiB | new MiB |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let blocks_total = (size / BLOCK) as usize;
    // The backup benchmark's change: 3 % of the disk in 4 MiB pieces at 4 MiB-aligned offsets
    // (its first round's seed).
    let piece = (4usize << 20) / B4K;
    let mut rng = Rng(SEED ^ 0x0303);
    let slots = (blocks_total / piece).max(1);
    let pieces = ((size * 3 / 100).div_ceil(4 << 20) as usize).min(slots);
    let mut starts: Vec<usize> = Vec::new();
    while starts.len() < pieces {
        let s = rng.below(slots as u64) as usize * piece;
        if !starts.contains(&s) {
            starts.push(s);
        }
    }
    let bench_change: Vec<std::ops::Range<usize>> = starts.iter().map(|&s| s..s + piece).collect();
    // Scattered small writes, as a file system's metadata and small files make them: 1,000
    // writes of 4 to 64 KiB at 4 KiB-aligned offsets.
    let mut rng = Rng(SEED ^ 0x5C47);
    let scattered: Vec<std::ops::Range<usize>> = (0..1000)
        .map(|_| {
            let len = 1 + rng.below(16) as usize;
            let s = rng.below((blocks_total - len) as u64) as usize;
            s..s + len
        })
        .collect();
    for (name, change) in [
        (
            "the backup benchmark's: 4 MiB pieces, 4 MiB-aligned, 3 %",
            bench_change,
        ),
        ("scattered: 1,000 writes of 4-64 KiB", scattered),
    ] {
        let mut changed = vec![false; blocks.digests.len()];
        let mut new = Blocks {
            digests: blocks.digests.clone(),
        };
        for r in &change {
            for i in r.clone() {
                changed[i] = true;
                let mut h = Sha256::new();
                h.update(b"changed block");
                h.update((i as u64).to_le_bytes());
                new.digests[i] = Some(h.finalize().into());
            }
        }
        let changed_bytes = changed.iter().filter(|&&c| c).count() as u64 * BLOCK;
        let measure = |old: &Chunking, now: &Chunking| -> (u64, u64) {
            let old_ranges: HashSet<(usize, usize)> =
                old.ranges.iter().map(|r| (r.start, r.end)).collect();
            let old_ids: HashSet<[u8; 32]> = old
                .ranges
                .iter()
                .filter_map(|r| blocks.chunk_id(r.clone()))
                .collect();
            let (mut read, mut stored) = (0u64, 0u64);
            let mut stored_ids = HashSet::new();
            for r in &now.ranges {
                let touched = changed[r.clone()].iter().any(|&c| c);
                if touched || !old_ranges.contains(&(r.start, r.end)) {
                    read += (r.len() * B4K) as u64;
                    if let Some(id) = new.chunk_id(r.clone()) {
                        if !old_ids.contains(&id) && stored_ids.insert(id) {
                            stored += (r.len() * B4K) as u64;
                        }
                    }
                }
            }
            (read, stored)
        };
        let (fixed_read, fixed_new) = measure(
            &Chunking::fixed(blocks, 1 << 20),
            &Chunking::fixed(&new, 1 << 20),
        );
        let (cdc_read, cdc_new) = measure(
            &Chunking::aligned_cdc(blocks, 32, 7, 512),
            &Chunking::aligned_cdc(&new, 32, 7, 512),
        );
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            mib(changed_bytes),
            mib(fixed_read),
            mib(fixed_new),
            mib(cdc_read),
            mib(cdc_new)
        );
    }
}

/// Part 5: what the per-block cut hash of a content-defined chunking would cost, against the
/// SHA-256 every chunk already gets: one thread, the first 256 MiB of non-zero blocks in
/// memory, the hashes interleaved over `rounds`, medians.
fn cut_hash_cost(f: &File, blocks: &Blocks, rounds: usize) -> BoxResult<()> {
    use std::hash::{BuildHasher, Hasher};
    let mut data = Vec::with_capacity(256 << 20);
    for (i, d) in blocks.digests.iter().enumerate() {
        if data.len() >= 256 << 20 {
            break;
        }
        if d.is_some() {
            let at = data.len();
            data.resize(at + B4K, 0);
            f.read_exact_at(&mut data[at..], i as u64 * BLOCK)?;
        }
    }
    let keyed = std::collections::hash_map::RandomState::new();
    let time = |work: &dyn Fn() -> u64| -> f64 {
        let before = process_cpu_secs(u64::from(std::process::id()));
        std::hint::black_box(work());
        process_cpu_secs(u64::from(std::process::id())) - before
    };
    let sha_chunks = || {
        data.chunks(1 << 20)
            .map(|c| u64::from(Sha256::digest(c)[0]))
            .sum::<u64>()
    };
    let xxh3_blocks = || {
        data.chunks(B4K)
            .map(|b| xxhash_rust::xxh3::xxh3_64_with_seed(b, 0x5AFE) & 0x7F)
            .sum::<u64>()
    };
    let siphash_blocks = || {
        data.chunks(B4K)
            .map(|b| {
                let mut h = keyed.build_hasher();
                h.write(b);
                h.finish() & 0x7F
            })
            .sum::<u64>()
    };
    // The alternative that hashes every byte once: SHA-256 of each block, the chunk id the
    // SHA-256 of its blocks' digests, the cut from a keyed hash of each 32-byte digest.
    let two_level = || {
        data.chunks(1 << 20)
            .map(|c| {
                let mut id = Sha256::new();
                let mut cuts = 0u64;
                for b in c.chunks(B4K) {
                    let d = Sha256::digest(b);
                    let mut h = keyed.build_hasher();
                    h.write(&d);
                    cuts += h.finish() & 0x7F;
                    id.update(d);
                }
                u64::from(id.finalize()[0]) + cuts
            })
            .sum::<u64>()
    };
    let (mut sha, mut xxh, mut sip, mut two) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        eprintln!("cut hash cost, round {} ...", round + 1);
        sha.push(time(&sha_chunks));
        xxh.push(time(&xxh3_blocks));
        sip.push(time(&siphash_blocks));
        two.push(time(&two_level));
    }
    let med = |v: &mut Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2].max(1e-9)
    };
    let (sha, xxh, sip, two) = (med(&mut sha), med(&mut xxh), med(&mut sip), med(&mut two));
    let mbs = |secs: f64| data.len() as f64 / 1e6 / secs;
    println!("\n## Cut hash per 4 KiB block, against SHA-256 of 1 MiB chunks ({:.0} MiB of non-zero blocks in memory, one thread, median of {} rounds)\n", mib(data.len() as u64), rounds.max(1));
    if cfg!(debug_assertions) {
        // sha2 is optimised in every profile; this bench and xxh3 are not in the dev profile.
        println!("Unoptimised build: these ratios are not meaningful. Run in release, or add `--config profile.dev.package.safekeeping.opt-level=3 --config profile.dev.package.xxhash-rust.opt-level=3`.\n");
    }
    println!("| hash | MB/s | CPU vs SHA-256 |");
    println!("| --- | ---: | ---: |");
    println!(
        "| SHA-256 of 1 MiB chunks (every backup does this) | {:.0} | 1.00x |",
        mbs(sha)
    );
    println!(
        "| xxh3-64 of each 4 KiB block (seeded) | {:.0} | {:.2}x |",
        mbs(xxh),
        xxh / sha
    );
    println!(
        "| SipHash-1-3 of each 4 KiB block (keyed, std) | {:.0} | {:.2}x |",
        mbs(sip),
        sip / sha
    );
    println!(
        "| instead of both: SHA-256 of each 4 KiB block, chunk id = SHA-256 of the block digests, cut from SipHash of each digest | {:.0} | {:.2}x |",
        mbs(two),
        two / sha
    );
    Ok(())
}

/// Part 3: fixed chunk sizes against 4 KiB-aligned content-defined chunks and the ideal.
fn chunkings(f: &File, blocks: &Blocks, chunk_sizes: &[u64]) -> BoxResult<()> {
    println!("\n## Chunking, deduplication and zstd-1 (offline; stored = compressed or raw, + 24 B blob header per chunk)\n");
    println!("| chunking | non-zero chunks | distinct chunks | mean distinct chunk KiB | distinct MiB | stored MiB, zstd-1 | + ext4 block rounding MiB |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let row = |name: &str, c: &Chunking| -> BoxResult<()> {
        let z = compressed_sizes(f, &c.distinct, 1)?;
        let s = stored(c.distinct.iter().map(|e| e.len), &z);
        let rounded: u64 = c
            .distinct
            .iter()
            .zip(&z)
            .map(|(e, &z)| (z.min(e.len) as u64 + BLOB_HEADER).div_ceil(BLOCK) * BLOCK)
            .sum();
        println!(
            "| {name} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} |",
            c.nonzero_chunks,
            c.distinct.len(),
            c.distinct_bytes() as f64 / 1024.0 / c.distinct.len().max(1) as f64,
            mib(c.distinct_bytes()),
            mib(s),
            mib(rounded)
        );
        Ok(())
    };
    for &size in chunk_sizes {
        eprintln!("fixed {} KiB chunks ...", size >> 10);
        row(
            &format!("fixed {} KiB", size >> 10),
            &Chunking::fixed(blocks, size as usize),
        )?;
    }
    // (min, mask bits, max) in 4 KiB blocks: the mean length is about min + 2^bits blocks.
    for (min, bits, max) in [
        (16usize, 6u32, 256usize),
        (32, 7, 512),
        (64, 6, 512),
        (64, 8, 1024),
        (128, 7, 2048),
    ] {
        let name = format!(
            "aligned CDC min {} KiB, min + 2^{bits} blocks ≈ {} KiB mean, max {} KiB",
            min * 4,
            (min + (1 << bits)) * 4,
            max * 4
        );
        eprintln!("{name} ...");
        row(&name, &Chunking::aligned_cdc(blocks, min, bits, max))?;
    }
    // The ideal: every distinct non-zero 4 KiB block once, packed in first-seen order into
    // 1 MiB groups, each compressed.
    let mut seen = HashSet::new();
    let distinct_blocks: Vec<u64> = blocks
        .digests
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.filter(|d| seen.insert(*d)).map(|_| i as u64 * BLOCK))
        .collect();
    let mut c = zstd::bulk::Compressor::new(1)?;
    let mut group = Vec::with_capacity(1 << 20);
    let mut block = vec![0u8; B4K];
    let mut packed = 0u64;
    for (n, &off) in distinct_blocks.iter().enumerate() {
        f.read_exact_at(&mut block, off)?;
        group.extend_from_slice(&block);
        if group.len() == 1 << 20 || n + 1 == distinct_blocks.len() {
            packed += c.compress(&group)?.len().min(group.len()) as u64 + BLOB_HEADER;
            group.clear();
        }
    }
    println!(
        "| ideal: each distinct 4 KiB block once, packed by 256 | {} | {} | 4 | {:.1} | {:.1} | |",
        blocks.digests.iter().filter(|d| d.is_some()).count(),
        distinct_blocks.len(),
        mib(distinct_blocks.len() as u64 * BLOCK),
        mib(packed)
    );
    println!("\nPer stored chunk: blob header {BLOB_HEADER} B, encryption adds {SEAL} B (nonce and tag).");
    Ok(())
}
