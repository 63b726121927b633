//! Several vCenters: two labs are two vCenters (each its own instance uuid) with the same
//! inventory, and a VM `web` created the same way in both, so it has the same name, moref and
//! uuids in each: what a second site built from the same template looks like.
//!
//! - backups of both go into one repository and stay apart (two targets, two histories; the
//!   second vCenter's key is scoped by its instance uuid, the default one's is unchanged), each
//!   generation records the vCenter it came from;
//! - a restore of `vm:web` that does not say which vCenter's is refused, naming `--vcenter`;
//! - lab A's generation restores into lab B (`--to-vcenter b`) with datastore and network
//!   mappings, byte for byte, and nothing appears in lab A;
//! - without `--to-vcenter` a restore goes back to the vCenter the generation came from;
//! - an unknown `--vcenter` / `--to-vcenter` name is a clear error listing the configured ones;
//! - `list --resolve`, `doctor` and a job's `vcenter = "b"` talk to the named vCenter.
//!
//! The fake VDDK has one configuration per process (its datastores map to one lab's folders,
//! its thumbprint is one lab's), so runs against lab B use a copy of the configuration whose
//! `[vddk] config` is lab B's; the vCenter sections are the same in both files.

use std::path::{Path, PathBuf};

use safekeeping_e2e::Lab;

fn lab_json(lab: &Lab, file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(lab.dir().join(file)).expect("lab json");
    serde_json::from_str(&text).expect("lab json parses")
}

/// A `[vcenters.NAME]` section for `lab`.
fn vcenter_section(lab: &Lab, name: &str) -> String {
    let j = lab_json(lab, "lab.json");
    format!(
        "\n[vcenters.{name}]\nurl = {:?}\nuser = {:?}\npassword_file = {:?}\nthumbprint_sha256 = {:?}\n",
        j["url"].as_str().unwrap(),
        j["user"].as_str().unwrap(),
        j["password_file"].as_str().unwrap(),
        j["thumbprint_sha256"].as_str().unwrap(),
    )
}

