//! `backup --dry-run` and `restore --dry-run` print the plan a real run would carry out —
//! targets resolved, per disk full or incremental and why; the restore's name, placement,
//! datastores and network mapping — and create nothing: no snapshot, no generation, no VM.

use safekeeping_e2e::Lab;

#[test]
fn dry_runs_print_the_plan_and_create_nothing() {
    let lab = Lab::up();
    lab.create_vm("web", &["16M", "8M"], &["VM Network"]);
    lab.guest_write("web", 0, "0", "2M", Some(1));
    lab.sk(&["repo", "init"]).ok();
    let listed = |lab: &Lab| lab.sk(&["--json", "list"]).ok().stdout;
    let empty = listed(&lab);

    // Before any backup: every disk full, because nothing came before.
    let r = lab.sk(&["--json", "backup", "vm:web", "--dry-run"]).ok();
    let j = r.json();
    assert_eq!(j["dry_run"], true);
    let t = &j["targets"][0];
    assert_eq!(t["target"], "vm:web", "{j:#}");
    assert!(t["moref"].as_str().unwrap().starts_with("vm-"), "{j:#}");
    assert!(t.get("previous_generation").is_none(), "{j:#}");
    let disks = t["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    for d in disks {
        assert_eq!(d["mode"], "full", "{j:#}");
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("no previous successful generation")
                || reason.contains("change tracking is off"),
            "{reason}"
        );
    }
    assert!(lab.snapshots("web").is_empty(), "no snapshot taken");
    assert_eq!(listed(&lab), empty, "no generation written");

    // After a backup: incremental from generation 1, said per disk; --full says why not.
    lab.sk(&["backup", "vm:web"]).ok();
    let one = listed(&lab);
    lab.guest_write("web", 0, "4M", "1M", Some(2));
    let j = lab
        .sk(&["--json", "backup", "vm:web", "--dry-run"])
        .ok()
        .json();
    let t = &j["targets"][0];
    assert_eq!(t["previous_generation"], 1, "{j:#}");
    assert_eq!(t["change_tracking"], true, "{j:#}");
    for d in t["disks"].as_array().unwrap() {
        assert_eq!(d["mode"], "incremental", "{j:#}");
        assert!(d["reason"].as_str().unwrap().contains("generation 1"));
    }
    let j = lab
        .sk(&[
            "--json",
            "backup",
            "vm:web",
            "--dry-run",
            "--full",
            "--exclude-disk",
            "1",
        ])
        .ok()
        .json();
    let disks = j["targets"][0]["disks"].as_array().unwrap();
    assert_eq!(disks[0]["mode"], "full");
    assert!(disks[0]["reason"].as_str().unwrap().contains("--full"));
    assert!(disks[1]["mode"].is_null(), "excluded disk: {j:#}");
    // The text form says the same for people.
    let text = lab.sk(&["backup", "vm:web", "--dry-run"]).ok().stdout;
    assert!(
        text.contains("dry run: 1 target would be backed up"),
        "{text}"
    );
    assert!(
        text.contains("incremental: changes since generation 1"),
        "{text}"
    );
    // A target that does not exist: the plan says it would fail, exit 1, still nothing made.
    let r = lab
        .sk(&["--json", "backup", "vm:web", "vm:nosuch", "--dry-run"])
        .expect_code(1);
    assert!(
        r.json()["targets"][1]["error"].as_str().is_some(),
        "{}",
        r.stdout
    );
    assert!(lab.snapshots("web").is_empty(), "no snapshot taken");
    assert_eq!(listed(&lab), one, "no generation written");

    // Restore: the name, the placement, a datastore per disk, the network mapping; no VM.
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "vm:web",
            "--dry-run",
            "--name",
            "web-copy",
        ])
        .ok();
    let j = r.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["name"], "web-copy");
    assert_eq!(j["generation"], 1);
    assert!(!j["placement"]["datacenter"].as_str().unwrap().is_empty());
    assert!(!j["placement"]["datastore"].as_str().unwrap().is_empty());
    assert_eq!(j["disks"].as_array().unwrap().len(), 2, "{j:#}");
    assert_eq!(j["networks"][0]["from"], "VM Network", "{j:#}");
    assert_eq!(j["networks"][0]["to"], "VM Network", "{j:#}");
    assert!(j.get("replaces").is_none());
    assert!(lab.vm_info("web-copy").is_none(), "no VM created");
    let text = lab
        .sk(&["restore", "vm:web", "--dry-run", "--name", "web-copy"])
        .ok()
        .stdout;
    assert!(
        text.contains("dry run: would restore vm:web generation 1 as VM `web-copy`"),
        "{text}"
    );
    // The checks a real restore makes are made: an existing name needs --overwrite, and then
    // the plan names the VM it would replace (which stays as it is).
    let r = lab
        .sk(&["restore", "vm:web", "--dry-run", "--name", "web"])
        .expect_code(1);
    assert!(r.stderr.contains("web"), "{}", r.stderr);
    let j = lab
        .sk(&[
            "--json",
            "restore",
            "vm:web",
            "--dry-run",
            "--name",
            "web",
            "--overwrite",
            "--force",
        ])
        .ok()
        .json();
    assert_eq!(j["replaces"]["name"], "web", "{j:#}");
    assert!(lab.vm_info("web").is_some());
    assert!(lab.snapshots("web").is_empty());
    assert_eq!(listed(&lab), one);
}
