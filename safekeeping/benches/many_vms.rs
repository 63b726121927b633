//! Many VMs in one run: the whole run's time against one VM's.
//!
//! `cargo bench -p safekeeping --bench many_vms` builds the lab and the fake VDDK (release),
//! starts a lab under `target/bench-many-vms/lab` and creates `SAFEKEEPING_BENCH_VMS`
//! (default 50) VMs with two disks of `SAFEKEEPING_BENCH_VM_DISK` (default `64M`) each, the
//! guest having written `SAFEKEEPING_BENCH_VM_WRITTEN` (default `16M`) of the lab's
//! deterministic data at the start of each disk. It then times, each as a separate process:
//! a full backup of one more VM (`solo`, made alike) on its own, and a full backup of all
//! the VMs in one run with `--parallel SAFEKEEPING_BENCH_PARALLEL` (default 8). It prints
//! both times, the whole run's time per VM and the speed-up over backing them up one after
//! another, the peak RSS of each safekeeping process (VmHWM, polled) against issue 13's
//! 256 MiB target, the most the run's chunks in flight held of its chunk memory (`backup
//! --json`'s `chunk_memory`) and the most VDDK connections the run held at once (the fake
//! VDDK's own count). Snapshots are the lab's delta disks, so snapshot time does not grow
//! with disk size.
//!
//! The whole run is measured once per `[performance] chunk_memory_mib` in
//! `SAFEKEEPING_BENCH_CHUNK_MEMORY` (comma-separated MiB, `default` for the shipped default;
//! default `default,1048576`: the largest limit lets every disk take all its buffers, which is
//! how each disk sized its own buffers before the shared budget), each into a fresh repository,
//! over `SAFEKEEPING_BENCH_ROUNDS` rounds (default 2) in alternating order; it prints medians.
//! `SAFEKEEPING_BENCH_NO_BUILD=1` uses already built release binaries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common {
    pub mod bench_lab;
    // Shared with the other end-to-end benchmarks, which use more of it.
    #[allow(dead_code)]
    pub mod timing;
}
use common::bench_lab::BenchLab;
use common::timing::{median, run, run_peak, BoxResult};

/// Issue 13's bound on a run's peak RSS.
const RSS_TARGET: u64 = 256 << 20;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("many_vms: benchmark");
        return Ok(());
    }
    let vms: usize = env_or("SAFEKEEPING_BENCH_VMS", "50").parse()?;
    let disk = env_or("SAFEKEEPING_BENCH_VM_DISK", "64M");
    let written = env_or("SAFEKEEPING_BENCH_VM_WRITTEN", "16M");
    let parallel = env_or("SAFEKEEPING_BENCH_PARALLEL", "8");
    let bench_lab = BenchLab::prepare("bench-many-vms")?;
    bench_lab.start()?;
    let BenchLab {
        sk,
        lab_bin,
        base: _,
        lab_dir,
    } = &bench_lab;
    let result = bench(vms, &disk, &written, &parallel, sk, lab_bin, lab_dir);
    bench_lab.stop();
    result
}

