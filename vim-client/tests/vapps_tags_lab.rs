//! vApps, tags and first class disk attachments against the lab.

mod support;

use std::collections::HashMap;

use support::Lab;
use vim_client::xml::Element;
use vim_client::*;

fn lab_vapp_info(lab: &Lab, vapp: &str) -> serde_json::Value {
    serde_json::from_str(&lab.run(&["vapp-info", "--vapp", vapp])).unwrap()
}

fn small_vm_spec(name: &str) -> Element {
    Element::vim("config")
        .typed("VirtualMachineConfigSpec")
        .text_child("name", name)
        .text_child("guestId", "otherGuest64")
        .child(Element::vim("files").text_child("vmPathName", "[datastore1]"))
        .text_child("numCPUs", "1")
        .text_child("memoryMB", "128")
}

#[tokio::test]
async fn vapps_read_rebuild_power_and_destroy() {
    let lab = Lab::up();
    lab.run(&[
        "create-vapp",
        "--name",
        "shop",
        "--vm",
        "db:1M",
        "--vm",
        "app:1M",
    ]);
    let c = lab.client().await;
    let shop = c.find_vapp_by_name("shop").await.unwrap();
    assert_eq!(shop.kind, "VirtualApp");
    let listed = c.list_vapps().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "shop");
    let err = c.find_vapp_by_name("nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownObject { known, .. } if known == &["shop"]),
        "{err}"
    );

    let info = c.vapp_info(&shop).await.unwrap();
    let db = c.find_vm_by_name("db").await.unwrap();
    let app = c.find_vm_by_name("app").await.unwrap();
    assert_eq!(info.name, "shop");
    assert_eq!(info.vms.len(), 2);
    let keys: Vec<_> = info
        .start_order
        .iter()
        .map(|e| e.key.clone().unwrap())
        .collect();
    assert_eq!(keys, [db.clone(), app.clone()]);
    assert_eq!(info.start_order[1].start_delay, Some(20));
    assert_eq!(info.start_order[0].stop_action.as_deref(), Some("powerOff"));
    let saved = info.vapp_config.clone().expect("vAppConfig");
    assert!(info.resource_config.is_some());

    // Rebuild it elsewhere as a restore does: create, children, then entities, remapped.
    let pool = MoRef::new("ResourcePool", lab.str("pool_moref"));
    let probe = vapp_config_spec_from_info(&saved, &HashMap::new()).unwrap();
    let copy = c
        .create_vapp(
            "shop-restored",
            &pool,
            None,
            &probe.create_spec,
            &default_resource_config_spec(),
        )
        .await
        .unwrap();
    let new_app = c
        .create_child_vm(&copy, &small_vm_spec("app-restored"), None)
        .await
        .unwrap();
    let new_db = c
        .create_child_vm(&copy, &small_vm_spec("db-restored"), None)
        .await
        .unwrap();
    let remap = HashMap::from([(db.clone(), new_db.clone()), (app.clone(), new_app.clone())]);
    let spec = vapp_config_spec_from_info(&saved, &remap).unwrap();
    assert!(spec.unmapped.is_empty());
    c.update_vapp_config(&copy, &spec.entity_spec)
        .await
        .unwrap();
    let restored = c.vapp_info(&copy).await.unwrap();
    let keys: Vec<_> = restored
        .start_order
        .iter()
        .map(|e| e.key.clone().unwrap())
        .collect();
    // Created app first, but db starts first as in the original.
    assert_eq!(keys, [new_db.clone(), new_app.clone()]);
    let strip = |v: &[VAppEntity]| -> Vec<_> {
        v.iter()
            .map(|e| {
                (
                    e.start_order,
                    e.start_delay,
                    e.start_action.clone(),
                    e.stop_delay,
                )
            })
            .collect()
    };
    assert_eq!(strip(&restored.start_order), strip(&info.start_order));
    let rc = restored.vapp_config.unwrap();
    assert_eq!(rc.text_at("product/vendor"), Some("safekeeping lab"));
    let values: Vec<_> = rc
        .all("property")
        .filter_map(|p| p.text_at("value"))
        .collect();
    assert_eq!(values, ["shop", "8443"]);

    // An entity that is not a child is refused.
    let bad =
        vapp_config_spec_from_info(&saved, &HashMap::from([(db.clone(), db.clone())])).unwrap();
    let err = c
        .update_vapp_config(&copy, &bad.entity_spec)
        .await
        .unwrap_err();
    assert_eq!(err.fault_kind(), Some(&FaultKind::InvalidArgument), "{err}");

    c.power_on_vapp(&copy).await.unwrap();
    let order = lab_vapp_info(&lab, "shop-restored")["last_power_on"].clone();
    assert_eq!(order, serde_json::json!([new_db.value, new_app.value]));
    assert_eq!(
        c.vm_info(&new_app).await.unwrap().power_state,
        PowerState::PoweredOn
    );
    c.power_off_vapp(&copy, true).await.unwrap();
    assert_eq!(
        c.vm_info(&new_db).await.unwrap().power_state,
        PowerState::PoweredOff
    );

    c.destroy(&copy).await.unwrap();
    assert!(c.find_vapp_by_name("shop-restored").await.is_err());
    let err = c.vm_info(&new_db).await.unwrap_err();
    assert!(
        err.fault_kind().is_some(),
        "children go with the vApp: {err}"
    );
    assert_eq!(c.list_vapps().await.unwrap().len(), 1);
}

