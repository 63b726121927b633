//! End-to-end tests of safekeeping against the lab.
//!
//! [`Lab`] starts `safekeeping-lab up --dir <tempdir>` and stops it when dropped; [`Lab::sk`]
//! runs the `safekeeping` binary with the lab's configuration. Both binaries are taken from
//! the cargo target directory next to the test executable: `cargo build --workspace` must
//! have run first (scripts/test.sh does).
#![warn(missing_docs)]

pub mod schema;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory holding the workspace's binaries (`target/debug`), found from the running
/// test executable (`target/debug/deps/NAME-HASH`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of a workspace binary, panicking with a clear message when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        p.display()
    );
    p
}

/// The output of a finished command, with helpers for assertions.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(command: String, out: Output) -> Run {
        Run {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "`{}` exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command exited 0.
    pub fn ok(self) -> Run {
        self.expect_code(0)
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print JSON ({e}):\n{}\n--- stderr\n{}",
                self.command, self.stdout, self.stderr
            )
        })
    }

    /// Stdout and stderr together, for searching messages.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A running lab in a temporary directory; `down` runs on drop.
pub struct Lab {
    dir: tempfile::TempDir,
    lab_bin: PathBuf,
    sk_bin: PathBuf,
    down: bool,
}

impl Lab {
    /// Starts a lab (`safekeeping-lab up --dir`).
    pub fn up() -> Lab {
        let lab_bin = binary("safekeeping-lab");
        let sk_bin = binary("safekeeping");
        let dir = tempfile::Builder::new()
            .prefix("sk-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut lab = Lab {
            dir,
            lab_bin,
            sk_bin,
            down: false,
        };
        let d = lab.dir().to_string_lossy().into_owned();
        lab.lab(&["up", "--dir", &d]).ok();
        lab.down = true;
        lab
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The flat extent of the only disk of VM `vm` (its folder is named after it), where the
    /// lab keeps the disk's bytes.
    pub fn flat_file(&self, vm: &str) -> PathBuf {
        let found: Vec<PathBuf> = files_under(&self.dir().join("datastores"))
            .into_iter()
            .filter(|p| {
                p.parent().and_then(|d| d.file_name()) == Some(vm.as_ref())
                    && p.to_string_lossy().ends_with("-flat.vmdk")
            })
            .collect();
        assert_eq!(found.len(), 1, "flat files of {vm}: {found:?}");
        found.into_iter().next().unwrap()
    }

    /// The lab's safekeeping configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir().join("safekeeping.toml")
    }

    /// Runs `safekeeping-lab ARGS --dir DIR`.
    pub fn lab(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(&self.lab_bin);
        cmd.args(args);
        if args.first() != Some(&"up") {
            cmd.arg("--dir").arg(self.dir());
        }
        let line = format!("safekeeping-lab {}", args.join(" "));
        Run::from_output(line, cmd.output().expect("run safekeeping-lab"))
    }

    /// Runs `safekeeping --config LAB/safekeeping.toml ARGS`.
    pub fn sk(&self, args: &[&str]) -> Run {
        self.sk_with(args, &self.config(), &[])
    }

