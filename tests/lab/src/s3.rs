//! `safekeeping-lab s3 ...`: a SeaweedFS cluster on loopback (one master, N ≥ 3 volume
//! servers with replication 001, one filer, the S3 gateway), each its own detached process,
//! with two random identities and the files a client needs (docs/lab.md, "The S3 lab").

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fsutil::write_atomic;
use crate::{sigv4, toolchain, tools};

/// The region the lab's clients use.
pub const REGION: &str = "us-east-1";
/// The identity that may do everything.
pub const PROFILE: &str = "lab";
/// The identity that may only read and list.
pub const READONLY_PROFILE: &str = "lab-readonly";
const LAB_ACTIONS: &[&str] = &["Admin", "Read", "Write", "List", "Tagging"];
const READONLY_ACTIONS: &[&str] = &["Read", "List"];
/// How long `up` and `restart` wait for the cluster.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Subcommand, Debug)]
pub enum S3Cmd {
    /// Starts the cluster and writes DIR/s3.json, DIR/s3-credentials, DIR/s3-repository.toml.
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// Volume servers (at least 3: every volume has 2 copies, one server may die).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=16))]
        volumes: u32,
        /// The bucket `up` creates and s3-repository.toml names.
        #[arg(long, default_value = "safekeeping-lab")]
        bucket: String,
        /// The key prefix of the repository in s3-repository.toml.
        #[arg(long, default_value = "repo")]
        prefix: String,
        /// Serve HTTPS with a new self-signed certificate (DIR/s3/gateway-cert.pem) instead of
        /// http.
        #[arg(long)]
        tls: bool,
    },
    /// Stops every process of the cluster (TERM, then KILL) and removes what `up` wrote.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Prints the cluster's processes, ports and whether each is alive (JSON).
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Fault injection: SIGKILL one volume server or the S3 gateway.
    Kill {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        which: Which,
    },
    /// Starts a volume server or the S3 gateway again with the same ports and data (stopping
    /// it first if it runs); waits until it answers.
    Restart {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        which: Which,
    },
}

/// One process of the cluster, for kill and restart.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// Volume server I (0-based).
    #[arg(long)]
    volume: Option<usize>,
    /// The S3 gateway.
    #[arg(long)]
    gateway: bool,
}

/// One server process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    /// `master`, `volume-I`, `filer` or `gateway`.
    pub name: String,
    pub pid: u32,
    pub port: u16,
    pub grpc_port: u16,
    /// Where it keeps its data (the gateway keeps none).
    pub data_dir: Option<PathBuf>,
    pub log: PathBuf,
    /// Its arguments after the `weed` path (no secrets: those are in files).
    pub args: Vec<String>,
    /// An argument only this process has, to tell it from a reused pid.
    pub marker: String,
}

/// `DIR/s3.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub credentials_file: PathBuf,
    /// Profile name → the gateway actions it has.
    pub profiles: BTreeMap<String, Vec<String>>,
    pub gateway_config: PathBuf,
    pub repository_toml: PathBuf,
    /// With `--tls`: the gateway's self-signed certificate, to trust as a CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub weed: PathBuf,
    pub master: Proc,
    pub volumes: Vec<Proc>,
    pub filer: Proc,
    pub gateway: Proc,
    /// How long `up` took, in milliseconds.
    pub startup_ms: u64,
}

impl State {
    fn all(&self) -> Vec<&Proc> {
        let mut v = vec![&self.gateway, &self.filer];
        v.extend(self.volumes.iter());
        v.push(&self.master);
        v
    }
}

/// The files of an S3 lab in DIR.
struct S3Dir {
    root: PathBuf,
}

