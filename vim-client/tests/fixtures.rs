//! Every recorded response from real vCenter/ESXi servers parses, faults become typed faults,
//! typed views read the right values, and the tree survives a write/parse round trip.

use std::path::PathBuf;

use vim_client::xml::{self, Element};
use vim_client::{soap, Error, FaultKind, MoRef, ObjectContent, ServiceContent};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/vcenter-soap"
    ))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_responses() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir();
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".response.xml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// HTTP status per fixture from INDEX.tsv.
fn statuses() -> std::collections::HashMap<String, u16> {
    let index = String::from_utf8(fixture("INDEX.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<_> = l.split('\t').collect();
            Some((
                format!("{}.response.xml", cols.first()?),
                cols.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn every_response_parses_and_faults_are_typed() {
    let responses = all_responses();
    assert_eq!(responses.len(), 341, "expected the 341 recorded responses");
    let statuses = statuses();
    let mut faults = 0;
    for (name, bytes) in &responses {
        let status = statuses[name];
        match soap::parse_response(bytes) {
            Ok(body) => {
                assert_eq!(status, 200, "{name}: HTTP {status} but parsed as success");
                assert!(
                    body.local().ends_with("Response"),
                    "{name}: body <{}>",
                    body.local()
                );
            }
            Err(Error::Fault {
                kind, fault_string, ..
            }) => {
                faults += 1;
                assert_ne!(status, 200, "{name}: fault with HTTP 200");
                assert!(!fault_string.is_empty(), "{name}: empty fault string");
                assert!(
                    !matches!(kind, FaultKind::Other(ref k) if k.is_empty()),
                    "{name}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(faults >= 1, "the bad-password fixture is a fault");
}

#[test]
fn round_trip_is_lossless_on_every_response() {
    for (name, bytes) in all_responses() {
        let tree = xml::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = xml::write_document(&tree);
        let again = xml::parse(written.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: rewritten XML does not parse: {e}\n{written}"));
        assert_eq!(tree, again, "{name}: round trip changed the tree");
        assert!(count(&tree) >= 3, "{name}: suspiciously small tree");
    }
}

fn count(e: &Element) -> usize {
    1 + e.children.iter().map(count).sum::<usize>()
}

#[test]
fn bad_password_is_invalid_login() {
    let err = soap::parse_response(&fixture(
        "basic_connection_bad_password-01-Login.response.xml",
    ))
    .unwrap_err();
    match err {
        Error::Fault {
            kind,
            fault_string,
            detail_xml,
        } => {
            assert_eq!(kind, FaultKind::InvalidLogin);
            assert_eq!(
                fault_string,
                "Cannot complete login due to an incorrect user name or password."
            );
            assert!(detail_xml.unwrap().contains("InvalidLoginFault"));
        }
        other => panic!("expected a fault, got {other}"),
    }
}

#[test]
fn service_content_typed_view() {
    let body = soap::parse_response(&fixture(
        "basic_connection-00-RetrieveServiceContent.response.xml",
    ))
    .unwrap();
    let sc = ServiceContent::from_element(body.get("returnval").unwrap()).unwrap();
    assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
    assert_eq!(
        sc.property_collector,
        MoRef::new("PropertyCollector", "propertyCollector")
    );
    assert_eq!(
        sc.session_manager,
        Some(MoRef::new("SessionManager", "SessionManager"))
    );
    assert_eq!(sc.about.api_version, "8.0.2.0");
    assert_eq!(sc.about.api_type, "VirtualCenter");
}

#[test]
fn login_returns_user_session() {
    let body = soap::parse_response(&fixture("basic_connection-01-Login.response.xml")).unwrap();
    assert_eq!(body.local(), "LoginResponse");
    let session = body.get("returnval").unwrap();
    assert_eq!(session.type_name(), None);
    assert!(session.text_at("userName").is_some());
    assert!(session.text_at("key").is_some());
}

#[test]
fn xsi_type_resolves_by_namespace_not_prefix() {
    let vcsim = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><FooResponse xmlns="urn:vim25"><returnval xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" xmlns:vim25="urn:vim25" XMLSchema-instance:type="vim25:VirtualDisk"><key>2000</key></returnval></FooResponse></soapenv:Body></soapenv:Envelope>"#;
    let vcenter = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><FooResponse xmlns="urn:vim25"><returnval xsi:type="VirtualDisk"><key>2000</key></returnval></FooResponse></soapenv:Body></soapenv:Envelope>"#;
    let a = soap::parse_response(vcsim).unwrap();
    let b = soap::parse_response(vcenter).unwrap();
    assert_eq!(a, b);
    let t = a.get("returnval").unwrap().xsi_type.clone().unwrap();
    assert_eq!(
        (t.ns.as_str(), t.local.as_str()),
        ("urn:vim25", "VirtualDisk")
    );
}

#[test]
fn malformed_xml_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"<a>",
        b"<a></b>",
        b"<x:a/>",
        b"<a xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:type='nope:T'/>",
        b"<a/><b/>",
    ] {
        assert!(
            xml::parse(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(matches!(
        soap::parse_response(b"<a/>"),
        Err(Error::Unexpected(_))
    ));
}

#[test]
fn object_contents_of_a_fetch() {
    let body =
        soap::parse_response(&fixture("basic_container_view-05-Fetch.response.xml")).unwrap();
    let refs: Vec<_> = body
        .get("returnval")
        .unwrap()
        .children
        .iter()
        .map(|c| MoRef::from_element(c).unwrap())
        .collect();
    assert_eq!(refs, vec![MoRef::new("Datacenter", "datacenter-3")]);
    let _ = ObjectContent::from_element; // typed reader covered by the config tests
}

fn vm_config_info() -> Element {
    let body = soap::parse_response(&fixture(
        "test_json_vm_explode_default-20-Fetch.response.xml",
    ))
    .unwrap();
    body.get("returnval").unwrap().clone()
}

#[test]
fn vm_config_typed_view_of_a_real_vm() {
    let info = vm_config_info();
    let cfg = vim_client::VmConfig::from_element(&info).unwrap();
    assert!(cfg.name.starts_with("vCLS-"), "{}", cfg.name);
    assert_eq!(cfg.uuid, info.text_at("uuid").unwrap());
    assert!(cfg.instance_uuid.is_some());
    assert_eq!(
        cfg.num_cpu,
        info.parse_at::<u32>("hardware/numCPU").unwrap()
    );
    assert_eq!(
        cfg.memory_mb,
        info.parse_at::<u64>("hardware/memoryMB").unwrap()
    );
    assert_eq!(cfg.devices.len(), 11);
    let disks: Vec<_> = cfg.disks().collect();
    assert_eq!(disks.len(), 1);
    let (dev, disk) = disks[0];
    assert_eq!(dev.key, 2000);
    assert_eq!(dev.label.as_deref(), Some("Hard disk 1"));
    assert_eq!(dev.controller_key, Some(1000));
    assert_eq!(dev.unit_number, Some(0));
    assert_eq!(disk.capacity_in_bytes, 2147483648);
    assert_eq!(disk.backing.type_name, "VirtualDiskFlatVer2BackingInfo");
    assert!(disk.backing.file_name.starts_with("[vsanDatastore] "));
    assert_eq!(
        disk.backing.datastore,
        Some(MoRef::new("Datastore", "datastore-17"))
    );
    assert_eq!(disk.backing.thin_provisioned, Some(true));
    assert_eq!(disk.backing.eagerly_scrub, Some(false));
    assert_eq!(disk.backing.disk_mode.as_deref(), Some("persistent"));
    assert_eq!(
        disk.backing.uuid.as_deref(),
        Some("6000C290-a113-6543-7d13-7363c08fe61d")
    );
    let scsi = cfg.device(1000).unwrap();
    assert_eq!(scsi.type_name, "ParaVirtualSCSIController");
    let ctl = scsi.as_controller().unwrap();
    assert_eq!(ctl.devices, vec![2000]);
    assert_eq!(ctl.shared_bus.as_deref(), Some("noSharing"));
    assert_eq!(cfg.raw, info, "the raw tree is kept whole");
}

#[test]
fn nic_backings_are_typed() {
    let doc = br#"<hardware xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
      <device xsi:type="VirtualVmxnet3"><key>4000</key><deviceInfo><label>Network adapter 1</label></deviceInfo>
        <backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName><network type="Network">network-7</network></backing>
        <connectable><startConnected>true</startConnected></connectable><controllerKey>100</controllerKey><unitNumber>7</unitNumber>
        <addressType>assigned</addressType><macAddress>00:50:56:aa:bb:cc</macAddress></device>
      <device xsi:type="VirtualE1000e"><key>4001</key>
        <backing xsi:type="VirtualEthernetCardDistributedVirtualPortBackingInfo"><port><switchUuid>50 2a</switchUuid><portgroupKey>dvportgroup-9</portgroupKey><portKey>12</portKey></port></backing>
        <addressType>generated</addressType></device>
      <device xsi:type="VirtualVmxnet3"><key>4002</key>
        <backing xsi:type="VirtualEthernetCardOpaqueNetworkBackingInfo"><opaqueNetworkId>ls-1</opaqueNetworkId><opaqueNetworkType>nsx.LogicalSwitch</opaqueNetworkType></backing>
        <addressType>manual</addressType><macAddress>00:50:56:00:00:01</macAddress></device>
      <device xsi:type="VirtualCdrom"><key>3002</key><backing xsi:type="VirtualCdromIsoBackingInfo"><fileName>[iso] x.iso</fileName></backing><controllerKey>201</controllerKey><unitNumber>0</unitNumber></device>
    </hardware>"#;
    let hw = xml::parse(doc).unwrap();
    let devices: Vec<_> = hw
        .all("device")
        .map(vim_client::Device::from_element)
        .collect();
    use vim_client::{DeviceKind, NicBacking};
    let nic = devices[0].as_nic().unwrap();
    assert_eq!(nic.mac_address.as_deref(), Some("00:50:56:aa:bb:cc"));
    assert_eq!(nic.address_type.as_deref(), Some("assigned"));
    assert_eq!(nic.start_connected, Some(true));
    assert_eq!(
        nic.backing,
        NicBacking::Network {
            device_name: "VM Network".into(),
            network: Some(MoRef::new("Network", "network-7"))
        }
    );
    assert_eq!(
        devices[1].as_nic().unwrap().backing,
        NicBacking::DistributedPort {
            switch_uuid: "50 2a".into(),
            portgroup_key: Some("dvportgroup-9".into()),
            port_key: Some("12".into())
        }
    );
    assert_eq!(
        devices[2].as_nic().unwrap().backing,
        NicBacking::Opaque {
            network_id: "ls-1".into(),
            network_type: "nsx.LogicalSwitch".into()
        }
    );
    match &devices[3].kind {
        DeviceKind::Cdrom(c) => {
            assert_eq!(c.file_name.as_deref(), Some("[iso] x.iso"));
            assert_eq!(
                c.backing_type.as_deref(),
                Some("VirtualCdromIsoBackingInfo")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_info_becomes_a_create_spec() {
    use vim_client::{config_spec_from_info, DiskTarget, MacPolicy, RestoreOptions};
    let info = vm_config_info();
    let mut options = RestoreOptions::new("restored", "[ds2]");
    options.macs = MacPolicy::Regenerate;
    options.disks.insert(
        2000,
        DiskTarget {
            file_name: "[ds2]".into(),
            datastore: Some(MoRef::new("Datastore", "datastore-99")),
            thin_provisioned: Some(true),
            create: true,
        },
    );
    let out = config_spec_from_info(&info, &options).unwrap();
    let spec = &out.spec;
    assert_eq!(spec.type_name(), Some("VirtualMachineConfigSpec"));
    assert_eq!(spec.text_at("name"), Some("restored"));
    assert!(spec.get("uuid").is_none(), "uuid regenerated unless asked");
    assert_eq!(spec.text_at("files/vmPathName"), Some("[ds2]"));
    assert_eq!(spec.text_at("numCPUs"), info.text_at("hardware/numCPU"));
    assert_eq!(spec.text_at("memoryMB"), info.text_at("hardware/memoryMB"));
    assert_eq!(spec.text_at("guestId"), info.text_at("guestId"));
    let changes: Vec<_> = spec.all("deviceChange").collect();
    // 11 devices minus the 9 every VM gets (2 IDE, PS/2, PCI, SIO, keyboard, mouse, video, VMCI)
    let types: Vec<_> = changes
        .iter()
        .map(|c| c.get("device").unwrap().type_name().unwrap().to_owned())
        .collect();
    assert_eq!(types, vec!["ParaVirtualSCSIController", "VirtualDisk"]);
    let scsi = changes[0].get("device").unwrap();
    let disk_change = changes[1];
    let disk = disk_change.get("device").unwrap();
    assert_eq!(disk_change.text_at("operation"), Some("add"));
    assert_eq!(disk_change.text_at("fileOperation"), Some("create"));
    assert!(scsi.parse_at::<i32>("key").unwrap() < 0);
    assert!(
        scsi.get("device").is_none(),
        "controller device list dropped"
    );
    assert_eq!(disk.text_at("controllerKey"), scsi.text_at("key"));
    assert_eq!(out.key_map[&2000].to_string(), disk.text_at("key").unwrap());
    let backing = disk.get("backing").unwrap();
    assert_eq!(backing.text_at("fileName"), Some("[ds2]"));
    assert_eq!(backing.text_at("datastore"), Some("datastore-99"));
    for stripped in ["changeId", "contentId", "uuid", "backingObjectId"] {
        assert!(backing.get(stripped).is_none(), "{stripped} kept");
    }
    let order: Vec<_> = backing.children.iter().map(|c| c.local()).collect();
    assert_eq!(&order[..2], &["fileName", "datastore"]);
    assert_eq!(disk.text_at("capacityInBytes"), Some("2147483648"));
    // fields of the saved config that a create spec cannot carry are reported, not silently lost
    assert!(out.dropped_fields.iter().any(|f| f == "datastoreUrl"));
    assert!(!out.dropped_fields.iter().any(|f| f == "guestId"));
    // the spec serialises and parses back identically
    let again = xml::parse(xml::to_string(spec).as_bytes()).unwrap();
    assert_eq!(&again, spec);
}

#[test]
fn create_spec_policies_attach_keep_macs_rdm_and_boot_order() {
    use vim_client::{config_spec_from_info, CdromPolicy, DiskTarget, MacPolicy, RestoreOptions};
    let info = xml::parse(
        br#"<config xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
      <name>db</name><uuid>u-1</uuid><instanceUuid>i-1</instanceUuid><guestId>otherGuest64</guestId>
      <hardware><numCPU>2</numCPU><memoryMB>512</memoryMB>
        <device xsi:type="VirtualLsiLogicController"><key>1000</key><controllerKey>100</controllerKey><unitNumber>3</unitNumber><busNumber>0</busNumber><device>2000</device><device>2001</device><sharedBus>noSharing</sharedBus></device>
        <device xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] db/db.vmdk</fileName><datastore type="Datastore">ds-1</datastore><diskMode>persistent</diskMode><thinProvisioned>false</thinProvisioned><uuid>6000</uuid><changeId>52 aa/7</changeId><parent xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] db/base.vmdk</fileName></parent></backing><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInBytes>1048576</capacityInBytes></device>
        <device xsi:type="VirtualDisk"><key>2001</key><backing xsi:type="VirtualDiskRawDiskMappingVer1BackingInfo"><fileName>[ds1] db/rdm.vmdk</fileName><compatibilityMode>physicalMode</compatibilityMode><diskMode>independent_persistent</diskMode></backing><controllerKey>1000</controllerKey><unitNumber>1</unitNumber><capacityInBytes>2097152</capacityInBytes></device>
        <device xsi:type="VirtualE1000e"><key>4000</key><backing xsi:type="VirtualEthernetCardNetworkBackingInfo"><deviceName>VM Network</deviceName></backing><controllerKey>100</controllerKey><unitNumber>7</unitNumber><addressType>assigned</addressType><macAddress>00:50:56:01:02:03</macAddress><wakeOnLanEnabled>true</wakeOnLanEnabled></device>
        <device xsi:type="VirtualCdrom"><key>3000</key><backing xsi:type="VirtualCdromIsoBackingInfo"><fileName>[iso] x.iso</fileName></backing><connectable><startConnected>true</startConnected><connected>true</connected></connectable><controllerKey>200</controllerKey><unitNumber>0</unitNumber></device>
        <device xsi:type="VirtualMachineSomethingNew"><key>9000</key><fancy>yes</fancy></device>
      </hardware>
      <extraConfig xsi:type="OptionValue"><key>nvram</key><value xsi:type="xsd:string">db.nvram</value></extraConfig>
      <extraConfig xsi:type="OptionValue"><key>guestinfo.app</key><value xsi:type="xsd:string">x</value></extraConfig>
      <bootOptions><bootOrder xsi:type="VirtualMachineBootOptionsBootableDiskDevice"><deviceKey>2000</deviceKey></bootOrder></bootOptions>
      <changeTrackingEnabled>true</changeTrackingEnabled><firmware>efi</firmware>
    </config>"#,
    )
    .unwrap();
    let mut o = RestoreOptions::new("db", "[ds2]");
    o.uuid = Some("u-1".into());
    o.macs = MacPolicy::Keep;
    o.cdroms = CdromPolicy::Keep;
    o.disks.insert(
        2000,
        DiskTarget {
            file_name: "[ds2] db/db.vmdk".into(),
            datastore: None,
            thin_provisioned: None,
            create: false,
        },
    );
    let out = config_spec_from_info(&info, &o).unwrap();
    let spec = &out.spec;
    assert_eq!(spec.text_at("uuid"), Some("u-1"));
    assert!(spec.get("instanceUuid").is_none());
    assert_eq!(spec.text_at("changeTrackingEnabled"), Some("true"));
    assert_eq!(spec.text_at("firmware"), Some("efi"));
    let keys: Vec<_> = spec
        .all("extraConfig")
        .map(|e| e.text_at("key").unwrap())
        .collect();
    assert_eq!(keys, vec!["guestinfo.app"], "nvram points at the old file");
    let changes: Vec<_> = spec.all("deviceChange").collect();
    let device = |i: usize| changes[i].get("device").unwrap();
    // The attached disk: no fileOperation, the given file, no snapshot parent or CBT state.
    assert!(changes[1].get("fileOperation").is_none());
    let b = device(1).get("backing").unwrap();
    assert_eq!(b.text_at("fileName"), Some("[ds2] db/db.vmdk"));
    assert_eq!(b.text_at("thinProvisioned"), Some("false"));
    for gone in ["parent", "changeId", "uuid", "datastore"] {
        assert!(b.get(gone).is_none(), "{gone}");
    }
    // The RDM comes back as a new flat disk in the VM's datastore.
    assert_eq!(changes[2].text_at("fileOperation"), Some("create"));
    let rdm = device(2).get("backing").unwrap();
    assert_eq!(rdm.type_name(), Some("VirtualDiskFlatVer2BackingInfo"));
    assert_eq!(rdm.text_at("fileName"), Some("[ds2]"));
    assert_eq!(rdm.text_at("diskMode"), Some("independent_persistent"));
    // The MAC is kept as a manual address, in schema order.
    let nic = device(3);
    assert_eq!(nic.text_at("addressType"), Some("manual"));
    assert_eq!(nic.text_at("macAddress"), Some("00:50:56:01:02:03"));
    let order: Vec<_> = nic.children.iter().map(|c| c.local()).collect();
    assert_eq!(
        order,
        vec![
            "key",
            "backing",
            "controllerKey",
            "unitNumber",
            "addressType",
            "macAddress",
            "wakeOnLanEnabled"
        ]
    );
    // CD-ROM kept with its ISO; the IDE controller (200) is built in and keeps its key.
    assert_eq!(device(4).text_at("backing/fileName"), Some("[iso] x.iso"));
    assert_eq!(device(4).text_at("controllerKey"), Some("200"));
    // Unknown device types are carried over unchanged apart from their key.
    assert_eq!(device(5).type_name(), Some("VirtualMachineSomethingNew"));
    assert_eq!(device(5).text_at("fancy"), Some("yes"));
    // Boot order follows the disk to its new key.
    assert_eq!(
        spec.text_at("bootOptions/bootOrder/deviceKey").unwrap(),
        out.key_map[&2000].to_string()
    );
    assert!(out.dropped_fields.is_empty(), "{:?}", out.dropped_fields);
}
