//! A repository in S3-compatible object storage end to end: the lab's SeaweedFS cluster
//! (`safekeeping-lab s3 up`: master, three volume servers, filer, S3 gateway) holds the
//! repository that `[repository] url = "s3://..."` names. `repo init`, a full backup, an
//! incremental, `list`, `check --read-data` and a restore by digest all go through it; an
//! identity without write permission fails the backup clearly, naming the repository.

use safekeeping_e2e::Lab;

#[test]
fn a_vm_backs_up_to_and_restores_from_object_storage() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let cfg = lab.s3_config("s3.toml", "lab", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("url = \"s3://"), "{text}");
    assert!(!text.contains("\npath = "), "{text}");
    let sk = |args: &[&str]| lab.sk_with(args, &cfg, &[]);

    lab.create_vm("s3-vm", &["16M", "8M"], &["VM Network"]);
    lab.guest_write("s3-vm", 0, "0", "3M", Some(31));
    lab.guest_write("s3-vm", 1, "1M", "2M", Some(32));
    let j = sk(&["--json", "repo", "init"]).ok().json();
    assert!(
        j["path"].as_str().unwrap_or_default().starts_with("s3://"),
        "{j}"
    );
    let j = sk(&["--json", "backup", "vm:s3-vm"]).ok().json();
    assert_eq!(j["targets"][0]["mode"], "full", "{j}");
    lab.guest_write("s3-vm", 0, "8M", "1M", Some(33));
    let digests = lab.digests("s3-vm", 2);
    let j = sk(&["--json", "backup", "vm:s3-vm"]).ok().json();
    assert_eq!(j["targets"][0]["mode"], "incremental", "{j}");
    assert_eq!(j["targets"][0]["generation"], 2, "{j}");
    let listed = sk(&["list", "vm:s3-vm"]).ok();
    assert!(listed.stdout.contains('2'), "{}", listed.stdout);
    sk(&["check", "--read-data"]).ok();
    sk(&["restore", "vm:s3-vm", "--name", "s3-back"]).ok();
    assert_eq!(lab.digests("s3-back", 2), digests);
    // Nothing of the repository landed in the lab's local repository folder.
    assert!(!lab.dir().join("repo").join("config").exists());

    // An identity that may only read cannot back up: a clear error naming the repository,
    // exit 1, and no snapshot left on the VM.
    let ro = lab.s3_config("s3-readonly.toml", "lab-readonly", "");
    let r = lab.sk_with(&["backup", "vm:s3-vm"], &ro, &[]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains("s3://"), "{}", r.all_output());
    assert!(lab.snapshots("s3-vm").is_empty());
    // Reading works with it.
    lab.sk_with(&["list"], &ro, &[]).ok();
}
