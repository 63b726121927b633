//! Every client operation against the lab (the extended vcsim started by `safekeeping-lab up`).

mod support;

use std::time::Duration;

use support::Lab;
use vim_client::*;

const MIB: u64 = 1024 * 1024;

fn fault_kind(e: &Error) -> FaultKind {
    match e {
        Error::Fault { kind, .. } => kind.clone(),
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test]
async fn login_good_and_bad_password_and_thumbprints() {
    let lab = Lab::up();
    let c = Client::connect(&lab.options(lab.pinned())).await.unwrap();
    assert!(c.session_cookie().is_none());
    let err = c
        .login(&lab.user(), &Secret::new("wrong"))
        .await
        .unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::InvalidLogin, "{err}");
    c.login(&lab.user(), &lab.password()).await.unwrap();
    assert!(c.session_cookie().is_some_and(|v| !v.is_empty()));
    let us = c.user_session().unwrap();
    assert!(!us.key.is_empty());
    assert_eq!(us.user_name, lab.user());
    let t = c.server_thumbprints().unwrap();
    assert_eq!(t.sha256, lab.str("thumbprint_sha256"));
    assert_eq!(t.sha1, lab.str("thumbprint_sha1"));
    assert_eq!(c.service_content().about.api_type, "VirtualCenter");
    let debug = format!("{c:?}");
    assert!(!debug.contains(lab.password().expose()));
    c.logout().await.unwrap();
    assert!(c.session_cookie().is_none());
    assert!(c.user_session().is_none());
}

#[tokio::test]
async fn tls_pin_mismatch_ca_file_and_system_roots() {
    let lab = Lab::up();
    let wrong = "AB".repeat(32);
    let err = Client::connect(&lab.options(Tls::PinnedSha256(wrong)))
        .await
        .unwrap_err();
    match &err {
        Error::CertificateMismatch {
            presented_sha256, ..
        } => assert_eq!(*presented_sha256, lab.str("thumbprint_sha256")),
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&lab.str("thumbprint_sha256")));
    // The lab's self-signed certificate as CA file verifies; system roots do not know it.
    let ca = lab.str("ca_file");
    Client::connect(&lab.options(Tls::CaFile(ca.into())))
        .await
        .unwrap();
    let err = Client::connect(&lab.options(Tls::SystemRoots))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(m) if m.contains(&lab.str("thumbprint_sha256"))),
        "{err}"
    );
    let err = Client::connect(&lab.options(Tls::CaFile("/nonexistent/ca.pem".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(m) if m.contains("/nonexistent/ca.pem")),
        "{err}"
    );
    Client::connect(&lab.options(Tls::Insecure)).await.unwrap();
}

#[tokio::test]
async fn transparent_relogin_after_the_session_ends() {
    let lab = Lab::up();
    let vm = lab.create_vm("keep01", &["--disk", "8M"]);
    let c = lab.client().await;
    let before = c.session_cookie().unwrap();
    // End the session behind the client's back.
    let sm = c.service_content().session_manager.clone().unwrap();
    c.call(xml::Element::vim("Logout").child(sm.to_element("_this")))
        .await
        .unwrap();
    assert_eq!(c.name_of(&vm).await.unwrap(), "keep01");
    assert_ne!(c.session_cookie().unwrap(), before, "logged in again");
    let again = c.session_cookie().unwrap();
    c.call(xml::Element::vim("Logout").child(sm.to_element("_this")))
        .await
        .unwrap();
    let vms = c.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_ne!(c.session_cookie().unwrap(), again);
    // Without stored credentials there is nothing to retry with.
    let fresh = Client::connect(&lab.options(lab.pinned())).await.unwrap();
    let err = fresh.list_vms().await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::NotAuthenticated, "{err}");
}

