//! Starting and stopping the simulator process.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::lab_dir::LabDir;

/// The fixed lab user.
pub const LAB_USER: &str = "administrator@vsphere.local";

/// What the server writes to `lab-server.json` once it listens.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    /// `https://127.0.0.1:PORT/sdk`.
    pub url: String,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The server's process id.
    pub pid: u32,
    /// The user that may log in.
    pub user: String,
    /// SHA-1 fingerprint of the certificate, `AA:BB:...`.
    pub thumbprint_sha1: String,
    /// SHA-256 fingerprint of the certificate, `AA:BB:...`.
    pub thumbprint_sha256: String,
    /// The lab's fixed inventory.
    pub inventory: Inventory,
}

/// The lab's fixed inventory names.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Inventory {
    /// Datacenter name.
    pub datacenter: String,
    /// Cluster name.
    pub cluster: String,
    /// Host names.
    pub hosts: Vec<String>,
    /// Resource pool inventory path.
    pub pool: String,
    /// VM folder inventory path.
    pub vm_folder: String,
    /// VM folder moref value.
    pub vm_folder_moref: String,
    /// Resource pool moref value.
    pub pool_moref: String,
    /// Datastore name to local directory.
    pub datastores: std::collections::BTreeMap<String, String>,
    /// Datastore name to moref value.
    #[serde(default)]
    pub datastore_morefs: std::collections::BTreeMap<String, String>,
    /// Standard port groups.
    pub networks: Vec<String>,
    /// Distributed port groups.
    #[serde(default)]
    pub dv_portgroups: Vec<String>,
}

/// Reads the pid file; `None` when there is none.
pub fn read_pid(dir: &LabDir) -> Result<Option<u32>> {
    match fs::read_to_string(dir.pid_file()) {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} does not hold a pid", dir.pid_file().display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.pid_file().display())),
    }
}

/// Whether `pid` is a running lab simulator (checked through /proc, so a reused pid of
/// another program is not mistaken for it).
pub fn is_lab_server(pid: u32) -> bool {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let text = String::from_utf8_lossy(&cmd);
            text.contains("lab-vcsim") && !is_zombie(pid)
        }
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Starts the simulator detached (own process group, stdin closed, output to the log) and
/// waits until it has written `lab-server.json`.
pub fn start(dir: &LabDir, binary: &Path) -> Result<ServerInfo> {
    let _ = fs::remove_file(dir.server_info());
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .with_context(|| format!("opening {}", dir.log().display()))?;
    let mut child = Command::new(binary)
        .arg("--dir")
        .arg(dir.root())
        .arg("--user")
        .arg(LAB_USER)
        .arg("--password-file")
        .arg(dir.password())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    crate::fsutil::write_atomic(
        &dir.pid_file(),
        format!("{}\n", child.id()).as_bytes(),
        0o644,
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let _ = fs::remove_file(dir.pid_file());
            bail!(
                "the simulator exited during start-up ({status}); its log {} ends with:\n{}",
                dir.log().display(),
                log_tail(dir)
            );
        }
        if let Ok(text) = fs::read_to_string(dir.server_info()) {
            let info: ServerInfo = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", dir.server_info().display()))?;
            return Ok(info);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(dir.pid_file());
            bail!(
                "the simulator did not start within 60 s; its log ends with:\n{}",
                log_tail(dir)
            );
        }
        sleep(Duration::from_millis(50));
    }
}

/// The last lines of the server log, for error messages.
pub fn log_tail(dir: &LabDir) -> String {
    let text = fs::read_to_string(dir.log()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Reads `lab-server.json`.
pub fn read_info(dir: &LabDir) -> Result<ServerInfo> {
    let text = fs::read_to_string(dir.server_info()).with_context(|| {
        format!(
            "no lab is up in {} (missing {}); run `safekeeping-lab up --dir {}`",
            dir.root().display(),
            dir.server_info().display(),
            dir.root().display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", dir.server_info().display()))
}

/// Waits up to `timeout` for the process to go away.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_lab_server(pid) {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    !is_lab_server(pid)
}

/// Sends a signal with the system's `kill` (the lab keeps `unsafe` out of its code).
pub fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() && is_lab_server(pid) {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}
