//! vApp backup end to end: `vapp:NAME` backs up each child VM as its own generation and
//! commits a vApp generation linking them (restore of vApps is not implemented yet).

use safekeeping_e2e::Lab;

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
    let r = lab.sk(&["restore", "vapp:shop"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    assert!(
        r.stderr.contains("not implemented yet"),
        "{}",
        r.all_output()
    );

    // A vApp that does not exist fails clearly; a second run adds generation 2.
    let r = lab.sk(&["--json", "backup", "vapp:nope", "vapp:shop"]);
    assert_eq!(r.code, 3, "{}", r.all_output());
    let j = r.json();
    assert_eq!(j["targets"][0]["status"], "failed", "{j}");
    assert!(
        j["targets"][0]["error"].as_str().unwrap().contains("nope"),
        "{j}"
    );
    assert_eq!(j["targets"][1]["generation"], 2, "{j}");
}