    /// Runs `safekeeping` with another configuration file and extra environment.
    pub fn sk_with(&self, args: &[&str], config: &Path, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(&self.sk_bin);
        cmd.arg("--config").arg(config).args(args);
        cmd.env_remove("SAFEKEEPING_PASSWORD");
        cmd.env_remove("SAFEKEEPING_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let line = format!("safekeeping {}", args.join(" "));
        Run::from_output(line, cmd.output().expect("run safekeeping"))
    }

    /// Creates a powered-on VM with thin disks of these sizes (`64M`) and NICs on these networks.
    pub fn create_vm(&self, name: &str, disks: &[&str], nics: &[&str]) {
        let mut args = vec!["create-vm", "--name", name];
        for d in disks {
            args.push("--disk");
            args.push(d);
        }
        for n in nics {
            args.push("--nic");
            args.push(n);
        }
        self.lab(&args).ok();
    }

    /// Writes the lab's deterministic data (seed) or zeros into a VM's disk.
    pub fn guest_write(&self, vm: &str, disk: usize, offset: &str, len: &str, seed: Option<u64>) {
        let d = disk.to_string();
        let s = seed.unwrap_or(0).to_string();
        let mut args = vec![
            "guest-write",
            "--vm",
            vm,
            "--disk",
            &d,
            "--offset",
            offset,
            "--len",
            len,
        ];
        match seed {
            Some(_) => args.extend(["--seed", s.as_str()]),
            None => args.push("--zero"),
        }
        self.lab(&args).ok();
    }

    /// SHA-256 of a VM's disk content.
    pub fn digest(&self, vm: &str, disk: usize) -> String {
        let d = disk.to_string();
        self.lab(&["disk-digest", "--vm", vm, "--disk", &d])
            .ok()
            .stdout
            .trim()
            .to_string()
    }

    /// Digests of every disk of a VM, in order.
    pub fn digests(&self, vm: &str, disks: usize) -> Vec<String> {
        (0..disks).map(|i| self.digest(vm, i)).collect()
    }

    /// `vm-info` as JSON, or `None` when there is no such VM.
    pub fn vm_info(&self, vm: &str) -> Option<serde_json::Value> {
        let r = self.lab(&["vm-info", "--vm", vm]);
        (r.code == 0).then(|| r.json())
    }

    /// Names of a VM's snapshots.
    pub fn snapshots(&self, vm: &str) -> Vec<String> {
        let info = self.vm_info(vm).expect("VM exists");
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                serde_json::Value::Object(o) => {
                    if let Some(n) = o.get("name").and_then(|n| n.as_str()) {
                        out.push(n.to_string());
                    }
                    o.values().for_each(|x| walk(x, out));
                }
                _ => {}
            }
        }
        walk(&info["snapshots"], &mut out);
        out
    }

    /// Appends lines to the fake VDDK's configuration (`DIR/vddk/vddk.conf`).
    pub fn vddk_conf_append(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir().join("vddk/vddk.conf"))
            .expect("open vddk.conf");
        writeln!(f, "{text}").expect("append to vddk.conf");
    }

    /// Removes lines starting with `prefix` from the fake VDDK's configuration.
    pub fn vddk_conf_remove(&self, prefix: &str) {
        let p = self.dir().join("vddk/vddk.conf");
        let text = std::fs::read_to_string(&p).expect("read vddk.conf");
        let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with(prefix)).collect();
        std::fs::write(&p, kept.join("\n") + "\n").expect("write vddk.conf");
    }

    /// A copy of the lab's configuration with `from` replaced by `to`, written to `name`.
    pub fn config_variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.config()).expect("read safekeeping.toml");
        assert!(text.contains(from), "safekeeping.toml has no `{from}`");
        let p = self.dir().join(name);
        std::fs::write(&p, text.replace(from, to)).expect("write config variant");
        p
    }

    /// Restores generation `g` of `vm` through `config` as a new VM (named after the VM, the
    /// generation and the configuration file, so restores through several configurations do
    /// not collide) and returns its disk digests.
    pub fn restored_digests(&self, config: &Path, vm: &str, g: u64, disks: usize) -> Vec<String> {
        let name = format!(
            "{vm}-g{g}-{}",
            config.file_stem().unwrap().to_string_lossy()
        );
        self.sk_with(
            &[
                "restore",
                &format!("vm:{vm}"),
                "--generation",
                &g.to_string(),
                "--name",
                &name,
            ],
            config,
            &[],
        )
        .ok();
        self.digests(&name, disks)
    }

    /// A `safekeeping` process started in the background (stdout and stderr piped).
    pub fn sk_spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(&self.sk_bin)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("SAFEKEEPING_PASSWORD")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn safekeeping")
    }

    /// A `safekeeping` process started in the background with configuration `config`
    /// (stdout and stderr piped): one backup proxy among several.
    pub fn sk_spawn_with(&self, args: &[&str], config: &Path) -> std::process::Child {
        Command::new(&self.sk_bin)
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("SAFEKEEPING_PASSWORD")
            .env_remove("SAFEKEEPING_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn safekeeping")
    }

    /// Starts the lab's SeaweedFS cluster (`safekeeping-lab s3 up`); it stops when the
    /// returned guard is dropped, however the test ends.
    pub fn s3_up(&self) -> S3Cluster<'_> {
        self.lab(&["s3", "up"]).ok();
        S3Cluster(self)
    }

    /// The lab's configuration with its `[repository]` section replaced by the S3 one that
    /// `safekeeping-lab s3 up` wrote, using credentials profile `profile`, plus `extra` lines
    /// inside `[repository]` (say `cache_dir = "..."`), written to `DIR/name`.
    pub fn s3_config(&self, name: &str, profile: &str, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(self.config()).expect("read safekeeping.toml");
        let s3 = std::fs::read_to_string(self.dir().join("s3-repository.toml"))
            .expect("read s3-repository.toml (is the S3 lab up?)");
        let s3 = s3.replace("profile = \"lab\"", &format!("profile = \"{profile}\""));
        let mut out = String::new();
        let mut in_repository = false;
        for line in base.lines() {
            if line.trim_start().starts_with('[') {
                in_repository = line.trim() == "[repository]";
                if in_repository {
                    out.push_str(&s3);
                    out.push('\n');
                    out.push_str(extra);
                    out.push('\n');
                    continue;
                }
            }
            if !in_repository {
                out.push_str(line);
                out.push('\n');
            }
        }
        let path = self.dir().join(name);
        std::fs::write(&path, out).expect("write S3 configuration");
        path
    }

    /// `DIR/s3.json`, the S3 lab's state (endpoint, bucket, processes).
    pub fn s3_state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir().join("s3.json")).expect("read s3.json");
        serde_json::from_str(&text).expect("s3.json is JSON")
    }

    /// Committed generation numbers of VM `vm` in the repository `config` names.
    pub fn generations_with(&self, config: &Path, vm: &str) -> Vec<u64> {
        let j = self.sk_with(&["--json", "list"], config, &[]).ok().json();
        j["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["name"] == vm)
            .flat_map(|t| t["generations"].as_array().cloned().unwrap_or_default())
            .filter_map(|g| g["id"].as_u64())
            .collect()
    }

    /// Waits up to `timeout` until VM `vm` has a snapshot (a backup is past its target lock
    /// and its snapshot, so in its data phase); whether it did.
    pub fn wait_for_snapshot(&self, vm: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self.snapshots(vm).is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    }

    /// Lines of `DIR/vddk-stats.jsonl`, parsed.
    pub fn vddk_stats(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir().join("vddk-stats.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("vddk-stats line is JSON"))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            let r = self.lab(&["down"]);
            if r.code != 0 {
                eprintln!("lab down failed: {}", r.stderr);
            }
        }
    }
}

