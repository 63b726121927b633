//! Jobs, run history and notifications end to end against the lab: `run JOB` backs up two
//! VMs, applies the job's retention and exits like `backup` (0, 3, 1 — and a job whose backup
//! failed completely prunes nothing); every run leaves a record `runs` lists newest first
//! (succeeded, partial, failed; a SIGKILLed run shows as interrupted); the webhook receives
//! the run's JSON summary, and a dead webhook does not change the exit code; a job naming an
//! unknown repository is refused when the configuration is loaded. The systemd units pass
//! `systemd-analyze verify`, and the cron line works as a non-root user in cron's
//! environment.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use safekeeping_e2e::Lab;

/// A one-route HTTP server on a free loopback port: every POST's JSON body goes to the
/// channel, answered 200.
fn webhook_server() -> (u16, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // The port was free when bound, and may have been another test's a moment before:
            // a client of that test retrying (seen: an S3 client's `PRI * HTTP/2.0`) is not
            // the webhook. Only POST /hook counts; anything else gets no answer and is not
            // received, so a webhook that posts elsewhere still fails `next_post`.
            if !request_line.starts_with("POST /hook ") {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let doc = serde_json::from_slice(&body).expect("the webhook body is JSON");
            if tx.send(doc).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

fn next_post(rx: &mpsc::Receiver<serde_json::Value>) -> serde_json::Value {
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the webhook received a POST")
}

fn generations(lab: &Lab, config: &Path, vm: &str) -> Vec<u64> {
    let j = lab
        .sk_with(&["--json", "list", &format!("vm:{vm}")], config, &[])
        .json();
    j["targets"][0]["generations"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["id"].as_u64()).collect())
        .unwrap_or_default()
}

fn with_extra(lab: &Lab, name: &str, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let p = lab.dir().join(name);
    std::fs::write(&p, format!("{text}\n{extra}\n")).unwrap();
    p
}

const JOBS: &str = r#"
[jobs.nightly]
targets = ["vm:web01", "vm:db01"]
keep_last = 2

[jobs.mixed]
targets = ["vm:web01", "vm:no-such-vm"]
keep_last = 1

[jobs.hopeless]
targets = ["vm:no-such-vm"]
keep_last = 1
"#;

#[test]
fn jobs_back_up_prune_record_and_notify() {
    let lab = Lab::up();
    lab.create_vm("web01", &["16M"], &[]);
    lab.create_vm("db01", &["16M"], &[]);
    lab.guest_write("web01", 0, "0", "1M", Some(1));
    lab.guest_write("db01", 0, "0", "1M", Some(2));
    lab.sk(&["repo", "init"]).ok();
    let (port, posts) = webhook_server();
    let config = with_extra(
        &lab,
        "jobs.toml",
        &format!(
            "{JOBS}\n[notify]\nwebhook = \"http://127.0.0.1:{port}/hook\"\nallow_http = true\non = \"always\"\ntimeout_seconds = 10\n"
        ),
    );
    let sk = |args: &[&str]| lab.sk_with(args, &config, &[]);

    // jobs list: text and JSON.
    let j = sk(&["--json", "jobs", "list"]).ok().json();
    assert_eq!(j["jobs"]["nightly"]["targets"][1], "vm:db01", "{j:#}");
    assert_eq!(j["jobs"]["nightly"]["keep_last"], 2);
    let t = sk(&["jobs", "list"]).ok().stdout;
    assert!(
        t.contains("nightly: vm:web01 vm:db01") && t.contains("keep: last 2"),
        "{t}"
    );

    // Three nightly runs: both VMs backed up each time, keep_last = 2 applied to each.
    for i in 0..3u64 {
        lab.guest_write("web01", 0, &format!("{}M", 2 + i), "1M", Some(10 + i));
        let j = sk(&["--json", "-q", "run", "nightly"]).ok().json();
        assert_eq!(j["exit_code"], 0, "{j:#}");
        assert_eq!(j["steps"][0]["step"], "backup");
        assert_eq!(j["steps"][0]["outcome"], "succeeded");
        assert_eq!(j["steps"][1]["step"], "prune");
        assert_eq!(j["steps"][1]["outcome"], "succeeded", "{j:#}");
        let post = next_post(&posts);
        assert_eq!(post["job"], "nightly");
        assert_eq!(post["command"], "run nightly");
        assert_eq!(post["outcome"], "succeeded");
        assert_eq!(post["exit_code"], 0);
        assert_eq!(post["run_id"], j["run_id"]);
        assert!(!post["host"].as_str().unwrap().is_empty());
        let targets: Vec<&str> = post["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["target"].as_str().unwrap())
            .collect();
        assert_eq!(targets, ["vm:web01", "vm:db01"], "{post:#}");
        assert_eq!(post["steps"][1]["step"], "prune");
    }
    assert_eq!(generations(&lab, &config, "web01"), [2, 3]);
    assert_eq!(generations(&lab, &config, "db01"), [2, 3]);

    // One target fails: exit 3, the other is backed up and pruned by keep_last = 1.
    let r = sk(&["run", "mixed"]).expect_code(3);
    assert!(r.all_output().contains("no-such-vm"), "{}", r.all_output());
    let post = next_post(&posts);
    assert_eq!(post["outcome"], "partial");
    assert_eq!(post["exit_code"], 3);
    let failed = post["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "vm:no-such-vm")
        .expect("the failed target is in the summary");
    assert_eq!(failed["outcome"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("no-such-vm"));
    assert_eq!(generations(&lab, &config, "web01"), [4]);
    assert_eq!(generations(&lab, &config, "db01"), [2, 3], "not in the job");

    // Nothing backed up: exit 1 and no prune (db01 keeps both generations even though the
    // job's keep_last = 1 would apply to it only if it were the job's target anyway; web01's
    // single generation stays).
    let j = sk(&["--json", "run", "hopeless"]).expect_code(1).json();
    assert_eq!(j["steps"][1]["outcome"], "skipped", "{j:#}");
    assert!(j["steps"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("failed completely"));
    assert_eq!(next_post(&posts)["outcome"], "failed");

    // A plain backup of an unknown VM: recorded as failed too.
    sk(&["backup", "vm:no-such-vm"]).expect_code(1);
    assert_eq!(next_post(&posts)["command"], "backup");

    // The history, newest first.
    let j = sk(&["--json", "runs"]).ok().json();
    let runs = j["runs"].as_array().unwrap();
    let summary: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["command"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("backup", "failed"),
        ("run hopeless", "failed"),
        ("run mixed", "partial"),
        ("run nightly", "succeeded"),
        ("run nightly", "succeeded"),
        ("run nightly", "succeeded"),
    ];
    assert_eq!(
        summary,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(runs[0]["exit_code"], 1);
    assert!(runs[0].to_string().contains("no-such-vm"), "{:#}", runs[0]);
    assert_eq!(runs[3]["job"], "nightly");
    assert!(runs[3]["ended"].is_string());
    let j = sk(&["--json", "runs", "--failed"]).ok().json();
    assert_eq!(j["runs"].as_array().unwrap().len(), 3);
    let j = sk(&["--json", "runs", "--since", "2099-01-01"]).ok().json();
    assert_eq!(j["runs"].as_array().unwrap().len(), 0);
    let t = sk(&["runs", "--failed"]).ok().stdout;
    assert!(
        t.contains("partial") && t.contains("vm:no-such-vm: failed"),
        "{t}"
    );
    // check and prune do not trip over runs/.
    sk(&["check"]).ok();
    sk(&["prune", "--keep-last", "5"]).ok();
    assert_eq!(
        sk(&["--json", "runs"]).ok().json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // A dead webhook (closed port) does not change the exit code.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = with_extra(
        &lab,
        "dead.toml",
        &format!(
            "{JOBS}\n[notify]\nwebhook = \"http://127.0.0.1:{closed}/hook\"\nallow_http = true\non = \"always\"\ntimeout_seconds = 3\n"
        ),
    );
    let r = lab.sk_with(&["run", "nightly"], &dead, &[]).expect_code(0);
    assert!(r.stderr.contains("notification not sent"), "{}", r.stderr);
    lab.sk_with(&["run", "mixed"], &dead, &[]).expect_code(3);

    // An https webhook is verified: the lab's vCenter simulator (a TLS server with its own
    // CA) is refused without ca_file and trusted with it (it then answers the POST with a
    // 4xx, which is not retried).
    let lab_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir().join("lab.json")).unwrap())
            .unwrap();
    let hook = lab_json["url"].as_str().unwrap().replace("/sdk", "/hook");
    let ca = lab_json["ca_file"].as_str().unwrap();
    for (name, extra, expect) in [
        ("tls-untrusted.toml", String::new(), "certificate"),
        (
            "tls-trusted.toml",
            format!("ca_file = \"{ca}\"\n"),
            "the webhook answered 4",
        ),
    ] {
        let cfg = with_extra(
            &lab,
            name,
            &format!("[notify]\nwebhook = \"{hook}\"\ntimeout_seconds = 5\n{extra}"),
        );
        let r = lab
            .sk_with(&["backup", "vm:no-such-vm"], &cfg, &[])
            .expect_code(1);
        assert!(
            r.stderr.contains("notification not sent") && r.stderr.contains(expect),
            "{name}: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("/hook"),
            "the URL stays out of the log: {}",
            r.stderr
        );
    }

    // A job naming a repository that is not configured: refused at load, clearly.
    let bad = with_extra(
        &lab,
        "bad.toml",
        "[jobs.offsite]\ntargets = [\"vm:web01\"]\nrepository = \"offsite\"\n",
    );
    let r = lab.sk_with(&["run", "offsite"], &bad, &[]).expect_code(1);
    assert!(
        r.stderr.contains("[jobs.offsite]") && r.stderr.contains("repository `offsite`"),
        "{}",
        r.stderr
    );
    // An unknown job names the configured ones.
    let r = sk(&["run", "weekly"]).expect_code(1);
    assert!(
        r.stderr.contains("hopeless, mixed, nightly"),
        "{}",
        r.stderr
    );

    // A run killed mid-backup: its record stays `running` until its lock is gone, then it
    // shows as interrupted.
    lab.vddk_conf_append("fake.read_latency_ms = 300");
    lab.guest_write("web01", 0, "0", "8M", Some(99));
    let mut child = lab.sk_spawn(&["backup", "vm:web01"]);
    let started = Instant::now();
    loop {
        let j = sk(&["--json", "runs"]).ok().json();
        if j["runs"][0]["status"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no running record appeared: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    lab.vddk_conf_remove("fake.read_latency_ms");
    let j = sk(&["--json", "runs"]).ok().json();
    assert_eq!(j["runs"][0]["status"], "interrupted", "{j:#}");
    assert_eq!(j["runs"][0]["command"], "backup");
    let j = sk(&["--json", "runs", "--failed", "--since", "1h"])
        .ok()
        .json();
    assert_eq!(j["runs"][0]["status"], "interrupted");
}

/// The shipped units, checked by systemd itself.
#[test]
fn systemd_units_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    let service = units.join("safekeeping@.service");
    let timer = units.join("safekeeping@.timer");
    let text = std::fs::read_to_string(&service).unwrap();
    assert!(text.contains(
        "ExecStart=/usr/local/bin/safekeeping -q --config /etc/safekeeping/config.toml run %i"
    ));
    assert!(text.contains("User=safekeeping"));
    assert!(std::fs::read_to_string(&timer)
        .unwrap()
        .contains("OnCalendar="));
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("SKIPPED: systemd-analyze is not installed; the units were not verified");
        return;
    };
    assert!(out.status.success());
    // An instance of each, as systemd would load it; verify needs the ExecStart binary to
    // exist, so check a copy pointing at the built binary (the rest is the shipped text).
    let dir = tempfile::tempdir().unwrap();
    let bin = safekeeping_e2e::binary("safekeeping");
    for (from, to) in [
        (&service, "safekeeping@nightly.service"),
        (&timer, "safekeeping@nightly.timer"),
    ] {
        let t = std::fs::read_to_string(from)
            .unwrap()
            .replace("/usr/local/bin/safekeeping", bin.to_str().unwrap());
        std::fs::write(dir.path().join(to), t).unwrap();
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        // The man page is installed with the package, not on this test machine.
        .arg("--man=no")
        .arg(dir.path().join("safekeeping@nightly.service"))
        .arg(dir.path().join("safekeeping@nightly.timer"))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // In a container without a running systemd, verify still parses the units but may
    // complain about the manager itself; unit errors name the unit file.
    let unit_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("safekeeping@"))
        .collect();
    assert!(unit_errors.is_empty(), "systemd-analyze verify: {stderr}");
}

/// The cron line of the guide as cron runs it: a dedicated non-root user, `env -i
/// PATH=/usr/bin:/bin`, `-q`, the job by name. Needs root (to create the user and switch to
/// it); elsewhere it says why it did not run.
#[test]
fn the_cron_line_works_as_a_non_root_user_in_crons_environment() {
    let me = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        println!("SKIPPED: not root, so no user can be created to run the cron line as");
        return;
    }
    const USER: &str = "sk-e2e-cron";
    let exists = std::process::Command::new("id")
        .arg("-u")
        .arg(USER)
        .output()
        .unwrap();
    if !exists.status.success() {
        match std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
        {
            Ok(s) if s.success() => {}
            other => {
                println!("SKIPPED: useradd {USER} failed or is missing ({other:?})");
                return;
            }
        }
    }
    let uid = String::from_utf8_lossy(
        &std::process::Command::new("id")
            .arg("-u")
            .arg(USER)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let gid = String::from_utf8_lossy(
        &std::process::Command::new("id")
            .arg("-g")
            .arg(USER)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();

    let lab = Lab::up();
    lab.create_vm("web01", &["16M"], &[]);
    lab.guest_write("web01", 0, "0", "1M", Some(5));
    lab.sk(&["repo", "init"]).ok();
    // What the user must be able to use, as the guide's setup gives it: the repository and
    // the password file (its own), the configuration (readable); in the lab also the fake
    // VDDK's statistics file.
    let d = lab.dir().to_str().unwrap().to_string();
    let sh = |cmd: &str| {
        let s = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .unwrap();
        assert!(s.success(), "{cmd}");
    };
    sh(&format!("chown -R {uid}:{gid} '{d}/repo'"));
    sh(&format!(
        "chown {uid}:{gid} '{d}/password' && touch '{d}/vddk-stats.jsonl' && chmod a+rw '{d}/vddk-stats.jsonl'"
    ));
    let config = with_extra(
        &lab,
        "cron.toml",
        "[jobs.nightly]\ntargets = [\"vm:web01\"]\nkeep_last = 1\n",
    );
    sh(&format!("chmod a+r '{}'", config.display()));
    let bin = safekeeping_e2e::binary("safekeeping");
    // The fake VDDK reads the simulator's disk files directly (real VDDK reads them from ESXi
    // over the network), and the simulator creates snapshot files root-only: the process gets
    // CAP_DAC_READ_SEARCH for that, which lets it read, never write, what it does not own.
    let cron = || {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .args([
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
            ])
            .args(["env", "-i", "PATH=/usr/bin:/bin"])
            .arg(&bin)
            .args(["-q", "--config"])
            .arg(&config)
            .args(["run", "nightly"])
            .current_dir("/")
            .output()
            .unwrap()
    };
    for i in 0..2u64 {
        lab.guest_write("web01", 0, &format!("{}M", 2 + i), "1M", Some(50 + i));
        let out = cron();
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // cron mails any output: a quiet success prints nothing at all.
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
    // What the user wrote belongs to the user (checked before this test, as root, reads it).
    let owners = std::process::Command::new("find")
        .arg(format!("{d}/repo"))
        .args(["!", "-user", USER])
        .output()
        .unwrap();
    let foreign = String::from_utf8_lossy(&owners.stdout).into_owned();
    assert!(foreign.is_empty(), "objects not owned by {USER}: {foreign}");
    assert_eq!(generations(&lab, &config, "web01"), [2]);
    let j = lab.sk_with(&["--json", "runs"], &config, &[]).ok().json();
    assert_eq!(j["runs"][0]["job"], "nightly");
    assert_eq!(j["runs"][0]["status"], "succeeded");
    assert_eq!(j["runs"][1]["status"], "succeeded");
}

/// Stops the S3 cluster when the test ends, however it ends.
struct S3Cluster<'a>(&'a Lab);

impl Drop for S3Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.0.lab(&["s3", "down"]);
    }
}

/// Run records go through the storage layer: a job into an S3 repository (the lab's
/// SeaweedFS) leaves its records there, `runs` reads them back, and `prune` and `check` of
/// the bucket accept them.
#[test]
fn run_records_live_in_an_s3_repository_too() {
    let lab = Lab::up();
    lab.lab(&["s3", "up"]).ok();
    let _cluster = S3Cluster(&lab);
    // The lab's configuration with [repository] replaced by the S3 one `s3 up` wrote.
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let s3 = std::fs::read_to_string(lab.dir().join("s3-repository.toml")).unwrap();
    let mut text = String::new();
    let mut in_repository = false;
    for line in base.lines() {
        if line.trim_start().starts_with('[') {
            in_repository = line.trim() == "[repository]";
            if in_repository {
                text.push_str(&s3);
                text.push('\n');
                continue;
            }
        }
        if !in_repository {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(
        "\n[jobs.nightly]\ntargets = [\"vm:s3-web\"]\nkeep_last = 1\ngc = true\ncheck = true\n",
    );
    let config = lab.dir().join("s3-jobs.toml");
    std::fs::write(&config, text).unwrap();
    let sk = |args: &[&str]| lab.sk_with(args, &config, &[]);

    lab.create_vm("s3-web", &["16M"], &[]);
    lab.guest_write("s3-web", 0, "0", "2M", Some(3));
    sk(&["repo", "init"]).ok();
    let j = sk(&["--json", "run", "nightly"]).ok().json();
    let steps: Vec<(&str, &str)> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("backup", "succeeded"),
            ("prune", "succeeded"),
            ("gc", "succeeded"),
            ("check", "succeeded")
        ],
        "{j:#}"
    );
    lab.guest_write("s3-web", 0, "4M", "1M", Some(4));
    sk(&["run", "nightly"]).ok();
    sk(&["backup", "vm:not-here"]).expect_code(1);
    let j = sk(&["--json", "runs"]).ok().json();
    let statuses: Vec<&str> = j["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "succeeded", "succeeded"], "{j:#}");
    assert_eq!(j["runs"][1]["targets"][0]["generation"], 2);
    assert!(j["unreadable"].as_array().unwrap().is_empty());
    sk(&["prune", "--keep-last", "1"]).ok();
    sk(&["check"]).ok();
    assert_eq!(
        sk(&["--json", "runs"]).ok().json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(
        !lab.dir().join("repo").join("runs").exists(),
        "nothing local"
    );
}

#[test]
fn a_jobs_read_data_subset_check_reads_todays_part() {
    let lab = Lab::up();
    lab.create_vm("web01", &["16M"], &[]);
    lab.guest_write("web01", 0, "0", "8M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    let config = with_extra(
        &lab,
        "subset.toml",
        "[jobs.nightly]\ntargets = [\"vm:web01\"]\nkeep_last = 2\ncheck_read_data_subset = \"1/7\"\n",
    );
    let j = lab
        .sk_with(&["--json", "-q", "run", "nightly"], &config, &[])
        .ok()
        .json();
    let check = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "check")
        .unwrap_or_else(|| panic!("no check step: {j:#}"));
    assert_eq!(check["outcome"], "succeeded", "{j:#}");
    // Today's part: days since 1970-01-01 (UTC) mod 7, plus 1.
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let part = format!("{}/7", day % 7 + 1);
    assert_eq!(check["report"]["read_data_subset"], part.as_str(), "{j:#}");
    assert_eq!(check["report"]["read_data"], true, "{j:#}");

    // A value that is not 1/M is refused when the configuration is loaded.
    let bad = with_extra(
        &lab,
        "bad-subset.toml",
        "[jobs.nightly]\ntargets = [\"vm:web01\"]\ncheck_read_data_subset = \"3/7\"\n",
    );
    let r = lab.sk_with(&["run", "nightly"], &bad, &[]).expect_code(1);
    assert!(r.stderr.contains("check_read_data_subset"), "{}", r.stderr);
}
