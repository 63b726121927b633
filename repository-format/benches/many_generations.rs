//! Many generations: how long `list`, `show` and `check` (without `--read-data`) take over a
//! repository of 1,000 generations × 10 disks.
//!
//! `cargo bench -p repository-format --bench many_generations` builds the repository through
//! the library (once; it is kept under `target/bench-many-generations/` and reused while its
//! stamp matches): target `vm:bench`, generation 1 full, then incrementals in which disk 0
//! changes one 64 KiB chunk and the other nine disks change nothing, so every generation has
//! ten complete indexes sharing their chunks. Each disk is 16 GiB with 8 chunks written, so the
//! indexes are what a mostly empty large disk costs. Then, each measured in a fresh handle:
//!
//! - `list`: `Repository::targets` + `Repository::generations` (what `safekeeping list` does),
//!   with the catalog cache cold (deleted first) and warm;
//! - `show`: the latest generation's manifest (what `safekeeping show` reads);
//! - `check`: `Repository::check` without reading chunk data.
//!
//! Environment: `SAFEKEEPING_BENCH_GENERATIONS` (default 1000), `SAFEKEEPING_BENCH_DISKS`
//! (default 10), `SAFEKEEPING_BENCH_DIR` (default `<workspace>/target/bench-many-generations`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use repository_format::*;

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CHUNK: u32 = 64 * 1024;
/// Logical size of every disk: large, mostly never written.
const DISK_SIZE: u64 = 16 << 30;
/// Chunks written on each disk by the full generation.
const WRITTEN_CHUNKS: u64 = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A disk source that is all zeros except the chunks it is told to fill: 16 GiB without
/// allocating 16 GiB.
struct PatternSource {
    capacity: u64,
    seed: u64,
}

impl DiskSource for PatternSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), SourceError> {
        let mut x = (offset / u64::from(CHUNK) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.seed;
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Ok(())
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }
}

fn identity() -> TargetIdentity {
    let mut id = TargetIdentity::new(TargetKind::Vm, "bench");
    id.instance_uuid = Some("uuid-bench".into());
    id
}

fn build(root: &Path, generations: usize, disks: usize) -> BoxResult<()> {
    let repo = Repository::init(
        root,
        &InitOptions {
            chunk_size: CHUNK,
            compression_level: 1,
            ..Default::default()
        },
    )?;
    let key = repo.target_key(&identity())?;
    let written = Area::new(0, WRITTEN_CHUNKS * u64::from(CHUNK));
    let t = Instant::now();
    for g in 1..=generations as u64 {
        let lock = repo.lock_shared(Duration::from_secs(5))?;
        let tl = repo.lock_target(&key, Duration::from_secs(5))?;
        let (mode, parent) = if g == 1 {
            (BackupMode::Full, None)
        } else {
            (BackupMode::Incremental, Some(GenerationId(g - 1)))
        };
        let w = repo.begin_generation(&lock, tl, identity(), mode, parent)?;
        for d in 0..disks {
            let disk_key = 2000 + d as i32;
            let desc = DiskDescriptor::new(disk_key, DISK_SIZE);
            let base = parent
                .map(|p| repo.fixed_index(&key, p, disk_key))
                .transpose()?;
            let areas: Vec<Area> = match (&base, d) {
                (None, _) => vec![written],
                // Disk 0 changes one chunk per generation (cycling over its written chunks).
                (Some(_), 0) => vec![Area::new(
                    (g % WRITTEN_CHUNKS) * u64::from(CHUNK),
                    u64::from(CHUNK),
                )],
                (Some(_), _) => Vec::new(),
            };
            let mut src = PatternSource {
                capacity: DISK_SIZE,
                seed: if d == 0 { g } else { d as u64 },
            };
            w.ingest_disk(desc, base.as_ref(), &areas, &mut src, &|_| {})?;
        }
        w.commit(GenerationStatus::Succeeded, Default::default())?;
        if g % 100 == 0 {
            eprintln!(
                "  {g} generations written ({:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn timed<T>(what: &str, f: impl FnOnce() -> BoxResult<T>) -> BoxResult<(T, Duration)> {
    let t = Instant::now();
    let v = f()?;
    let e = t.elapsed();
    println!("{what:<44} {:>9.3} s", e.as_secs_f64());
    Ok((v, e))
}

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let generations = env_usize("SAFEKEEPING_BENCH_GENERATIONS", 1000);
    let disks = env_usize("SAFEKEEPING_BENCH_DISKS", 10);
    let dir = std::env::var_os("SAFEKEEPING_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-many-generations")
        });
    let root = dir.join(format!("repo-{generations}x{disks}"));
    let stamp = dir.join(format!("repo-{generations}x{disks}.stamp"));
    let want = format!(
        "v1 format {} generations {generations} disks {disks}",
        format::FORMAT_VERSION
    );
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&dir)?;
        eprintln!(
            "building {generations} generations x {disks} disks at {} ...",
            root.display()
        );
        let t = Instant::now();
        build(&root, generations, disks)?;
        eprintln!("built in {:.1} s", t.elapsed().as_secs_f64());
        std::fs::write(&stamp, &want)?;
    }
    let index_bytes: u64 = walk(&root)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == format::INDEX_EXTENSION))
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "repository: {generations} generations x {disks} disks of {} GiB, indexes {:.1} MiB in all",
        DISK_SIZE >> 30,
        index_bytes as f64 / (1 << 20) as f64
    );

    let _ = std::fs::remove_dir_all(root.join("catalog"));
    for cache in ["cold", "warm"] {
        let ((), _) = timed(&format!("list (catalog {cache})"), || {
            let repo = Repository::open(&root)?;
            let targets = repo.targets()?;
            let n: usize = targets
                .iter()
                .map(|t| repo.generations(&t.key).map(|g| g.len()))
                .sum::<Result<usize>>()?;
            assert_eq!(n, generations);
            Ok(())
        })?;
    }
    timed("show (latest manifest)", || {
        let repo = Repository::open(&root)?;
        let key = repo.target_key(&identity())?;
        let m = repo.manifest(&key, GenerationId(generations as u64))?;
        assert_eq!(m.disks.len(), disks);
        Ok(())
    })?;
    let (report, _) = timed("check (no --read-data)", || {
        let repo = Repository::open(&root)?;
        Ok(repo.check(&CheckOptions { read_data: false })?)
    })?;
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.indexes, (generations * disks) as u64);
    println!(
        "check saw {} generations, {} indexes, {} chunks",
        report.generations, report.indexes, report.chunks_referenced
    );
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
