//! Harnesses for what vCenter sends: SOAP responses and the typed views read from them.

use vim_client::config_spec::config_spec_from_info;
use vim_client::xml::{self, Element};
use vim_client::{
    soap, Device, DiskChangeInfo, MoRef, ObjectContent, RestoreOptions, ServiceContent,
    SnapshotInfo, VStorageObject, VmConfig,
};

/// Elements of one input visited by [`vm_config_view`] (bounds the work per input).
const MAX_VISITED: usize = 4000;

/// SOAP response parser: arbitrary bytes are `Err` or a tree; a parsed tree written back by
/// the writer parses to an equal tree (the writer is used for requests and saved configs).
pub fn response(data: &[u8]) {
    let _ = soap::parse_response(data);
    let Ok(tree) = xml::parse(data) else {
        return;
    };
    round_trip(&tree);
    let _ = soap::response_of(tree);
}

/// `parse(write(tree)) == tree`, for the trees whose names the writer can express.
fn round_trip(tree: &Element) {
    if !writable(tree) {
        return;
    }
    let text = xml::write_document(tree);
    let back = xml::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("writer output does not parse: {e}\n{text}"));
    assert_eq!(&back, tree, "parse(write(tree)) != tree\n{text}");
}

/// The writer documents one tree it cannot write faithfully: an unqualified `xsi:type` value
/// on an element in a namespace (QName values have no `xmlns=""`). SOAP never produces one.
fn writable(tree: &Element) -> bool {
    let mut stack = vec![tree];
    while let Some(e) = stack.pop() {
        if e.xsi_type.as_ref().is_some_and(|t| t.ns.is_empty()) && !e.name.ns.is_empty() {
            return false;
        }
        stack.extend(e.children.iter());
    }
    true
}

/// The typed views (VM config, devices, snapshot tree, changed areas, property contents,
/// service content, first class disks, morefs) and the restore spec builder, on every element
/// of an arbitrary tree: each returns a value or `Err`, never panics; an accepted VM config
/// keeps its raw tree, and the rebuilt `CreateVM` spec is writable XML.
pub fn vm_config_view(data: &[u8]) {
    let Ok(tree) = xml::parse(data) else {
        return;
    };
    let mut stack = vec![&tree];
    let mut visited = 0;
    while let Some(e) = stack.pop() {
        visited += 1;
        if visited > MAX_VISITED {
            break;
        }
        views(e);
        stack.extend(e.children.iter());
    }
}

fn views(e: &Element) {
    if let Ok(cfg) = VmConfig::from_element(e) {
        assert_eq!(&cfg.raw, e, "VmConfig keeps the raw tree");
        let hardware = e.get("hardware").expect("accepted config has hardware");
        assert_eq!(cfg.devices.len(), hardware.all("device").count());
        for (device, _disk) in cfg.disks() {
            assert!(cfg.device(device.key).is_some());
        }
        let _ = cfg.nics().count();
        let mut options = RestoreOptions::new("restored", "[ds1]");
        options.macs = vim_client::MacPolicy::Regenerate;
        if let Ok(spec) = config_spec_from_info(e, &options) {
            assert_eq!(spec.spec.local(), "config");
            let mut temp: Vec<i32> = spec.key_map.values().copied().collect();
            temp.sort_unstable();
            let before = temp.len();
            temp.dedup();
            assert_eq!(before, temp.len(), "temporary device keys collide");
            assert!(temp.iter().all(|k| *k < 0), "temporary keys are negative");
            round_trip(&spec.spec);
        }
    }
    let _ = Device::from_element(e);
    if let Ok(info) = SnapshotInfo::from_element(e) {
        let all = info.all();
        for s in &all {
            assert!(!info.find_by_name(&s.name).is_empty());
        }
    }
    if let Ok(changes) = DiskChangeInfo::from_element(e) {
        assert_eq!(changes.changed_areas.len(), e.all("changedArea").count());
    }
    let _ = ObjectContent::from_element(e);
    let _ = ServiceContent::from_element(e);
    let _ = VStorageObject::from_element(e);
    if let Ok(moref) = MoRef::from_element(e) {
        let text = moref.to_string();
        if !moref.kind.contains(':') && !moref.kind.is_empty() && !moref.value.is_empty() {
            let back: MoRef = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back, moref);
        }
    }
}
