//! An encrypted repository end to end: `repo init --encrypt` with a passphrase file, backup,
//! incremental, restore by digest; without the passphrase every command fails clearly, and
//! nothing in the repository names the VM.

use safekeeping_e2e::Lab;

#[test]
fn encrypted_repository_round_trip() {
    let lab = Lab::up();
    lab.create_vm("secret-vm", &["16M"], &["VM Network"]);
    lab.guest_write("secret-vm", 0, "0", "3M", Some(5));
    let pass = lab.dir().join("repo-passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let cfg = lab.config_variant(
        "encrypted.toml",
        "[repository]\n",
        &format!("[repository]\npassphrase_file = \"{}\"\n", pass.display()),
    );
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);
    let j = sk(&["--json", "repo", "init", "--encrypt"]).ok().json();
    assert_eq!(j["encrypted"], true);
    sk(&["backup", "vm:secret-vm"]).ok();
    lab.guest_write("secret-vm", 0, "8M", "1M", Some(6));
    let digest = lab.digests("secret-vm", 1);
    let j = sk(&["--json", "backup", "vm:secret-vm"]).ok().json();
    assert_eq!(j["targets"][0]["mode"], "incremental");
    sk(&["restore", "vm:secret-vm", "--name", "clear"]).ok();
    assert_eq!(lab.digests("clear", 1), digest);
    sk(&["check", "--read-data"]).ok();

    // The lab's plain configuration has no passphrase.
    let r = lab.sk(&["list"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is encrypted"), "{}", r.stderr);
    let r = lab.sk_with(
        &["list"],
        &lab.config(),
        &[("SAFEKEEPING_REPOSITORY_PASSPHRASE", "wrong")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let r = lab.sk_with(
        &["list"],
        &lab.config(),
        &[(
            "SAFEKEEPING_REPOSITORY_PASSPHRASE",
            "correct horse battery staple",
        )],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("secret-vm"));

    // No file or folder name in the repository gives the VM away.
    let mut stack = vec![lab.dir().join("repo")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("secret"),
                "{} names the VM",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
}
