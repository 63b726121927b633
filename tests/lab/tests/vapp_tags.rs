//! vApps (create-vapp, vAppConfig, start order, PowerOnVApp/PowerOffVApp, Destroy) and tags
//! (the vAPI REST endpoint on the lab's server, with the lab's credentials).
mod common;

use common::*;
use serde_json::{json, Value};

fn vapp_info(lab: &Lab, vapp: &str) -> Value {
    serde_json::from_str(&lab.run(&["vapp-info", "--vapp", vapp])).unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn vapps_keep_their_configuration_and_power_children_in_start_order() {
    let lab = Lab::up();
    // Start order is argument order, not name order.
    let moref = lab
        .run(&[
            "create-vapp",
            "--name",
            "shop",
            "--vm",
            "zdb:1M",
            "--vm",
            "app:1M,2M",
            "--vm",
            "web:1M",
        ])
        .trim()
        .to_string();
    assert!(moref.starts_with("virtualapp-"), "{moref}");
    let info = vapp_info(&lab, "shop");
    assert_eq!(names(&info["children"]), ["zdb", "app", "web"]);
    let orders: Vec<i64> = info["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["start_order"].as_i64().unwrap())
        .collect();
    assert_eq!(orders, [1, 2, 3]);
    assert_eq!(lab.vm_info("app")["disks"].as_array().unwrap().len(), 2);
    assert!(local(&lab, lab.vm_info("app")["vmx_path"].as_str().unwrap()).exists());
    assert_eq!(lab.vm_info("web")["power_state"], "poweredOff");

    // Through the API as a backup tool reads it.
    let s = lab.soap();
    let cfg = s.property("VirtualApp", &moref, "vAppConfig");
    assert_eq!(
        all_between(&cfg, "<startOrder>", "<"),
        ["1", "2", "3"],
        "{cfg}"
    );
    assert!(cfg.contains("<id>lab.port</id>"), "{cfg}");
    assert!(cfg.contains("<value>8443</value>"), "{cfg}");
    assert!(cfg.contains("<vendor>safekeeping lab</vendor>"), "{cfg}");
    let web = lab.vm_info("web")["moref"].as_str().unwrap().to_string();
    let parent = s.property("VirtualMachine", &web, "parentVApp");
    assert!(parent.contains(&moref), "{parent}");

    // Reorder through UpdateVAppConfig: web first.
    let up = s.call(&format!(
        "<UpdateVAppConfig xmlns=\"urn:vim25\"><_this type=\"VirtualApp\">{moref}</_this><spec>\
         <entityConfig><key type=\"VirtualMachine\">{web}</key><startOrder>0</startOrder></entityConfig>\
         </spec></UpdateVAppConfig>"
    ));
    up.ok();
    // startOrder 0 is "unset" on the wire (omitempty): order unchanged.
    assert_eq!(
        names(&vapp_info(&lab, "shop")["children"]),
        ["zdb", "app", "web"]
    );
    s.call(&format!(
        "<UpdateVAppConfig xmlns=\"urn:vim25\"><_this type=\"VirtualApp\">{moref}</_this><spec>\
         <entityConfig><key type=\"VirtualMachine\">{web}</key><startOrder>1</startOrder></entityConfig>\
         <entityConfig><key type=\"VirtualMachine\">{}</key><startOrder>5</startOrder></entityConfig>\
         </spec></UpdateVAppConfig>",
        lab.vm_info("zdb")["moref"].as_str().unwrap()
    ))
    .ok();
    let bad = s.call(&format!(
        "<UpdateVAppConfig xmlns=\"urn:vim25\"><_this type=\"VirtualApp\">{moref}</_this><spec>\
         <entityConfig><key type=\"VirtualMachine\">vm-99999</key><startOrder>1</startOrder></entityConfig>\
         </spec></UpdateVAppConfig>"
    ));
    assert!(bad.body.contains("InvalidArgument"), "{}", bad.body);

    let on = s.task(&format!(
        "<PowerOnVApp_Task xmlns=\"urn:vim25\"><_this type=\"VirtualApp\">{moref}</_this></PowerOnVApp_Task>"
    ));
    assert!(on.contains("<state>success</state>"), "{on}");
    let info = vapp_info(&lab, "shop");
    let morefs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!(lab.vm_info(n)["moref"].as_str().unwrap()))
            .collect()
    };
    // web (1) and app (2), then zdb (5); ties keep entityConfig order.
    assert_eq!(
        info["last_power_on"].as_array().unwrap(),
        &morefs(&["web", "app", "zdb"])
    );
    assert_eq!(lab.vm_info("zdb")["power_state"], "poweredOn");

    let off: Value =
        serde_json::from_str(&lab.run(&["power-vapp", "--vapp", "shop", "off"])).unwrap();
    assert_eq!(
        off["order"].as_array().unwrap(),
        &morefs(&["zdb", "app", "web"])
    );
    assert_eq!(lab.vm_info("web")["power_state"], "poweredOff");

    // Destroy takes the children with it, files included.
    let vmx = local(&lab, lab.vm_info("app")["vmx_path"].as_str().unwrap());
    let gone = s.task(&format!(
        "<Destroy_Task xmlns=\"urn:vim25\"><_this type=\"VirtualApp\">{moref}</_this></Destroy_Task>"
    ));
    assert!(gone.contains("<state>success</state>"), "{gone}");
    let (ok, _, err) = lab.try_run(&["vm-info", "--vm", "app"]);
    assert!(!ok && err.contains("no VM named"), "{err}");
    assert!(!vmx.exists(), "{} is deleted with its VM", vmx.display());
    let (ok, _, err) = lab.try_run(&["vapp-info", "--vapp", "shop"]);
    assert!(!ok && err.contains("no vApp named"), "{err}");
}

