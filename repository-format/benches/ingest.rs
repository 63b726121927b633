//! Ingest benchmark: safekeeping vs restic vs borg vs the machine's ceiling.
//!
//! `cargo bench -p repository-format --bench ingest` generates a deterministic disk image
//! (default 4 GiB: about 40 % zeros, 25 % text-like, 25 % random, 10 % repeated regions, in
//! 1 MiB regions) under `target/bench-ingest/`, then measures, each in its own process:
//! safekeeping (first ingest, second ingest of the same image, and a CBT-style incremental of
//! 1,000 random 4 KiB writes) for each chunk size, `restic backup` and `borg create` (first and
//! second run), and the ceiling: SHA-256 + zstd-1 over the non-zero chunks on every core.
//!
//! Environment: `SAFEKEEPING_BENCH_SIZE` (e.g. `512M`, default `4G`), `SAFEKEEPING_BENCH_CHUNKS`
//! (default `1M,4M`), `SAFEKEEPING_BENCH_TOOLS` (default `safekeeping,restic,borg,ceiling`),
//! `SAFEKEEPING_BENCH_DIR` (default `<workspace>/target/bench-ingest`),
//! `SAFEKEEPING_BENCH_ENCRYPTED=1` (safekeeping runs on an AES-256-GCM repository).
//! MB/s are decimal megabytes of the image's logical size per second.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use repository_format::*;

#[path = "common/mixed_image.rs"]
mod mixed_image;
use mixed_image::{dir_size, fill_mixed, parse_size, Rng, REGION, SEED};

type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const INCR_WRITES: usize = 1000;

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--measure") => measure(&args[2..]),
        Some("--ingest") => child_ingest(&args[2..]),
        Some("--read") => child_read(&args[2..]),
        _ => run_bench(),
    }
}

// ---------------------------------------------------------------- helpers

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- image

/// Writes the image (sparse zeros); returns (path, non-zero bytes).
fn make_image(dir: &Path, size: u64) -> BoxResult<PathBuf> {
    let path = dir.join(format!("image-{size}.img"));
    let stamp = dir.join(format!("image-{size}.stamp"));
    let want = format!("v1 seed {SEED:x} size {size}");
    if path.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(path);
    }
    eprintln!("generating {} image at {} ...", human(size), path.display());
    let t = Instant::now();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    f.set_len(size)?;
    let regions = size.div_ceil(REGION);
    let counts = fill_mixed(&f, size)?;
    fs::write(&stamp, &want)?;
    eprintln!(
        "  {} regions: {} zero, {} text, {} random, {} repeated ({:.1}s)",
        regions,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        t.elapsed().as_secs_f64()
    );
    Ok(path)
}

// ---------------------------------------------------------------- child processes

/// `--measure CMD ARGS...`: runs CMD, then prints its wall time and peak RSS.
fn measure(cmd: &[String]) -> BoxResult<()> {
    let t = Instant::now();
    let status = Command::new(&cmd[0]).args(&cmd[1..]).status()?;
    let secs = t.elapsed().as_secs_f64();
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    println!("@@seconds {secs}");
    println!("@@maxrss_kib {}", ru.max_rss());
    println!("@@status {}", status.code().unwrap_or(-1));
    Ok(())
}

/// A source that returns the image with some 4 KiB blocks changed (a CBT incremental).
struct ChangedSource {
    inner: FileSource,
    changes: Vec<u64>,
}

impl DiskSource for ChangedSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), SourceError> {
        self.inner.read_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        let first = self.changes.partition_point(|&c| c + 4096 <= offset);
        for &c in self.changes[first..].iter().take_while(|&&c| c < end) {
            let s = c.max(offset);
            let e = (c + 4096).min(end);
            for b in &mut buf[(s - offset) as usize..(e - offset) as usize] {
                *b ^= 0x5A;
            }
        }
        Ok(())
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
}