#[tokio::test]
async fn tags_on_vms_vapps_and_first_class_disks() {
    let lab = Lab::up();
    let vm = lab.create_vm("tagged", &["--disk", "1M"]);
    lab.create_vm("untagged", &["--disk", "1M"]);
    lab.run(&["create-vapp", "--name", "va", "--vm", "inner:1M"]);
    lab.run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vm:tagged",
    ]);
    lab.run(&[
        "tag",
        "--category",
        "backup",
        "--tag",
        "gold",
        "--attach",
        "vapp:va",
    ]);
    lab.run(&["tag", "--category", "other", "--tag", "gold"]);
    lab.run(&["tag", "--category", "backup", "--tag", "silver"]);
    let c = lab.client().await;
    let ds = c
        .find_by_name(InventoryKind::Datastore, "datastore1")
        .await
        .unwrap();
    let disk = c
        .fcd_create("tagged-disk", &ds, 1, None, Provisioning::Thin)
        .await
        .unwrap();
    c.fcd_attach_tag(&disk.id, "backup", "gold").await.unwrap();
    assert_eq!(
        c.fcd_attached_to_tag("backup", "gold").await.unwrap(),
        [disk.id.as_str()]
    );
    assert_eq!(
        c.fcd_tags(&disk.id).await.unwrap(),
        [("backup".to_string(), "gold".to_string())]
    );
    let err = c
        .fcd_attach_tag(&disk.id, "backup", "nope")
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");

    let t = c.tagging().await.unwrap();
    let names: Vec<_> = t
        .categories()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["backup", "other"]);
    let err = t.find_tag(None, "gold").await.unwrap_err();
    assert!(matches!(err, Error::Ambiguous { count: 2, .. }), "{err}");
    let err = t.find_tag(Some("backup"), "bronze").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownObject { known, .. } if known.contains(&"backup/silver".to_string())),
        "{err}"
    );
    let gold = t.find_tag(Some("backup"), "gold").await.unwrap();
    let objects = t.attached_objects(&gold.id).await.unwrap();
    let va = c.find_vapp_by_name("va").await.unwrap();
    let morefs: Vec<_> = objects.iter().filter_map(TaggedObject::moref).collect();
    assert_eq!(morefs, [va, vm.clone()]);
    let fcds: Vec<_> = objects
        .iter()
        .filter_map(TaggedObject::first_class_disk_id)
        .collect();
    assert_eq!(fcds, [disk.id.as_str()]);
    assert_eq!(t.attached_tags(&vm).await.unwrap(), [gold.id.as_str()]);
    t.logout().await.unwrap();

    let err = c
        .tagging_as(&lab.user(), &Secret::new("wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.fault_kind(), Some(&FaultKind::InvalidLogin), "{err}");
    // A client that never logged in with a password has no credentials for vAPI.
    let anonymous = Client::connect(&lab.options(lab.pinned())).await.unwrap();
    assert!(matches!(anonymous.tagging().await, Err(Error::NotLoggedIn)));
}

#[tokio::test]
async fn vms_using_a_first_class_disk() {
    let lab = Lab::up();
    let vm = lab.create_vm("fcd-user", &["--disk", "1M", "--powered-off"]);
    lab.create_vm("bystander", &["--disk", "1M"]);
    let c = lab.client().await;
    let ds = c
        .find_by_name(InventoryKind::Datastore, "datastore1")
        .await
        .unwrap();
    let disk = c
        .fcd_create("shared", &ds, 1, None, Provisioning::Thin)
        .await
        .unwrap();
    assert!(c.vms_with_fcd(&disk.id, &ds).await.unwrap().is_empty());
    let config = c.vm_config(&vm).await.unwrap();
    let controller = config
        .devices
        .iter()
        .find(|d| d.as_controller().is_some())
        .unwrap()
        .key;
    let path = disk.file_path.clone().unwrap();
    let spec = Element::vim("spec")
        .typed("VirtualMachineConfigSpec")
        .child(
            Element::vim("deviceChange")
                .text_child("operation", "add")
                .child(
                    Element::vim("device")
                        .typed("VirtualDisk")
                        .text_child("key", "-1")
                        .child(
                            Element::vim("backing")
                                .typed("VirtualDiskFlatVer2BackingInfo")
                                .text_child("fileName", path.clone())
                                .text_child("diskMode", "persistent"),
                        )
                        .text_child("controllerKey", controller.to_string())
                        .text_child("unitNumber", "1")
                        .text_child("capacityInKB", "1024"),
                ),
        );
    c.reconfigure_vm(&vm, &spec).await.unwrap();
    let users = c.vms_with_fcd(&disk.id, &ds).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].vm, vm);
    assert_eq!(users[0].vm_name, "fcd-user");
    assert_eq!(users[0].file_name, path);
    assert!(!users[0].by_vdisk_id);

    // AttachDisk_Task: the device carries vDiskId.
    let other = c
        .fcd_create("attached", &ds, 2, None, Provisioning::Thin)
        .await
        .unwrap();
    let bystander = c.find_vm_by_name("bystander").await.unwrap();
    c.fcd_attach_to_vm(&bystander, &other.id, &ds, None, None)
        .await
        .unwrap();
    let err = c
        .fcd_attach_to_vm(&bystander, &other.id, &ds, None, None)
        .await
        .unwrap_err();
    assert_eq!(err.fault_kind(), Some(&FaultKind::InvalidState), "{err}");
    let users = c.vms_with_fcd(&other.id, &ds).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].vm, bystander);
    assert!(users[0].by_vdisk_id);
    assert_eq!(users[0].file_name, other.file_path.clone().unwrap());
    let disks = c.vm_config(&bystander).await.unwrap();
    let attached = disks
        .devices
        .iter()
        .find(|d| d.key == users[0].device_key)
        .and_then(|d| d.as_disk())
        .unwrap();
    assert_eq!(attached.capacity_in_bytes, 2 * 1024 * 1024);
    c.fcd_detach_from_vm(&bystander, &other.id).await.unwrap();
    assert!(c.vms_with_fcd(&other.id, &ds).await.unwrap().is_empty());
    assert!(
        c.fcd_retrieve(&other.id, &ds).await.is_ok(),
        "detaching keeps the disk"
    );
    let err = c
        .fcd_detach_from_vm(&bystander, &other.id)
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");

    let err = c.vms_with_fcd("no-such-disk", &ds).await.unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");
}
