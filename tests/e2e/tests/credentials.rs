//! Credentials: during a backup the lab's password and every vCenter session cookie (the
//! simulator's session keys, read from `SessionManager.sessionList` while the backup runs) appear
//! in no process argument list (the safekeeping process and its children, polled), no log line
//! (`--log-file` with `RUST_LOG=trace`, stderr, stdout) and no byte of any repository file.
//! A wrong password and a certificate pin mismatch fail before anything changes: no snapshot,
//! change tracking left off, no generation.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use safekeeping_e2e::{binary, Lab};
use vim_client::xml::Element;
use vim_client::{Client, ClientOptions, Secret, Tls};

fn lab_json(lab: &Lab) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap()
}

/// A logged-in VIM client for the lab (pinned certificate).
async fn client(lab: &Lab) -> Client {
    let json = lab_json(lab);
    let s = |k: &str| json[k].as_str().unwrap().to_string();
    let options = ClientOptions::new(s("url"), Tls::PinnedSha256(s("thumbprint_sha256")));
    let c = Client::connect(&options).await.unwrap();
    let password = std::fs::read_to_string(s("password_file")).unwrap();
    c.login(&s("user"), &Secret::new(password)).await.unwrap();
    c
}

/// The keys (= `vmware_soap_session` cookie values) of every open vCenter session.
async fn session_keys(c: &Client) -> Vec<String> {
    let sm = c
        .service_content()
        .session_manager
        .clone()
        .expect("session manager");
    let content = c.object_properties(&sm, &["sessionList"]).await.unwrap();
    let mut keys = Vec::new();
    fn walk(e: &Element, keys: &mut Vec<String>) {
        if e.local() == "key" && !e.text.is_empty() {
            keys.push(e.text.clone());
        }
        e.children.iter().for_each(|c| walk(c, keys));
    }
    content.props.iter().for_each(|(_, v)| walk(v, &mut keys));
    keys
}

/// `pid` and all its descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn password_and_session_cookies_leak_nowhere() {
    let lab = Lab::up();
    lab.create_vm("cred", &["16M"], &["VM Network"]);
    lab.guest_write("cred", 0, "0", "4M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    let password = std::fs::read_to_string(lab.dir().join("password")).unwrap();
    assert!(password.len() >= 8, "the lab password is a real secret");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let watcher = rt.block_on(client(&lab));
    let mine = watcher.session_cookie().expect("the watcher's own cookie");
    let mut cookies: BTreeSet<String> = rt.block_on(session_keys(&watcher)).into_iter().collect();
    assert!(
        cookies.contains(&mine),
        "session keys are the cookies: {cookies:?}"
    );

    lab.vddk_conf_append("fake.read_latency_ms = 400");
    let log = lab.dir().join("trace.log");
    let mut child = Command::new(binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .arg("--log-file")
        .arg(&log)
        .args(["-vv", "backup", "vm:cred"])
        .env_remove("SAFEKEEPING_PASSWORD")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut cmdlines = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read the pipes on threads so a chatty trace cannot block the process.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).unwrap();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).unwrap();
        v
    });
    let status = loop {
        for p in process_tree(pid) {
            if let Ok(c) = std::fs::read(format!("/proc/{p}/cmdline")) {
                cmdlines += 1;
                assert!(
                    !contains(&c, password.as_bytes()),
                    "password in the arguments of {p}"
                );
                for k in &cookies {
                    assert!(
                        !contains(&c, k.as_bytes()),
                        "cookie in the arguments of {p}"
                    );
                }
            }
        }
        cookies.extend(rt.block_on(session_keys(&watcher)));
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the backup did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&stderr));
    assert!(
        cmdlines > 5,
        "the argument lists were polled during the run ({cmdlines})"
    );
    assert!(
        cookies.len() >= 2,
        "the backup's own session was seen while it ran: {cookies:?}"
    );

    let trace = std::fs::read(&log).unwrap();
    assert!(
        contains(&trace, b"TRACE") && contains(&trace, b"snapshot created"),
        "the trace log is the real thing"
    );
    let mut scanned = vec![
        ("trace log".to_string(), trace),
        ("stderr".to_string(), stderr),
        ("stdout".to_string(), stdout),
    ];
    let files = files_under(&lab.dir().join("repo"));
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        scanned.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    for (what, bytes) in &scanned {
        assert!(
            !contains(bytes, password.as_bytes()),
            "the password is in {what}"
        );
        for k in &cookies {
            assert!(
                !contains(bytes, k.as_bytes()),
                "session cookie {k} is in {what}"
            );
        }
    }
    rt.block_on(watcher.logout()).unwrap();
}

#[test]
fn wrong_password_and_pin_mismatch_change_nothing() {
    let lab = Lab::up();
    lab.create_vm("fresh", &["8M"], &["VM Network"]);
    lab.guest_write("fresh", 0, "0", "1M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    let untouched = |why: &str| {
        let info = lab.vm_info("fresh").unwrap();
        assert_eq!(info["change_tracking"], false, "{why}: CBT not enabled");
        assert!(lab.snapshots("fresh").is_empty(), "{why}: no snapshot");
        let targets = lab.dir().join("repo/targets");
        let n = std::fs::read_dir(&targets).map_or(0, |d| d.count());
        assert_eq!(n, 0, "{why}: nothing written to the repository");
    };

    let wrong = lab.dir().join("wrong-password");
    std::fs::write(&wrong, "Wr0ng-but-long-password").unwrap();
    let pw = lab.dir().join("password").to_string_lossy().into_owned();
    let cfg = lab.config_variant("wrong.toml", &pw, &wrong.to_string_lossy());
    let r = lab.sk_with(&["backup", "vm:fresh"], &cfg, &[]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(r.stderr.contains("rejected the login"), "{}", r.stderr);
    assert!(
        !r.all_output().contains("Wr0ng-but-long-password"),
        "password echoed"
    );
    untouched("wrong password");

    let toml = std::fs::read_to_string(lab.config()).unwrap();
    let pin = toml
        .lines()
        .find_map(|l| l.strip_prefix("thumbprint_sha256 = "))
        .expect("the lab pins its certificate")
        .trim_matches('"')
        .to_string();
    let cfg = lab.config_variant("pin.toml", &pin, &vec!["0F"; 32].join(":"));
    let r = lab.sk_with(&["backup", "vm:fresh"], &cfg, &[]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.stderr.contains("does not match the pinned"),
        "{}",
        r.stderr
    );
    untouched("pin mismatch");

    // The same run with the right settings does change things: the checks above could fail.
    lab.sk(&["backup", "vm:fresh"]).ok();
    assert_eq!(lab.vm_info("fresh").unwrap()["change_tracking"], true);
}
