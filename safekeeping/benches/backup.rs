//! End-to-end backup benchmark: safekeeping backing up a lab VM vs restic backing up the same
//! flat disk file, then an incremental after 5 % of the disk changed.
//!
//! `cargo bench -p safekeeping --bench backup` builds the lab and the fake VDDK (release),
//! starts a lab under `target/bench-backup/lab`, creates VM `bench` with one disk of
//! `SAFEKEEPING_BENCH_SIZE` (default `4G`) and fills it with the repository benchmark's mixed
//! data (1 MiB regions: ~40 % zeros, 25 % text-like, 25 % random, 10 % repeated; same generator
//! and seed as `repository-format/benches/ingest.rs`). Then it measures, each as a
//! separate process: `safekeeping backup` (full), `restic backup` of the VM's flat file,
//! 5 % of the disk rewritten by the guest in 4 MiB pieces, `safekeeping backup` (CBT
//! incremental) and `restic backup` again. `SAFEKEEPING_BENCH_TOOLS=safekeeping` skips restic;
//! `SAFEKEEPING_BENCH_NO_BUILD=1` uses already built release binaries.
//!
//! Then concurrent disks: VM `multi` with `SAFEKEEPING_BENCH_DISKS` (default 4) disks of an
//! eighth of the size each, filled alike, backed up in full with `--max-connections 1` (one
//! disk after another) and with one connection per disk. The fake VDDK is given a latency of
//! `SAFEKEEPING_BENCH_READ_LATENCY_MS` (default 30) per 1 MiB read, about 130 MB/s per
//! connection with the 4 reads in flight that safekeeping keeps: a stand-in for an NBD
//! connection, whose throughput, not the backup host's CPU, bounds one disk's read. The VM is
//! then restored twice the same ways, with the same latency on writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

// Same generator and seed as repository-format's ingest benchmark.
#[path = "../../repository-format/benches/common/mixed_image.rs"]
mod mixed_image;
use mixed_image::{dir_size, fill_mixed, parse_size, Rng, REGION, SEED};

mod common {
    // Shared with the s3 benchmark, which uses more of it.
    #[allow(dead_code)]
    pub mod timing;
}
use common::timing::{mb_s, phase, run, BoxResult};

const PIECE: u64 = 4 << 20;

/// Fills `flat` (already sized, all zero) with the mixed image; returns non-zero bytes.
fn fill_image(flat: &Path, size: u64) -> BoxResult<u64> {
    let f = fs::OpenOptions::new().read(true).write(true).open(flat)?;
    let counts = fill_mixed(&f, size)?;
    Ok((counts[1] + counts[2] + counts[3]) * REGION)
}

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("backup: benchmark");
        return Ok(());
    }
    let size =
        parse_size(&std::env::var("SAFEKEEPING_BENCH_SIZE").unwrap_or_else(|_| "4G".into()))?;
    let tools =
        std::env::var("SAFEKEEPING_BENCH_TOOLS").unwrap_or_else(|_| "safekeeping,restic".into());
    let sk = PathBuf::from(env!("CARGO_BIN_EXE_safekeeping"));
    let bin_dir = sk.parent().ok_or("no binary directory")?.to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if std::env::var_os("SAFEKEEPING_BENCH_NO_BUILD").is_none() {
        eprintln!("building the lab and the fake VDDK (release) ...");
        run(Command::new(&cargo).current_dir(&workspace).args([
            "build",
            "--release",
            "-p",
            "safekeeping-lab",
            "-p",
            "fake-vixdisklib",
        ]))?;
    }
    let lab_bin = bin_dir.join("safekeeping-lab");
    let base = bin_dir.join("../bench-backup");
    let lab_dir = base.join("lab");
    if lab_dir.join("lab.json").exists() {
        let _ = run(Command::new(&lab_bin).args(["down", "--dir"]).arg(&lab_dir));
    }
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    run(Command::new(&lab_bin).args(["up", "--dir"]).arg(&lab_dir))?;
    let result = bench(size, &tools, &sk, &lab_bin, &lab_dir, &base);
    let _ = run(Command::new(&lab_bin).args(["down", "--dir"]).arg(&lab_dir));
    result
}

