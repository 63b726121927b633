//! Encryption at rest end to end: a lab VM whose disk holds a known marker is backed up into
//! an encrypted repository (`repo init --encryption aes-256-gcm`, passphrase from
//! `SAFEKEEPING_PASSPHRASE`), restored to the same digest, and no file of the repository
//! contains the marker or the VM's name; `repo key` manages key files with `--json`.

use std::path::{Path, PathBuf};

use safekeeping_e2e::Lab;

const MARKER: &[u8] = b"SAFEKEEPING-E2E-PLAINTEXT-MARKER-4c1d9e";
const PASS: &str = "e2e passphrase: correct horse battery staple";

fn files(dir: &Path) -> Vec<PathBuf> {
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

/// The flat extent file of the VM's first disk (where the lab keeps the disk's bytes).
fn flat_file(lab: &Lab, vm: &str) -> PathBuf {
    let found: Vec<PathBuf> = files(&lab.dir().join("datastores"))
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains(vm) && s.ends_with("-flat.vmdk")
        })
        .collect();
    assert_eq!(found.len(), 1, "flat files of {vm}: {found:?}");
    found.into_iter().next().unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn encrypted_backup_restores_and_leaks_no_plaintext() {
    let lab = Lab::up();
    lab.create_vm("marker-vm", &["8M"], &["VM Network"]);
    // Make the first 4 MiB allocated and tracked, then put the marker over it, repeated
    // (1 MiB of it), as a guest would write a recognisable file.
    lab.guest_write("marker-vm", 0, "0", "4M", Some(3));
    let flat = flat_file(&lab, "marker-vm");
    let mut block = Vec::with_capacity(1 << 20);
    while block.len() < (1 << 20) {
        block.extend_from_slice(MARKER);
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&flat).unwrap();
        f.write_all_at(&block, 1 << 20).unwrap();
        f.sync_all().unwrap();
    }
    assert!(contains(&std::fs::read(&flat).unwrap(), MARKER));
    let digest = lab.digests("marker-vm", 1);

    let env = [("SAFEKEEPING_PASSPHRASE", PASS)];
    let sk = |args: &[&str]| lab.sk_with(args, &lab.config(), &env);
    let j = sk(&["--json", "repo", "init", "--encryption", "aes-256-gcm"])
        .ok()
        .json();
    assert_eq!(j["encrypted"], true, "{j}");
    sk(&["backup", "vm:marker-vm"]).ok();
    sk(&["check", "--read-data"]).ok();
    sk(&["restore", "vm:marker-vm", "--name", "marker-back"]).ok();
    assert_eq!(lab.digests("marker-back", 1), digest);

    // Without the passphrase: a clear error naming where it comes from.
    let r = lab.sk(&["list"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(r.stderr.contains("encrypted"), "{}", r.stderr);
    assert!(r.stderr.contains("PASSPHRASE"), "{}", r.stderr);

    // Nothing of the disk or the VM's name in any file of the repository.
    let repo = lab.dir().join("repo");
    let all = files(&repo);
    assert!(all.len() > 5, "{all:?}");
    for p in &all {
        let bytes = std::fs::read(p).unwrap();
        let name = p
            .strip_prefix(&repo)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(!contains(&bytes, &MARKER[..20]), "marker in {name}");
        assert!(!contains(&bytes, b"marker-vm"), "VM name in {name}");
        assert!(!name.contains("marker"), "VM name in the file name {name}");
    }

    // Key management with --json: add, list, passwd, export, remove; never the last key.
    let dir = lab.dir();
    let new_pass = dir.join("new-pass");
    std::fs::write(&new_pass, "a second passphrase\n").unwrap();
    let np = new_pass.to_string_lossy().into_owned();
    let j = sk(&["--json", "repo", "key", "list"]).ok().json();
    let first = j["keys"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(j["keys"].as_array().unwrap().len(), 1);
    let j = sk(&["--json", "repo", "key", "add", "--new-passphrase-file", &np])
        .ok()
        .json();
    let second = j["added"].as_str().unwrap().to_string();
    let second_env = [("SAFEKEEPING_PASSPHRASE", "a second passphrase")];
    lab.sk_with(&["list"], &lab.config(), &second_env).ok();
    let j = sk(&["--json", "repo", "key", "export"]).ok().json();
    assert_eq!(j["key_file"]["id"], first.as_str());
    assert_eq!(j["key_file"]["kdf"]["algorithm"], "argon2id");
    let r = sk(&["repo", "key", "remove", &second]).ok();
    assert!(r.stdout.contains(&second), "{}", r.stdout);
    let r = sk(&["--json", "repo", "key", "remove", &first]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.all_output().contains("last key file"),
        "{}",
        r.all_output()
    );
    std::fs::write(&new_pass, "a third passphrase\n").unwrap();
    sk(&["repo", "key", "passwd", "--new-passphrase-file", &np]).ok();
    let r = sk(&["list"]);
    assert_eq!(
        r.code,
        1,
        "the old passphrase still works: {}",
        r.all_output()
    );
    assert!(
        r.all_output().contains("wrong passphrase"),
        "{}",
        r.all_output()
    );
    lab.sk_with(
        &["list"],
        &lab.config(),
        &[("SAFEKEEPING_PASSPHRASE", "a third passphrase")],
    )
    .ok();
}