impl S3Dir {
    fn new(dir: &Path) -> Result<S3Dir> {
        let root = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(S3Dir { root })
    }
    fn state(&self) -> PathBuf {
        self.root.join("s3.json")
    }
    fn credentials(&self) -> PathBuf {
        self.root.join("s3-credentials")
    }
    fn repository_toml(&self) -> PathBuf {
        self.root.join("s3-repository.toml")
    }
    /// The gateway's certificate (`--tls`); weed wants it beside the key.
    fn ca_file(&self) -> PathBuf {
        self.work().join("gateway-cert.pem")
    }
    fn tls_key(&self) -> PathBuf {
        self.work().join("gateway-key.pem")
    }
    /// Data, logs and the gateway's configuration.
    fn work(&self) -> PathBuf {
        self.root.join("s3")
    }
    fn logs(&self) -> PathBuf {
        self.work().join("logs")
    }
    fn gateway_config(&self) -> PathBuf {
        self.work().join("gateway-identities.json")
    }
    fn read_state(&self) -> Result<State> {
        let text = fs::read_to_string(self.state()).with_context(|| {
            format!(
                "no S3 lab in {} (missing {}); run `safekeeping-lab s3 up --dir {}`",
                self.root.display(),
                self.state().display(),
                self.root.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.state().display()))
    }
    fn write_state(&self, s: &State) -> Result<()> {
        write_atomic(&self.state(), &serde_json::to_vec_pretty(s)?, 0o644)
    }
}

/// Runs one `s3` subcommand.
pub fn run(cmd: S3Cmd) -> Result<()> {
    match cmd {
        S3Cmd::Up {
            dir,
            volumes,
            bucket,
            prefix,
            tls,
        } => up(&S3Dir::new(&dir)?, volumes as usize, &bucket, &prefix, tls),
        S3Cmd::Down { dir } => down(&S3Dir::new(&dir)?),
        S3Cmd::Status { dir } => status(&S3Dir::new(&dir)?),
        S3Cmd::Kill { dir, which } => kill(&S3Dir::new(&dir)?, &which),
        S3Cmd::Restart { dir, which } => restart(&S3Dir::new(&dir)?, &which),
    }
}

fn check_bucket_name(b: &str) -> Result<()> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if !ok {
        bail!("{b:?} is not a valid S3 bucket name (3-63 of a-z, 0-9, '-', '.')");
    }
    Ok(())
}

fn check_prefix(p: &str) -> Result<()> {
    if p.is_empty()
        || p.starts_with('/')
        || p.ends_with('/')
        || !p
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c))
    {
        bail!("{p:?} is not a usable key prefix (letters, digits, '-', '_', '.', inner '/')");
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

/// Free ports on 127.0.0.1, all different: every listener is held until all are chosen.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// Whether `pid` is alive and still the process we started (its command line holds `marker`).
fn is_ours(pid: u32, marker: &str) -> bool {
    let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmd.split(|b| *b == 0).any(|a| a == marker.as_bytes()) && running(pid)
}

fn send(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Waits until none of `procs` (processes we signalled) runs; returns the ones still
/// running at the deadline. An exiting process loses its command line before it is gone,
/// so this looks at its state, not at its marker.
fn wait_gone<'a>(procs: &[&'a Proc], timeout: Duration) -> Vec<&'a Proc> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<&Proc> = procs.iter().copied().filter(|p| running(p.pid)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        sleep(Duration::from_millis(50));
    }
}

/// TERM, up to 3 s, KILL, up to 5 s.
fn stop(procs: &[&Proc]) -> Result<()> {
    let ours: Vec<&Proc> = procs
        .iter()
        .copied()
        .filter(|p| is_ours(p.pid, &p.marker))
        .collect();
    for p in &ours {
        send(p.pid, "TERM");
    }
    // The filer waits 15 s for a gRPC stream to itself before it exits on TERM.
    let left = wait_gone(&ours, Duration::from_secs(3));
    for p in &left {
        send(p.pid, "KILL");
    }
    let left = wait_gone(&left, Duration::from_secs(5));
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|p| format!("{} ({})", p.name, p.pid))
            .collect();
        bail!("these processes do not stop: {}", names.join(", "));
    }
    Ok(())
}

/// Starts one process detached: its own process group, stdin closed, output appended to
/// its log.
fn spawn(weed: &Path, p: &Proc, cwd: &Path) -> Result<u32> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .with_context(|| format!("opening {}", p.log.display()))?;
    let child = Command::new(weed)
        .args(&p.args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} {}", weed.display(), p.name))?;
    Ok(child.id())
}