fn bench(
    size: u64,
    tools: &str,
    sk: &Path,
    lab_bin: &Path,
    lab_dir: &Path,
    base: &Path,
) -> BoxResult<()> {
    let lab = |args: &[&str]| run(Command::new(lab_bin).args(args).arg("--dir").arg(lab_dir));
    let config = lab_dir.join("safekeeping.toml");
    let skc = |args: &[&str]| run(Command::new(sk).arg("--config").arg(&config).args(args));
    let size_arg = size.to_string();
    lab(&[
        "create-vm",
        "--name",
        "bench",
        "--disk",
        &size_arg,
        "--powered-off",
    ])?;
    let info: serde_json::Value = serde_json::from_str(&lab(&["vm-info", "--vm", "bench"])?.1)?;
    let flat = PathBuf::from(
        info["disks"][0]["flat_path"]
            .as_str()
            .ok_or("vm-info has no flat_path")?,
    );
    eprintln!("filling {} with {} of mixed data ...", flat.display(), size);
    let t = Instant::now();
    let data = fill_image(&flat, size)?;
    eprintln!(
        "  {} MiB of non-zero regions ({:.1}s)",
        data >> 20,
        t.elapsed().as_secs_f64()
    );
    skc(&["repo", "init"])?;

    let mut rows: Vec<(String, f64, u64, u64)> = Vec::new();
    let mut phases: Vec<(&str, String)> = Vec::new();
    let repo_dir = lab_dir.join("repo");
    if tools.contains("safekeeping") {
        let log = base.join("full.log");
        let l = log.to_string_lossy().into_owned();
        let (secs, out) = skc(&["--log-file", &l, "--json", "backup", "vm:bench"])?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        let read = j["targets"][0]["bytes_read"].as_u64().unwrap_or(0);
        phases.push(("safekeeping full", fs::read_to_string(&log)?));
        rows.push(("safekeeping full".into(), secs, read, dir_size(&repo_dir)));
    }
    let restic_repo = base.join("restic-repo");
    let restic = |args: &[&str]| {
        run(Command::new("restic")
            .args(["--repo"])
            .arg(&restic_repo)
            .args(["--cache-dir"])
            .arg(base.join("restic-cache"))
            .args(args)
            .env("RESTIC_PASSWORD", "bench"))
    };
    let use_restic =
        tools.contains("restic") && Command::new("restic").arg("version").output().is_ok();
    if use_restic {
        restic(&["init"])?;
        let (secs, _) = restic(&["backup", "--quiet", &flat.to_string_lossy()])?;
        rows.push((
            "restic full (flat file)".into(),
            secs,
            size,
            dir_size(&restic_repo),
        ));
    } else if tools.contains("restic") {
        eprintln!("restic not found; skipped (scripts/setup.sh installs it)");
    }

    // 5 % of the disk rewritten by the guest, in 4 MiB pieces at spread offsets.
    let pieces = (size / 20).div_ceil(PIECE).max(1);
    let mut rng = Rng(SEED ^ 0x0505);
    let slots = size / PIECE;
    let mut offsets: Vec<u64> = (0..pieces)
        .map(|_| rng.below(slots.max(1)) * PIECE)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    for (i, off) in offsets.iter().enumerate() {
        lab(&[
            "guest-write",
            "--vm",
            "bench",
            "--disk",
            "0",
            "--offset",
            &off.to_string(),
            "--len",
            &PIECE.to_string(),
            "--seed",
            &(100 + i).to_string(),
        ])?;
    }
    let changed = offsets.len() as u64 * PIECE;
    eprintln!(
        "guest rewrote {} MiB ({:.1} %)",
        changed >> 20,
        changed as f64 * 100.0 / size as f64
    );
    if tools.contains("safekeeping") {
        let before = dir_size(&repo_dir);
        let log = base.join("incremental.log");
        let l = log.to_string_lossy().into_owned();
        let (secs, out) = skc(&["--log-file", &l, "--json", "backup", "vm:bench"])?;
        phases.push(("safekeeping incremental", fs::read_to_string(&log)?));
        let j: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(j["targets"][0]["mode"], "incremental");
        let read = j["targets"][0]["bytes_read"].as_u64().unwrap_or(0);
        rows.push((
            "safekeeping incremental (CBT)".into(),
            secs,
            read,
            dir_size(&repo_dir) - before,
        ));
    }
    if use_restic {
        let before = dir_size(&restic_repo);
        let (secs, _) = restic(&["backup", "--quiet", &flat.to_string_lossy()])?;
        rows.push((
            "restic second run (flat file)".into(),
            secs,
            size,
            dir_size(&restic_repo) - before,
        ));
    }

    println!(
        "\nbackup of a {} MiB disk ({} MiB non-zero mixed data), 5 % changed between runs",
        size >> 20,
        data >> 20
    );
    println!(
        "{:<32} {:>9} {:>12} {:>16} {:>14}",
        "run", "seconds", "MB read", "disk MB/s", "repo MiB added"
    );
    for (name, secs, read, stored) in &rows {
        println!(
            "{:<32} {:>9.2} {:>12.1} {:>16.1} {:>14.1}",
            name,
            secs,
            *read as f64 / 1e6,
            mb_s(size, *secs),
            *stored as f64 / (1 << 20) as f64
        );
    }
    if tools.contains("safekeeping") {
        bench_disks(size, sk, &config, lab_bin, lab_dir)?;
    }
    println!("\nwhere safekeeping's time goes (from its log):");
    for (name, log) in &phases {
        let part =
            |a: &str, b: &str| phase(log, a, b).map_or("-".to_string(), |s| format!("{s:.2}s"));
        println!(
            "  {name:<24} snapshot (the lab copies the disk) {:>7}   read+store {:>7}   snapshot removal {:>7}",
            part("starting backup", "snapshot created"),
            part("writing generation", "generation committed"),
            part("generation committed", "snapshot removed"),
        );
    }
    Ok(())
}

