//! The S3 lab (`safekeeping-lab s3 ...`): a SeaweedFS cluster on loopback that real S3
//! clients use: restic (an independent program) and the object_store crate. Conditional
//! create, the read-only identity, SIGKILL of a volume server and of the gateway.
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjPath;
use object_store::{
    Certificate, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use serde_json::Value;

use common::{bin, pattern};

/// An S3 lab in a temporary directory; `s3 down` on drop (after printing the logs' ends
/// when the test failed).
struct S3Lab {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    down_done: bool,
}

impl S3Lab {
    fn up(extra: &[&str]) -> (S3Lab, Duration) {
        let tmp = tempfile::Builder::new().prefix("sk-s3-").tempdir().unwrap();
        let dir = tmp.path().join("lab");
        let start = Instant::now();
        let out = Command::new(bin())
            .args(["s3", "up"])
            .args(extra)
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap();
        let took = start.elapsed();
        let lab = S3Lab {
            dir,
            _tmp: tmp,
            down_done: false,
        };
        assert!(
            out.status.success(),
            "s3 up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (lab, took)
    }

    fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .arg("s3")
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_run(args);
        assert!(ok, "safekeeping-lab s3 {args:?} failed: {stderr}");
        stdout
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&fs::read(self.dir.join("s3.json")).unwrap()).unwrap()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.run(&["status"])).unwrap()
    }

    fn endpoint(&self) -> String {
        self.state()["endpoint"].as_str().unwrap().to_string()
    }

    /// (access key, secret key) of a profile, read from the shared-credentials file.
    fn creds(&self, profile: &str) -> (String, String) {
        let text = fs::read_to_string(self.dir.join("s3-credentials")).unwrap();
        let mut section = String::new();
        let (mut id, mut secret) = (None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if let Some((k, v)) = line.split_once('=') {
                if section == profile {
                    match k.trim() {
                        "aws_access_key_id" => id = Some(v.trim().to_string()),
                        "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                        _ => {}
                    }
                }
            }
        }
        (
            id.unwrap_or_else(|| panic!("no access key for {profile}")),
            secret.unwrap_or_else(|| panic!("no secret key for {profile}")),
        )
    }

    /// An object_store client for the lab's bucket as `profile`.
    fn store(&self, profile: &str, max_retries: usize) -> AmazonS3 {
        self.store_with(profile, max_retries, ClientOptions::new())
    }

    fn store_with(&self, profile: &str, max_retries: usize, options: ClientOptions) -> AmazonS3 {
        let (id, secret) = self.creds(profile);
        let state = self.state();
        AmazonS3Builder::new()
            .with_client_options(options)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region(state["region"].as_str().unwrap())
            .with_bucket_name(state["bucket"].as_str().unwrap())
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .build()
            .unwrap()
    }

    fn pids(&self) -> Vec<u32> {
        let s = self.state();
        let mut procs = vec![&s["master"], &s["filer"], &s["gateway"]];
        procs.extend(s["volumes"].as_array().unwrap());
        procs
            .iter()
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect()
    }
}

impl Drop for S3Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(entries) = fs::read_dir(self.dir.join("s3/logs")) {
                for e in entries.flatten() {
                    let text = fs::read_to_string(e.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!(
                        "--- {} (last lines)\n{}",
                        e.path().display(),
                        lines[lines.len().saturating_sub(15)..].join("\n")
                    );
                }
            }
        }
        if !self.down_done {
            let _ = Command::new(bin())
                .args(["s3", "down", "--dir"])
                .arg(&self.dir)
                .output();
        }
    }
}

