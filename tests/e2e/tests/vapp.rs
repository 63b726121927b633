//! vApp backup end to end: `vapp:NAME` backs up each child VM as its own generation and
//! commits a vApp generation linking them; `restore vapp:NAME` rebuilds the vApp with its
//! children (disks by digest), start order remapped, powered on in that order.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use safekeeping_e2e::{sha256_file, Lab};

/// Every file of the repository with its digest (lock files left out).
fn repo_tree(lab: &Lab) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if !p.to_string_lossy().contains("lock") {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, sha256_file(&p));
            }
        }
    }
    let root = lab.dir().join("repo");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn vapp_backup_links_child_generations() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.lab(&[
        "create-vapp",
        "--name",
        "shop",
        "--vm",
        "web:8M",
        "--vm",
        "db:8M,4M",
    ])
    .ok();
    lab.guest_write("web", 0, "0", "1M", Some(1));
    lab.guest_write("db", 1, "0", "1M", Some(2));
    let web_digests = lab.digests("web", 1);
    let db_digests = lab.digests("db", 2);

    let r = lab.sk(&["--json", "backup", "vapp:shop"]).ok().json();
    let t = &r["targets"][0];
    assert_eq!(t["status"], "succeeded", "{r}");
    assert_eq!(t["generation"], 1, "{r}");
    assert!(t["bytes_read"].as_u64().unwrap() >= 2 << 20, "{r}");

    // The children are ordinary VM targets with their own generations.
    let list = lab.sk(&["list"]).ok().stdout;
    for name in ["shop", "web", "db"] {
        assert!(list.contains(name), "{name} missing: {list}");
    }
    let db = lab.sk(&["--json", "show", "vm:db"]).ok().json();
    assert_eq!(db["disks"].as_array().map(Vec::len), Some(2), "{db}");

    let show = lab.sk(&["show", "vapp:shop"]).ok().stdout;
    assert!(
        show.contains("vapp.json") && show.contains("vapp-config.xml"),
        "{show}"
    );
    restore_vapp_in_start_order(&lab, &web_digests, &db_digests);

    // A vApp that does not exist fails clearly; a second run adds generation 2.
    lab.guest_write("web", 0, "0", "1M", Some(9));
    assert_ne!(lab.digests("web", 1), web_digests);
    let r = lab.sk(&["--json", "backup", "vapp:nope", "vapp:shop"]);
    assert_eq!(r.code, 3, "{}", r.all_output());
    let j = r.json();
    assert_eq!(j["targets"][0]["status"], "failed", "{j}");
    assert!(
        j["targets"][0]["error"].as_str().unwrap().contains("nope"),
        "{j}"
    );
    assert_eq!(j["targets"][1]["generation"], 2, "{j}");

    // --generation 1 restores the children's first generations, not the latest.
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "vapp:shop",
            "--generation",
            "1",
            "--name",
            "old",
        ])
        .ok()
        .json();
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(r["children"][0]["generation"], 1, "{r}");
    assert_eq!(lab.digests("old-web", 1), web_digests);
    assert_eq!(lab.digests("old-db", 2), db_digests);
    let latest = lab
        .sk(&["--json", "restore", "vapp:shop", "--name", "new"])
        .ok()
        .json();
    assert_eq!(latest["generation"], 2, "{latest}");
    assert_eq!(lab.digests("new-web", 1), lab.digests("web", 1));
    // Without --power-on the children stay off.
    let web = lab.vm_info("new-web").unwrap();
    assert_eq!(web["power_state"], "poweredOff", "{web}");
}