/// Full backups of a multi-disk VM, one connection at a time and one per disk.
fn bench_disks(
    size: u64,
    sk: &Path,
    config: &Path,
    lab_bin: &Path,
    lab_dir: &Path,
) -> BoxResult<()> {
    let disks: usize = std::env::var("SAFEKEEPING_BENCH_DISKS")
        .unwrap_or_else(|_| "4".into())
        .parse()?;
    let latency: u64 = std::env::var("SAFEKEEPING_BENCH_READ_LATENCY_MS")
        .unwrap_or_else(|_| "30".into())
        .parse()?;
    let disk_size = (size / 8).max(64 << 20).to_string();
    let lab = |args: &[&str]| run(Command::new(lab_bin).args(args).arg("--dir").arg(lab_dir));
    let mut args = vec!["create-vm", "--name", "multi", "--powered-off"];
    for _ in 0..disks {
        args.extend(["--disk", disk_size.as_str()]);
    }
    lab(&args)?;
    let info: serde_json::Value = serde_json::from_str(&lab(&["vm-info", "--vm", "multi"])?.1)?;
    let mut data = 0;
    for d in info["disks"].as_array().ok_or("vm-info has no disks")? {
        let flat = d["flat_path"].as_str().ok_or("vm-info has no flat_path")?;
        data += fill_image(Path::new(flat), disk_size.parse()?)?;
    }
    let conf = lab_dir.join("vddk/vddk.conf");
    let original = fs::read_to_string(&conf)?;
    fs::write(
        &conf,
        format!("{original}fake.read_latency_ms = {latency}\n"),
    )?;
    let connections = disks.to_string();
    let mut rows = Vec::new();
    for (name, limit) in [
        ("one connection", "1"),
        ("one per disk", connections.as_str()),
    ] {
        let log = lab_dir.join(format!("multi-{limit}.log"));
        let _ = fs::remove_file(&log);
        let (secs, out) = run(Command::new(sk)
            .arg("--config")
            .arg(config)
            .arg("--log-file")
            .arg(&log)
            .args([
                "--json",
                "backup",
                "vm:multi",
                "--full",
                "--max-connections",
                limit,
            ]))?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        let read = j["targets"][0]["bytes_read"].as_u64().unwrap_or(0);
        let reading = phase(
            &fs::read_to_string(&log)?,
            "writing generation",
            "generation committed",
        )
        .unwrap_or(secs);
        rows.push((name, secs, reading, read));
    }
    // Restore with the same latency on writes: one disk after another, then all at once.
    fs::write(
        &conf,
        format!("{original}fake.read_latency_ms = {latency}\nfake.write_latency_ms = {latency}\n"),
    )?;
    let mut restores = Vec::new();
    for (name, limit) in [
        ("one connection", "1"),
        ("one per disk", connections.as_str()),
    ] {
        let vm = format!("multi-restored-{limit}");
        let (secs, _) = run(Command::new(sk).arg("--config").arg(config).args([
            "--json",
            "restore",
            "vm:multi",
            "--name",
            &vm,
            "--max-connections",
            limit,
        ]))?;
        restores.push((name, secs));
    }
    fs::write(&conf, original)?;
    println!(
        "\nfull backup of a VM with {disks} disks of {} MiB ({} MiB non-zero in all), {latency} ms per 1 MiB read",
        disk_size.parse::<u64>()? >> 20,
        data >> 20
    );
    println!(
        "{:<32} {:>9} {:>14} {:>12} {:>14}",
        "run", "seconds", "reading s", "MB read", "MB/s reading"
    );
    for (name, secs, reading, read) in &rows {
        println!(
            "{:<32} {:>9.2} {:>14.2} {:>12.1} {:>14.1}",
            format!("safekeeping, {name}"),
            secs,
            reading,
            *read as f64 / 1e6,
            *read as f64 / 1e6 / reading
        );
    }
    for (name, secs) in &restores {
        println!(
            "{:<32} {:>9.2}",
            format!("safekeeping restore, {name}"),
            secs
        );
    }
    if let [(_, one), (_, many)] = restores[..] {
        println!(
            "restore, one connection per disk: {:.2}x the time of one at a time",
            many / one
        );
    }
    if let [(_, one, one_reading, _), (_, many, many_reading, _)] = rows[..] {
        println!(
            "one connection per disk: {:.2}x the time of one at a time ({:.2}x for the reading phase; the rest is mostly the lab's snapshot copy)",
            many / one,
            many_reading / one_reading
        );
    }
    Ok(())
}
