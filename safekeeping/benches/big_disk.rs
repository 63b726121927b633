//! Any disk size: backup and restore time follow the data written, not the disk size.
//!
//! `cargo bench -p safekeeping --bench big_disk` builds the lab and the fake VDDK (release),
//! starts a lab under `target/bench-big-disk/lab`, and for two VMs with one thin disk each —
//! 16 GiB and 16 TiB (less 64 MiB: ext4 with 4 KiB blocks caps a file at 2^32 blocks, and the
//! lab's snapshot delta extent puts a 32 MiB allocation bitmap after the data) — writes
//! `SAFEKEEPING_BENCH_WRITTEN` (default `1G`) of the lab's guest data in 16 equal pieces spread
//! evenly over the disk (seeds differ between the VMs, so nothing deduplicates across them).
//! Then, each as a separate process under GNU time (wall time and peak RSS from wait4): a
//! full backup, one piece rewritten and a CBT incremental, and a restore as a new VM. It
//! prints each figure, the index size, and the ratio of the 16 TiB disk to the 16 GiB one:
//! about 1 when time is proportional to the data written.
//! `SAFEKEEPING_BENCH_NO_BUILD=1` uses already built release binaries.

use std::fs;
use std::path::Path;
use std::process::Command;

mod common {
    pub mod bench_lab;
    // Shared with the other end-to-end benchmarks, which use more of it.
    #[allow(dead_code)]
    pub mod timing;
}
use common::bench_lab::BenchLab;
use common::timing::{run, BoxResult};

const MIB: u64 = 1 << 20;
const PIECES: u64 = 16;

/// One measured run: wall seconds and peak RSS in KiB.
#[derive(Debug, Clone, Copy)]
struct Measured {
    secs: f64,
    rss_kib: u64,
}

fn parse_size(s: &str) -> BoxResult<u64> {
    let (n, shift) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 10),
        Some('M') => (&s[..s.len() - 1], 20),
        Some('G') => (&s[..s.len() - 1], 30),
        Some('T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    Ok(n.parse::<u64>()? << shift)
}

/// Runs safekeeping under GNU time; returns the measurement and stdout.
fn measured(
    sk: &Path,
    config: &Path,
    args: &[&str],
    rss_file: &Path,
) -> BoxResult<(Measured, String)> {
    let (secs, out) = run(Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file)
        .arg(sk)
        .arg("--config")
        .arg(config)
        .args(args))?;
    let rss_kib = fs::read_to_string(rss_file)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("no peak RSS from /usr/bin/time")?;
    Ok((Measured { secs, rss_kib }, out))
}

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("big_disk: benchmark");
        return Ok(());
    }
    let written =
        parse_size(&std::env::var("SAFEKEEPING_BENCH_WRITTEN").unwrap_or_else(|_| "1G".into()))?;
    let bench_lab = BenchLab::prepare("bench-big-disk")?;
    bench_lab.start()?;
    let BenchLab {
        sk,
        lab_bin,
        base,
        lab_dir,
    } = &bench_lab;
    let result = bench(written, sk, lab_bin, lab_dir, base);
    bench_lab.stop();
    result
}

fn bench(written: u64, sk: &Path, lab_bin: &Path, lab_dir: &Path, base: &Path) -> BoxResult<()> {
    let lab = |args: &[&str]| run(Command::new(lab_bin).args(args).arg("--dir").arg(lab_dir));
    let config = lab_dir.join("safekeeping.toml");
    run(Command::new(sk)
        .arg("--config")
        .arg(&config)
        .args(["repo", "init"]))?;
    let rss_file = base.join("rss.txt");
    let piece = (written / PIECES).max(MIB) / MIB * MIB;
    let disks: [(&str, u64); 2] = [("16 GiB", 16 << 30), ("16 TiB", (16 << 40) - 64 * MIB)];
    let mut rows = Vec::new();
    for (n, (label, size)) in disks.iter().enumerate() {
        let vm = format!("big{n}");
        lab(&[
            "create-vm",
            "--name",
            &vm,
            "--disk",
            &size.to_string(),
            "--powered-off",
        ])?;
        let stride = size / PIECES / MIB * MIB;
        for i in 0..PIECES {
            lab(&[
                "guest-write",
                "--vm",
                &vm,
                "--disk",
                "0",
                "--offset",
                &(i * stride).to_string(),
                "--len",
                &piece.to_string(),
                "--seed",
                &(1000 * (n as u64 + 1) + i).to_string(),
            ])?;
        }
        let target = format!("vm:{vm}");
        let (full, out) = measured(sk, &config, &["--json", "backup", &target], &rss_file)?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        let read = j["targets"][0]["bytes_read"].as_u64().unwrap_or(0);
        // One piece rewritten with other data.
        lab(&[
            "guest-write",
            "--vm",
            &vm,
            "--disk",
            "0",
            "--offset",
            &(3 * stride).to_string(),
            "--len",
            &piece.to_string(),
            "--seed",
            &(1000 * (n as u64 + 1) + 999).to_string(),
        ])?;
        let (incr, out) = measured(sk, &config, &["--json", "backup", &target], &rss_file)?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        if j["targets"][0]["mode"] != "incremental" {
            return Err(format!("second backup of {vm} was not incremental: {j}").into());
        }
        let restored = format!("{vm}-r");
        let (restore, _) = measured(
            sk,
            &config,
            &["restore", &target, "--name", &restored],
            &rss_file,
        )?;
        let index_bytes = largest_index(&lab_dir.join("repo"));
        rows.push((*label, read, full, incr, restore, index_bytes));
    }
    println!(
        "\n{} MiB written in {PIECES} pieces spread over the disk; one piece rewritten for the incremental",
        written >> 20
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "disk",
        "MiB read",
        "full s",
        "full RSS",
        "incr s",
        "incr RSS",
        "restore s",
        "rest. RSS",
        "index bytes"
    );
    for (label, read, full, incr, restore, index) in &rows {
        println!(
            "{:<8} {:>10} {:>10.2} {:>7} MiB {:>10.2} {:>7} MiB {:>10.2} {:>7} MiB {:>12}",
            label,
            read >> 20,
            full.secs,
            full.rss_kib >> 10,
            incr.secs,
            incr.rss_kib >> 10,
            restore.secs,
            restore.rss_kib >> 10,
            index
        );
    }
    let (small, big) = (&rows[0], &rows[1]);
    println!(
        "16 TiB / 16 GiB time: full {:.2}x, incremental {:.2}x, restore {:.2}x",
        big.2.secs / small.2.secs,
        big.3.secs / small.3.secs,
        big.4.secs / small.4.secs
    );
    Ok(())
}

/// The largest index file in the repository so far: after each VM, that VM's (the 16 TiB
/// disk's indexes are the larger ones only if the format grew with the disk size).
fn largest_index(repo: &Path) -> u64 {
    let mut max = 0;
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "fidx") {
                max = max.max(e.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
    }
    max
}
