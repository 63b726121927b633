//! Faults of the object store under the CLI, against the lab's SeaweedFS cluster (master,
//! three volume servers with replication 001, filer, S3 gateway):
//!
//! - a volume server SIGKILLed while a backup is reading: the backup completes through the
//!   replicas, the next one too, and everything restores;
//! - the S3 gateway SIGKILLed while a backup is reading: retries, then a clean failure (exit 1,
//!   the error names the repository, nothing committed, no snapshot left); after the gateway
//!   is restarted the next backup succeeds and the repository checks clean;
//! - an identity that may only read, and wrong credentials (a wrong secret, an unknown key):
//!   exit 1 with an error naming the repository, no secret in the output, no snapshot left, the
//!   repository unchanged.
//!
//! The fake VDDK's `fake.read_latency_ms` slows the reads so that a backup has a middle.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safekeeping_e2e::{wait_run, Lab};

/// `check --read-data` through `config` finds no problem; returns its report.
fn check_clean(lab: &Lab, config: &Path) -> serde_json::Value {
    let r = lab.sk_with(&["--json", "check", "--read-data"], config, &[]);
    let j = r.json();
    assert_eq!(r.code, 0, "{j}\n{}", r.stderr);
    assert_eq!(j["problems"].as_array().map_or(1, Vec::len), 0, "{j}");
    j
}

/// The repository's URL as `s3 up` wrote it (`s3://BUCKET/PREFIX`).
fn repository_url(lab: &Lab) -> String {
    let s = lab.s3_state();
    format!(
        "s3://{}/{}",
        s["bucket"].as_str().unwrap(),
        s["prefix"].as_str().unwrap()
    )
}

/// Starts a backup of `vm` through `config` and returns it once it is reading (snapshot taken,
/// one more second passed, still running).
fn backup_in_its_middle(lab: &Lab, config: &Path, vm: &str) -> std::process::Child {
    let mut child = lab.sk_spawn_with(&["--json", "backup", &format!("vm:{vm}")], config);
    assert!(
        lab.wait_for_snapshot(vm, Duration::from_secs(60)),
        "the backup took its snapshot"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup is still running"
    );
    child
}

#[test]
fn a_volume_server_killed_mid_backup_loses_nothing() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let cfg = lab.s3_config("s3.toml", "lab", "");
    lab.create_vm("v", &["32M", "16M"], &["VM Network"]);
    lab.guest_write("v", 0, "0", "20M", Some(41));
    lab.guest_write("v", 1, "2M", "8M", Some(42));
    let gen1 = lab.digests("v", 2);
    lab.sk_with(&["repo", "init"], &cfg, &[]).ok();

    lab.vddk_conf_append("fake.read_latency_ms = 300");
    let backup = backup_in_its_middle(&lab, &cfg, "v");
    lab.lab(&["s3", "kill", "--volume", "1"]).ok();
    let r = wait_run("backup vm:v", backup).ok();
    let j = r.json();
    assert_eq!(j["targets"][0]["generation"], 1, "{j}");
    assert_eq!(j["targets"][0]["mode"], "full", "{j}");
    lab.vddk_conf_remove("fake.read_latency_ms");
    let status = lab.lab(&["s3", "status"]).ok().json();
    assert_eq!(status["volumes"][1]["alive"], false, "{status}");

    // With the server still down, an incremental writes new chunks on the other two.
    lab.guest_write("v", 0, "24M", "4M", Some(43));
    lab.guest_write("v", 1, "12M", "2M", Some(44));
    let gen2 = lab.digests("v", 2);
    let j = lab
        .sk_with(&["--json", "backup", "vm:v"], &cfg, &[])
        .ok()
        .json();
    assert_eq!(j["targets"][0]["generation"], 2, "{j}");
    assert_eq!(j["targets"][0]["mode"], "incremental", "{j}");
    assert!(lab.snapshots("v").is_empty());

    check_clean(&lab, &cfg);
    assert_eq!(lab.restored_digests(&cfg, "v", 1, 2), gen1);
    assert_eq!(lab.restored_digests(&cfg, "v", 2, 2), gen2);
    // Back with its old data, the server changes nothing.
    lab.lab(&["s3", "restart", "--volume", "1"]).ok();
    check_clean(&lab, &cfg);
}