fn incremental_changes(size: u64) -> Vec<u64> {
    let mut rng = Rng(SEED ^ 0xC8C8);
    let mut v: Vec<u64> = (0..INCR_WRITES)
        .map(|_| rng.below(size / 4096) * 4096)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The passphrase of the benchmark's encrypted repositories, when they are encrypted.
fn bench_passphrase() -> Option<Passphrase> {
    std::env::var_os("SAFEKEEPING_BENCH_ENCRYPTED")
        .is_some_and(|v| v == "1")
        .then(|| Passphrase::from("bench passphrase"))
}

/// `--ingest IMAGE REPO CHUNK_SIZE full|again|incr`: one ingest, stats as JSON on stdout.
fn child_ingest(args: &[String]) -> BoxResult<()> {
    let image = PathBuf::from(&args[0]);
    let repo_path = PathBuf::from(&args[1]);
    let chunk_size: u32 = args[2].parse()?;
    let mode = args[3].as_str();
    // SAFEKEEPING_BENCH_ENCRYPTED=1: the same runs on an encrypted repository.
    let pass = bench_passphrase();
    let encrypted = pass.is_some();
    let repo = if repo_path.join("config").exists() {
        Repository::open_with(&repo_path, pass.as_ref())?
    } else {
        Repository::init_with(
            &repo_path,
            &InitOptions {
                chunk_size,
                compression_level: 1,
                encryption: if encrypted {
                    Encryption::Aes256Gcm
                } else {
                    Encryption::None
                },
                ..Default::default()
            },
            pass.as_ref(),
        )?
    };
    let lock = repo.lock_shared(Duration::from_secs(10))?;
    let mut id = TargetIdentity::new(TargetKind::Vm, "bench");
    id.instance_uuid = Some("bench".into());
    let key = repo.target_key(&id)?;
    let tl = repo.lock_target(&key, Duration::from_secs(10))?;
    let parent = repo.latest_successful(&key).ok().flatten().map(|g| g.id);
    let file = FileSource::open(&image)?;
    let cap = file.capacity();
    let t = Instant::now();
    let (backup_mode, base) = if mode == "incr" {
        let p = parent.ok_or("incremental needs a parent")?;
        (
            BackupMode::Incremental,
            Some((p, repo.fixed_index(&key, p, 2000)?)),
        )
    } else {
        (BackupMode::Full, None)
    };
    let w = repo.begin_generation(&lock, tl, id, backup_mode, base.as_ref().map(|b| b.0))?;
    let stats = if mode == "incr" {
        let changes = incremental_changes(cap);
        let areas: Vec<Area> = changes.iter().map(|&c| Area::new(c, 4096)).collect();
        let mut src = ChangedSource {
            inner: file,
            changes,
        };
        w.ingest_disk(
            DiskDescriptor::new(2000, cap),
            base.as_ref().map(|b| &b.1),
            &areas,
            &mut src,
            &|_| {},
        )?
    } else {
        let mut src = file;
        w.ingest_disk(
            DiskDescriptor::new(2000, cap),
            None,
            &[Area::new(0, cap)],
            &mut src,
            &|_| {},
        )?
    };
    w.commit(GenerationStatus::Succeeded, Default::default())?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": secs, "stats": stats, "vm_hwm_kib": vm_hwm_kib()})
    );
    Ok(())
}

/// `--read REPO THREADS`: streams every stored chunk of the latest generation (what a restore
/// reads), verifying each; stats as JSON on stdout.
fn child_read(args: &[String]) -> BoxResult<()> {
    let repo = Repository::open_with(&args[0], bench_passphrase().as_ref())?;
    let threads: usize = args[1].parse()?;
    let _lock = repo.lock_shared(Duration::from_secs(10))?;
    let mut id = TargetIdentity::new(TargetKind::Vm, "bench");
    id.instance_uuid = Some("bench".into());
    let key = repo.target_key(&id)?;
    let g = repo.latest_successful(&key)?.ok_or("no generation")?;
    let reader = repo.disk_reader(&key, g.id, 2000)?;
    let t = Instant::now();
    let mut bytes = 0u64;
    for c in reader.stream(threads) {
        bytes += c?.data.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": secs, "bytes": bytes, "capacity": reader.capacity()})
    );
    Ok(())
}