#[tokio::test]
async fn lookups_by_name_uuid_path_and_moref() {
    let lab = Lab::up();
    let created = lab.create_vm("web01", &["--disk", "64M", "--nic", "VM Network"]);
    let c = lab.client().await;
    let vm = c.find_vm_by_name("web01").await.unwrap();
    assert_eq!(vm, created);
    let cfg = c.vm_config(&vm).await.unwrap();
    assert_eq!(
        c.find_vm_by_uuid(&cfg.uuid, UuidKind::Bios).await.unwrap(),
        vm
    );
    let instance = cfg.instance_uuid.clone().unwrap();
    assert_eq!(
        c.find_vm_by_uuid(&instance, UuidKind::Instance)
            .await
            .unwrap(),
        vm
    );
    let err = c
        .find_vm_by_uuid("00000000-0000-0000-0000-000000000000", UuidKind::Bios)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownObject { .. }), "{err}");
    let path = c.inventory_path(&vm).await.unwrap();
    assert_eq!(path, "DC0/vm/web01");
    assert_eq!(c.find_by_inventory_path("/DC0/vm/web01").await.unwrap(), vm);
    assert!(matches!(
        c.find_by_inventory_path("DC0/vm/nope").await.unwrap_err(),
        Error::UnknownObject { .. }
    ));
    assert_eq!(c.vm_by_moref(&vm.value).await.unwrap(), vm);
    assert_eq!(c.vm_by_moref(&vm.to_string()).await.unwrap(), vm);
    let err = c.vm_by_moref("vm-999999").await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::ManagedObjectNotFound, "{err}");
    assert!(matches!(
        c.vm_by_moref("Datastore:ds-1").await,
        Err(Error::InvalidInput(_))
    ));
    let err = c.find_vm_by_name("nope").await.unwrap_err();
    match &err {
        Error::UnknownObject { what, known, .. } => {
            assert_eq!(*what, "virtual machine");
            assert!(known.contains(&"web01".to_owned()));
        }
        other => panic!("{other}"),
    }
    let err = c
        .find_by_name(InventoryKind::Datastore, "ds9")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("known: datastore1, datastore2"),
        "{err}"
    );
    let ds = c
        .find_by_name(InventoryKind::Datastore, "datastore2")
        .await
        .unwrap();
    assert_eq!(ds.kind, "Datastore");
    let dc = c
        .find_by_name(InventoryKind::Datacenter, "DC0")
        .await
        .unwrap();
    assert_eq!(c.datacenter_of(&vm).await.unwrap(), dc);
    let net = c
        .find_by_name(InventoryKind::Network, "VM Network")
        .await
        .unwrap();
    assert_eq!(c.name_of(&net).await.unwrap(), "VM Network");
    let hosts = c.list_named(InventoryKind::Host).await.unwrap();
    assert!(hosts.len() >= 2, "{hosts:?}");
    c.find_by_name(InventoryKind::ResourcePool, "Resources")
        .await
        .unwrap();
    let vms = c.list_vms().await.unwrap();
    let entry = vms.iter().find(|v| v.name == "web01").unwrap();
    assert_eq!(entry.moref, vm);
    assert_eq!(entry.uuid.as_deref(), Some(cfg.uuid.as_str()));
    assert_eq!(entry.power_state, Some(PowerState::PoweredOn));
}

