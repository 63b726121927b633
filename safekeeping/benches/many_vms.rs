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
//! another, the peak RSS of each safekeeping process (VmHWM, polled) and the most VDDK
//! connections the run held at once (the fake VDDK's own count). Snapshots are the lab's
//! delta disks, so snapshot time does not grow with disk size.
//! `SAFEKEEPING_BENCH_NO_BUILD=1` uses already built release binaries.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common {
    pub mod bench_lab;
    // Shared with the other end-to-end benchmarks, which use more of it.
    #[allow(dead_code)]
    pub mod timing;
}
use common::bench_lab::BenchLab;
use common::timing::{run, run_peak, BoxResult};

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
    let config = lab_dir.join("safekeeping.toml");
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
    run(Command::new(sk)
        .arg("--config")
        .arg(&config)
        .args(["repo", "init"]))?;

    let backup = |targets: &[String], extra: &[&str]| -> BoxResult<(f64, u64, serde_json::Value)> {
        let mut cmd = Command::new(sk);
        cmd.arg("--config")
            .arg(&config)
            .args(["--json", "backup"])
            .args(targets)
            .args(extra);
        let m = run_peak(&mut cmd)?;
        let (secs, out, rss) = (m.secs, m.stdout, m.peak_rss);
        let j: serde_json::Value = serde_json::from_str(&out)?;
        for t in j["targets"].as_array().ok_or("no targets in the JSON")? {
            if t["status"] != "succeeded" {
                return Err(format!("a target failed: {t}").into());
            }
        }
        Ok((secs, rss, j))
    };
    let (one, one_rss, _) = backup(&["vm:solo".to_string()], &[])?;
    let stats_before = fs::read_to_string(lab_dir.join("vddk-stats.jsonl"))
        .unwrap_or_default()
        .len();
    let all: Vec<String> = names[..vms].iter().map(|n| format!("vm:{n}")).collect();
    let (whole, whole_rss, _) = backup(&all, &["--parallel", parallel])?;
    let stats = fs::read_to_string(lab_dir.join("vddk-stats.jsonl")).unwrap_or_default();
    let peak_connections = stats[stats_before..]
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["peak_connections"].as_i64())
        .max()
        .unwrap_or(0);

    println!();
    println!("| many VMs ({vms} × 2 disks of {disk}, {written} written each) | wall | peak RSS |");
    println!("| --- | ---: | ---: |");
    println!(
        "| one VM alone, full | {one:.2} s | {} MiB |",
        one_rss >> 20
    );
    println!(
        "| {vms} VMs in one run, --parallel {parallel}, full | {whole:.2} s | {} MiB |",
        whole_rss >> 20
    );
    println!();
    println!(
        "whole run / one VM: {:.1}×; per VM: {:.2} s ({:.0} % of one VM alone); \
         speed-up over {vms} runs one after another: {:.1}×; at most {peak_connections} VDDK \
         connections at once",
        whole / one,
        whole / vms as f64,
        whole / vms as f64 / one * 100.0,
        one * vms as f64 / whole
    );
    Ok(())
}
