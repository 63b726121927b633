//! Finds or starts a SeaweedFS cluster on loopback for the S3 tests.
//!
//! - `SAFEKEEPING_TEST_S3_CONFIG=DIR/s3.json` (written by `safekeeping-lab s3 up --dir DIR`):
//!   use that cluster (its endpoint, region and credentials file, profile `lab`).
//! - Otherwise, if `weed` is found (`SAFEKEEPING_WEED`, the PATH, or the venv `scripts/setup.sh`
//!   makes), start master + 3 volume servers + filer + S3 gateway on free loopback ports, once
//!   per test binary. Each server runs under a small shell watchdog that stops it (by its pid)
//!   when this test process is gone, so nothing outlives the tests.
//! - Without either, the tests are skipped with a message, except under `CI=true`, where a
//!   missing `weed` is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use repository_format::*;

/// How to reach the test cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The folder of a cluster these tests started (pid files, logs); `None` for the lab's.
    pub dir: Option<PathBuf>,
    pub endpoint: String,
    pub region: String,
    pub credentials_file: PathBuf,
    pub profile: String,
    /// A profile that may only read and list.
    pub readonly_profile: String,
    /// The CA of a TLS gateway (the lab's `--tls`).
    pub ca_file: Option<PathBuf>,
}

impl Cluster {
    /// A location for a fresh repository under a unique prefix of `bucket`.
    pub fn location(&self, bucket: &str, name: &str) -> S3Location {
        let mut l = S3Location::new(bucket, format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        l.endpoint = Some(self.endpoint.clone());
        l.region = self.region.clone();
        l.allow_http = self.endpoint.starts_with("http://");
        l.ca_file = self.ca_file.clone();
        l.credentials = S3Credentials::File {
            path: self.credentials_file.clone(),
            profile: Some(self.profile.clone()),
        };
        l.max_retries = 3;
        // Each repository gets its own local cache folder (never the user's ~/.cache).
        l.cache_dir = Some(cache_root().join(uuid::Uuid::new_v4().simple().to_string()));
        l
    }
}

static CLUSTER: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

/// The local cache folders of this test process's repositories, removed when it exits.
fn cache_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("safekeeping-s3-test-caches-{}", std::process::id()));
        remove_when_done(&d);
        d
    })
    .clone()
}

/// Removes `dir` once this test process is gone (a watchdog like the servers').
fn remove_when_done(dir: &Path) {
    let script =
        "while kill -0 \"$PARENT\" 2>/dev/null; do sleep 1; done; sleep 5; rm -rf -- \"$DIR\"";
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PARENT", std::process::id().to_string())
        .env("DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cleanup watchdog");
    WATCHDOGS.lock().unwrap().push(child);
}

/// The cluster, or `None` (tests then return early) when there is no way to get one.
///
/// # Panics
/// If a cluster was to be started and did not come up (every test then fails with the same
/// message; the cluster is started once per test binary, never again after a failure).
pub fn cluster() -> Option<Cluster> {
    let r = CLUSTER.get_or_init(|| {
        std::panic::catch_unwind(|| {
            if let Ok(cfg) = std::env::var("SAFEKEEPING_TEST_S3_CONFIG") {
                return Some(from_lab_config(Path::new(&cfg)));
            }
            match find_weed() {
                Some(weed) => Some(start(&weed)),
                None if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("S3 tests: no `weed` binary (run scripts/setup.sh) and no SAFEKEEPING_TEST_S3_CONFIG")
                }
                None => {
                    eprintln!(
                        "S3 tests SKIPPED: no `weed` binary found and SAFEKEEPING_TEST_S3_CONFIG \
                         is not set (scripts/setup.sh installs weed)"
                    );
                    None
                }
            }
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "starting the S3 test cluster failed".into())
        })
    });
    match r {
        Ok(c) => c.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn from_lab_config(path: &Path) -> Cluster {
    let text = std::fs::read_to_string(path).expect("read SAFEKEEPING_TEST_S3_CONFIG");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse s3.json");
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("s3.json has no {k}"))
            .to_string()
    };
    Cluster {
        dir: None,
        endpoint: s("endpoint"),
        region: v["region"].as_str().unwrap_or("us-east-1").to_string(),
        credentials_file: PathBuf::from(s("credentials_file")),
        profile: "lab".into(),
        readonly_profile: "lab-readonly".into(),
        ca_file: v["ca_file"].as_str().map(PathBuf::from),
    }
}

fn find_weed() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SAFEKEEPING_WEED") {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("weed");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    ["/opt/safekeeping-lab/venv/bin/weed"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 {
            return p;
        }
    }
}

