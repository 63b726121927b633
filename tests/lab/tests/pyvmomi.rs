//! pyVmomi, the most used vSphere client, reads the lab through its property accessors
//! (the SOAP `Fetch` method): every property safekeeping reads of a VM without snapshots
//! and of one with a snapshot tree, compared with `safekeeping-lab vm-info`. Unset
//! properties (`vm.snapshot` without snapshots) read as None, as on vCenter.
mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyvmomi/read_vm.py");

fn python() -> String {
    let out = Command::new(bin())
        .args(["which", "python"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the lab's Python venv is missing (bash scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs the pyVmomi script; the password comes from the file lab.json names.
fn read_vm(lab: &Lab, vm: &str) -> Value {
    let out = Command::new(python())
        .arg(SCRIPT)
        .arg(lab.dir.join("lab.json"))
        .arg(vm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyVmomi could not read {vm}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn snapshot(s: &Soap, vm: &str, name: &str) -> String {
    let info = s.task(&format!(
        "<CreateSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <name>{name}</name><description>pyvmomi test</description><memory>false</memory>\
         <quiesce>false</quiesce></CreateSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    between(&info, "type=\"VirtualMachineSnapshot\">", "<").expect("snapshot moref")
}

fn str_or_empty(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// What pyVmomi read equals what the lab reports.
/// A disk's chain as layoutEx lists it: `[descriptor, extent]` per file, read from the
/// descriptors' parentFileNameHint, the base first.
fn chain(lab: &Lab, desc: &str) -> Vec<[String; 2]> {
    let (folder, _) = desc.rsplit_once('/').unwrap();
    let mut units = Vec::new();
    let mut cur = desc.to_string();
    loop {
        let text = std::fs::read_to_string(local(lab, &cur)).unwrap();
        let parent = text
            .lines()
            .find_map(|l| l.strip_prefix("parentFileNameHint=\""))
            .map(|p| p.trim_end_matches('"').to_string());
        let stem = cur.strip_suffix(".vmdk").unwrap();
        let extent = match parent {
            Some(_) => format!("{stem}-delta.vmdk"),
            None => format!("{stem}-flat.vmdk"),
        };
        units.push([cur.clone(), extent]);
        match parent {
            Some(p) => cur = format!("{folder}/{p}"),
            None => break,
        }
    }
    units.reverse();
    units
}

fn compare(lab: &Lab, py: &Value, info: &Value) {
    for (py_key, info_key) in [
        ("moref", "moref"),
        ("name", "name"),
        ("uuid", "uuid"),
        ("instance_uuid", "instance_uuid"),
        ("guest_id", "guest_id"),
        ("firmware", "firmware"),
        ("cpus", "cpus"),
        ("memory_mb", "memory_mb"),
        ("change_tracking", "change_tracking"),
        ("vmx_path", "vmx_path"),
        ("power_state", "power_state"),
        ("runtime_power_state", "power_state"),
    ] {
        assert_eq!(py[py_key], info[info_key], "{py_key}");
    }
    assert_eq!(py["template"], false);
    assert_eq!(py["parent_vapp"], Value::Null);
    assert_eq!(py["missing_vm_fault"], "ManagedObjectNotFound");
    let lab_json = lab.json();
    assert_eq!(py["parent"], lab_json["vm_folder_moref"]);
    assert_eq!(py["resource_pool"], lab_json["pool_moref"]);
    assert!(py["host"].as_str().unwrap().starts_with("host-"));
    assert!(py["datastores"]
        .as_array()
        .unwrap()
        .contains(&lab_json["datastore_morefs"]["datastore1"]));

    let py_disks: BTreeMap<i64, &Value> = py["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["key"].as_i64().unwrap(), d))
        .collect();
    let disks = info["disks"].as_array().unwrap();
    assert_eq!(py_disks.len(), disks.len());
    for d in disks {
        let p = py_disks[&d["key"].as_i64().unwrap()];
        assert_eq!(p["path"], d["path"]);
        assert_eq!(p["capacity"], d["capacity"]);
        assert_eq!(p["uuid"], d["uuid"]);
        assert_eq!(p["controller_key"], d["controller_key"]);
        assert_eq!(p["unit"], d["unit"]);
        assert_eq!(str_or_empty(&p["change_id"]), str_or_empty(&d["change_id"]));
    }
    let py_nics: BTreeMap<i64, &Value> = py["nics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["key"].as_i64().unwrap(), n))
        .collect();
    let nics = info["nics"].as_array().unwrap();
    assert_eq!(py_nics.len(), nics.len());
    for n in nics {
        let p = py_nics[&n["key"].as_i64().unwrap()];
        assert_eq!(p["mac"], n["mac"]);
        assert_eq!(p["network"], n["network"]);
        // VirtualVmxnet3 / vmxnet3, VirtualE1000e / e1000e.
        assert_eq!(
            p["type"].as_str().unwrap().to_lowercase(),
            format!("virtual{}", n["type"].as_str().unwrap())
        );
        assert!(py["networks"].as_array().unwrap().contains(&n["network"]));
    }
    // layoutEx lists the VM's files as ESXi does: the .vmx and .nvram in the VM's folder,
    // each disk's chain (a unit of descriptor and extent per file, the base first: after a
    // snapshot the VM's disk is a delta over the file the snapshot froze), each snapshot's
    // frozen chain, and nothing that is not there (a snapshot's .vmsn is vcsim's own file).
    let chain_of = |desc: &str| -> Value { Value::from(chain(lab, desc)) };
    let vmx = info["vmx_path"].as_str().unwrap();
    let mut expected = vec![
        vmx.to_string(),
        format!("{}.nvram", vmx.strip_suffix(".vmx").unwrap()),
    ];
    for d in disks {
        let desc = d["path"].as_str().unwrap();
        let units = chain(lab, desc);
        let extent = &units.last().unwrap()[1];
        assert!(
            d["flat_path"]
                .as_str()
                .unwrap()
                .ends_with(extent.rsplit('/').next().unwrap()),
            "{d}"
        );
        assert_eq!(
            py["layout_disks"][d["key"].to_string()],
            chain_of(desc),
            "layoutEx.disk of {}",
            d["key"]
        );
        expected.extend(units.into_iter().flatten());
    }
    for s in info["snapshots"].as_array().cloned().unwrap_or_default() {
        let frozen = &py["layout_snapshot_disks"][s["moref"].as_str().unwrap()];
        let mut chains: Vec<Value> = frozen.as_object().unwrap().values().cloned().collect();
        chains.sort_by_key(|c| c.to_string());
        let mut want: Vec<Value> = s["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_str().unwrap();
                expected.extend(chain(lab, p).into_iter().flatten());
                chain_of(p)
            })
            .collect();
        want.sort_by_key(|c| c.to_string());
        assert_eq!(chains, want, "layoutEx.snapshot of {}", s["moref"]);
    }
    expected.sort();
    expected.dedup();
    let mut listed: Vec<String> = py["layout_files"]
        .as_array()
        .expect("layoutEx is set")
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .filter(|f| !f.ends_with(".vmsn"))
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "layoutEx.file");
    assert_eq!(
        py["layout_snapshots"].as_array().unwrap().len(),
        info["snapshots"].as_array().map_or(0, Vec::len)
    );

    // The snapshot tree, read node by node, each snapshot's own config through its accessor.
    let snaps = info["snapshots"].as_array().cloned().unwrap_or_default();
    assert_eq!(py["snapshot_is_unset"], snaps.is_empty());
    assert_eq!(
        str_or_empty(&py["current_snapshot"]),
        str_or_empty(&info["current_snapshot"])
    );
    let py_snaps = py["snapshots"].as_array().unwrap();
    assert_eq!(py_snaps.len(), snaps.len());
    for (p, s) in py_snaps.iter().zip(&snaps) {
        assert_eq!(p["moref"], s["moref"]);
        assert_eq!(p["name"], s["name"]);
        assert_eq!(p["id"], s["id"]);
        assert_eq!(p["quiesced"], s["quiesced"]);
        assert_eq!(p["vm"], info["moref"]);
        assert_eq!(str_or_empty(&p["parent"]), str_or_empty(&s["parent"]));
        // The snapshot's config.hardware.device points at the files it froze (vm-info lists
        // them in no particular order).
        let sorted = |v: &Value| {
            let mut l: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&p["disks"]), sorted(&s["disks"]));
        assert_eq!(p["disks"].as_array().unwrap().len(), disks.len());
    }
}

#[test]
fn pyvmomi_reads_vms_with_and_without_snapshots() {
    let lab = Lab::up();
    lab.run(&[
        "create-vm",
        "--name",
        "plain",
        "--disk",
        "8M",
        "--disk",
        "4M",
        "--nic",
        "VM Network",
        "--nic-type",
        "e1000e",
        "--firmware",
        "efi",
        "--powered-off",
    ]);
    let vm = lab
        .run(&[
            "create-vm",
            "--name",
            "snappy",
            "--disk",
            "8M",
            "--disk",
            "16M",
            "--nic",
            "VM Network",
            "--cpus",
            "4",
        ])
        .trim()
        .to_string();
    let s = lab.soap();
    let reconfig = s.task(&format!(
        "<ReconfigVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <spec><changeTrackingEnabled>true</changeTrackingEnabled></spec></ReconfigVM_Task>"
    ));
    assert!(reconfig.contains("<state>success</state>"), "{reconfig}");
    let s1 = snapshot(&s, &vm, "first");
    lab.write("snappy", 0, 65536, 4096, 3);
    let s2 = snapshot(&s, &vm, "second");
    lab.write("snappy", 1, 0, 8192, 4);

    let plain = read_vm(&lab, "plain");
    let plain_info = lab.vm_info("plain");
    assert_eq!(plain["snapshot_is_unset"], true);
    assert_eq!(plain["power_state"], "poweredOff");
    assert_eq!(plain["change_tracking"], false);
    assert_eq!(plain["firmware"], "efi");
    compare(&lab, &plain, &plain_info);

    let snappy = read_vm(&lab, "snappy");
    let snappy_info = lab.vm_info("snappy");
    assert_eq!(snappy["snapshot_is_unset"], false);
    assert_eq!(snappy["current_snapshot"], s2.as_str());
    assert_eq!(snappy["root_snapshots"], serde_json::json!([s1]));
    assert_eq!(snappy["snapshots"][1]["parent"], s1.as_str());
    assert_eq!(
        snappy["snapshots"][0]["child_snapshots"],
        serde_json::json!([s2])
    );
    assert_eq!(snappy["change_tracking"], true);
    assert_eq!(snappy["cpus"], 4);
    // Each snapshot's disks carry the change id they were frozen at.
    let ids = |i: usize| snappy["snapshots"][i]["change_ids"].clone();
    assert!(ids(0)
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c.as_str().is_some_and(|c| c.contains('/'))));
    assert_ne!(ids(0), ids(1));
    compare(&lab, &snappy, &snappy_info);

    // Removing a snapshot (vcsim deletes the files its layoutEx names as the snapshot's data
    // and memory) leaves the VM's own files; layoutEx follows.
    let removed = s.task(&format!(
        "<RemoveSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachineSnapshot\">{s2}</_this>\
         <removeChildren>false</removeChildren></RemoveSnapshot_Task>"
    ));
    assert!(removed.contains("<state>success</state>"), "{removed}");
    let snappy_info = lab.vm_info("snappy");
    let vmx = snappy_info["vmx_path"].as_str().unwrap();
    for f in [vmx.to_string(), vmx.replace(".vmx", ".nvram")] {
        assert!(
            local(&lab, &f).is_file(),
            "{f} is gone after RemoveSnapshot"
        );
    }
    for d in snappy_info["disks"].as_array().unwrap() {
        assert!(local(&lab, d["path"].as_str().unwrap()).is_file());
    }
    let snappy = read_vm(&lab, "snappy");
    assert_eq!(snappy["current_snapshot"], s1.as_str());
    assert_eq!(snappy["layout_snapshots"], serde_json::json!([s1]));
    compare(&lab, &snappy, &snappy_info);
}

/// The raw protocol under pyVmomi's accessor: an unset property is an empty FetchResponse
/// (no returnval), a set one has its value, and without a session only the ServiceInstance's
/// content may be fetched (NotAuthenticated otherwise, as on vCenter).
#[test]
fn fetch_answers_unset_properties_and_needs_a_session() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "w", "--disk", "1M"])
        .trim()
        .to_string();
    let fetch = |s: &Soap, kind: &str, moref: &str, prop: &str| {
        s.call(&format!(
            "<Fetch xmlns=\"urn:vim25\"><_this type=\"{kind}\">{moref}</_this><prop>{prop}</prop></Fetch>"
        ))
    };
    let anonymous = Soap::client(&lab);
    let r = fetch(&anonymous, "VirtualMachine", &vm, "name");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.body.contains("NotAuthenticated"), "{}", r.body);
    let r = fetch(&anonymous, "ServiceInstance", "ServiceInstance", "content");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("propertyCollector"), "{}", r.body);

    let s = lab.soap();
    let unset = fetch(&s, "VirtualMachine", &vm, "snapshot").ok();
    assert!(unset.contains("FetchResponse"), "{unset}");
    assert!(!unset.contains("returnval"), "{unset}");
    let name = fetch(&s, "VirtualMachine", &vm, "name").ok();
    assert!(name.contains(">w</returnval>"), "{name}");
    let missing = fetch(&s, "VirtualMachine", "vm-999999", "name");
    assert_eq!(missing.status, 500);
    assert!(
        missing.body.contains("ManagedObjectNotFound"),
        "{}",
        missing.body
    );
    let invalid = fetch(&s, "VirtualMachine", &vm, "noSuchProperty");
    assert_eq!(invalid.status, 500);
    assert!(invalid.body.contains("InvalidProperty"), "{}", invalid.body);
}