// ---------------------------------------------------------------- parent

#[derive(Debug, Clone)]
struct Run {
    tool: String,
    run: String,
    seconds: f64,
    logical: u64,
    stored_total: u64,
    maxrss_kib: u64,
    note: String,
}

impl Run {
    fn mbps(&self) -> f64 {
        self.logical as f64 / 1e6 / self.seconds
    }
}

fn measured(cmd: &[&str], envs: &[(&str, &str)]) -> BoxResult<(f64, u64, String)> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg("--measure")
        .args(cmd)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut kv = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("@@") {
            let mut it = rest.splitn(2, ' ');
            kv.insert(
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            );
        }
    }
    if kv.get("status").map(String::as_str) != Some("0") {
        return Err(format!("{cmd:?} failed:\n{text}").into());
    }
    Ok((kv["seconds"].parse()?, kv["maxrss_kib"].parse()?, text))
}

fn ceiling(image: &Path, size: u64, chunk: u64, compress: bool) -> BoxResult<(f64, u64)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let next = AtomicU64::new(0);
    let nonzero = AtomicU64::new(0);
    let sink = AtomicUsize::new(0);
    let f = File::open(image)?;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; chunk as usize];
                let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let off = i * chunk;
                    if off >= size {
                        break;
                    }
                    let len = (size - off).min(chunk) as usize;
                    f.read_exact_at(&mut buf[..len], off).expect("read image");
                    if buf[..len].iter().all(|&b| b == 0) {
                        continue;
                    }
                    nonzero.fetch_add(len as u64, Ordering::Relaxed);
                    let d = ChunkDigest::of(&buf[..len]);
                    let z = if compress {
                        c.compress(&buf[..len]).expect("compress").len()
                    } else {
                        0
                    };
                    sink.fetch_add(z + d.0[0] as usize, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((t.elapsed().as_secs_f64(), nonzero.into_inner()))
}

