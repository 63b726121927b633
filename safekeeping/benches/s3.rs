//! Object storage benchmark: backup and restore of the benchmark VM into the lab's SeaweedFS
//! cluster, against the same backup into a local folder and against `restic` writing the same
//! flat disk to the same cluster, all in one run.
//!
//! `cargo bench -p safekeeping --bench s3` builds the lab and the fake VDDK (release), starts a
//! lab and its S3 cluster (`safekeeping-lab up` and `s3 up`: one master, three volume servers
//! with replication 001, a filer and the S3 gateway, all on loopback) under
//! `target/bench-s3/lab`, creates VM `bench` with one disk of `SAFEKEEPING_BENCH_SIZE`
//! (default `2G`) and fills it with the guest-like image (`common/guest_image.rs`: this
//! machine's files at 4 KiB offsets, incompressible media, duplicates, about 40 % never
//! written). Then, each a separate process, timed from outside:
//!
//! 1. `safekeeping backup` (full) into a local folder, then into `s3://safekeeping-lab/repo`;
//! 2. `restic backup` of the VM's flat file to `s3:http://127.0.0.1:PORT/safekeeping-lab/restic`
//!    (credentials of the lab's `lab` profile in `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`);
//! 3. `safekeeping restore` from the folder and from S3 (as new VMs), `restic restore` of
//!    its snapshot into a folder.
//!
//! It prints wall times, safekeeping's own data phase (log lines `writing generation` →
//! `generation committed`: reading, hashing, compressing and storing, without the lab's
//! snapshot, which copies the whole disk file), the S3/local throughput ratio and the
//! S3/restic time ratio with the targets (≥ 80 %, ≤ ½), and the objects and bytes
//! the repository put into the cluster. `SAFEKEEPING_BENCH_NO_BUILD=1` uses release binaries
//! that are already built; `SAFEKEEPING_BENCH_TOOLS=safekeeping` skips restic;
//! `SAFEKEEPING_BENCH_UPLOADS=N` sets `upload_concurrency` (default: safekeeping's).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

// For its size parser and folder-size helper; its generator is the backup benchmark's.
#[path = "../../repository-format/benches/common/mixed_image.rs"]
#[allow(dead_code)]
mod mixed_image;
use mixed_image::{dir_size, parse_size};

mod common {
    pub mod bench_lab;
    pub mod guest_image;
    // Shared with the backup benchmark, which uses more of it.
    #[allow(dead_code)]
    pub mod timing;
}
use common::bench_lab::BenchLab;
use common::guest_image::fill_guest;
use common::timing::{children_cpu_secs, mb_s, phase, process_cpu_secs, run, BoxResult};

/// Layout seed of the guest image.
const SEED: u64 = 0x005A_FE53;

fn main() -> BoxResult<()> {
    if std::env::args().any(|a| a == "--list") {
        println!("s3: benchmark");
        return Ok(());
    }
    let size =
        parse_size(&std::env::var("SAFEKEEPING_BENCH_SIZE").unwrap_or_else(|_| "2G".into()))?;
    let tools =
        std::env::var("SAFEKEEPING_BENCH_TOOLS").unwrap_or_else(|_| "safekeeping,restic".into());
    let bench_lab = BenchLab::prepare("bench-s3")?;
    bench_lab.start()?;
    let BenchLab {
        sk,
        lab_bin,
        base,
        lab_dir,
    } = &bench_lab;
    let result = bench_lab.lab(&["s3", "up"]).and_then(|_| {
        let b = Bench {
            size,
            tools,
            sk: sk.clone(),
            lab_bin: lab_bin.clone(),
            lab_dir: lab_dir.clone(),
            base: base.clone(),
        };
        b.run()
    });
    let _ = bench_lab.lab(&["s3", "down"]);
    bench_lab.stop();
    result
}

struct Bench {
    size: u64,
    tools: String,
    sk: PathBuf,
    lab_bin: PathBuf,
    lab_dir: PathBuf,
    base: PathBuf,
}

/// One timed step.
struct Row {
    name: String,
    secs: f64,
    /// safekeeping's data phase, from its log.
    data_secs: Option<f64>,
    /// Bytes read from the disk (safekeeping) or of the file (restic).
    read: u64,
    /// CPU seconds of the step's process (safekeeping or restic).
    cpu: f64,
    /// CPU seconds of the SeaweedFS processes during the step.
    store_cpu: f64,
}