fn log_tail(p: &Proc) -> String {
    let text = fs::read_to_string(&p.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// An HTTP client for the cluster; it trusts the gateway's certificate with `--tls`.
fn http(state: &State) -> Result<reqwest::blocking::Client> {
    let mut b = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy();
    if let Some(ca) = &state.ca_file {
        let pem = fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    b.build().context("building an HTTP client")
}

/// One signed request to the gateway; returns (status, body).
fn s3_request(
    client: &reqwest::blocking::Client,
    state: &State,
    creds: &(String, String),
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let host = state
        .endpoint
        .split_once("://")
        .map_or(state.endpoint.as_str(), |(_, h)| h);
    let m = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut req = client
        .request(m, format!("{}{path}", state.endpoint))
        .body(body.to_vec());
    for (k, v) in sigv4::sign(method, host, path, body, REGION, &creds.0, &creds.1) {
        req = req.header(k, v);
    }
    let res = req.send()?;
    let status = res.status().as_u16();
    Ok((status, res.bytes()?.to_vec()))
}

/// Number of volume servers the master knows.
fn registered_volume_servers(client: &reqwest::blocking::Client, master: &Proc) -> Option<usize> {
    let v: Value = client
        .get(format!("http://127.0.0.1:{}/dir/status", master.port))
        .send()
        .ok()?
        .json()
        .ok()?;
    let mut n = 0;
    for dc in v["Topology"]["DataCenters"].as_array()? {
        for rack in dc["Racks"].as_array().into_iter().flatten() {
            n += rack["DataNodes"].as_array().map_or(0, Vec::len);
        }
    }
    Some(n)
}

fn gateway_answers(client: &reqwest::blocking::Client, state: &State) -> bool {
    client.get(format!("{}/", state.endpoint)).send().is_ok()
}

/// Fails with the log of the first process that exited.
fn check_alive(state: &State) -> Result<()> {
    for p in state.all() {
        if !is_ours(p.pid, &p.marker) {
            bail!(
                "{} (pid {}) exited during start-up; its log {} ends with:\n{}",
                p.name,
                p.pid,
                p.log.display(),
                log_tail(p)
            );
        }
    }
    Ok(())
}

/// Waits until every volume server is registered, then until the lab identity can create
/// the bucket and write, read and delete an object through the gateway.
fn wait_ready(state: &State, creds: &(String, String), deadline: Instant) -> Result<()> {
    let client = http(state)?;
    let mut last = String::from("nothing answered yet");
    let step = |what: &str, last: &str| -> Result<()> {
        check_alive(state)?;
        if Instant::now() > deadline {
            bail!(
                "the S3 lab was not ready within {} s ({what}; last: {last}); logs in {}",
                START_TIMEOUT.as_secs(),
                state
                    .gateway
                    .log
                    .parent()
                    .unwrap_or(Path::new(""))
                    .display()
            );
        }
        sleep(Duration::from_millis(100));
        Ok(())
    };
    while registered_volume_servers(&client, &state.master) != Some(state.volumes.len()) {
        step("waiting for the volume servers to register", &last)?;
    }
    while !gateway_answers(&client, state) {
        step("waiting for the gateway", &last)?;
    }
    let bucket = format!("/{}", state.bucket);
    loop {
        match s3_request(&client, state, creds, "PUT", &bucket, b"") {
            Ok((200, _)) => break,
            Ok((409, b)) if String::from_utf8_lossy(&b).contains("BucketAlreadyOwnedByYou") => {
                break
            }
            Ok((s, b)) => last = format!("PUT {bucket}: {s} {}", String::from_utf8_lossy(&b)),
            Err(e) => last = format!("PUT {bucket}: {e:#}"),
        }
        step("creating the bucket", &last)?;
    }
    let probe = format!("{bucket}/.lab-probe-{}", random_hex(4)?);
    let data = random_hex(64)?.into_bytes();
    loop {
        let put = s3_request(&client, state, creds, "PUT", &probe, &data);
        let get = s3_request(&client, state, creds, "GET", &probe, b"");
        match (put, get) {
            (Ok((200, _)), Ok((200, got))) if got == data => break,
            (put, get) => last = format!("probe object: PUT {put:?}, GET {:?}", get.map(|g| g.0)),
        }
        step("writing a probe object", &last)?;
    }
    match s3_request(&client, state, creds, "DELETE", &probe, b"")? {
        (200 | 204, _) => Ok(()),
        (s, b) => bail!(
            "deleting the probe object answered {s}: {}",
            String::from_utf8_lossy(&b)
        ),
    }
}

/// Whether a server's log says its port was taken.
fn port_clash(dir: &S3Dir) -> bool {
    fs::read_dir(dir.logs())
        .map(|entries| {
            entries.flatten().any(|e| {
                fs::read_to_string(e.path()).is_ok_and(|t| t.contains("address already in use"))
            })
        })
        .unwrap_or(false)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn up(dir: &S3Dir, volumes: usize, bucket: &str, prefix: &str, tls: bool) -> Result<()> {
    let started = Instant::now();
    check_bucket_name(bucket)?;
    check_prefix(prefix)?;
    if let Ok(old) = dir.read_state() {
        if old.all().iter().any(|p| is_ours(p.pid, &p.marker)) {
            bail!(
                "an S3 lab is already up in {}; run `safekeeping-lab s3 down --dir {}` first",
                dir.root.display(),
                dir.root.display()
            );
        }
        bail!(
            "{} holds an S3 lab that is no longer running; run `safekeeping-lab s3 down --dir {}` \
             to remove it first",
            dir.root.display(),
            dir.root.display()
        );
    }
    if dir.work().exists() {
        bail!(
            "{} exists (left by an earlier S3 lab); run `safekeeping-lab s3 down --dir {}` first",
            dir.work().display(),
            dir.root.display()
        );
    }
    let weed = tools::weed()?;
    fs::create_dir_all(dir.logs()).with_context(|| format!("creating {}", dir.logs().display()))?;

    // Identities: only in the gateway's configuration and the credentials file (0600).
    let lab = (
        format!("LAB{}", random_hex(9)?.to_uppercase()),
        random_hex(20)?,
    );
    let ro = (
        format!("LRO{}", random_hex(9)?.to_uppercase()),
        random_hex(20)?,
    );
    let identity = |name: &str, c: &(String, String), actions: &[&str]| json!({"name": name, "credentials": [{"accessKey": c.0, "secretKey": c.1}], "actions": actions});
    let gateway_config = json!({"identities": [
        identity(PROFILE, &lab, LAB_ACTIONS),
        identity(READONLY_PROFILE, &ro, READONLY_ACTIONS),
    ]});
    write_atomic(
        &dir.gateway_config(),
        &serde_json::to_vec_pretty(&gateway_config)?,
        0o600,
    )?;
    let credentials = format!(
        "# Written by `safekeeping-lab s3 up`: the S3 lab's identities (AWS shared credentials).\n\
         [{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
         [{READONLY_PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        lab.0, lab.1, ro.0, ro.1
    );
    write_atomic(&dir.credentials(), credentials.as_bytes(), 0o600)?;
    if tls {
        // The simulator's binary makes the certificate (valid for 127.0.0.1 and localhost,
        // a self-signed leaf that works as its own CA) and its key.
        let binary = toolchain::ensure_server()?;
        let out = Command::new(&binary)
            .arg("--write-cert")
            .arg(dir.ca_file())
            .arg("--write-key")
            .arg(dir.tls_key())
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            bail!(
                "making the gateway's certificate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let mut attempt = 0;
    let mut state = loop {
        attempt += 1;
        let ports = free_ports(2 * (3 + volumes))?;
        let work = dir.work();
        let log = |name: &str| dir.logs().join(format!("{name}.log"));
        let s = |p: &Path| p.display().to_string();
        let mdir = work.join("master");
        let master_addr = format!("127.0.0.1:{}.{}", ports[0], ports[1]);
        let master = Proc {
            name: "master".into(),
            pid: 0,
            port: ports[0],
            grpc_port: ports[1],
            data_dir: Some(mdir.clone()),
            log: log("master"),
            marker: format!("-mdir={}", s(&mdir)),
            args: vec![
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={}", ports[0]),
                format!("-port.grpc={}", ports[1]),
                format!("-mdir={}", s(&mdir)),
                "-peers=none".into(),
                "-defaultReplication=001".into(),
                "-volumeSizeLimitMB=64".into(),
                "-telemetry=false".into(),
            ],
        };
        let volume_procs: Vec<Proc> = (0..volumes)
            .map(|i| {
                let (port, grpc) = (ports[2 + 2 * i], ports[3 + 2 * i]);
                let vdir = work.join(format!("volume-{i}"));
                Proc {
                    name: format!("volume-{i}"),
                    pid: 0,
                    port,
                    grpc_port: grpc,
                    data_dir: Some(vdir.clone()),
                    log: log(&format!("volume-{i}")),
                    marker: format!("-dir={}", s(&vdir)),
                    args: vec![
                        "volume".into(),
                        "-ip=127.0.0.1".into(),
                        "-ip.bind=127.0.0.1".into(),
                        format!("-port={port}"),
                        format!("-port.grpc={grpc}"),
                        format!("-dir={}", s(&vdir)),
                        "-max=100".into(),
                        format!("-master={master_addr}"),
                        "-preStopSeconds=0".into(),
                    ],
                }
            })
            .collect();
        let (fport, fgrpc) = (ports[2 + 2 * volumes], ports[3 + 2 * volumes]);
        let (gport, ggrpc) = (ports[4 + 2 * volumes], ports[5 + 2 * volumes]);
        let fdir = work.join("filer");
        // Unix socket paths are limited to 107 bytes; longer ones fall back to weed's default
        // (/tmp/seaweedfs-<kind>-<port>.sock, unique by port).
        let socket = |name: &str| {
            let p = work.join(name);
            (p.as_os_str().len() < 100).then(|| format!("-localSocket={}", s(&p)))
        };
        let mut filer_args = vec![
            "filer".into(),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-port={fport}"),
            format!("-port.grpc={fgrpc}"),
            format!("-master={master_addr}"),
            format!("-defaultStoreDir={}", s(&fdir)),
        ];
        filer_args.extend(socket("filer.sock"));
        let filer = Proc {
            name: "filer".into(),
            pid: 0,
            port: fport,
            grpc_port: fgrpc,
            data_dir: Some(fdir.clone()),
            log: log("filer"),
            marker: format!("-defaultStoreDir={}", s(&fdir)),
            args: filer_args,
        };
        let mut gateway_args = vec![
            "s3".into(),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-port={gport}"),
            format!("-port.grpc={ggrpc}"),
            format!("-filer=127.0.0.1:{fport}.{fgrpc}"),
            format!("-config={}", s(&dir.gateway_config())),
            "-port.iceberg=0".into(),
            "-port.lance=0".into(),
        ];
        gateway_args.extend(socket("gateway.sock"));
        if tls {
            gateway_args.push(format!("-cert.file={}", s(&dir.ca_file())));
            gateway_args.push(format!("-key.file={}", s(&dir.tls_key())));
        }
        let gateway = Proc {
            name: "gateway".into(),
            pid: 0,
            port: gport,
            grpc_port: ggrpc,
            data_dir: None,
            log: log("gateway"),
            marker: format!("-config={}", s(&dir.gateway_config())),
            args: gateway_args,
        };
        let mut state = State {
            endpoint: format!("{}://127.0.0.1:{gport}", if tls { "https" } else { "http" }),
            region: REGION.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            credentials_file: dir.credentials(),
            profiles: BTreeMap::from([
                (
                    PROFILE.into(),
                    LAB_ACTIONS.iter().map(|a| a.to_string()).collect(),
                ),
                (
                    READONLY_PROFILE.into(),
                    READONLY_ACTIONS.iter().map(|a| a.to_string()).collect(),
                ),
            ]),
            gateway_config: dir.gateway_config(),
            repository_toml: dir.repository_toml(),
            ca_file: tls.then(|| dir.ca_file()),
            weed: weed.clone(),
            master,
            volumes: volume_procs,
            filer,
            gateway,
            startup_ms: 0,
        };
        // All at once: the volume servers and the filer retry until the master answers, the
        // gateway until the filer does.
        for d in [&mdir, &fdir] {
            fs::create_dir_all(d)?;
        }
        for v in &state.volumes {
            fs::create_dir_all(v.data_dir.as_ref().expect("volumes have data"))?;
        }
        state.master.pid = spawn(&weed, &state.master, &mdir)?;
        // Written at once, so `s3 down` can stop what was started even if the rest fails.
        dir.write_state(&state)?;
        for i in 0..state.volumes.len() {
            let cwd = state.volumes[i]
                .data_dir
                .clone()
                .expect("volumes have data");
            state.volumes[i].pid = spawn(&weed, &state.volumes[i], &cwd)?;
            dir.write_state(&state)?;
        }
        state.filer.pid = spawn(&weed, &state.filer, &fdir)?;
        dir.write_state(&state)?;
        state.gateway.pid = spawn(&weed, &state.gateway, &work)?;
        dir.write_state(&state)?;

        match wait_ready(&state, &lab, Instant::now() + START_TIMEOUT) {
            Ok(()) => break state,
            Err(e) => {
                let stopped = stop(&state.all());
                // Another program may take a port between our choice and the server's bind:
                // choose again (twice at most).
                if stopped.is_ok() && attempt < 3 && port_clash(dir) {
                    eprintln!(
                        "safekeeping-lab: a port was taken meanwhile ({e:#}); starting again with other ports"
                    );
                    fs::remove_dir_all(dir.logs())?;
                    fs::create_dir_all(dir.logs())?;
                    for d in state.all().iter().filter_map(|p| p.data_dir.as_ref()) {
                        fs::remove_dir_all(d)?;
                    }
                    continue;
                }
                return Err(e.context(format!(
                    "the S3 lab did not come up{}; `safekeeping-lab s3 down --dir {}` removes its files",
                    if stopped.is_ok() {
                        " (its processes are stopped)"
                    } else {
                        ""
                    },
                    dir.root.display()
                )));
            }
        }
    };
    let repository = format!(
        "# Written by `safekeeping-lab s3 up`: the S3 lab as a safekeeping repository.\n\
         [repository]\n\
         url = {}\n\
         endpoint = {}\n\
         region = {}\n\
         credentials_file = {}\n\
         profile = {}\n\
         {}\n",
        toml_str(&format!("s3://{bucket}/{prefix}")),
        toml_str(&state.endpoint),
        toml_str(REGION),
        toml_str(&dir.credentials().display().to_string()),
        toml_str(PROFILE),
        match &state.ca_file {
            Some(ca) => format!("ca_file = {}", toml_str(&ca.display().to_string())),
            None => "allow_http = true".to_string(),
        },
    );
    write_atomic(&dir.repository_toml(), repository.as_bytes(), 0o644)?;
    state.startup_ms = started.elapsed().as_millis() as u64;
    dir.write_state(&state)?;
    println!("{}", dir.state().display());
    eprintln!(
        "safekeeping-lab: S3 lab up at {} ({} volume servers, bucket {bucket}) in {:.1} s",
        state.endpoint,
        state.volumes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn down(dir: &S3Dir) -> Result<()> {
    match dir.read_state() {
        Ok(state) => stop(&state.all())?,
        Err(_) if !dir.state().exists() => {}
        Err(e) => return Err(e),
    }
    for f in [dir.state(), dir.credentials(), dir.repository_toml()] {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    match fs::remove_dir_all(dir.work()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.work().display())),
    }
    // The directory itself goes when nothing else (a vCenter lab, say) is left in it.
    let _ = fs::remove_dir(&dir.root);
    Ok(())
}

fn proc_json(p: &Proc) -> Value {
    json!({
        "name": p.name, "pid": p.pid, "alive": is_ours(p.pid, &p.marker), "port": p.port,
        "grpc_port": p.grpc_port, "data_dir": p.data_dir, "log": p.log,
    })
}

fn status(dir: &S3Dir) -> Result<()> {
    let state = dir.read_state()?;
    let all_alive = state.all().iter().all(|p| is_ours(p.pid, &p.marker));
    let answers = gateway_answers(&http(&state)?, &state);
    let out = json!({
        "dir": dir.root,
        "up": all_alive && answers,
        "gateway_answers": answers,
        "endpoint": state.endpoint,
        "ca_file": state.ca_file,
        "bucket": state.bucket,
        "master": proc_json(&state.master),
        "volumes": state.volumes.iter().map(proc_json).collect::<Vec<_>>(),
        "filer": proc_json(&state.filer),
        "gateway": proc_json(&state.gateway),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn pick<'a>(state: &'a mut State, which: &Which) -> Result<&'a mut Proc> {
    if which.gateway {
        return Ok(&mut state.gateway);
    }
    let i = which.volume.expect("clap requires --volume or --gateway");
    let n = state.volumes.len();
    state
        .volumes
        .get_mut(i)
        .with_context(|| format!("there are {n} volume servers (0..{n}); no volume {i}"))
}

fn kill(dir: &S3Dir, which: &Which) -> Result<()> {
    let mut state = dir.read_state()?;
    let p = pick(&mut state, which)?;
    if !is_ours(p.pid, &p.marker) {
        bail!("{} (pid {}) is not running", p.name, p.pid);
    }
    send(p.pid, "KILL");
    if !wait_gone(&[&*p], Duration::from_secs(5)).is_empty() {
        bail!("{} (pid {}) survived SIGKILL for 5 s", p.name, p.pid);
    }
    eprintln!("safekeeping-lab: killed {} (pid {})", p.name, p.pid);
    Ok(())
}

fn restart(dir: &S3Dir, which: &Which) -> Result<()> {
    let mut state = dir.read_state()?;
    let weed = state.weed.clone();
    let cwd = dir.work();
    let p = pick(&mut state, which)?;
    stop(&[&*p])?;
    let old = p.pid;
    p.pid = spawn(&weed, p, p.data_dir.as_deref().unwrap_or(&cwd))?;
    let p = p.clone();
    dir.write_state(&state)?;
    let client = http(&state)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !is_ours(p.pid, &p.marker) {
            bail!(
                "{} (pid {}) exited; its log {} ends with:\n{}",
                p.name,
                p.pid,
                p.log.display(),
                log_tail(&p)
            );
        }
        let ready = if which.gateway {
            gateway_answers(&client, &state)
        } else {
            client
                .get(format!("http://127.0.0.1:{}/status", p.port))
                .send()
                .is_ok_and(|r| r.status().is_success())
                && registered_volume_servers(&client, &state.master) == Some(state.volumes.len())
        };
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer within {} s; its log ends with:\n{}",
                p.name,
                START_TIMEOUT.as_secs(),
                log_tail(&p)
            );
        }
        sleep(Duration::from_millis(50));
    }
    eprintln!(
        "safekeeping-lab: restarted {} on port {} (pid {old} → {})",
        p.name, p.port, p.pid
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_and_prefixes_are_checked() {
        assert!(check_bucket_name("safekeeping-lab").is_ok());
        assert!(check_bucket_name("b").is_err());
        assert!(check_bucket_name("Upper").is_err());
        assert!(check_bucket_name("-dash").is_err());
        assert!(check_prefix("repo").is_ok());
        assert!(check_prefix("a/b").is_ok());
        assert!(check_prefix("/a").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a b").is_err());
    }

    #[test]
    fn free_ports_differ() {
        let p = free_ports(12).unwrap();
        let mut q = p.clone();
        q.sort();
        q.dedup();
        assert_eq!(q.len(), 12);
    }
}