fn process_alive(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie waiting for its new parent to reap it.
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// restic against the lab's bucket, credentials in its environment (never arguments).
struct Restic {
    repo: String,
    creds: (String, String),
    password_file: PathBuf,
    ca_file: Option<PathBuf>,
}

impl Restic {
    fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("restic");
        cmd.arg("-r").arg(&self.repo).arg("--no-cache");
        if let Some(ca) = &self.ca_file {
            cmd.arg("--cacert").arg(ca);
        }
        let out = cmd
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ACCESS_KEY_ID", &self.creds.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.creds.1)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .output()
            .expect("restic is installed (bash scripts/setup.sh)");
        assert!(
            out.status.success(),
            "restic {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn write_tree(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.bin"), pattern(seed, 3 << 20)).unwrap();
    fs::write(dir.join("sub/b.bin"), pattern(seed + 1, 700_000)).unwrap();
    fs::write(dir.join("sub/empty"), b"").unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    for f in ["a.bin", "sub/b.bin", "sub/empty"] {
        assert!(
            fs::read(a.join(f)).unwrap() == fs::read(b.join(f)).unwrap(),
            "{f} differs after restore"
        );
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn s3_lab_serves_real_clients_and_survives_faults() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut lab, took) = S3Lab::up(&[]);
    eprintln!("s3 up took {:.1} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(45), "s3 up took {took:?}");

    // The files up wrote.
    let state = lab.state();
    assert_eq!(state["region"], "us-east-1");
    assert_eq!(state["volumes"].as_array().unwrap().len(), 3);
    let endpoint = lab.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_eq!(
        state["credentials_file"].as_str().unwrap(),
        lab.dir.join("s3-credentials").to_str().unwrap()
    );
    assert_eq!(
        state["profiles"]["lab-readonly"],
        serde_json::json!(["Read", "List"])
    );
    assert_eq!(mode(&lab.dir.join("s3-credentials")), 0o600);
    assert_eq!(
        mode(Path::new(state["gateway_config"].as_str().unwrap())),
        0o600
    );
    let toml = fs::read_to_string(lab.dir.join("s3-repository.toml")).unwrap();
    for line in [
        "[repository]".to_string(),
        "url = \"s3://safekeeping-lab/repo\"".to_string(),
        format!("endpoint = \"{endpoint}\""),
        "region = \"us-east-1\"".to_string(),
        format!(
            "credentials_file = \"{}\"",
            lab.dir.join("s3-credentials").display()
        ),
        "profile = \"lab\"".to_string(),
        "allow_http = true".to_string(),
    ] {
        assert!(toml.lines().any(|l| l == line), "{line:?} not in\n{toml}");
    }
    let (lab_id, lab_secret) = lab.creds("lab");
    let (ro_id, ro_secret) = lab.creds("lab-readonly");
    assert_ne!(lab_id, ro_id);
    assert!(lab_secret.len() >= 32 && ro_secret.len() >= 32);
    // Secrets are in files only: not in any process's arguments, not in s3.json.
    for pid in lab.pids() {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(cmdline.contains("weed"), "pid {pid}: {cmdline}");
        assert!(!cmdline.contains(&lab_secret) && !cmdline.contains(&ro_secret));
    }
    let s3_json = fs::read_to_string(lab.dir.join("s3.json")).unwrap();
    assert!(!s3_json.contains(&lab_secret) && !s3_json.contains(&ro_secret));
    assert_eq!(lab.status()["up"], true);
    let (ok, _, err) = lab.try_run(&["up"]);
    assert!(!ok && err.contains("already up"), "{err}");

    // Conditional create: the second create of a key answers 412 and the first object stays.
    let store = lab.store("lab", 3);
    let key = ObjPath::from("cond/key");
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    rt.block_on(store.put_opts(&key, PutPayload::from_static(b"first"), create.clone()))
        .unwrap();
    let second = rt.block_on(store.put_opts(&key, PutPayload::from_static(b"second"), create));
    match second {
        Err(object_store::Error::AlreadyExists { source, .. }) => {
            let text = format!("{source:?}");
            assert!(
                text.contains("412") || text.contains("Precondition"),
                "{text}"
            );
        }
        other => panic!("a second create of the same key must fail with 412: {other:?}"),
    }
    let got = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"first");

    // lab-readonly reads and lists, and cannot write or delete.
    let ro = lab.store("lab-readonly", 0);
    let got = rt.block_on(async { ro.get(&key).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"first");
    let listed = rt
        .block_on(ro.list_with_delimiter(Some(&ObjPath::from("cond"))))
        .unwrap();
    assert_eq!(listed.objects.len(), 1);
    let denied = ObjPath::from("ro/attempt");
    let put = rt.block_on(ro.put(&denied, PutPayload::from_static(b"x")));
    assert!(put.is_err(), "lab-readonly could write: {put:?}");
    let overwrite = rt.block_on(ro.put(&key, PutPayload::from_static(b"x")));
    assert!(overwrite.is_err(), "lab-readonly could overwrite");
    let delete = rt.block_on(ro.delete(&key));
    assert!(delete.is_err(), "lab-readonly could delete");
    assert!(matches!(
        rt.block_on(store.head(&denied)),
        Err(object_store::Error::NotFound { .. })
    ));
    let got = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"first");

    // Objects of a few sizes (more than one volume), and restic as an independent client.
    let objects: Vec<(ObjPath, Vec<u8>)> = (0..24u64)
        .map(|i| {
            (
                ObjPath::from(format!("data/{i}")),
                pattern(100 + i, 50_000 + i as usize * 9_000),
            )
        })
        .collect();
    for (k, v) in &objects {
        rt.block_on(store.put(k, PutPayload::from(v.clone())))
            .unwrap();
    }
    let work = lab._tmp.path().to_path_buf();
    let password_file = work.join("restic-password");
    fs::write(&password_file, "lab restic password").unwrap();
    let restic = Restic {
        repo: format!("s3:{endpoint}/safekeeping-lab/restic"),
        creds: (lab_id.clone(), lab_secret.clone()),
        password_file,
        ca_file: None,
    };
    restic.run(&["init"]);
    let src = work.join("src");
    write_tree(&src, 1);
    restic.run(&["backup", "--host", "lab", src.to_str().unwrap()]);
    let restored = work.join("restored");
    restic.run(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    same_tree(&src, &restored.join(src.strip_prefix("/").unwrap()));

    // SIGKILL of one volume server: every object stays readable, writes go on.
    let victim = state["volumes"][0]["pid"].as_u64().unwrap() as u32;
    lab.run(&["kill", "--volume", "0"]);
    assert!(!process_alive(victim), "volume-0 (pid {victim}) still runs");
    let st = lab.status();
    assert_eq!(st["volumes"][0]["alive"], false);
    assert_eq!(st["volumes"][1]["alive"], true);
    assert_eq!(st["up"], false);
    for (k, v) in &objects {
        let got = rt.block_on(async { store.get(k).await.unwrap().bytes().await.unwrap() });
        assert!(got[..] == v[..], "{k} differs after volume-0 died");
    }
    for i in 0..12u64 {
        let k = ObjPath::from(format!("after-kill/{i}"));
        let v = pattern(500 + i, 80_000);
        rt.block_on(store.put(&k, PutPayload::from(v.clone())))
            .unwrap_or_else(|e| panic!("write {i} after volume-0 died: {e}"));
        let got = rt.block_on(async { store.get(&k).await.unwrap().bytes().await.unwrap() });
        assert!(got[..] == v[..]);
    }
    restic.run(&["check", "--read-data"]);
    let src2 = work.join("src2");
    write_tree(&src2, 7);
    restic.run(&["backup", "--host", "lab", src2.to_str().unwrap()]);

    // SIGKILL of the gateway: requests fail; restarted on the same port, they work again.
    let old_gateway = state["gateway"]["pid"].as_u64().unwrap() as u32;
    lab.run(&["kill", "--gateway"]);
    assert!(!process_alive(old_gateway));
    assert_eq!(lab.status()["gateway_answers"], false);
    let no_retry = lab.store("lab", 0);
    assert!(rt.block_on(no_retry.get(&key)).is_err());
    lab.run(&["restart", "--gateway"]);
    assert_eq!(lab.endpoint(), endpoint, "the gateway moved");
    let new_gateway = lab.state()["gateway"]["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_gateway, old_gateway);
    assert!(process_alive(new_gateway));
    let got = rt.block_on(async { no_retry.get(&key).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"first");
    rt.block_on(no_retry.put(
        &ObjPath::from("after-restart"),
        PutPayload::from_static(b"ok"),
    ))
    .unwrap();
    lab.run(&["restart", "--volume", "0"]);
    assert_eq!(lab.status()["up"], true);
    restic.run(&["check"]);
    let snapshots = restic.run(&["snapshots", "--json"]);
    let snapshots: Value = serde_json::from_str(&snapshots).unwrap();
    assert_eq!(snapshots.as_array().unwrap().len(), 2);

    // No secret in any server's log.
    for e in fs::read_dir(lab.dir.join("s3/logs")).unwrap() {
        let log = fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!log.is_empty());
        assert!(!log.contains(&lab_secret) && !log.contains(&ro_secret));
    }

    // down stops every process and removes what up wrote.
    let pids = lab.pids();
    lab.run(&["down"]);
    lab.down_done = true;
    for pid in pids {
        assert!(!process_alive(pid), "pid {pid} still runs after down");
    }
    assert!(!lab.dir.exists(), "down left {}", lab.dir.display());
}

#[test]
fn s3_up_needs_three_volume_servers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["s3", "up", "--volumes", "2", "--dir"])
        .arg(tmp.path().join("lab"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!tmp.path().join("lab").exists());
    let out = Command::new(bin())
        .args(["s3", "up", "--bucket", "x", "--dir"])
        .arg(tmp.path().join("lab"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bucket name"));
}

/// `s3 up --tls`: the gateway serves HTTPS with a self-signed certificate that clients trust
/// through `ca_file`; a client without it is refused.
#[test]
fn s3_lab_over_tls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (lab, took) = S3Lab::up(&["--tls", "--bucket", "tls-bucket", "--prefix", "p/q"]);
    eprintln!("s3 up --tls took {:.1} s", took.as_secs_f64());
    let state = lab.state();
    let endpoint = lab.endpoint();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let ca = PathBuf::from(state["ca_file"].as_str().expect("ca_file in s3.json"));
    let pem = fs::read(&ca).unwrap();
    assert!(String::from_utf8_lossy(&pem).starts_with("-----BEGIN CERTIFICATE-----"));
    let toml = fs::read_to_string(lab.dir.join("s3-repository.toml")).unwrap();
    assert!(toml.contains("url = \"s3://tls-bucket/p/q\""), "{toml}");
    assert!(
        toml.contains(&format!("ca_file = \"{}\"", ca.display())),
        "{toml}"
    );
    assert!(!toml.contains("allow_http"), "{toml}");
    // The key is beside the certificate, readable by its owner only, and not in s3.json.
    let key = ca.with_file_name("gateway-key.pem");
    assert_eq!(mode(&key), 0o600);

    let trusted = lab.store_with(
        "lab",
        3,
        ClientOptions::new().with_root_certificate(Certificate::from_pem(&pem).unwrap()),
    );
    let k = ObjPath::from("tls/object");
    rt.block_on(trusted.put(&k, PutPayload::from_static(b"over tls")))
        .unwrap();
    let got = rt.block_on(async { trusted.get(&k).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"over tls");
    let untrusted = lab.store("lab", 0);
    assert!(
        rt.block_on(untrusted.get(&k)).is_err(),
        "a client that does not trust the lab's certificate got through"
    );

    let password_file = lab._tmp.path().join("restic-password");
    fs::write(&password_file, "tls restic password").unwrap();
    let (id, secret) = lab.creds("lab");
    let restic = Restic {
        repo: format!("s3:{endpoint}/tls-bucket/restic"),
        creds: (id, secret),
        password_file,
        ca_file: Some(ca),
    };
    restic.run(&["init"]);
    restic.run(&["check"]);

    lab.run(&["kill", "--gateway"]);
    lab.run(&["restart", "--gateway"]);
    let got = rt.block_on(async { trusted.get(&k).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&got[..], b"over tls");
}