impl Bench {
    fn lab(&self, args: &[&str]) -> BoxResult<(f64, String)> {
        run(Command::new(&self.lab_bin)
            .args(args)
            .arg("--dir")
            .arg(&self.lab_dir))
    }

    fn sk(&self, config: &Path, args: &[&str]) -> BoxResult<(f64, String)> {
        run(Command::new(&self.sk)
            .arg("--config")
            .arg(config)
            .args(args))
    }

    /// The lab's configuration with `[repository]` replaced by the S3 one `s3 up` wrote.
    fn s3_config(&self) -> BoxResult<PathBuf> {
        let base = fs::read_to_string(self.lab_dir.join("safekeeping.toml"))?;
        let s3 = fs::read_to_string(self.lab_dir.join("s3-repository.toml"))?;
        let mut out = String::new();
        let mut in_repository = false;
        for line in base.lines() {
            if line.trim_start().starts_with('[') {
                in_repository = line.trim() == "[repository]";
                if in_repository {
                    out.push_str(&s3);
                    out.push_str(&format!(
                        "\ncache_dir = \"{}\"\n",
                        self.base.join("s3-cache").display()
                    ));
                    if let Ok(n) = std::env::var("SAFEKEEPING_BENCH_UPLOADS") {
                        out.push_str(&format!("upload_concurrency = {}\n", n.parse::<usize>()?));
                    }
                    continue;
                }
            }
            if !in_repository {
                out.push_str(line);
                out.push('\n');
            }
        }
        let p = self.lab_dir.join("s3.toml");
        fs::write(&p, out)?;
        Ok(p)
    }

    /// Bytes the cluster's volume servers hold, over the two copies of replication 001.
    fn cluster_bytes(&self) -> u64 {
        let Ok(rd) = fs::read_dir(self.lab_dir.join("s3")) else {
            return 0;
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("volume-"))
            .map(|e| dir_size(&e.path()))
            .sum::<u64>()
            / 2
    }

