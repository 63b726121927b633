//! Named repositories and `copy` end to end, against the lab's SeaweedFS cluster
//! (`safekeeping-lab s3 up`) and local folders:
//!
//! - `--repo NAME` picks `[repositories.NAME]` for any command; an unknown name fails with
//!   the configured names, exit 1;
//! - a folder → bucket copy (same keys: both unencrypted) sends the newest generation, a second
//!   copy sends nothing, `--all-generations` sends only what the destination lacks, and the
//!   copy restores byte for byte from the bucket;
//! - encrypted folder → encrypted bucket (different keys) re-encrypts, and restores byte for
//!   byte; bucket → encrypted folder likewise, and after the copy's manifest and one chunk are
//!   removed from the destination (an interrupted copy), the next copy commits the generation
//!   again sending exactly that one chunk;
//! - a copy killed (SIGKILL) in the middle is finished by the next one, which sends only what
//!   had not arrived, under the same generation number;
//! - `repo init --copy-key-from` makes a repository with the same key material: the copy says
//!   "as is" and every chunk object in the destination is byte-identical to the source's.

use std::path::{Path, PathBuf};

use safekeeping_e2e::{Lab, Run};

/// Stops the S3 cluster when the test ends, however it ends.
struct S3Cluster<'a>(&'a Lab);

impl Drop for S3Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.0.lab(&["s3", "down"]);
    }
}

/// `[repositories.NAME]` for the lab bucket under `prefix`, from `s3-repository.toml`.
fn s3_table(lab: &Lab, name: &str, prefix: &str, extra: &str) -> String {
    let s3 = std::fs::read_to_string(lab.dir().join("s3-repository.toml")).unwrap();
    assert!(s3.contains("/repo\""), "{s3}");
    let table = s3
        .replace("[repository]", &format!("[repositories.{name}]"))
        .replace("/repo\"", &format!("/{prefix}\""));
    format!("{table}{extra}\n")
}

fn passphrase(lab: &Lab, name: &str, text: &str) -> String {
    let p = lab.dir().join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    format!("passphrase_file = \"{}\"\n", p.display())
}

fn folder_table(lab: &Lab, name: &str, extra: &str) -> String {
    format!(
        "[repositories.{name}]\npath = \"{}\"\n{extra}\n",
        lab.dir().join(name).display()
    )
}

/// Every file under `dir`, as (path relative to `dir`, bytes).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn copied(r: &Run) -> serde_json::Value {
    r.json()
}

