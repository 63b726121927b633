//! create-vm makes real disks and a real .vmx; guest-write and disk-digest agree with an
//! independent computation.
mod common;

use common::*;

#[test]
fn create_vm_writes_descriptors_with_true_capacity_and_a_vmx() {
    let lab = Lab::up();
    let moref = lab.run(&[
        "create-vm",
        "--name",
        "web01",
        "--disk",
        "64M",
        "--disk",
        "2G",
        "--nic",
        "VM Network",
        "--nic",
        "Lab Network 2",
        "--datastore",
        "datastore2",
        "--controller",
        "lsilogic",
        "--nic-type",
        "e1000",
    ]);
    assert!(moref.trim().starts_with("vm-"), "moref: {moref}");
    let info = lab.vm_info("web01");
    assert_eq!(info["power_state"], "poweredOn");
    assert_eq!(info["change_tracking"], false);
    let disks = info["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["path"], "[datastore2] web01/web01.vmdk");
    assert_eq!(disks[0]["capacity"], 64u64 << 20);
    assert_eq!(disks[1]["capacity"], 2u64 << 30);
    assert_eq!(disks[0]["controller"], "lsilogic");

    let ds = lab.datastore("datastore2");
    let desc = std::fs::read_to_string(ds.join("web01/web01.vmdk")).unwrap();
    assert!(desc.starts_with("# Disk DescriptorFile"), "{desc}");
    assert!(
        desc.contains("RW 131072 VMFS \"web01-flat.vmdk\""),
        "{desc}"
    );
    assert!(desc.contains("ddb.uuid = \"60 00 c2"), "{desc}");
    let desc1 = std::fs::read_to_string(ds.join("web01/web01_1.vmdk")).unwrap();
    assert!(
        desc1.contains("RW 4194304 VMFS \"web01_1-flat.vmdk\""),
        "{desc1}"
    );
    let flat = std::fs::metadata(ds.join("web01/web01_1-flat.vmdk")).unwrap();
    assert_eq!(flat.len(), 2 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(flat.blocks() * 512 < 1 << 20, "the 2G extent is sparse");

    let vmx = std::fs::read_to_string(ds.join("web01/web01.vmx")).unwrap();
    for line in [
        "displayName = \"web01\"",
        "numvcpus = \"2\"",
        "memSize = \"1024\"",
        "guestOS = \"other-64\"",
        "firmware = \"bios\"",
        "scsi0.virtualDev = \"lsilogic\"",
        "scsi0:0.fileName = \"web01.vmdk\"",
        "scsi0:1.fileName = \"web01_1.vmdk\"",
        "ethernet0.virtualDev = \"e1000\"",
        "ethernet0.networkName = \"VM Network\"",
        "ethernet1.networkName = \"Lab Network 2\"",
        "ctkEnabled = \"FALSE\"",
    ] {
        assert!(vmx.contains(line), "missing {line:?} in\n{vmx}");
    }
    let uuid = info["uuid"].as_str().unwrap().replace('-', "");
    assert!(
        vmx.contains(&format!("uuid.bios = \"{}", &uuid[0..2])),
        "{vmx}"
    );
    let nvram = std::fs::read(ds.join("web01/web01.nvram")).unwrap();
    assert_eq!(nvram.len(), 8192);
}

#[test]
fn guest_write_and_disk_digest_agree_with_an_independent_computation() {
    let lab = Lab::up();
    lab.run(&[
        "create-vm",
        "--name",
        "db01",
        "--disk",
        "8M",
        "--disk",
        "1M",
    ]);
    let mut expected = vec![0u8; 8 << 20];
    assert_eq!(
        lab.digest("db01", 0),
        sha256_hex(&expected),
        "new disks read as zeros"
    );

    let writes: [(u64, u64, u64); 3] = [
        (0, 4096, 1),
        (1_000_000, 300_001, 2),
        ((8 << 20) - 77, 77, 3),
    ];
    for (offset, len, seed) in writes {
        lab.write("db01", 0, offset, len, seed);
        expected[offset as usize..(offset + len) as usize]
            .copy_from_slice(&pattern(seed, len as usize));
    }
    lab.run(&[
        "guest-write",
        "--vm",
        "db01",
        "--disk",
        "0",
        "--offset",
        "1100000",
        "--len",
        "5000",
        "--zero",
    ]);
    expected[1_100_000..1_105_000].fill(0);

    let digest = lab.digest("db01", 0);
    assert_eq!(digest, sha256_hex(&expected));
    // The simulator's digest and safekeeping-lab's own (--local) agree.
    let local = lab.run(&["disk-digest", "--vm", "db01", "--disk", "0", "--local"]);
    assert_eq!(local.trim(), digest);
    assert_eq!(lab.digest_path("[datastore1] db01/db01.vmdk"), digest);
    assert_eq!(
        lab.digest("db01", 1),
        sha256_hex(&vec![0u8; 1 << 20]),
        "disk 1 untouched"
    );

    let (ok, _, err) = lab.try_run(&[
        "guest-write",
        "--vm",
        "db01",
        "--disk",
        "0",
        "--offset",
        "8M",
        "--len",
        "1",
        "--seed",
        "1",
    ]);
    assert!(!ok && err.contains("outside the disk"), "{err}");
    let (ok, _, err) = lab.try_run(&[
        "guest-write",
        "--vm",
        "db01",
        "--disk",
        "5",
        "--offset",
        "0",
        "--len",
        "1",
    ]);
    assert!(!ok && err.contains("disk 5 does not exist"), "{err}");
    let (ok, _, err) = lab.try_run(&["disk-digest", "--vm", "nope", "--disk", "0"]);
    assert!(!ok && err.contains("no VM named"), "{err}");
}

#[test]
fn first_class_disks_get_real_files() {
    let lab = Lab::up();
    let s = lab.soap();
    let ds = lab.json()["datastore_morefs"]["datastore2"]
        .as_str()
        .unwrap()
        .to_string();
    let info = s.task(&format!(
        "<CreateDisk_Task xmlns=\"urn:vim25\"><_this type=\"VcenterVStorageObjectManager\">VStorageObjectManager</_this>\
         <spec><name>fcd1</name><capacityInMB>16</capacityInMB>\
         <backingSpec xsi:type=\"VslmCreateSpecDiskFileBackingSpec\"><datastore type=\"Datastore\">{ds}</datastore>\
         <provisioningType>thin</provisioningType></backingSpec></spec></CreateDisk_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    let path = between(&info, "<filePath>", "<").expect("backing filePath");
    assert!(path.starts_with("[datastore2] fcd/"), "{path}");
    let desc = std::fs::read_to_string(local(&lab, &path)).unwrap();
    assert!(desc.contains("RW 32768 VMFS"), "{desc}");
    assert_eq!(lab.digest_path(&path), sha256_hex(&vec![0u8; 16 << 20]));
}

#[test]
fn reconfigure_adds_and_grows_disks_and_destroy_removes_the_vm() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "r", "--disk", "1M"])
        .trim()
        .to_string();
    let info = lab.vm_info("r");
    let ctrl = info["disks"][0]["controller_key"].as_i64().unwrap();
    let key = info["disks"][0]["key"].as_i64().unwrap();
    let s = lab.soap();
    let add = s.task(&format!(
        "<ReconfigVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this><spec><deviceChange>\
         <operation>add</operation><fileOperation>create</fileOperation><device xsi:type=\"VirtualDisk\">\
         <key>-1</key><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>[datastore2]</fileName>\
         <diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned></backing>\
         <controllerKey>{ctrl}</controllerKey><unitNumber>3</unitNumber><capacityInKB>2048</capacityInKB></device>\
         </deviceChange></spec></ReconfigVM_Task>"
    ));
    assert!(add.contains("<state>success</state>"), "{add}");
    let info = lab.vm_info("r");
    let disks = info["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[1]["datastore"], "datastore2");
    assert_eq!(disks[1]["capacity"], 2 << 20);
    let added = std::fs::read_to_string(local(&lab, disks[1]["path"].as_str().unwrap())).unwrap();
    assert!(added.contains("RW 4096 VMFS"), "{added}");

    lab.write("r", 0, 0, 1000, 8);
    let grow = s.task(&format!(
        "<ReconfigVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this><spec><deviceChange>\
         <operation>edit</operation><device xsi:type=\"VirtualDisk\"><key>{key}</key>\
         <backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>persistent</diskMode></backing>\
         <controllerKey>{ctrl}</controllerKey><unitNumber>0</unitNumber><capacityInKB>4096</capacityInKB></device>\
         </deviceChange></spec></ReconfigVM_Task>",
        disks[0]["path"].as_str().unwrap()
    ));
    assert!(grow.contains("<state>success</state>"), "{grow}");
    let grown = std::fs::read_to_string(local(&lab, disks[0]["path"].as_str().unwrap())).unwrap();
    assert!(grown.contains("RW 8192 VMFS"), "{grown}");
    let mut expected = vec![0u8; 4 << 20];
    expected[..1000].copy_from_slice(&pattern(8, 1000));
    assert_eq!(
        lab.digest("r", 0),
        sha256_hex(&expected),
        "data kept, new space reads as zeros"
    );

    lab.run(&["power", "--vm", "r", "off"]);
    let gone = s.task(&format!("<Destroy_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this></Destroy_Task>"));
    assert!(gone.contains("<state>success</state>"), "{gone}");
    let (ok, _, _) = lab.try_run(&["vm-info", "--vm", "r"]);
    assert!(!ok);
    assert!(
        !lab.datastore("datastore1").join("r/r.vmdk").exists(),
        "Destroy deletes the VM's files"
    );
}