#[tokio::test]
async fn vm_config_with_devices() {
    let lab = Lab::up();
    let vm = lab.create_vm(
        "db01",
        &[
            "--disk",
            "64M",
            "--disk",
            "16M",
            "--nic",
            "VM Network",
            "--nic",
            "DC0_DVPG0",
            "--firmware",
            "efi",
            "--cpus",
            "4",
            "--memory-mb",
            "2048",
            "--guest-id",
            "ubuntu64Guest",
        ],
    );
    let c = lab.client().await;
    let info = c.vm_info(&vm).await.unwrap();
    assert_eq!(info.name, "db01");
    assert_eq!(info.power_state, PowerState::PoweredOn);
    assert!(info.host.is_some() && info.resource_pool.is_some() && info.parent.is_some());
    assert_eq!(info.datastores.len(), 1);
    assert!(!info.networks.is_empty());
    let cfg = info.config.unwrap();
    assert_eq!(cfg.num_cpu, 4);
    assert_eq!(cfg.memory_mb, 2048);
    assert_eq!(cfg.firmware.as_deref(), Some("efi"));
    assert_eq!(cfg.guest_id.as_deref(), Some("ubuntu64Guest"));
    assert_eq!(
        cfg.vm_path_name.as_deref(),
        Some("[datastore1] db01/db01.vmx")
    );
    assert!(!cfg.change_tracking_enabled);
    let disks: Vec<_> = cfg.disks().collect();
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].1.capacity_in_bytes, 64 * MIB);
    assert_eq!(disks[1].1.capacity_in_bytes, 16 * MIB);
    assert_eq!(disks[0].1.backing.file_name, "[datastore1] db01/db01.vmdk");
    assert_eq!(
        disks[0].1.backing.datastore.as_ref().unwrap().kind,
        "Datastore"
    );
    let controller = cfg.device(disks[0].0.controller_key.unwrap()).unwrap();
    assert_eq!(controller.type_name, "ParaVirtualSCSIController");
    assert_eq!(controller.as_controller().unwrap().bus_number, 0);
    let nics: Vec<_> = cfg.nics().collect();
    assert_eq!(nics.len(), 2);
    assert_eq!(nics[0].type_name, "VirtualVmxnet3");
    let nic0 = nics[0].as_nic().unwrap();
    assert!(nic0.mac_address.is_some());
    assert!(
        matches!(&nic0.backing, NicBacking::Network { device_name, .. } if device_name == "VM Network")
    );
    assert!(matches!(
        &nics[1].as_nic().unwrap().backing,
        NicBacking::DistributedPort { .. }
    ));
}

#[tokio::test]
async fn snapshots_create_tree_config_remove() {
    let lab = Lab::up();
    let vm = lab.create_vm("app01", &["--disk", "32M"]);
    let c = lab.client().await;
    let s1 = c
        .create_snapshot(&vm, "first", "one", false, false)
        .await
        .unwrap();
    let s2 = c
        .create_snapshot(&vm, "second", "two", false, false)
        .await
        .unwrap();
    let info = c.vm_info(&vm).await.unwrap();
    assert_eq!(info.snapshots.current.as_ref(), Some(&s2));
    let all = info.snapshots.all();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].snapshot, s1);
    assert_eq!(all[0].children[0].snapshot, s2);
    assert_eq!(info.snapshots.find_by_name("second")[0].description, "two");
    let snap_cfg = c.snapshot_config(&s1).await.unwrap();
    let current = info.config.unwrap();
    let (_, snap_disk) = snap_cfg.disks().next().unwrap();
    let (_, cur_disk) = current.disks().next().unwrap();
    assert_eq!(snap_disk.capacity_in_bytes, 32 * MIB);
    assert_ne!(
        snap_disk.backing.file_name, cur_disk.backing.file_name,
        "the running VM writes to a delta after the snapshot"
    );
    c.remove_snapshot(&s2, true).await.unwrap();
    c.remove_snapshot(&s1, true).await.unwrap();
    let info = c.vm_info(&vm).await.unwrap();
    assert!(info.snapshots.roots.is_empty());
    let err = c.remove_snapshot(&s1, true).await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::ManagedObjectNotFound, "{err}");
}