#[test]
fn the_gateway_killed_mid_backup_fails_cleanly_and_the_next_backup_succeeds() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let cfg = lab.s3_config("s3.toml", "lab", "");
    let url = repository_url(&lab);
    lab.create_vm("g", &["32M"], &["VM Network"]);
    lab.guest_write("g", 0, "0", "8M", Some(51));
    let gen1 = lab.digests("g", 1);
    lab.sk_with(&["repo", "init"], &cfg, &[]).ok();
    lab.sk_with(&["backup", "vm:g"], &cfg, &[]).ok();

    lab.guest_write("g", 0, "8M", "20M", Some(52));
    let gen2 = lab.digests("g", 1);
    lab.vddk_conf_append("fake.read_latency_ms = 300");
    let backup = backup_in_its_middle(&lab, &cfg, "g");
    lab.lab(&["s3", "kill", "--gateway"]).ok();
    let killed_at = Instant::now();
    let r = wait_run("backup vm:g", backup);
    let failed_after = killed_at.elapsed();
    lab.vddk_conf_remove("fake.read_latency_ms");
    assert_eq!(r.code, 1, "{}", r.all_output());
    let j = r.json();
    let err = j["targets"][0]["error"].as_str().unwrap_or_default();
    assert!(err.contains(&url), "the error names the repository: {j}");
    // The S3 client's own account of its retries (object_store: "after N retries").
    assert!(err.contains("retries"), "the request was retried: {j}");
    assert!(j["targets"][0]["generation"].is_null(), "{j}");
    assert!(lab.snapshots("g").is_empty(), "no snapshot left");
    eprintln!("the backup failed {failed_after:?} after the gateway was killed: {err}");

    lab.lab(&["s3", "restart", "--gateway"]).ok();
    assert_eq!(
        lab.generations_with(&cfg, "g"),
        vec![1],
        "nothing committed"
    );
    check_clean(&lab, &cfg);
    let j = lab
        .sk_with(&["--json", "backup", "vm:g"], &cfg, &[])
        .ok()
        .json();
    assert_eq!(j["targets"][0]["mode"], "incremental", "{j}");
    // The failed run had reserved number 2 and could not remove its writer state with the
    // gateway gone: the next run takes the next free number, and gc sweeps the leftover.
    let g2 = j["targets"][0]["generation"].as_u64().unwrap();
    assert!(g2 >= 2, "{j}");
    assert_eq!(lab.generations_with(&cfg, "g"), vec![1, g2]);
    lab.sk_with(&["gc"], &cfg, &[]).ok();
    check_clean(&lab, &cfg);
    assert_eq!(lab.restored_digests(&cfg, "g", 1, 1), gen1);
    assert_eq!(lab.restored_digests(&cfg, "g", g2, 1), gen2);
}

/// A copy of the lab's credentials file in which profile `lab` has `key` and `secret`.
fn credentials_variant(lab: &Lab, name: &str, key: Option<&str>, secret: &str) -> PathBuf {
    let file = lab.dir().join("s3-credentials");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut out = String::new();
    let mut in_lab = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_lab = t == "[lab]";
        }
        let field = t.split('=').next().unwrap_or_default().trim();
        match (in_lab, field, key) {
            (true, "aws_secret_access_key", _) => {
                out.push_str(&format!("aws_secret_access_key = {secret}\n"))
            }
            (true, "aws_access_key_id", Some(k)) => {
                out.push_str(&format!("aws_access_key_id = {k}\n"))
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    let p = lab.dir().join(name);
    std::fs::write(&p, out).unwrap();
    p
}

/// The secret of profile `profile` in the lab's credentials file.
fn secret_of(lab: &Lab, profile: &str) -> String {
    let text = std::fs::read_to_string(lab.dir().join("s3-credentials")).unwrap();
    let mut in_profile = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_profile = t == format!("[{profile}]");
        } else if in_profile {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == "aws_secret_access_key" {
                    return v.trim().to_string();
                }
            }
        }
    }
    panic!("no secret for profile {profile}");
}