fn bench(
    vms: usize,
    disk: &str,
    written: &str,
    parallel: &str,
    sk: &Path,
    lab_bin: &Path,
    lab_dir: &Path,
) -> BoxResult<()> {
    let lab = |args: &[&str]| run(Command::new(lab_bin).args(args).arg("--dir").arg(lab_dir));
    let lab_config = fs::read_to_string(lab_dir.join("safekeeping.toml"))?;
    let mut names: Vec<String> = (0..vms).map(|i| format!("many{i:02}")).collect();
    names.push("solo".into());
    let t = Instant::now();
    for (i, name) in names.iter().enumerate() {
        lab(&["create-vm", "--name", name, "--disk", disk, "--disk", disk])?;
        for d in 0..2u64 {
            let seed = (i as u64) * 2 + d + 1;
            lab(&[
                "guest-write",
                "--vm",
                name,
                "--disk",
                &d.to_string(),
                "--offset",
                "0",
                "--len",
                written,
                "--seed",
                &seed.to_string(),
            ])?;
        }
    }
    eprintln!(
        "{} VMs with 2 disks of {disk} ({written} written on each) made in {:.1}s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    let variants: Vec<String> = env_or("SAFEKEEPING_BENCH_CHUNK_MEMORY", "default,1048576")
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let rounds: usize = env_or("SAFEKEEPING_BENCH_ROUNDS", "2").parse()?;
    let all: Vec<String> = names[..vms].iter().map(|n| format!("vm:{n}")).collect();
    let mut fresh = 0usize;
    // A configuration with its own new repository and chunk memory setting: every measured
    // run is a full backup into an empty repository.
    let mut fresh_config = |chunk_memory: &str| -> BoxResult<(PathBuf, PathBuf)> {
        fresh += 1;
        let repo = lab_dir.join(format!("repo-{fresh}"));
        let mut text: String = lab_config
            .lines()
            .map(|l| {
                if l.starts_with("path = ") {
                    format!("path = {:?}", repo.to_string_lossy())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        if chunk_memory != "default" {
            text.push_str(&format!(
                "\n[performance]\nchunk_memory_mib = {chunk_memory}\n"
            ));
        }
        let config = lab_dir.join(format!("safekeeping-{fresh}.toml"));
        fs::write(&config, text)?;
        run(Command::new(sk)
            .arg("--config")
            .arg(&config)
            .args(["repo", "init"]))?;
        Ok((config, repo))
    };

    let backup = |config: &Path, targets: &[String], extra: &[&str]| -> BoxResult<Run> {
        let mut cmd = Command::new(sk);
        cmd.arg("--config")
            .arg(config)
            .args(["--json", "backup"])
            .args(targets)
            .args(extra);
        let m = run_peak(&mut cmd)?;
        let j: serde_json::Value = serde_json::from_str(&m.stdout)?;
        for t in j["targets"].as_array().ok_or("no targets in the JSON")? {
            if t["status"] != "succeeded" {
                return Err(format!("a target failed: {t}").into());
            }
        }
        Ok(Run {
            secs: m.secs,
            rss: m.peak_rss,
            chunk_peak: j["chunk_memory"]["peak_bytes"].as_u64().unwrap_or(0),
            chunk_limit: j["chunk_memory"]["limit_bytes"].as_u64().unwrap_or(0),
        })
    };

    let mut solo: Vec<Run> = Vec::new();
    let mut whole: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    let mut peak_connections = 0;
    for round in 0..rounds {
        let (config, repo) = fresh_config("default")?;
        solo.push(backup(&config, &["vm:solo".to_string()], &[])?);
        // Measured; the disk space is better spent on the next repository.
        fs::remove_dir_all(repo)?;
        // Alternate the order, so that neither setting always runs on a warmer machine.
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for v in order {
            let (config, repo) = fresh_config(&variants[v])?;
            let stats_before = fs::read_to_string(lab_dir.join("vddk-stats.jsonl"))
                .unwrap_or_default()
                .len();
            let r = backup(&config, &all, &["--parallel", parallel])?;
            eprintln!(
                "round {}: chunk memory {}: {:.2} s, peak RSS {} MiB, chunks held at most {} MiB",
                round + 1,
                variants[v],
                r.secs,
                r.rss >> 20,
                r.chunk_peak >> 20
            );
            whole[v].push(r);
            fs::remove_dir_all(repo)?;
            let stats = fs::read_to_string(lab_dir.join("vddk-stats.jsonl")).unwrap_or_default();
            peak_connections = stats[stats_before.min(stats.len())..]
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|e| e["peak_connections"].as_i64())
                .max()
                .unwrap_or(0)
                .max(peak_connections);
        }
    }

    let med = |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let secs = |r: &Run| r.secs;
    let rss = |r: &Run| r.rss as f64;
    let chunks = |r: &Run| r.chunk_peak as f64;
    let mib = |b: f64| b / f64::from(1u32 << 20);
    let one = med(&solo, secs);
    println!();
    println!(
        "| many VMs ({vms} × 2 disks of {disk}, {written} written each; median of {rounds}) \
         | wall | peak RSS | chunks held (of limit) | RSS vs 256 MiB target |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let verdict = |rss: f64| {
        if rss <= RSS_TARGET as f64 {
            "met"
        } else {
            "MISSED"
        }
    };
    let one_rss = med(&solo, rss);
    println!(
        "| one VM alone, full | {one:.2} s | {:.0} MiB | {:.0} MiB (of {} MiB) | {} |",
        mib(one_rss),
        mib(med(&solo, chunks)),
        solo.first().map_or(0, |r| r.chunk_limit >> 20),
        verdict(one_rss)
    );
    for (v, runs) in variants.iter().zip(&whole) {
        let w = med(runs, secs);
        let r = med(runs, rss);
        println!(
            "| {vms} VMs in one run, --parallel {parallel}, full, chunk_memory_mib {v} \
             | {w:.2} s | {:.0} MiB | {:.0} MiB (of {} MiB) | {} |",
            mib(r),
            mib(med(runs, chunks)),
            runs.first().map_or(0, |r| r.chunk_limit >> 20),
            verdict(r)
        );
    }
    println!();
    for (v, runs) in variants.iter().zip(&whole) {
        let w = med(runs, secs);
        println!(
            "chunk_memory_mib {v}: whole run / one VM: {:.1}×; per VM: {:.2} s ({:.0} % of one \
             VM alone); speed-up over {vms} runs one after another: {:.1}×; rounds: {}",
            w / one,
            w / vms as f64,
            w / vms as f64 / one * 100.0,
            one * vms as f64 / w,
            runs.iter()
                .map(|r| format!("{:.2} s / {} MiB", r.secs, r.rss >> 20))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let [a, b] = &whole[..] {
        println!(
            "{} against {}: wall {:.2}×, peak RSS {:.2}×",
            variants[0],
            variants[1],
            med(a, secs) / med(b, secs),
            med(a, rss) / med(b, rss)
        );
    }
    println!("at most {peak_connections} VDDK connections at once");
    Ok(())
}

/// One measured backup process.
#[derive(Clone)]
struct Run {
    secs: f64,
    rss: u64,
    chunk_peak: u64,
    chunk_limit: u64,
}
