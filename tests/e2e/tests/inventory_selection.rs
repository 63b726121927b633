//! Inventory selections end to end: VMs placed in nested folders, a second cluster (with its
//! own host), nested resource pools and a second datastore; `list --resolve` expands each of
//! `folder:` (recursive), `cluster:`, `host:`, `rp:` (recursive) and `datastore:` to exactly
//! the VMs the lab placed there (`datastore:` by disk, not by `.vmx`), combines them with `tag:`, `--all` and `--exclude`, names
//! what does not exist, and a backup of a `folder:` selection backs up exactly its VM.

use std::collections::BTreeSet;

use safekeeping_e2e::Lab;

/// Names of the VMs `list --resolve ARGS` selects.
fn resolve(lab: &Lab, args: &[&str]) -> BTreeSet<String> {
    let mut full = vec!["--json", "list"];
    full.extend_from_slice(args);
    let r = lab.sk(&full).ok();
    r.json()["selected"]
        .as_array()
        .unwrap_or_else(|| panic!("no `selected` in {}", r.stdout))
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "vm", "{s}");
            s["name"].as_str().unwrap().to_string()
        })
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `place-vm`: moves a VM (or, with no place, only reports where it is).
fn place(lab: &Lab, vm: &str, how: &[&str]) -> serde_json::Value {
    let mut args = vec!["place-vm", "--vm", vm];
    args.extend_from_slice(how);
    lab.lab(&args).ok().json()
}

#[test]
fn each_inventory_selection_resolves_to_the_vms_placed_there() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    for vm in ["web1", "app1", "far1", "pooled1", "plain1"] {
        lab.create_vm(vm, &["1M"], &[]);
    }
    lab.lab(&[
        "create-vm",
        "--name",
        "ds2vm",
        "--disk",
        "1M",
        "--datastore",
        "datastore2",
    ])
    .ok();
    place(&lab, "web1", &["--folder", "prod/web"]);
    place(&lab, "app1", &["--folder", "prod"]);
    let far = place(&lab, "far1", &["--cluster", "C2"]);
    assert_eq!(far["host"], "C2_H0", "{far}");
    let pooled = place(&lab, "pooled1", &["--pool", "gold/db"]);
    assert_eq!(pooled["pool"], "db", "{pooled}");

    // folder: is recursive.
    assert_eq!(
        resolve(&lab, &["--resolve", "folder:DC0/vm/prod"]),
        names(&["web1", "app1"])
    );
    assert_eq!(
        resolve(&lab, &["--resolve", "folder:DC0/vm/prod/web"]),
        names(&["web1"])
    );
    // cluster: the second cluster holds only the VM moved there.
    assert_eq!(
        resolve(&lab, &["--resolve", "cluster:C2"]),
        names(&["far1"])
    );
    assert_eq!(
        resolve(&lab, &["--resolve", "cluster:DC0_C0"]),
        names(&["web1", "app1", "pooled1", "plain1", "ds2vm"])
    );
    // host: every VM whose host the lab reports is that host, and only those.
    assert_eq!(
        resolve(&lab, &["--resolve", "host:C2_H0"]),
        names(&["far1"])
    );
    let mut by_host: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for vm in ["web1", "app1", "pooled1", "plain1", "ds2vm"] {
        let host = place(&lab, vm, &[])["host"].as_str().unwrap().to_string();
        by_host.entry(host).or_default().insert(vm.to_string());
    }
    for (host, vms) in &by_host {
        assert_eq!(
            &resolve(&lab, &["--resolve", &format!("host:{host}")]),
            vms,
            "host:{host}"
        );
    }
    // rp: is recursive.
    assert_eq!(
        resolve(&lab, &["--resolve", "rp:DC0/host/DC0_C0/Resources/gold"]),
        names(&["pooled1"])
    );
    assert_eq!(
        resolve(&lab, &["--resolve", "rp:DC0/host/DC0_C0/Resources/gold/db"]),
        names(&["pooled1"])
    );
    // datastore: the VMs with a disk on it.
    assert_eq!(
        resolve(&lab, &["--resolve", "datastore:datastore2"]),
        names(&["ds2vm"])
    );

    // Combinations: several selections, tag:, --all and --exclude.
    lab.lab(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vm:plain1",
    ])
    .ok();
    assert_eq!(
        resolve(
            &lab,
            &[
                "--resolve",
                "cluster:C2",
                "tag:backup/gold",
                "folder:DC0/vm/prod/web"
            ]
        ),
        names(&["far1", "plain1", "web1"])
    );
    assert_eq!(
        resolve(
            &lab,
            &["--resolve", "folder:DC0/vm/prod", "--exclude", "vm:web1"]
        ),
        names(&["app1"])
    );
    assert_eq!(
        resolve(&lab, &["--all", "vm", "--exclude", "cluster:DC0_C0"]),
        names(&["far1"])
    );

    // Places that do not exist are named; a malformed path is a usage error.
    let r = lab
        .sk(&["list", "--resolve", "cluster:nope"])
        .expect_code(1);
    assert!(
        r.stderr.contains("cluster:nope") && r.stderr.contains("C2"),
        "{}",
        r.stderr
    );
    let r = lab
        .sk(&["list", "--resolve", "folder:DC0/vm/none"])
        .expect_code(1);
    assert!(r.stderr.contains("folder:DC0/vm/none"), "{}", r.stderr);
    let r = lab
        .sk(&["list", "--resolve", "rp:DC0/vm/prod"])
        .expect_code(2);
    assert!(r.stderr.contains("resource pool path"), "{}", r.stderr);
    // A datastore name is checked too.
    let r = lab
        .sk(&["list", "--resolve", "datastore:nope"])
        .expect_code(1);
    assert!(r.stderr.contains("datastore1"), "{}", r.stderr);

    // A backup of a selection backs up exactly its VMs.
    let r = lab.sk(&["--json", "backup", "folder:DC0/vm/prod/web"]).ok();
    let targets = r.json()["targets"].as_array().unwrap().clone();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(targets[0]["vm"], "web1");
    assert_eq!(targets[0]["status"], "succeeded");
    // One display name, whatever form selected the VM; the expansion and moref beside it.
    assert_eq!(targets[0]["target"], "vm:web1", "{targets:?}");
    let moref = targets[0]["moref"].as_str().unwrap().to_string();
    assert_eq!(
        targets[0]["selected_as"],
        format!("vm:{moref}"),
        "{targets:?}"
    );

    // datastore: means a disk there, not only the .vmx: a copy of web1 with its .vmx on
    // datastore1 and its disk on datastore2.
    lab.sk(&[
        "restore",
        "vm:web1",
        "--name",
        "split",
        "--disk-datastore",
        "0=datastore2",
    ])
    .ok();
    let split = lab.vm_info("split").unwrap();
    assert!(
        split["vmx_path"]
            .as_str()
            .unwrap()
            .starts_with("[datastore1]"),
        "{split}"
    );
    assert_eq!(
        resolve(&lab, &["--resolve", "datastore:datastore2"]),
        names(&["ds2vm", "split"])
    );
    assert_eq!(
        resolve(&lab, &["--resolve", "datastore:datastore1"]),
        names(&["web1", "app1", "far1", "pooled1", "plain1"])
    );
}