/// Lab A's configuration plus `[vcenters.b]` (lab B), and the same with lab B's VDDK config.
fn configs(a: &Lab, b: &Lab) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(a.config()).unwrap() + &vcenter_section(b, "b");
    let with_a = a.dir().join("two-vcenters-a.toml");
    std::fs::write(&with_a, &text).unwrap();
    let conf = |lab: &Lab| {
        lab_json(lab, "lab.json")["vddk_config"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (conf_a, conf_b) = (conf(a), conf(b));
    assert!(text.contains(&conf_a), "{text}");
    let with_b = a.dir().join("two-vcenters-b.toml");
    std::fs::write(&with_b, text.replace(&conf_a, &conf_b)).unwrap();
    (with_a, with_b)
}

fn instance_uuid(lab: &Lab) -> String {
    lab_json(lab, "lab-server.json")["instance_uuid"]
        .as_str()
        .expect("the lab reports its instance uuid")
        .to_ascii_lowercase()
}

fn list(lab: &Lab, config: &Path) -> Vec<serde_json::Value> {
    let j = lab.sk_with(&["--json", "list"], config, &[]).ok().json();
    match j {
        serde_json::Value::Array(a) => a,
        other => other["targets"].as_array().cloned().unwrap_or_default(),
    }
}

#[test]
fn two_vcenters_with_the_same_vm_stay_apart_and_restore_across() {
    let a = Lab::up();
    let b = Lab::up();
    let (uuid_a, uuid_b) = (instance_uuid(&a), instance_uuid(&b));
    assert_ne!(uuid_a, uuid_b, "each lab is a vCenter of its own");
    for (lab, seed) in [(&a, 11), (&b, 22)] {
        lab.create_vm("web", &["16M"], &["VM Network"]);
        lab.guest_write("web", 0, "0", "2M", Some(seed));
    }
    let (moref_a, moref_b) = (
        a.vm_info("web").unwrap()["moref"].clone(),
        b.vm_info("web").unwrap()["moref"].clone(),
    );
    assert_eq!(moref_a, moref_b, "the same moref in both vCenters");
    let digest_a = a.digest("web", 0);
    let digest_b = b.digest("web", 0);
    assert_ne!(digest_a, digest_b);
    let (cfg_a, cfg_b) = configs(&a, &b);
    a.sk_with(&["repo", "init"], &cfg_a, &[]).ok();

    // An unknown name is refused before anything runs, naming the configured ones.
    let r = a.sk_with(&["--vcenter", "nosuch", "backup", "vm:web"], &cfg_a, &[]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    let out = r.all_output();
    assert!(out.contains("no vCenter named `nosuch`"), "{out}");
    assert!(out.contains("the configured names are b"), "{out}");

    // One backup from each vCenter into the one repository (lab A's).
    a.sk_with(&["backup", "vm:web"], &cfg_a, &[]).ok();
    a.sk_with(&["--vcenter", "b", "backup", "vm:web"], &cfg_b, &[])
        .ok();
    a.sk_with(&["--vcenter", "b", "backup", "vm:web"], &cfg_b, &[])
        .ok();
    assert!(a.snapshots("web").is_empty() && b.snapshots("web").is_empty());

    let targets = list(&a, &cfg_a);
    assert_eq!(targets.len(), 2, "{targets:#?}");
    let key = |t: &serde_json::Value| t["key"].as_str().unwrap().to_string();
    let gens = |t: &serde_json::Value| t["generations"].as_array().unwrap().len();
    let (in_b, in_a): (Vec<_>, Vec<_>) = targets.iter().partition(|t| key(t).contains(&uuid_b));
    assert_eq!((in_a.len(), in_b.len()), (1, 1), "{targets:#?}");
    assert!(
        !key(in_a[0]).contains(&uuid_a),
        "the default vCenter's key is as before"
    );
    assert_eq!(gens(in_a[0]), 1, "lab A's VM has its own history");
    assert_eq!(gens(in_b[0]), 2, "lab B's VM has its own history");

    // Each generation says where it came from.
    let show_a = a
        .sk_with(&["--vcenter", "default", "show", "vm:web"], &cfg_a, &[])
        .ok();
    assert!(
        show_a.stdout.contains("from vCenter [vcenter]"),
        "{}",
        show_a.stdout
    );
    assert!(show_a.stdout.contains(&uuid_a), "{}", show_a.stdout);
    let show_b = a
        .sk_with(&["--vcenter", "b", "show", "vm:web"], &cfg_a, &[])
        .ok();
    assert!(
        show_b.stdout.contains("from vCenter [vcenters.b]"),
        "{}",
        show_b.stdout
    );
    assert!(show_b.stdout.contains(&uuid_b), "{}", show_b.stdout);

    // Every command that reads one target's generations follows --vcenter: `export` of the
    // ambiguous `web` is refused without it and gives B's generation 2 with it.
    let out = a.dir().join("web-b.img");
    let r = a.sk_with(
        &[
            "export",
            "vm:web",
            "--disk",
            "0",
            "--output",
            out.to_str().unwrap(),
        ],
        &cfg_a,
        &[],
    );
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains("--vcenter"), "{}", r.all_output());
    let r = a
        .sk_with(
            &[
                "--json",
                "--vcenter",
                "b",
                "export",
                "vm:web",
                "--disk",
                "0",
                "--output",
                out.to_str().unwrap(),
            ],
            &cfg_a,
            &[],
        )
        .ok();
    assert_eq!(r.json()["generation"].as_u64(), Some(2), "{}", r.stdout);
    assert!(out.exists());

    // Which `web`? A restore must be told.
    let r = a.sk_with(&["restore", "vm:web", "--name", "which"], &cfg_a, &[]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains("--vcenter"), "{}", r.all_output());
    assert!(a.vm_info("which").is_none() && b.vm_info("which").is_none());

    // Lab A's generation into lab B, with placement and network mapped there.
    let r = a
        .sk_with(
            &[
                "--vcenter",
                "default",
                "restore",
                "vm:web",
                "--to-vcenter",
                "b",
                "--name",
                "web-from-a",
                "--datastore",
                "datastore2",
                "--network",
                "VM Network=Lab Network 2",
            ],
            &cfg_b,
            &[],
        )
        .ok();
    assert!(
        r.stdout.contains("into vCenter [vcenters.b]"),
        "{}",
        r.stdout
    );
    assert!(
        a.vm_info("web-from-a").is_none(),
        "nothing restored into lab A"
    );
    let restored = b.vm_info("web-from-a").expect("restored into lab B");
    let shown = restored.to_string();
    assert!(shown.contains("datastore2"), "{shown}");
    assert!(shown.contains("Lab Network 2"), "{shown}");
    assert_eq!(
        b.digest("web-from-a", 0),
        digest_a,
        "lab A's data, byte for byte"
    );

    // A mapping is checked against the target vCenter: an unknown datastore there is refused.
    let r = a.sk_with(
        &[
            "--vcenter",
            "default",
            "restore",
            "vm:web",
            "--to-vcenter",
            "b",
            "--name",
            "web-nowhere",
            "--datastore",
            "datastore9",
        ],
        &cfg_b,
        &[],
    );
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(r.all_output().contains("datastore9"), "{}", r.all_output());
    assert!(b.vm_info("web-nowhere").is_none());

    let r = a.sk_with(
        &["restore", "vm:web", "--to-vcenter", "elsewhere"],
        &cfg_a,
        &[],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.all_output().contains("no vCenter named `elsewhere`"),
        "{}",
        r.all_output()
    );

    // Without --to-vcenter a VM goes back to the vCenter its generation came from.
    b.create_vm("solo", &["8M"], &["VM Network"]);
    b.guest_write("solo", 0, "0", "1M", Some(33));
    a.sk_with(&["--vcenter", "b", "backup", "vm:solo"], &cfg_b, &[])
        .ok();
    let r = a
        .sk_with(&["restore", "vm:solo", "--name", "solo-back"], &cfg_b, &[])
        .ok();
    assert!(
        r.stdout.contains("into vCenter [vcenters.b]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("the vCenter the generation came from"),
        "{}",
        r.stdout
    );
    assert_eq!(b.digest("solo-back", 0), b.digest("solo", 0));
    assert!(a.vm_info("solo-back").is_none());
    assert!(!r
        .all_output()
        .contains("is not the vCenter the generation recorded"));

    // `[vcenters.b]` re-pointed at lab A: the restore follows the name but warns that the
    // server is not the vCenter the generation recorded.
    let text = std::fs::read_to_string(a.config()).unwrap() + &vcenter_section(&a, "b");
    let repointed = a.dir().join("two-vcenters-repointed.toml");
    std::fs::write(&repointed, text).unwrap();
    let r = a
        .sk_with(
            &["restore", "vm:solo", "--name", "solo-in-a"],
            &repointed,
            &[],
        )
        .ok();
    assert!(
        r.all_output()
            .contains("is not the vCenter the generation recorded"),
        "{}",
        r.all_output()
    );
    assert!(a.vm_info("solo-in-a").is_some() && b.vm_info("solo-in-a").is_none());

    // `list --resolve` and `doctor` ask the vCenter --vcenter names.
    let r = a
        .sk_with(
            &["--vcenter", "b", "list", "--resolve", "vm:solo"],
            &cfg_a,
            &[],
        )
        .ok();
    assert!(r.stdout.contains("solo"), "{}", r.stdout);
    assert!(
        !r.all_output().contains("no VM matches"),
        "{}",
        r.all_output()
    );
    let r = a.sk_with(&["list", "--resolve", "vm:solo"], &cfg_a, &[]);
    assert!(
        r.all_output().contains("no VM matches vm:solo"),
        "lab A has no `solo`: {}",
        r.all_output()
    );
    let url_b = lab_json(&b, "lab.json")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let r = a.sk_with(&["--vcenter", "b", "doctor"], &cfg_b, &[]);
    assert!(
        r.stdout.contains(&format!("{url_b}: logged in")),
        "{}",
        r.all_output()
    );

    // A job names its vCenter; its backup continues that vCenter's history of the VM.
    let job = a.dir().join("two-vcenters-job.toml");
    let text = std::fs::read_to_string(&cfg_b).unwrap()
        + "\n[jobs.dr-solo]\ntargets = [\"vm:solo\"]\nvcenter = \"b\"\nkeep_last = 5\n";
    std::fs::write(&job, text).unwrap();
    a.sk_with(&["run", "dr-solo"], &job, &[]).ok();
    let solo: Vec<_> = list(&a, &cfg_a)
        .into_iter()
        .filter(|t| t["name"] == "solo")
        .collect();
    assert_eq!(solo.len(), 1, "{solo:#?}");
    assert!(key(&solo[0]).contains(&uuid_b), "{solo:#?}");
    assert_eq!(gens(&solo[0]), 2, "{solo:#?}");
}