/// Starts `weed ARGS` under a watchdog that kills it once this process is gone.
fn spawn(weed: &Path, dir: &Path, name: &str, args: &[String]) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let me = std::process::id();
    let script = "\"$@\" & child=$!; echo $child > \"$PIDFILE\"; while kill -0 \"$PARENT\" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; kill $child 2>/dev/null; sleep 3; kill -9 $child 2>/dev/null; wait $child";
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("weed-watchdog")
        .arg(weed)
        .args(args)
        .env("PARENT", me.to_string())
        .env("PIDFILE", dir.join(format!("{name}.pid")))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start weed");
    // Kept (never waited for): the watchdogs end with this process.
    WATCHDOGS.lock().unwrap().push(child);
}

static WATCHDOGS: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

fn start(weed: &Path) -> Cluster {
    let t = Instant::now();
    let dir = std::env::temp_dir().join(format!("safekeeping-s3-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Its data goes with the test process (set SAFEKEEPING_TEST_S3_KEEP=1 to keep the logs).
    if std::env::var_os("SAFEKEEPING_TEST_S3_KEEP").is_none() {
        remove_when_done(&dir);
    }
    let (mp, mg) = (free_port(), free_port());
    let master = format!("127.0.0.1:{mp}.{mg}");
    let common = |port: u16, grpc: u16| {
        vec![
            "-ip=127.0.0.1".to_string(),
            "-ip.bind=127.0.0.1".to_string(),
            format!("-port={port}"),
            format!("-port.grpc={grpc}"),
        ]
    };
    let mdir = dir.join("master");
    std::fs::create_dir_all(&mdir).unwrap();
    let mut args = vec!["master".to_string()];
    args.extend(common(mp, mg));
    args.extend([
        format!("-mdir={}", mdir.display()),
        "-peers=none".into(),
        "-defaultReplication=001".into(),
        "-volumeSizeLimitMB=64".into(),
    ]);
    spawn(weed, &dir, "master", &args);
    for i in 0..3 {
        let vdir = dir.join(format!("volume{i}"));
        std::fs::create_dir_all(&vdir).unwrap();
        let (p, g) = (free_port(), free_port());
        let mut args = vec!["volume".to_string()];
        args.extend(common(p, g));
        args.extend([
            format!("-dir={}", vdir.display()),
            "-max=100".into(),
            format!("-master={master}"),
            "-preStopSeconds=0".into(),
        ]);
        spawn(weed, &dir, &format!("volume{i}"), &args);
    }
    let (fp, fg) = (free_port(), free_port());
    let fdir = dir.join("filer");
    std::fs::create_dir_all(&fdir).unwrap();
    let mut args = vec!["filer".to_string()];
    args.extend(common(fp, fg));
    args.extend([
        format!("-master={master}"),
        format!("-defaultStoreDir={}", fdir.display()),
        format!("-localSocket={}", dir.join("filer.sock").display()),
    ]);
    spawn(weed, &dir, "filer", &args);
    let access = format!("test{}", uuid::Uuid::new_v4().simple());
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let ro_access = format!("ro{}", uuid::Uuid::new_v4().simple());
    let ro_secret = uuid::Uuid::new_v4().simple().to_string();
    let gw_config = serde_json::json!({"identities": [{"name": "test",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "readonly",
        "credentials": [{"accessKey": ro_access, "secretKey": ro_secret}],
        "actions": ["Read", "List"]}]});
    std::fs::write(dir.join("gateway.json"), gw_config.to_string()).unwrap();
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[test]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n\n\
             [readonly]\naws_access_key_id = {ro_access}\naws_secret_access_key = {ro_secret}\n"
        ),
    )
    .unwrap();
    let (sp, sg) = (free_port(), free_port());
    let mut args = vec!["s3".to_string()];
    args.extend(common(sp, sg));
    args.extend([
        format!("-filer=127.0.0.1:{fp}.{fg}"),
        format!("-config={}", dir.join("gateway.json").display()),
        "-port.iceberg=0".into(),
        "-port.lance=0".into(),
    ]);
    spawn(weed, &dir, "s3", &args);
    let cluster = Cluster {
        dir: Some(dir.clone()),
        endpoint: format!("http://127.0.0.1:{sp}"),
        region: "us-east-1".into(),
        credentials_file: creds,
        profile: "test".into(),
        readonly_profile: "readonly".into(),
        ca_file: None,
    };
    // Ready when a probe object can be written and read back through the gateway.
    let loc = cluster.location("probe-bucket", "probe");
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(90) {
        let ok = (|| -> std::io::Result<()> {
            let b = S3Backend::connect(&loc)?;
            b.ensure_bucket()?;
            b.put("probe", b"x")?;
            b.get("probe", 10).map(|_| ())
        })();
        match ok {
            Ok(()) => {
                eprintln!(
                    "SeaweedFS test cluster up in {:.1} s at {} (logs in {})",
                    t.elapsed().as_secs_f64(),
                    cluster.endpoint,
                    dir.display()
                );
                return cluster;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "SeaweedFS test cluster did not come up in 90 s: {last} (logs in {})",
        dir.display()
    );
}

/// A backend for direct object manipulation in tests.
pub fn backend(loc: &S3Location) -> Arc<dyn Backend> {
    Arc::new(S3Backend::connect(loc).unwrap())
}