#[test]
fn no_write_permission_and_wrong_credentials_fail_clearly_naming_the_repository() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let cfg = lab.s3_config("s3.toml", "lab", "");
    let url = repository_url(&lab);
    lab.create_vm("p", &["16M"], &["VM Network"]);
    lab.guest_write("p", 0, "0", "4M", Some(61));
    let gen1 = lab.digests("p", 1);
    lab.sk_with(&["repo", "init"], &cfg, &[]).ok();
    lab.sk_with(&["backup", "vm:p"], &cfg, &[]).ok();
    lab.guest_write("p", 0, "4M", "2M", Some(62));
    let secrets = [secret_of(&lab, "lab"), secret_of(&lab, "lab-readonly")];

    // An identity that may read and list but not write.
    let readonly = lab.s3_config("s3-readonly.toml", "lab-readonly", "");
    let wrong_secret_file = credentials_variant(
        &lab,
        "s3-credentials-wrong-secret",
        None,
        "wrongwrongwrongwrongwrongwrongwrongwrong",
    );
    let unknown_key_file = credentials_variant(
        &lab,
        "s3-credentials-unknown-key",
        Some("AKIANOSUCHKEY0000000"),
        "wrongwrongwrongwrongwrongwrongwrongwrong",
    );
    let with_credentials = |name: &str, file: &Path| {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let original = lab.dir().join("s3-credentials");
        let from = format!("credentials_file = \"{}\"", original.display());
        assert!(text.contains(&from), "{text}");
        let p = lab.dir().join(name);
        let to = format!("credentials_file = \"{}\"", file.display());
        std::fs::write(&p, text.replace(&from, &to)).unwrap();
        p
    };
    let wrong_secret = with_credentials("s3-wrong-secret.toml", &wrong_secret_file);
    let unknown_key = with_credentials("s3-unknown-key.toml", &unknown_key_file);

    let expect_clear_failure = |r: &safekeeping_e2e::Run, what: &str| {
        assert_eq!(r.code, 1, "{what}: {}", r.all_output());
        let out = r.all_output();
        assert!(out.contains(&url), "{what} names the repository: {out}");
        for s in &secrets {
            assert!(!out.contains(s.as_str()), "{what} printed a secret: {out}");
        }
        assert!(
            !out.contains("wrongwrong"),
            "{what} printed a secret: {out}"
        );
        assert!(!out.contains("panicked"), "{what}: {out}");
    };

    // Without write permission: backup and gc fail, reading works.
    let r = lab.sk_with(&["--json", "backup", "vm:p"], &readonly, &[]);
    expect_clear_failure(&r, "backup without write permission");
    assert!(lab.snapshots("p").is_empty(), "no snapshot left");
    let r = lab.sk_with(&["gc"], &readonly, &[]);
    expect_clear_failure(&r, "gc without write permission");
    lab.sk_with(&["list"], &readonly, &[]).ok();
    // Reading commands work without a lock they cannot record (issue 11, item 16), and say so.
    let r = lab.sk_with(&["check", "--read-data"], &readonly, &[]).ok();
    assert!(
        r.all_output().contains("could not lock"),
        "check with a read-only identity should warn that it could not lock: {}",
        r.all_output()
    );
    lab.sk_with(
        &[
            "restore",
            "vm:p",
            "--generation",
            "1",
            "--name",
            "p-readonly",
        ],
        &readonly,
        &[],
    )
    .ok();
    assert_eq!(lab.digests("p-readonly", 1), gen1);

    // Wrong credentials: nothing works, every command says which repository refused them.
    for (cfg_bad, what) in [
        (&wrong_secret, "wrong secret"),
        (&unknown_key, "unknown key"),
    ] {
        let r = lab.sk_with(&["--json", "backup", "vm:p"], cfg_bad, &[]);
        expect_clear_failure(&r, &format!("backup with a {what}"));
        assert!(lab.snapshots("p").is_empty(), "no snapshot left ({what})");
        let r = lab.sk_with(&["list"], cfg_bad, &[]);
        expect_clear_failure(&r, &format!("list with a {what}"));
    }

    // The repository is as it was: one generation, clean, restorable.
    assert_eq!(lab.generations_with(&cfg, "p"), vec![1]);
    check_clean(&lab, &cfg);
    assert_eq!(lab.restored_digests(&cfg, "p", 1, 1), gen1);
}
