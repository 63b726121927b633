//! RegisterVM_Task reads the .vmx back and builds the VM from it, as ESXi does.
mod common;

use common::*;

fn register(lab: &Lab, s: &Soap, path: &str, name: Option<&str>) -> String {
    let j = lab.json();
    let name = name
        .map(|n| format!("<name>{}</name>", xml_escape(n)))
        .unwrap_or_default();
    s.task(&format!(
        "<RegisterVM_Task xmlns=\"urn:vim25\"><_this type=\"Folder\">{}</_this><path>{}</path>{name}\
         <asTemplate>false</asTemplate><pool type=\"ResourcePool\">{}</pool></RegisterVM_Task>",
        j["vm_folder_moref"].as_str().unwrap(),
        xml_escape(path),
        j["pool_moref"].as_str().unwrap()
    ))
}

#[test]
fn unregister_then_register_rebuilds_the_same_vm_from_its_vmx() {
    let lab = Lab::up();
    let vm = lab
        .run(&[
            "create-vm",
            "--name",
            "src",
            "--disk",
            "8M",
            "--disk",
            "1M",
            "--nic",
            "VM Network",
            "--nic",
            "Lab Network 2",
            "--nic",
            "DC0_DVPG0",
            "--cpus",
            "4",
            "--memory-mb",
            "2048",
            "--firmware",
            "efi",
        ])
        .trim()
        .to_string();
    lab.write("src", 0, 12345, 100_000, 4);
    lab.write("src", 1, 0, 4096, 5);
    let digests = [lab.digest("src", 0), lab.digest("src", 1)];
    lab.run(&["power", "--vm", "src", "off"]);
    let before = lab.vm_info("src");

    let s = lab.soap();
    s.call(&format!("<UnregisterVM xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this></UnregisterVM>")).ok();
    let (ok, _, err) = lab.try_run(&["vm-info", "--vm", "src"]);
    assert!(!ok && err.contains("no VM named"), "{err}");

    let info = register(&lab, &s, "[datastore1] src/src.vmx", None);
    assert!(info.contains("<state>success</state>"), "{info}");
    let after = lab.vm_info("src");
    assert_ne!(after["moref"], before["moref"]);
    for field in [
        "uuid",
        "instance_uuid",
        "cpus",
        "memory_mb",
        "firmware",
        "guest_id",
        "vmx_path",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["power_state"], "poweredOff");
    let strip = |v: &serde_json::Value, keys: &[&str]| -> Vec<serde_json::Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let mut d = d.clone();
                for k in keys {
                    d.as_object_mut().unwrap().remove(*k);
                }
                d
            })
            .collect()
    };
    assert_eq!(
        strip(&after["disks"], &["key"]),
        strip(&before["disks"], &["key"])
    );
    let nets = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["nics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["network"].as_str().unwrap().into(),
                    n["mac"].as_str().unwrap().into(),
                    n["type"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(nets(&after), nets(&before));
    assert_eq!([lab.digest("src", 0), lab.digest("src", 1)], digests);

    // Registering the same .vmx twice is refused.
    let again = register(&lab, &s, "[datastore1] src/src.vmx", Some("src2"));
    assert!(
        again.contains("<state>error</state>") && again.contains("AlreadyExists"),
        "{again}"
    );
}

fn write_disk(dir: &std::path::Path, name: &str, sectors: u64, uuid: &str) {
    let flat = format!("{name}-flat.vmdk");
    std::fs::write(
        dir.join(format!("{name}.vmdk")),
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n\
             RW {sectors} VMFS \"{flat}\"\n\nddb.adapterType = \"lsilogic\"\nddb.uuid = \"{uuid}\"\n"
        ),
    )
    .unwrap();
    let f = std::fs::File::create(dir.join(flat)).unwrap();
    f.set_len(sectors * 512).unwrap();
}

#[test]
fn a_hand_written_vmx_is_registered_with_its_devices() {
    let lab = Lab::up();
    let ds1 = lab.datastore("datastore1");
    let ds2 = lab.datastore("datastore2");
    let folder = ds2.join("hand");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(ds1.join("other")).unwrap();
    write_disk(
        &folder,
        "hand",
        2048,
        "60 00 c2 91 11 22 33 44-55 66 77 88 99 aa bb cc",
    );
    write_disk(
        &ds1.join("other"),
        "data",
        4096,
        "60 00 c2 92 11 22 33 44-55 66 77 88 99 aa bb cd",
    );
    std::fs::write(
        folder.join("hand.vmx"),
        "config.version = \"8\"\nvirtualHW.version = \"14\"\ndisplayName = \"Hand | made\"\n\
         guestOS = \"ubuntu-64\"\nfirmware = \"efi\"\nnumvcpus = \"3\"\nmemSize = \"512\"\n\
         uuid.bios = \"42 10 aa bb cc dd ee ff-00 11 22 33 44 55 66 77\"\n\
         scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"lsilogic\"\n\
         scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"hand.vmdk\"\n\
         scsi0:2.present = \"TRUE\"\nscsi0:2.fileName = \"/vmfs/volumes/datastore1/other/data.vmdk\"\n\
         ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"e1000\"\nethernet0.networkName = \"Lab Network 2\"\n\
         ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:01:02:03\"\n",
    )
    .unwrap();
    let s = lab.soap();
    let info = register(&lab, &s, "[datastore2] hand/hand.vmx", None);
    assert!(info.contains("<state>success</state>"), "{info}");
    let vm = lab.vm_info("Hand | made");
    assert_eq!(vm["uuid"], "4210aabb-ccdd-eeff-0011-223344556677");
    assert_eq!(vm["firmware"], "efi");
    assert_eq!(vm["guest_id"], "ubuntu64Guest");
    assert_eq!(vm["cpus"], 3);
    assert_eq!(vm["memory_mb"], 512);
    let disks = vm["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["path"], "[datastore2] hand/hand.vmdk");
    assert_eq!(disks[0]["capacity"], 2048 * 512);
    assert_eq!(disks[0]["controller"], "lsilogic");
    assert_eq!(disks[1]["path"], "[datastore1] other/data.vmdk");
    assert_eq!(disks[1]["unit"], 2);
    assert_eq!(disks[1]["uuid"], "6000c292-1122-3344-5566-778899aabbcd");
    let nic = &vm["nics"][0];
    assert_eq!(nic["network"], "Lab Network 2");
    assert_eq!(nic["type"], "e1000");
    assert_eq!(nic["mac"], "00:50:56:01:02:03");
}

#[test]
fn registering_a_bad_vmx_fails_with_a_fault() {
    let lab = Lab::up();
    let s = lab.soap();
    let missing = register(&lab, &s, "[datastore1] nothing/here.vmx", None);
    assert!(
        missing.contains("<state>error</state>") && missing.contains("NotFound"),
        "{missing}"
    );

    let folder = lab.datastore("datastore1").join("badnet");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("badnet.vmx"),
        "displayName = \"badnet\"\nethernet0.present = \"TRUE\"\nethernet0.networkName = \"No Such Network\"\n",
    )
    .unwrap();
    let bad = register(&lab, &s, "[datastore1] badnet/badnet.vmx", None);
    assert!(
        bad.contains("<state>error</state>") && bad.contains("NotFound"),
        "{bad}"
    );
    let (ok, _, _) = lab.try_run(&["vm-info", "--vm", "badnet"]);
    assert!(!ok, "nothing half-registered");
}