#[test]
fn create_vapp_rejects_bad_arguments() {
    let lab = Lab::up();
    let (ok, _, err) = lab.try_run(&["create-vapp", "--name", "x", "--vm", "nodisk"]);
    assert!(!ok && err.contains("NAME:SIZE"), "{err}");
    let (ok, _, err) = lab.try_run(&["create-vapp", "--name", "x", "--vm", "a:1M", "--vm", "a:1M"]);
    assert!(!ok && err.contains("named twice"), "{err}");
    lab.run(&["create-vm", "--name", "taken", "--disk", "1M"]);
    let (ok, _, err) = lab.try_run(&["create-vapp", "--name", "x", "--vm", "taken:1M"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = lab.try_run(&["tag", "--category", "c", "--tag", "t", "--attach", "vm"]);
    assert!(!ok && err.contains("vm:NAME"), "{err}");
    let (ok, _, err) = lab.try_run(&[
        "tag",
        "--category",
        "c",
        "--tag",
        "t",
        "--attach",
        "vm:nope",
    ]);
    assert!(!ok && err.contains("no VM named"), "{err}");
}

/// The vAPI REST session with the lab's certificate.
fn rest(lab: &Lab) -> (reqwest::blocking::Client, String) {
    let pem = std::fs::read(lab.dir.join("lab-cert.pem")).unwrap();
    let http = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}/rest", lab.json()["port"]);
    (http, base)
}

#[test]
fn tags_are_served_over_vapi_with_the_lab_credentials() {
    let lab = Lab::up();
    lab.run(&["create-vm", "--name", "tagged", "--disk", "1M"]);
    lab.run(&["create-vm", "--name", "plain", "--disk", "1M"]);
    lab.run(&["create-vapp", "--name", "va", "--vm", "inner:1M"]);
    let (http, base) = rest(&lab);
    let user = lab.json()["user"].as_str().unwrap().to_string();
    let password = std::fs::read_to_string(lab.dir.join("password")).unwrap();

    let wrong = http
        .post(format!("{base}/com/vmware/cis/session"))
        .basic_auth(&user, Some("not-the-password"))
        .send()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let anonymous = http
        .get(format!("{base}/com/vmware/cis/tagging/tag"))
        .send()
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let ds = lab.json()["datastore_morefs"]["datastore1"]
        .as_str()
        .unwrap()
        .to_string();
    let info = lab.soap().task(&format!(
        "<CreateDisk_Task xmlns=\"urn:vim25\"><_this type=\"VcenterVStorageObjectManager\">VStorageObjectManager</_this>\
         <spec><name>tagged-fcd</name><capacityInMB>1</capacityInMB>\
         <backingSpec xsi:type=\"VslmCreateSpecDiskFileBackingSpec\"><datastore type=\"Datastore\">{ds}</datastore>\
         <provisioningType>thin</provisioningType></backingSpec></spec></CreateDisk_Task>"
    ));
    let fcd = between(&info, "<id><id>", "<").unwrap();
    let (ok, _, err) = lab.try_run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "ivd:no-such-disk",
    ]);
    assert!(!ok && err.contains("no first class disk"), "{err}");
    let a: Value = serde_json::from_str(&lab.run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vm:tagged",
    ]))
    .unwrap();
    let b: Value = serde_json::from_str(&lab.run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vapp:va",
    ]))
    .unwrap();
    assert_eq!(a["tag_id"], b["tag_id"], "an existing tag is reused");
    assert_eq!(b["object"]["type"], "VirtualApp");
    lab.run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        &format!("ivd:{fcd}"),
    ]);

    let session: Value = http
        .post(format!("{base}/com/vmware/cis/session"))
        .basic_auth(&user, Some(&password))
        .send()
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let sid = session["value"].as_str().unwrap().to_string();
    let tag = a["tag_id"].as_str().unwrap();
    let attached: Value = serde_json::from_str(
        &http
            .post(format!(
                "{base}/com/vmware/cis/tagging/tag-association/id:{tag}?~action=list-attached-objects"
            ))
            .header("vmware-api-session-id", &sid)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .unwrap()
            .text()
            .unwrap(),
    )
    .unwrap();
    let mut objects: Vec<(String, String)> = attached["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().into(),
                o["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    objects.sort();
    let vm = lab.vm_info("tagged")["moref"].as_str().unwrap().to_string();
    let va = vapp_info(&lab, "va")["moref"].as_str().unwrap().to_string();
    assert_eq!(
        objects,
        [
            ("VirtualApp".to_string(), va),
            ("VirtualMachine".to_string(), vm),
            ("fcd".to_string(), fcd)
        ]
    );
}