#[tokio::test]
async fn changed_block_tracking() {
    let lab = Lab::up();
    let vm = lab.create_vm("cbt01", &["--disk", "8M"]);
    let c = lab.client().await;
    let key = c
        .vm_config(&vm)
        .await
        .unwrap()
        .disks()
        .next()
        .unwrap()
        .0
        .key;
    let s0 = c
        .create_snapshot(&vm, "s0", "", false, false)
        .await
        .unwrap();
    let err = c
        .query_changed_disk_areas(&vm, Some(&s0), key, 0, "*")
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "CBT off gives a fault: {err}");
    c.remove_snapshot(&s0, true).await.unwrap();

    c.enable_change_tracking(&vm, true).await.unwrap();
    assert!(c.vm_config(&vm).await.unwrap().change_tracking_enabled);
    lab.run(&[
        "guest-write",
        "--vm",
        "cbt01",
        "--disk",
        "0",
        "--offset",
        "1M",
        "--len",
        "64K",
        "--seed",
        "1",
    ]);
    let s1 = c
        .create_snapshot(&vm, "s1", "", false, false)
        .await
        .unwrap();
    let all = c
        .changed_disk_areas(&vm, Some(&s1), key, 8 * MIB, "*")
        .await
        .unwrap();
    assert!(
        all.iter()
            .any(|a| a.start <= MIB && a.start + a.length >= MIB + 65536),
        "{all:?}"
    );
    let change_id = c
        .snapshot_config(&s1)
        .await
        .unwrap()
        .disks()
        .next()
        .unwrap()
        .1
        .backing
        .change_id
        .clone()
        .expect("a changeId with CBT on");
    c.remove_snapshot(&s1, true).await.unwrap();
    lab.run(&[
        "guest-write",
        "--vm",
        "cbt01",
        "--disk",
        "0",
        "--offset",
        "4M",
        "--len",
        "128K",
        "--seed",
        "2",
    ]);
    let s2 = c
        .create_snapshot(&vm, "s2", "", false, false)
        .await
        .unwrap();
    let since = c
        .changed_disk_areas(&vm, Some(&s2), key, 8 * MIB, &change_id)
        .await
        .unwrap();
    let covered: u64 = since.iter().map(|a| a.length).sum();
    assert!(
        since
            .iter()
            .any(|a| a.start <= 4 * MIB && a.start + a.length >= 4 * MIB + 131072),
        "{since:?}"
    );
    assert!(
        !since
            .iter()
            .any(|a| a.start < MIB + 65536 && a.start + a.length > MIB),
        "the first write is not in the changes since s1: {since:?}"
    );
    assert!((131072..8 * MIB).contains(&covered), "{covered}");
    // One raw call: the answer covers a range starting at the offset asked for.
    let one = c
        .query_changed_disk_areas(&vm, Some(&s2), key, 0, &change_id)
        .await
        .unwrap();
    assert_eq!(one.start_offset, 0);
    assert!(one.length > 0);
    let err = c
        .query_changed_disk_areas(&vm, Some(&s2), key, 0, "52 de ad be ef/99")
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "unknown change id: {err}");
    // With the server answering one area per call the helper still collects everything.
    lab.run(&["knobs", "--max-changed-areas", "1"]);
    lab.run(&[
        "guest-write",
        "--vm",
        "cbt01",
        "--disk",
        "0",
        "--offset",
        "6M",
        "--len",
        "64K",
        "--seed",
        "3",
    ]);
    let s3 = c
        .create_snapshot(&vm, "s3", "", false, false)
        .await
        .unwrap();
    let paged = c
        .changed_disk_areas(&vm, Some(&s3), key, 8 * MIB, "*")
        .await
        .unwrap();
    for at in [MIB, 4 * MIB, 6 * MIB] {
        assert!(
            paged
                .iter()
                .any(|a| a.start <= at && a.start + a.length > at),
            "{at}: {paged:?}"
        );
    }
}

#[tokio::test]
async fn power_reconfigure_and_destroy() {
    let lab = Lab::up();
    let vm = lab.create_vm("tmp01", &["--disk", "8M"]);
    let c = lab.client().await;
    let err = c.power_on(&vm).await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::InvalidPowerState, "{err}");
    c.power_off(&vm).await.unwrap();
    assert_eq!(
        c.vm_info(&vm).await.unwrap().power_state,
        PowerState::PoweredOff
    );
    let spec = xml::Element::vim("spec")
        .typed("VirtualMachineConfigSpec")
        .text_child("numCPUs", "3")
        .text_child("memoryMB", "512");
    c.reconfigure_vm(&vm, &spec).await.unwrap();
    let cfg = c.vm_config(&vm).await.unwrap();
    assert_eq!((cfg.num_cpu, cfg.memory_mb), (3, 512));
    c.power_on(&vm).await.unwrap();
    let err = c.destroy(&vm).await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::InvalidPowerState, "{err}");
    c.power_off(&vm).await.unwrap();
    c.destroy(&vm).await.unwrap();
    assert!(matches!(
        c.find_vm_by_name("tmp01").await.unwrap_err(),
        Error::UnknownObject { .. }
    ));
    // Waiting on a task that does not exist is a fault, not a hang.
    let err = c
        .wait_for_task(&MoRef::new("Task", "task-nope"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::ManagedObjectNotFound, "{err}");
}