/// The lab's SeaweedFS cluster (from [`Lab::s3_up`]), stopped when dropped.
pub struct S3Cluster<'a>(&'a Lab);

impl Drop for S3Cluster<'_> {
    fn drop(&mut self) {
        let r = self.0.lab(&["s3", "down"]);
        if r.code != 0 {
            eprintln!("s3 down failed: {}", r.stderr);
        }
    }
}

/// Waits for a spawned `safekeeping` and returns what it printed, as a [`Run`].
pub fn wait_run(command: &str, child: std::process::Child) -> Run {
    let out = child.wait_with_output().expect("wait for safekeeping");
    Run::from_output(command.to_string(), out)
}

/// Sends `signal` (`INT` for Ctrl-C, `TERM`) to a `safekeeping` started with
/// [`Lab::sk_spawn`], waits for it and returns its exit code and stderr.
pub fn stop_with(signal: &str, child: std::process::Child) -> (Option<i32>, String) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    let out = child.wait_with_output().expect("wait for safekeeping");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lab's guest data (docs/lab.md): SHA-256(le64(seed) || le64(counter)) blocks, cut to
/// `len` bytes; what `guest-write --seed SEED` writes from the start of its range.
pub fn guest_bytes(seed: u64, len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// Every file below `dir` (not following symlinks to folders).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open file to hash");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read file to hash");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}