/// `(name, moref, start_order)` of each child in `vapp-info`'s start order, and the morefs
/// the last power-on started, in order.
fn vapp_children(lab: &Lab, vapp: &str) -> (Vec<(String, String, i64)>, Vec<String>) {
    let info = lab.lab(&["vapp-info", "--vapp", vapp]).ok().json();
    let children = info["children"]
        .as_array()
        .unwrap_or_else(|| panic!("no children: {info}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["moref"].as_str().unwrap_or_default().to_string(),
                c["start_order"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let powered = info["last_power_on"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    (children, powered)
}

fn restore_vapp_in_start_order(lab: &Lab, web_digests: &[String], db_digests: &[String]) {
    let (original, _) = vapp_children(lab, "shop");
    let before = repo_tree(lab);
    assert!(before.len() > 3, "{before:?}");
    let r = lab
        .sk(&[
            "--json",
            "restore",
            "vapp:shop",
            "--name",
            "shop2",
            "--power-on",
        ])
        .ok()
        .json();
    assert_eq!(r["name"], "shop2", "{r}");
    assert_eq!(r["generation"], 1, "{r}");
    assert_eq!(r["children"].as_array().map(Vec::len), Some(2), "{r}");

    let (restored, powered) = vapp_children(lab, "shop2");
    let names: Vec<&str> = restored.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["shop2-web", "shop2-db"], "{restored:?}");
    // Same start groups as the original, child by child.
    let orders: Vec<i64> = restored.iter().map(|c| c.2).collect();
    let original_orders: Vec<i64> = original.iter().map(|c| c.2).collect();
    assert_eq!(orders, original_orders, "{restored:?} vs {original:?}");
    assert!(orders[0] < orders[1], "{restored:?}");
    // Powered on in that order.
    let morefs: Vec<String> = restored.iter().map(|c| c.1.clone()).collect();
    assert_eq!(powered, morefs, "{restored:?}");
    for name in ["shop2-web", "shop2-db"] {
        let info = lab
            .vm_info(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info["power_state"], "poweredOn", "{info}");
    }
    assert_eq!(lab.digests("shop2-web", 1), web_digests);
    assert_eq!(lab.digests("shop2-db", 2), db_digests);
    assert_eq!(repo_tree(lab), before, "the restore changed the repository");

    // Product and property sections, annotation, placement and every child's start/stop
    // settings come back as saved.
    let old = lab.lab(&["vapp-info", "--vapp", "shop"]).ok().json();
    let new = lab.lab(&["vapp-info", "--vapp", "shop2"]).ok().json();
    for field in ["products", "properties", "annotation", "parent"] {
        assert_eq!(new[field], old[field], "{field}: {new} vs {old}");
    }
    assert!(!old["properties"].as_array().unwrap().is_empty(), "{old}");
    for (o, n) in old["children"]
        .as_array()
        .unwrap()
        .iter()
        .zip(new["children"].as_array().unwrap())
    {
        for field in [
            "start_order",
            "start_delay",
            "start_action",
            "stop_delay",
            "stop_action",
            "tag",
        ] {
            assert_eq!(n[field], o[field], "{field}: {n} vs {o}");
        }
    }

    // A child's new name that is taken fails before anything is created.
    lab.create_vm("shop3-db", &["4M"], &[]);
    let taken = lab.sk(&["restore", "vapp:shop", "--name", "shop3"]);
    assert_eq!(taken.code, 1, "{}", taken.all_output());
    assert!(
        taken.stderr.contains("`shop3-db`") && taken.stderr.contains("nothing was created"),
        "{}",
        taken.all_output()
    );
    assert_ne!(lab.lab(&["vapp-info", "--vapp", "shop3"]).code, 0);
    assert!(lab.vm_info("shop3-web").is_none());

    // The same name again is refused before anything is created.
    let again = lab.sk(&["restore", "vapp:shop", "--name", "shop2"]);
    assert_eq!(again.code, 1, "{}", again.all_output());
    assert!(again.stderr.contains("shop2"), "{}", again.all_output());
    assert!(lab.vm_info("shop2-web").is_some());
}

#[test]
fn an_interrupted_vapp_restore_destroys_the_vapp_and_its_children() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.lab(&[
        "create-vapp",
        "--name",
        "app",
        "--vm",
        "front:8M",
        "--vm",
        "back:8M",
    ])
    .ok();
    lab.guest_write("front", 0, "0", "4M", Some(3));
    lab.guest_write("back", 0, "0", "4M", Some(4));
    lab.sk(&["backup", "vapp:app"]).ok();

    lab.vddk_conf_append("fake.write_latency_ms = 3000");
    let child = lab.sk_spawn(&["restore", "vapp:app", "--name", "half"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.vm_info("half-front").is_none() {
        assert!(Instant::now() < deadline, "the first child never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, stderr) = safekeeping_e2e::stop_with("INT", child);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("restoring child VM `front`") && stderr.contains("was destroyed"),
        "{stderr}"
    );
    assert!(
        lab.vm_info("half-front").is_none(),
        "the partial child is gone"
    );
    assert!(lab.vm_info("half-back").is_none());
    let info = lab.lab(&["vapp-info", "--vapp", "half"]);
    assert_ne!(info.code, 0, "the partial vApp is gone: {}", info.stdout);
    lab.vddk_conf_remove("fake.write_latency_ms");
    lab.sk(&["check"]).ok();
    // The originals are untouched.
    assert_eq!(vapp_children(&lab, "app").0.len(), 2);
}