#[tokio::test]
async fn create_from_saved_config_and_register() {
    let lab = Lab::up();
    let vm = lab.create_vm(
        "src01",
        &["--disk", "16M", "--disk", "8M", "--nic", "VM Network"],
    );
    let c = lab.client().await;
    let info = c.vm_info(&vm).await.unwrap();
    let saved = info.config.unwrap();
    let ds2 = c
        .find_by_name(InventoryKind::Datastore, "datastore2")
        .await
        .unwrap();
    let mut opts = RestoreOptions::new("src01-restored", "[datastore2]");
    opts.macs = MacPolicy::Regenerate;
    for (dev, _) in saved.disks() {
        opts.disks.insert(
            dev.key,
            DiskTarget {
                file_name: "[datastore2]".into(),
                datastore: Some(ds2.clone()),
                thin_provisioned: Some(true),
                create: true,
            },
        );
    }
    let restore = config_spec_from_info(&saved.raw, &opts).unwrap();
    let folder = info.parent.unwrap();
    let pool = info.resource_pool.unwrap();
    let new = c
        .create_vm(&folder, &restore.spec, &pool, None)
        .await
        .unwrap();
    let cfg = c.vm_config(&new).await.unwrap();
    assert_eq!(cfg.name, "src01-restored");
    assert_eq!(cfg.num_cpu, saved.num_cpu);
    assert_eq!(cfg.memory_mb, saved.memory_mb);
    let caps: Vec<_> = cfg.disks().map(|(_, d)| d.capacity_in_bytes).collect();
    assert_eq!(caps, vec![16 * MIB, 8 * MIB]);
    for (_, d) in cfg.disks() {
        assert!(
            d.backing.file_name.starts_with("[datastore2] "),
            "{}",
            d.backing.file_name
        );
    }
    assert_eq!(cfg.nics().count(), 1);
    let sent_nic = restore
        .spec
        .all("deviceChange")
        .filter_map(|c| c.get("device"))
        .find(|d| d.get("addressType").is_some())
        .unwrap();
    assert_eq!(sent_nic.text_at("addressType"), Some("generated"));
    assert!(sent_nic.get("macAddress").is_none());
    // A datastore that does not exist is refused with a fault.
    let mut bad = RestoreOptions::new("src01-bad", "[nosuchds]");
    bad.macs = MacPolicy::Regenerate;
    let bad = config_spec_from_info(&saved.raw, &bad).unwrap();
    let err = c
        .create_vm(&folder, &bad.spec, &pool, None)
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");

    // Unregister, then register the .vmx back.
    let vmx = cfg.vm_path_name.clone().unwrap();
    c.power_off(&new).await.ok();
    c.unregister_vm(&new).await.unwrap();
    assert!(c.find_vm_by_name("src01-restored").await.is_err());
    let back = c
        .register_vm(&folder, &vmx, Some("src01-back"), &pool, None)
        .await
        .unwrap();
    let back_cfg = c.vm_config(&back).await.unwrap();
    assert_eq!(back_cfg.name, "src01-back");
    assert_eq!(
        back_cfg
            .disks()
            .map(|(_, d)| d.capacity_in_bytes)
            .collect::<Vec<_>>(),
        vec![16 * MIB, 8 * MIB]
    );
    let err = c
        .register_vm(&folder, "[datastore2] nothing/here.vmx", None, &pool, None)
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");
}