#[test]
fn named_repositories_and_copies_between_folders_and_buckets() {
    let lab = Lab::up();
    lab.lab(&["s3", "up"]).ok();
    let _cluster = S3Cluster(&lab);
    let mut cfg_text = std::fs::read_to_string(lab.config()).unwrap();
    cfg_text.push('\n');
    cfg_text.push_str(&s3_table(
        &lab,
        "offsite",
        "offsite",
        "lock_ttl_seconds = 120",
    ));
    cfg_text.push_str(&s3_table(&lab, "locked", "locked", ""));
    cfg_text.push_str(&s3_table(
        &lab,
        "vault",
        "vault",
        &format!(
            "{}max_retries = 3\nretry_timeout_seconds = 60\nupload_concurrency = 8",
            passphrase(&lab, "vault-pass", "vault passphrase")
        ),
    ));
    cfg_text.push_str(&folder_table(
        &lab,
        "sealed",
        &passphrase(&lab, "sealed-pass", "sealed passphrase"),
    ));
    cfg_text.push_str(&folder_table(
        &lab,
        "twin",
        &passphrase(&lab, "twin-pass", "twin passphrase"),
    ));
    cfg_text.push_str(&folder_table(
        &lab,
        "mirror",
        &passphrase(&lab, "mirror-pass", "mirror passphrase"),
    ));
    let cfg = lab.dir().join("copy.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);

    lab.create_vm("cp-vm", &["16M", "8M"], &["VM Network"]);
    lab.guest_write("cp-vm", 0, "0", "4M", Some(61));
    lab.guest_write("cp-vm", 1, "1M", "2M", Some(62));

    // An unknown name: exit 1, the configured names listed.
    let r = sk(&["--repo", "ofsite", "list"]).expect_code(1);
    assert!(
        r.stderr.contains("`ofsite`")
            && r.stderr
                .contains("locked, mirror, offsite, sealed, twin, vault"),
        "{}",
        r.stderr
    );
    let r = sk(&["copy", "--to", "nowhere"]).expect_code(1);
    assert!(r.stderr.contains("`nowhere`"), "{}", r.stderr);

    // --- A: folder (the lab's [repository]) → bucket, both unencrypted: as is.
    sk(&["repo", "init"]).ok();
    sk(&["backup", "vm:cp-vm"]).ok();
    lab.guest_write("cp-vm", 0, "8M", "2M", Some(63));
    let newest = lab.digests("cp-vm", 2);
    sk(&["backup", "vm:cp-vm"]).ok();
    let j = sk(&["--json", "--repo", "offsite", "repo", "init"])
        .ok()
        .json();
    assert!(j["path"].as_str().unwrap().starts_with("s3://"), "{j}");
    // Not initialised yet for `vault`: a copy there fails clearly.
    let r = sk(&["copy", "--to", "vault"]).expect_code(1);
    assert!(r.stderr.contains("[repositories.vault]"), "{}", r.stderr);

    let j = copied(&sk(&["--json", "copy", "--to", "offsite"]).ok());
    assert_eq!(j["copied"], 1, "the newest generation only: {j}");
    assert_eq!(j["generations"][0]["generation"], 2, "{j}");
    // The source's number is kept while it is free: order survives copies in any order.
    assert_eq!(j["generations"][0]["dest_generation"], 2, "{j}");
    assert_eq!(j["as_is"], true, "{j}");
    let first_sent = j["chunks_sent"].as_u64().unwrap();
    assert!(
        first_sent > 0 && j["bytes_sent"].as_u64().unwrap() > 0,
        "{j}"
    );
    assert_eq!(j["exit_code"], 0);

    // Again: nothing travels.
    let j = copied(&sk(&["--json", "copy", "--to", "offsite", "vm:cp-vm"]).ok());
    assert_eq!(
        (j["copied"].as_u64(), j["already_there"].as_u64()),
        (Some(0), Some(1)),
        "{j}"
    );
    assert_eq!(j["chunks_sent"], 0, "{j}");
    assert_eq!(j["bytes_sent"], 0, "{j}");

    // All generations: generation 1 is new there, but most of its chunks are not.
    let j = copied(&sk(&["--json", "copy", "--to", "offsite", "--all-generations"]).ok());
    assert_eq!(
        (j["copied"].as_u64(), j["already_there"].as_u64()),
        (Some(1), Some(1)),
        "{j}"
    );
    assert_eq!(j["generations"][0]["generation"], 1, "{j}");
    assert!(j["chunks_present"].as_u64().unwrap() > 0, "{j}");
    assert!(j["chunks_sent"].as_u64().unwrap() < first_sent, "{j}");

    assert_eq!(j["generations"][0]["dest_generation"], 1, "{j}");
    // The bucket copy lists, checks and restores on its own; its newest generation is still
    // the newest backup, though copied first.
    let listed = sk(&["--json", "--repo", "offsite", "list"]).ok().json();
    assert!(listed.to_string().contains("cp-vm"), "{listed}");
    sk(&["--repo", "offsite", "check", "--read-data"]).ok();
    sk(&[
        "--repo",
        "offsite",
        "restore",
        "vm:cp-vm",
        "--name",
        "from-offsite",
    ])
    .ok();
    assert_eq!(lab.digests("from-offsite", 2), newest);

    // --- A': a copy into the bucket killed in the middle: the next one finishes it, sending
    // only what had not arrived, and keeps the generation number.
    lab.create_vm("cp-big", &["96M"], &["VM Network"]);
    lab.guest_write("cp-big", 0, "0", "96M", Some(64));
    let big = lab.digests("cp-big", 1);
    sk(&["backup", "vm:cp-big"]).ok();
    let mut child = std::process::Command::new(safekeeping_e2e::binary("safekeeping"))
        .arg("--config")
        .arg(&cfg)
        .args(["copy", "--to", "offsite", "vm:cp-big"])
        .env_remove("SAFEKEEPING_PASSPHRASE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        // The progress lines (one per tenth, stderr not a terminal): kill at the first.
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("% (") {
                break;
            }
        }
        assert!(
            seen.contains("% ("),
            "no progress before the copy ended:\n{seen}"
        );
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the copy finished before it was killed");
    let j = copied(&sk(&["--json", "copy", "--to", "offsite", "vm:cp-big"]).ok());
    assert_eq!(j["copied"], 1, "{j}");
    let g = &j["generations"][0];
    assert_eq!(g["dest_generation"], g["generation"], "{j}");
    let (sent, present) = (
        j["chunks_sent"].as_u64().unwrap(),
        j["chunks_present"].as_u64().unwrap(),
    );
    assert!(
        present > 0,
        "what arrived before the kill is not sent again: {j}"
    );
    assert!(sent > 0, "the kill came after everything was sent: {j}");
    sk(&[
        "--repo",
        "offsite",
        "restore",
        "vm:cp-big",
        "--name",
        "big-back",
    ])
    .ok();
    assert_eq!(lab.digests("big-back", 1), big);

    // --- B: encrypted folder → encrypted bucket with other keys: re-encrypted. The
    // environment's passphrase is the source's; the destination reads its own file.
    let env = [("SAFEKEEPING_PASSPHRASE", "sealed passphrase")];
    let sk_env = |args: &[&str]| lab.sk_with(args, &cfg, &env);
    sk_env(&["--repo", "sealed", "repo", "init", "--encrypt"]).ok();
    sk_env(&["--repo", "sealed", "backup", "vm:cp-vm"]).ok();
    sk(&["--repo", "vault", "repo", "init", "--encrypt"]).ok();
    let j = copied(&sk_env(&["--json", "--repo", "sealed", "copy", "--to", "vault"]).ok());
    assert_eq!(j["copied"], 1, "{j}");
    assert_eq!(j["as_is"], false, "{j}");
    let r = sk_env(&["--repo", "sealed", "copy", "--to", "vault"]).ok();
    assert!(r.stdout.contains("re-encrypted"), "{}", r.stdout);
    assert!(r.stdout.contains("already in vault"), "{}", r.stdout);
    sk(&[
        "--repo",
        "vault",
        "restore",
        "vm:cp-vm",
        "--name",
        "from-vault",
    ])
    .ok();
    assert_eq!(lab.digests("from-vault", 2), newest);

    // --- C: bucket → encrypted folder; then an interrupted copy (manifest and one chunk gone
    // from the destination) is completed by the next one, sending exactly that chunk.
    sk(&["--repo", "mirror", "repo", "init", "--encrypt"]).ok();
    let j = copied(&sk(&["--json", "--repo", "vault", "copy", "--to", "mirror"]).ok());
    assert_eq!(j["copied"], 1, "{j}");
    let total = j["chunks_sent"].as_u64().unwrap();
    assert!(total > 1, "{j}");
    let g = &j["generations"][0];
    let gen_dir = lab
        .dir()
        .join("mirror/targets")
        .join(g["dest_target_key"].as_str().unwrap())
        .join(format!("gen-{:06}", g["dest_generation"].as_u64().unwrap()));
    std::fs::remove_file(gen_dir.join("manifest")).unwrap();
    let chunk = files(&lab.dir().join("mirror/chunks")).remove(0).0;
    std::fs::remove_file(lab.dir().join("mirror/chunks").join(&chunk)).unwrap();
    let r = sk(&["--repo", "mirror", "list", "vm:cp-vm"]);
    assert!(!r.stdout.contains("cp-vm") || r.code != 0, "{}", r.stdout);
    let j = copied(&sk(&["--json", "--repo", "vault", "copy", "--to", "mirror"]).ok());
    assert_eq!(j["copied"], 1, "{j}");
    assert_eq!(
        j["chunks_sent"], 1,
        "only the removed chunk travels again: {j}"
    );
    assert_eq!(j["chunks_present"].as_u64(), Some(total - 1), "{j}");
    assert!(lab.dir().join("mirror/chunks").join(&chunk).exists());
    sk(&["--repo", "mirror", "check", "--read-data"]).ok();

    // --- D: repo init --copy-key-from: the same key material, chunks travel as they are.
    // Each repository's passphrase from its own file (no environment): twin's key file wraps
    // sealed's keys under twin's passphrase.
    let j = sk(&[
        "--json",
        "--repo",
        "twin",
        "repo",
        "init",
        "--copy-key-from",
        "sealed",
    ])
    .ok()
    .json();
    assert_eq!(j["encrypted"], true, "{j}");
    let sealed_fp = sk_env(&["--json", "--repo", "sealed", "repo", "key", "list"])
        .ok()
        .json()["key_fingerprint"]
        .clone();
    assert_eq!(j["key_fingerprint"], sealed_fp, "{j}");
    let j = copied(&sk_env(&["--json", "--repo", "sealed", "copy", "--to", "twin"]).ok());
    assert_eq!(j["as_is"], true, "{j}");
    assert_eq!(j["copied"], 1, "{j}");
    let r = sk_env(&[
        "--repo",
        "sealed",
        "copy",
        "--to",
        "twin",
        "--all-generations",
    ])
    .ok();
    assert!(r.stdout.contains("as is"), "{}", r.stdout);
    let source: std::collections::HashMap<_, _> = files(&lab.dir().join("sealed/chunks"))
        .into_iter()
        .collect();
    let twin = files(&lab.dir().join("twin/chunks"));
    assert_eq!(twin.len() as u64, j["chunks_sent"].as_u64().unwrap());
    for (name, bytes) in &twin {
        assert_eq!(
            source.get(name),
            Some(bytes),
            "chunk {} differs from the source's",
            name.display()
        );
    }
    sk(&["--repo", "twin", "check", "--read-data"]).ok();
    // --- Object lock needs S3, and a bucket with object lock enabled (the lab's has none).
    let r = sk(&["repo", "init", "--object-lock-days", "7"]).expect_code(1);
    assert!(
        r.stderr.contains("needs a repository in S3"),
        "{}",
        r.stderr
    );
    let r = sk(&[
        "--repo",
        "locked",
        "repo",
        "init",
        "--object-lock-days",
        "7",
    ])
    .expect_code(1);
    assert!(
        r.stderr.contains("needs object lock enabled"),
        "{}",
        r.stderr
    );
    let r = sk(&["--repo", "offsite", "repo", "refresh-lock"]).expect_code(1);
    assert!(r.stderr.contains("has no object lock"), "{}", r.stderr);

    // Twin opens with its own passphrase only.
    let r = lab.sk_with(
        &["--repo", "twin", "list"],
        &cfg,
        &[("SAFEKEEPING_PASSPHRASE", "sealed passphrase")],
    );
    assert_eq!(r.code, 1, "{}", r.all_output());
}