    /// CPU seconds the cluster's processes have used so far.
    fn cluster_cpu(&self) -> f64 {
        let Ok(text) = fs::read_to_string(self.lab_dir.join("s3.json")) else {
            return 0.0;
        };
        let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
            return 0.0;
        };
        let mut procs = vec![&state["master"], &state["filer"], &state["gateway"]];
        procs.extend(state["volumes"].as_array().into_iter().flatten());
        procs
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .map(process_cpu_secs)
            .sum()
    }

    /// Runs one step and adds the CPU time it and the cluster used.
    fn with_cpu(&self, step: impl FnOnce() -> BoxResult<Row>) -> BoxResult<Row> {
        let (own, store) = (children_cpu_secs(), self.cluster_cpu());
        let mut row = step()?;
        row.cpu = children_cpu_secs() - own;
        row.store_cpu = self.cluster_cpu() - store;
        Ok(row)
    }

    /// A full backup through `config`, timed, with its data phase.
    fn backup(&self, name: &str, config: &Path) -> BoxResult<Row> {
        let log = self.base.join(format!("{name}.log"));
        let l = log.to_string_lossy().into_owned();
        let (secs, out) = self.sk(
            config,
            &["--log-file", &l, "--json", "backup", "vm:bench", "--full"],
        )?;
        let j: serde_json::Value = serde_json::from_str(&out)?;
        let read = j["targets"][0]["bytes_read"].as_u64().unwrap_or(0);
        let data_secs = phase(
            &fs::read_to_string(&log)?,
            "writing generation",
            "generation committed",
        );
        Ok(Row {
            name: format!("safekeeping backup, {name}"),
            secs,
            data_secs,
            read,
            cpu: 0.0,
            store_cpu: 0.0,
        })
    }

    fn restore(&self, name: &str, config: &Path, vm: &str) -> BoxResult<Row> {
        let (secs, _) = self.sk(config, &["--json", "restore", "vm:bench", "--name", vm])?;
        Ok(Row {
            name: format!("safekeeping restore, {name}"),
            secs,
            data_secs: None,
            read: 0,
            cpu: 0.0,
            store_cpu: 0.0,
        })
    }

    /// `restic` against the cluster, credentials of the lab's `lab` profile in its
    /// environment (never in its arguments).
    fn restic(&self, args: &[&str]) -> BoxResult<(f64, String)> {
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(self.lab_dir.join("s3.json"))?)?;
        let endpoint = state["endpoint"]
            .as_str()
            .ok_or("s3.json has no endpoint")?;
        let bucket = state["bucket"].as_str().ok_or("s3.json has no bucket")?;
        let (key, secret) = lab_credentials(&self.lab_dir.join("s3-credentials"))?;
        run(Command::new("restic")
            .arg("--repo")
            .arg(format!("s3:{endpoint}/{bucket}/restic"))
            .arg("--cache-dir")
            .arg(self.base.join("restic-cache"))
            .args(args)
            .env("RESTIC_PASSWORD", "bench")
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1"))
    }

    fn run(&self) -> BoxResult<()> {
        let size_arg = self.size.to_string();
        self.lab(&[
            "create-vm",
            "--name",
            "bench",
            "--disk",
            &size_arg,
            "--powered-off",
        ])?;
        let info: serde_json::Value =
            serde_json::from_str(&self.lab(&["vm-info", "--vm", "bench"])?.1)?;
        let flat = PathBuf::from(
            info["disks"][0]["flat_path"]
                .as_str()
                .ok_or("vm-info has no flat_path")?,
        );
        eprintln!("filling {} with the guest-like image ...", flat.display());
        let t = Instant::now();
        let f = fs::OpenOptions::new().read(true).write(true).open(&flat)?;
        let counts = fill_guest(&f, self.size, SEED)?;
        drop(f);
        eprintln!(
            "  {} MiB written ({} files, {} media, {} duplicates, {} holes; MiB) in {:.1}s",
            counts.written() >> 20,
            counts.files >> 20,
            counts.media >> 20,
            counts.duplicates >> 20,
            counts.holes >> 20,
            t.elapsed().as_secs_f64()
        );
        let local = self.lab_dir.join("safekeeping.toml");
        let s3 = self.s3_config()?;
        self.sk(&local, &["repo", "init"])?;
        self.sk(&s3, &["repo", "init"])?;

        let mut rows = Vec::new();
        let local_backup = self.with_cpu(|| self.backup("local folder", &local))?;
        let repo_local = dir_size(&self.lab_dir.join("repo"));
        let before = self.cluster_bytes();
        let s3_backup = self.with_cpu(|| self.backup("S3 (SeaweedFS)", &s3))?;
        let repo_s3 = self.cluster_bytes().saturating_sub(before);
        let (_, check) = self.sk(&s3, &["--json", "check"])?;
        let check: serde_json::Value = serde_json::from_str(&check)?;
        let chunks = check["chunks_referenced"].as_u64().unwrap_or(0);

        let use_restic =
            self.tools.contains("restic") && Command::new("restic").arg("version").output().is_ok();
        let mut restic_backup = None;
        let mut restic_stored = 0;
        if use_restic {
            self.restic(&["init"])?;
            let before = self.cluster_bytes();
            restic_backup = Some(self.with_cpu(|| {
                let (secs, _) = self.restic(&["backup", "--quiet", &flat.to_string_lossy()])?;
                Ok(Row {
                    name: "restic backup (flat file), S3".into(),
                    secs,
                    data_secs: None,
                    read: self.size,
                    cpu: 0.0,
                    store_cpu: 0.0,
                })
            })?);
            restic_stored = self.cluster_bytes().saturating_sub(before);
        } else if self.tools.contains("restic") {
            eprintln!("restic not found; skipped (scripts/setup.sh installs it)");
        }
        let local_restore =
            self.with_cpu(|| self.restore("local folder", &local, "bench-from-folder"))?;
        let s3_restore = self.with_cpu(|| self.restore("S3 (SeaweedFS)", &s3, "bench-from-s3"))?;
        let mut restic_restore = None;
        if use_restic {
            let target = self.base.join("restic-restore");
            restic_restore = Some(self.with_cpu(|| {
                let (secs, _) =
                    self.restic(&["restore", "latest", "--target", &target.to_string_lossy()])?;
                Ok(Row {
                    name: "restic restore (flat file), S3".into(),
                    secs,
                    data_secs: None,
                    read: 0,
                    cpu: 0.0,
                    store_cpu: 0.0,
                })
            })?);
        }

        println!(
            "\nbackup and restore of a {} MiB disk ({} MiB written: guest-like image) into SeaweedFS on loopback",
            self.size >> 20,
            counts.written() >> 20
        );
        println!(
            "{:<40} {:>9} {:>9} {:>11} {:>13} {:>9} {:>11}",
            "run", "wall s", "data s", "MB read", "disk MB/s", "CPU s", "store CPU s"
        );
        let print = |r: &Row| {
            println!(
                "{:<40} {:>9.2} {:>9} {:>11.1} {:>13.1} {:>9.2} {:>11.2}",
                r.name,
                r.secs,
                r.data_secs.map_or("-".into(), |s| format!("{s:.2}")),
                r.read as f64 / 1e6,
                mb_s(self.size, r.secs),
                r.cpu,
                r.store_cpu
            )
        };
        rows.push(local_backup);
        rows.push(s3_backup);
        rows.extend(restic_backup);
        rows.push(local_restore);
        rows.push(s3_restore);
        rows.extend(restic_restore);
        rows.iter().for_each(print);
        println!(
            "stored: local folder {:.1} MiB, S3 {:.1} MiB in {chunks} chunk objects ({:.0} per GiB read), restic {:.1} MiB",
            repo_local as f64 / (1 << 20) as f64,
            repo_s3 as f64 / (1 << 20) as f64,
            chunks as f64 / (rows[1].read.max(1) as f64 / (1u64 << 30) as f64),
            restic_stored as f64 / (1 << 20) as f64,
        );
        println!(
            "safekeeping's local cache for the S3 repository (cache_dir): {:.1} MiB",
            dir_size(&self.base.join("s3-cache")) as f64 / (1 << 20) as f64
        );
        let (local_b, s3_b) = (&rows[0], &rows[1]);
        let wall_ratio = local_b.secs / s3_b.secs;
        println!(
            "S3 backup throughput / local: {:.0} % wall{} (target >= 80 %: {})",
            wall_ratio * 100.0,
            match (local_b.data_secs, s3_b.data_secs) {
                (Some(l), Some(s)) => format!(", {:.0} % data phase", l / s * 100.0),
                _ => String::new(),
            },
            if wall_ratio >= 0.8 { "met" } else { "MISSED" }
        );
        if let Some(r) = rows.iter().find(|r| r.name.starts_with("restic backup")) {
            let ratio = s3_b.secs / r.secs;
            println!(
                "S3 backup time / restic's: {:.2}{} (target <= 0.50: {})",
                ratio,
                s3_b.data_secs.map_or(String::new(), |d| format!(
                    ", {:.2} for the data phase",
                    d / r.secs
                )),
                if ratio <= 0.5 { "met" } else { "MISSED" }
            );
        }
        let restore = |prefix: &str| {
            rows.iter()
                .find(|r| r.name.starts_with(prefix))
                .map(|r| r.secs)
        };
        if let (Some(l), Some(s)) = (
            restore("safekeeping restore, local"),
            restore("safekeeping restore, S3"),
        ) {
            println!("S3 restore time / local: {:.2}", s / l);
        }
        if let (Some(s), Some(r)) = (
            restore("safekeeping restore, S3"),
            restore("restic restore"),
        ) {
            println!("S3 restore time / restic's: {:.2}", s / r);
        }
        Ok(())
    }
}

/// Access key and secret of profile `lab` in the lab's AWS-format credentials file.
fn lab_credentials(path: &Path) -> BoxResult<(String, String)> {
    let text = fs::read_to_string(path)?;
    let (mut key, mut secret, mut in_lab) = (None, None, false);
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_lab = t == "[lab]";
        } else if let (true, Some((k, v))) = (in_lab, t.split_once('=')) {
            match k.trim() {
                "aws_access_key_id" => key = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    match (key, secret) {
        (Some(k), Some(s)) => Ok((k, s)),
        _ => Err(format!("{} has no [lab] key and secret", path.display()).into()),
    }
}