#[tokio::test]
async fn datastore_files_up_and_down() {
    let lab = Lab::up();
    let vm = lab.create_vm("files01", &["--disk", "8M"]);
    let c = lab.client().await;
    let dc = c.datacenter_of(&vm).await.unwrap();
    let dc_path = c.inventory_path(&dc).await.unwrap();
    assert_eq!(dc_path, "DC0");
    let vmx: DatastorePath = c
        .vm_config(&vm)
        .await
        .unwrap()
        .vm_path_name
        .unwrap()
        .parse()
        .unwrap();
    let text = String::from_utf8(c.read_datastore_file(&dc_path, &vmx).await.unwrap()).unwrap();
    assert!(text.contains("displayName = \"files01\""), "{text}");

    let dir = DatastorePath::new("datastore2", "uploads/a b");
    c.make_directory(&dir, Some(&dc), true).await.unwrap();
    let err = c.make_directory(&dir, Some(&dc), false).await.unwrap_err();
    assert_eq!(fault_kind(&err), FaultKind::FileAlreadyExists, "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let data: Vec<u8> = (0..3 * MIB as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let remote = DatastorePath::new("datastore2", "uploads/a b/data #1.bin");
    c.upload_datastore_file(&src, &dc_path, &remote)
        .await
        .unwrap();
    let local = lab
        .lab_dir()
        .join("datastores/datastore2/uploads/a b/data #1.bin");
    assert_eq!(
        std::fs::read(&local).unwrap(),
        data,
        "upload landed byte for byte"
    );
    let dest = tmp.path().join("down.bin");
    let n = c
        .download_datastore_file(&dc_path, &remote, &dest)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    c.write_datastore_file(&dc_path, &remote, b"small".to_vec())
        .await
        .unwrap();
    assert_eq!(
        c.read_datastore_file(&dc_path, &remote).await.unwrap(),
        b"small"
    );
    c.delete_datastore_file(&remote, Some(&dc)).await.unwrap();
    let err = c
        .download_datastore_file(&dc_path, &remote, &tmp.path().join("gone"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Http { status: 404, .. }), "{err}");
    assert!(!tmp.path().join("gone").exists());
    let err = c
        .delete_datastore_file(&remote, Some(&dc))
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");
}

#[tokio::test]
async fn first_class_disks() {
    let lab = Lab::up();
    let c = lab.client().await;
    let ds = c
        .find_by_name(InventoryKind::Datastore, "datastore1")
        .await
        .unwrap();
    let disk = c
        .fcd_create("fcd01", &ds, 32, None, Provisioning::Thin)
        .await
        .unwrap();
    assert_eq!(disk.name, "fcd01");
    assert_eq!(disk.capacity_in_mb, 32);
    assert_eq!(disk.datastore.as_ref(), Some(&ds));
    assert!(
        disk.file_path
            .as_deref()
            .is_some_and(|p| p.ends_with(".vmdk")),
        "{disk:?}"
    );
    let again = c.fcd_retrieve(&disk.id, &ds).await.unwrap();
    assert_eq!(again.id, disk.id);
    assert_eq!(again.name, "fcd01");
    assert_eq!(c.fcd_list(&ds).await.unwrap(), vec![disk.id.clone()]);
    let snap = c
        .fcd_create_snapshot(&disk.id, &ds, "nightly")
        .await
        .unwrap();
    let snaps = c.fcd_snapshots(&disk.id, &ds).await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, snap);
    assert_eq!(snaps[0].description, "nightly");
    c.fcd_delete_snapshot(&disk.id, &ds, &snap).await.unwrap();
    assert!(c.fcd_snapshots(&disk.id, &ds).await.unwrap().is_empty());
    let err = c
        .fcd_delete_snapshot(&disk.id, &ds, &snap)
        .await
        .unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");
    c.fcd_delete(&disk.id, &ds).await.unwrap();
    assert!(c.fcd_list(&ds).await.unwrap().is_empty());
    let err = c.fcd_retrieve(&disk.id, &ds).await.unwrap_err();
    assert!(err.fault_kind().is_some(), "{err}");
}