fn run_bench() -> BoxResult<()> {
    let size =
        parse_size(&std::env::var("SAFEKEEPING_BENCH_SIZE").unwrap_or_else(|_| "4G".into()))?;
    let chunks: Vec<u64> = std::env::var("SAFEKEEPING_BENCH_CHUNKS")
        .unwrap_or_else(|_| "1M,4M".into())
        .split(',')
        .map(parse_size)
        .collect::<Result<_, String>>()?;
    let tools = std::env::var("SAFEKEEPING_BENCH_TOOLS")
        .unwrap_or_else(|_| "safekeeping,restic,borg,ceiling".into());
    let dir = match std::env::var("SAFEKEEPING_BENCH_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-ingest"),
    };
    fs::create_dir_all(&dir)?;
    let image = make_image(&dir, size)?;
    let image_s = image.to_str().ok_or("non-UTF-8 path")?.to_string();
    let me = std::env::current_exe()?;
    let me_s = me.to_str().ok_or("non-UTF-8 path")?.to_string();
    let mut runs: Vec<Run> = Vec::new();
    let mut ceiling_mbps = None;
    let mut hash_mbps = None;

    if tools.contains("ceiling") {
        let cs = *chunks.first().unwrap_or(&(1 << 20));
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for compress in [true, false] {
            let (secs, nonzero) = ceiling(&image, size, cs, compress)?;
            eprintln!(
                "ceiling (compress {compress}): {:.2}s over {} non-zero",
                secs,
                human(nonzero)
            );
            if compress {
                ceiling_mbps = Some(size as f64 / 1e6 / secs);
            } else {
                hash_mbps = Some(size as f64 / 1e6 / secs);
            }
            runs.push(Run {
                tool: "ceiling".into(),
                run: if compress {
                    format!("read + SHA-256 + zstd-1 of non-zero chunks, {cores} threads")
                } else {
                    format!("read + SHA-256 of non-zero chunks, {cores} threads")
                },
                seconds: secs,
                logical: size,
                stored_total: 0,
                maxrss_kib: 0,
                note: format!("{} non-zero", human(nonzero)),
            });
        }
    }
    if tools.contains("safekeeping") {
        for &cs in &chunks {
            let repo = dir.join(format!("repo-safekeeping-{}", cs >> 10));
            let _ = fs::remove_dir_all(&repo);
            let repo_s = repo.to_str().ok_or("path")?.to_string();
            for mode in ["full", "again", "incr", "read"] {
                if mode == "read" {
                    let threads = std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                        .to_string();
                    let (secs, rss, text) = measured(&[&me_s, "--read", &repo_s, &threads], &[])?;
                    let json: serde_json::Value = text
                        .lines()
                        .find(|l| l.starts_with('{'))
                        .map(serde_json::from_str)
                        .ok_or("no stats from read child")??;
                    let inner = json["seconds"].as_f64().unwrap_or(secs);
                    let bytes = json["bytes"].as_u64().unwrap_or(0);
                    eprintln!("safekeeping {} KiB read: {inner:.2}s", cs >> 10);
                    runs.push(Run {
                        tool: format!("safekeeping {} chunks", human(cs).replace(".0 ", " ")),
                        run: format!("restore read: stream of stored chunks, {threads} threads"),
                        seconds: inner,
                        logical: size,
                        stored_total: dir_size(&repo),
                        maxrss_kib: rss,
                        note: format!("{} of non-zero chunks read and verified", human(bytes)),
                    });
                    continue;
                }
                let cs_s = cs.to_string();
                let (secs, rss, text) =
                    measured(&[&me_s, "--ingest", &image_s, &repo_s, &cs_s, mode], &[])?;
                let json: serde_json::Value = text
                    .lines()
                    .find(|l| l.starts_with('{'))
                    .map(serde_json::from_str)
                    .ok_or("no stats from ingest child")??;
                let st = &json["stats"];
                let inner = json["seconds"].as_f64().unwrap_or(secs);
                let note = format!(
                    "read {}, new {}, stored {} this run; process {:.2}s",
                    human(st["read_bytes"].as_u64().unwrap_or(0)),
                    human(st["new_bytes"].as_u64().unwrap_or(0)),
                    human(st["stored_bytes"].as_u64().unwrap_or(0)),
                    secs
                );
                eprintln!("safekeeping {} KiB {mode}: {inner:.2}s, {note}", cs >> 10);
                runs.push(Run {
                    tool: format!("safekeeping {} chunks", human(cs).replace(".0 ", " ")),
                    run: match mode {
                        "full" => "first ingest".into(),
                        "again" => "second ingest (all known)".into(),
                        _ => format!("incremental, {INCR_WRITES} random 4 KiB writes"),
                    },
                    seconds: inner,
                    logical: if mode == "incr" {
                        st["read_bytes"].as_u64().unwrap_or(0)
                    } else {
                        size
                    },
                    stored_total: dir_size(&repo),
                    maxrss_kib: rss,
                    note,
                });
            }
        }
    }
    if tools.contains("restic") {
        let repo = dir.join("repo-restic");
        let cache = dir.join("restic-cache");
        let _ = fs::remove_dir_all(&repo);
        let _ = fs::remove_dir_all(&cache);
        let repo_s = repo.to_str().ok_or("path")?;
        let cache_s = cache.to_str().ok_or("path")?;
        // The password is only a benchmark fixture; it goes through the environment.
        let envs = [
            ("RESTIC_PASSWORD", "bench-only"),
            ("RESTIC_CACHE_DIR", cache_s),
        ];
        let st = Command::new("restic")
            .args(["init", "--repo", repo_s])
            .envs(envs)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            return Err("restic init failed".into());
        }
        // `--force` on the second run: re-read the file instead of trusting its mtime, like ours.
        for (run, force) in [("first backup", false), ("second backup (--force)", true)] {
            let mut cmd = vec![
                "restic",
                "backup",
                "--quiet",
                "--repo",
                repo_s,
                image_s.as_str(),
            ];
            if force {
                cmd.push("--force");
            }
            let (secs, rss, _) = measured(&cmd, &envs)?;
            eprintln!("restic {run}: {secs:.2}s");
            runs.push(Run {
                tool: "restic 0.14 (defaults)".into(),
                run: run.into(),
                seconds: secs,
                logical: size,
                stored_total: dir_size(&repo),
                maxrss_kib: rss,
                note: String::new(),
            });
        }
    }
    if tools.contains("borg") {
        let repo = dir.join("repo-borg");
        let base = dir.join("borg-base");
        let _ = fs::remove_dir_all(&repo);
        let _ = fs::remove_dir_all(&base);
        let repo_s = repo.to_str().ok_or("path")?.to_string();
        let base_s = base.to_str().ok_or("path")?;
        let envs = [
            ("BORG_BASE_DIR", base_s),
            ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
            ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
        ];
        let st = Command::new("borg")
            .args(["init", "-e", "none", &repo_s])
            .envs(envs)
            .status()?;
        if !st.success() {
            return Err("borg init failed".into());
        }
        for (i, run) in ["first backup", "second backup"].iter().enumerate() {
            let archive = format!("{repo_s}::a{i}");
            let (secs, rss, _) = measured(&["borg", "create", &archive, &image_s], &envs)?;
            eprintln!("borg {run}: {secs:.2}s");
            runs.push(Run {
                tool: "borg 1.2 (defaults, lz4)".into(),
                run: run.to_string(),
                seconds: secs,
                logical: size,
                stored_total: dir_size(&repo),
                maxrss_kib: rss,
                note: String::new(),
            });
        }
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nImage: {} ({} KiB regions), {} cores",
        human(size),
        REGION >> 10,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    )?;
    writeln!(
        out,
        "| tool | run | seconds | MB/s | repository size | peak RSS | notes |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---|")?;
    for r in &runs {
        writeln!(
            out,
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} |",
            r.tool,
            r.run,
            r.seconds,
            r.mbps(),
            if r.stored_total > 0 {
                human(r.stored_total)
            } else {
                "-".into()
            },
            if r.maxrss_kib > 0 {
                format!("{:.0} MiB", r.maxrss_kib as f64 / 1024.0)
            } else {
                "-".into()
            },
            r.note
        )?;
    }
    let first = |prefix: &str, run: &str| {
        runs.iter()
            .find(|r| r.tool.starts_with(prefix) && r.run == run)
            .map(|r| r.mbps())
    };
    if let Some(sk) = first("safekeeping", "first ingest") {
        writeln!(out)?;
        if let Some(r) = first("restic", "first backup") {
            writeln!(
                out,
                "safekeeping (first chunk size) vs restic: {:.1}x",
                sk / r
            )?;
        }
        if let Some(b) = first("borg", "first backup") {
            writeln!(
                out,
                "safekeeping (first chunk size) vs borg: {:.1}x",
                sk / b
            )?;
        }
        if let Some(c) = ceiling_mbps {
            writeln!(
                out,
                "safekeeping (first chunk size) vs ceiling: {:.0} %",
                100.0 * sk / c
            )?;
        }
        if let Some(again) = first("safekeeping", "second ingest (all known)") {
            writeln!(out, "second ingest: {again:.0} MB/s")?;
            if let Some(h) = hash_mbps {
                writeln!(
                    out,
                    "second ingest vs hashing ceiling: {:.0} %",
                    100.0 * again / h
                )?;
            }
        }
    }
    Ok(())
}