#[tokio::test]
async fn waiting_for_updates() {
    let lab = Lab::up();
    let vm = lab.create_vm("wait01", &["--disk", "8M"]);
    let c = lab.client().await;
    // A property that never reaches the wanted value times out with WaitForUpdatesEx.
    let started = std::time::Instant::now();
    let err = c
        .wait_for_property(&vm, "runtime.powerState", Duration::from_secs(2), |v| {
            v.text == "suspended"
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A task started by hand is followed to its end.
    let task = c
        .start_task(xml::Element::vim("PowerOffVM_Task").child(vm.to_element("_this")))
        .await
        .unwrap();
    let info = c
        .wait_for_property(&task, "info", Duration::from_secs(30), |v| {
            v.text_at("state") == Some("success")
        })
        .await
        .unwrap();
    assert_eq!(info.text_at("state"), Some("success"));
    let state = c
        .wait_for_property(&vm, "runtime.powerState", Duration::from_secs(5), |v| {
            v.text == "poweredOff"
        })
        .await
        .unwrap();
    assert_eq!(state.text, "poweredOff");
    // Timing of one snapshot round trip through task waiting.
    let t = std::time::Instant::now();
    let s = c.create_snapshot(&vm, "t", "", false, false).await.unwrap();
    c.remove_snapshot(&s, false).await.unwrap();
    eprintln!("snapshot create+remove: {:?}", t.elapsed());
}

#[tokio::test]
async fn placement_datastores_and_network_mapping() {
    let lab = Lab::up();
    let vm = lab.create_vm("net01", &["--disk", "8M", "--nic", "VM Network"]);
    let c = lab.client().await;
    let stores = c.datastore_summaries().await.unwrap();
    let names: Vec<_> = stores.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["datastore1", "datastore2"]);
    assert!(stores
        .iter()
        .all(|s| s.capacity > 0 && s.free_space <= s.capacity && s.accessible));

    let info = c.vm_info(&vm).await.unwrap();
    let saved = info.config.unwrap();
    let nic_key = saved.nics().next().unwrap().key;
    for (target, expect) in [
        ("Lab Network 2", "VirtualEthernetCardNetworkBackingInfo"),
        (
            "DC0_DVPG0",
            "VirtualEthernetCardDistributedVirtualPortBackingInfo",
        ),
    ] {
        let net = c
            .find_by_name(InventoryKind::Network, target)
            .await
            .unwrap();
        let backing = c.nic_backing_for_network(&net).await.unwrap();
        assert_eq!(backing.type_name(), Some(expect));
        let mut opts = RestoreOptions::new(format!("net01-{}", net.value), "[datastore2]");
        opts.macs = MacPolicy::Regenerate;
        opts.nic_backings.insert(nic_key, backing);
        let spec = config_spec_from_info(&saved.raw, &opts).unwrap().spec;
        let new = c
            .create_vm(
                info.parent.as_ref().unwrap(),
                &spec,
                info.resource_pool.as_ref().unwrap(),
                None,
            )
            .await
            .unwrap();
        let cfg = c.vm_config(&new).await.unwrap();
        let nic = cfg.nics().next().unwrap().as_nic().unwrap().clone();
        match (target, &nic.backing) {
            (
                "Lab Network 2",
                NicBacking::Network {
                    device_name,
                    network,
                },
            ) => {
                assert_eq!(device_name, "Lab Network 2");
                assert_eq!(network.as_ref(), Some(&net));
            }
            ("DC0_DVPG0", NicBacking::DistributedPort { portgroup_key, .. }) => {
                assert_eq!(portgroup_key.as_deref(), Some(net.value.as_str()));
            }
            other => panic!("{other:?}"),
        }
    }
    let ds = c
        .find_by_name(InventoryKind::Datastore, "datastore1")
        .await
        .unwrap();
    assert!(matches!(
        c.nic_backing_for_network(&ds).await,
        Err(Error::InvalidInput(_))
    ));
}
