//! Snapshots freeze the disks; QueryChangedDiskAreas reports what was written, through a
//! tiny SOAP client written in the test.
mod common;

use common::*;

fn snapshot(s: &Soap, vm: &str, name: &str) -> String {
    let info = s.task(&format!(
        "<CreateSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <name>{name}</name><description>test</description><memory>false</memory><quiesce>false</quiesce>\
         </CreateSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    between(&info, "type=\"VirtualMachineSnapshot\">", "<").expect("snapshot moref")
}

/// (fileName, changeId) of the snapshot's first disk.
fn snapshot_disk(s: &Soap, snap: &str) -> (String, String) {
    let devices = s.property("VirtualMachineSnapshot", snap, "config.hardware.device");
    let disk = devices
        .split(":type=\"VirtualDisk\"")
        .nth(1)
        .expect("a disk in the snapshot's config")
        .to_string();
    (
        between(&disk, "<fileName>", "<").unwrap(),
        between(&disk, "<changeId>", "<").unwrap_or_default(),
    )
}

fn query(s: &Soap, vm: &str, snap: &str, key: i64, start: u64, change_id: &str) -> Reply {
    s.call(&format!(
        "<QueryChangedDiskAreas xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <snapshot type=\"VirtualMachineSnapshot\">{snap}</snapshot><deviceKey>{key}</deviceKey>\
         <startOffset>{start}</startOffset><changeId>{}</changeId></QueryChangedDiskAreas>",
        xml_escape(change_id)
    ))
}

/// (length, [(start, length)]) of a QueryChangedDiskAreas reply.
fn areas(reply: Reply) -> (u64, Vec<(u64, u64)>) {
    let body = reply.ok();
    let length = between(&body, "</startOffset><length>", "<")
        .unwrap()
        .parse()
        .unwrap();
    let list = all_between(&body, "<changedArea>", "</changedArea>")
        .iter()
        .map(|a| {
            (
                between(a, "<start>", "<").unwrap().parse().unwrap(),
                between(a, "<length>", "<").unwrap().parse().unwrap(),
            )
        })
        .collect();
    (length, list)
}

fn enable_cbt(s: &Soap, vm: &str) {
    let info = s.task(&format!(
        "<ReconfigVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <spec><changeTrackingEnabled>true</changeTrackingEnabled></spec></ReconfigVM_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
}

const K64: u64 = 65536;

#[test]
fn snapshots_freeze_data_and_cbt_reports_the_written_areas() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "w01", "--disk", "4M"])
        .trim()
        .to_string();
    let s = lab.soap();
    enable_cbt(&s, &vm);
    let info = lab.vm_info("w01");
    assert_eq!(info["change_tracking"], true);
    let key = info["disks"][0]["key"].as_i64().unwrap();
    assert!(info["disks"][0]["change_id"]
        .as_str()
        .unwrap()
        .contains('/'));
    assert!(
        std::fs::read_to_string(lab.datastore("datastore1").join("w01/w01.vmx"))
            .unwrap()
            .contains("ctkEnabled = \"TRUE\"")
    );

    // Before the first snapshot: blocks 1-2 and 48.
    lab.write("w01", 0, 100_000, 70_000, 1);
    lab.write("w01", 0, 3 << 20, 10, 9);
    // Block 10 written with zeros: allocated, but "*" leaves out what holds no data.
    let zeros = |offset: u64| {
        lab.run(&[
            "guest-write",
            "--vm",
            "w01",
            "--disk",
            "0",
            "--offset",
            &offset.to_string(),
            "--len",
            &K64.to_string(),
            "--zero",
        ])
    };
    zeros(10 * K64);
    let frozen_digest = lab.digest("w01", 0);
    let s1 = snapshot(&s, &vm, "safekeeping-1");
    let (s1_file, s1_change) = snapshot_disk(&s, &s1);
    // The snapshot keeps the disk's file; the VM writes to a new delta from now on.
    assert_eq!(s1_file, "[datastore1] w01/w01.vmdk");
    assert_eq!(
        lab.vm_info("w01")["disks"][0]["path"],
        "[datastore1] w01/w01-000001.vmdk"
    );
    assert!(s1_change.ends_with("/1"), "{s1_change}");

    // After it: blocks 32 and 1 again.
    lab.write("w01", 0, 2 << 20, K64, 2);
    lab.write("w01", 0, 100_000, 10, 3);
    assert_ne!(lab.digest("w01", 0), frozen_digest);
    assert_eq!(
        lab.digest_path(&s1_file),
        frozen_digest,
        "the snapshot's disk is frozen"
    );

    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir.join("lab-state/cbt.json")).unwrap())
            .unwrap();
    // The change log follows the VM's current disk (the delta).
    let blocks = &log["disks"]["[datastore1] w01/w01-000001.vmdk"]["blocks"];
    // Block 1 was written again after the snapshot; 2 and 48 only before it.
    assert_eq!(blocks["1"], 2, "{log}");
    assert_eq!(blocks["2"], 1, "{log}");
    assert_eq!(blocks["48"], 1, "{log}");
    assert_eq!(blocks["32"], 2, "{log}");
    let (len, all) = areas(query(&s, &vm, &s1, key, 0, "*"));
    assert_eq!(len, 4 << 20);
    assert_eq!(all, vec![(K64, 2 * K64), (48 * K64, K64)]);
    let (_, none) = areas(query(&s, &vm, &s1, key, 0, &s1_change));
    assert!(none.is_empty(), "{none:?}");

    let s2 = snapshot(&s, &vm, "safekeeping-2");
    let (s2_file, s2_change) = snapshot_disk(&s, &s2);
    assert_ne!(s2_file, s1_file);
    assert_ne!(s2_change, s1_change);
    let (len, since) = areas(query(&s, &vm, &s2, key, 0, &s1_change));
    assert_eq!(len, 4 << 20);
    assert_eq!(since, vec![(K64, K64), (32 * K64, K64)]);
    // "*" through the chain (base and delta): the blocks holding data in either, not the
    // zeroed block 10; block 1's data starts past its first 4 KiB (the lab reads on to find it).
    let (len, all) = areas(query(&s, &vm, &s2, key, 0, "*"));
    assert_eq!(len, 4 << 20);
    assert_eq!(all, vec![(K64, 2 * K64), (32 * K64, K64), (48 * K64, K64)]);
    // startOffset is respected, mid-block too.
    let (len, tail) = areas(query(&s, &vm, &s2, key, K64 + 100, &s1_change));
    assert_eq!(len, (4 << 20) - K64 - 100);
    assert_eq!(tail, vec![(K64 + 100, K64 - 100), (32 * K64, K64)]);

    // Partial replies: the client continues from startOffset + length.
    lab.run(&["knobs", "--max-changed-areas", "1"]);
    let (len, first) = areas(query(&s, &vm, &s2, key, 0, &s1_change));
    assert_eq!(first, vec![(K64, K64)]);
    assert_eq!(len, 32 * K64);
    let (_, second) = areas(query(&s, &vm, &s2, key, len, &s1_change));
    assert_eq!(second, vec![(32 * K64, K64)]);
    lab.run(&["knobs", "--max-changed-areas", "2048"]);

    // Change ids that are not this disk's, or from the future, are refused as vCenter does.
    for bad in [
        "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1",
        "garbage",
        &format!("{}99", &s1_change[..s1_change.len() - 1]),
    ] {
        let r = query(&s, &vm, &s2, key, 0, bad);
        assert_eq!(r.status, 500, "{bad}");
        assert!(
            r.body.contains("InvalidArgumentFault") && r.body.contains("changeId"),
            "{}",
            r.body
        );
    }
    let r = query(&s, &vm, &s2, 9999, 0, "*");
    assert!(r.body.contains("InvalidArgumentFault"), "{}", r.body);

    // Removing a snapshot consolidates: the delta above its disk (s2's) is merged into it
    // and removed, s2 now keeps s1's file, and the current data is left alone.
    let current = lab.digest("w01", 0);
    let s2_frozen = lab.digest_path(&s2_file);
    let frozen_local = local(&lab, &s1_file);
    let merged_local = local(&lab, &s2_file);
    assert!(frozen_local.exists() && merged_local.exists());
    let info = s.task(&format!(
        "<RemoveSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachineSnapshot\">{s1}</_this>\
         <removeChildren>false</removeChildren></RemoveSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    assert!(frozen_local.exists());
    assert!(!merged_local.exists());
    assert!(!merged_local
        .with_file_name("w01-000001-delta.vmdk")
        .exists());
    assert_eq!(snapshot_disk(&s, &s2).0, s1_file);
    assert_eq!(lab.digest_path(&s1_file), s2_frozen);
    assert_eq!(lab.digest("w01", 0), current);
    let snaps = lab.vm_info("w01")["snapshots"].clone();
    let names: Vec<&str> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["safekeeping-2"]);
    let tree = s.property("VirtualMachine", &vm, "snapshot");
    assert!(
        tree.contains("<name>safekeeping-2</name>") && !tree.contains("safekeeping-1"),
        "{tree}"
    );
    assert!(
        tree.contains(&format!(
            "<currentSnapshot type=\"VirtualMachineSnapshot\">{s2}</currentSnapshot>"
        )),
        "{tree}"
    );
}

#[test]
fn cbt_off_and_unauthenticated_queries_fault() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "plain", "--disk", "1M"])
        .trim()
        .to_string();
    let key = lab.vm_info("plain")["disks"][0]["key"].as_i64().unwrap();
    let s = lab.soap();
    let snap = snapshot(&s, &vm, "x");
    let r = query(&s, &vm, &snap, key, 0, "*");
    assert_eq!(r.status, 500);
    assert!(
        r.body.contains("FileFaultFault") && r.body.contains("Error caused by file"),
        "{}",
        r.body
    );

    let anonymous = Soap::client(&lab);
    let r = query(&anonymous, &vm, &snap, key, 0, "*");
    assert_eq!(r.status, 500);
    assert!(r.body.contains("NotAuthenticated"), "{}", r.body);
}

#[test]
fn quiesce_failure_knob_fails_the_snapshot_task() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "q", "--disk", "1M"])
        .trim()
        .to_string();
    lab.run(&["knobs", "--fail-quiesced-snapshots", "true"]);
    let s = lab.soap();
    let info = s.task(&format!(
        "<CreateSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <name>q1</name><memory>false</memory><quiesce>true</quiesce></CreateSnapshot_Task>"
    ));
    assert!(
        info.contains("<state>error</state>") && info.contains("ApplicationQuiesceFault"),
        "{info}"
    );
    let ok = snapshot(&s, &vm, "unquiesced");
    assert!(ok.starts_with("snapshot-"), "{ok}");
}

#[test]
fn a_snapshot_whose_disks_cannot_be_frozen_fails_and_is_removed() {
    let lab = Lab::up();
    let vm = lab
        .run(&["create-vm", "--name", "broken", "--disk", "1M"])
        .trim()
        .to_string();
    let desc = lab.datastore("datastore1").join("broken/broken.vmdk");
    std::fs::write(&desc, "this is not a descriptor\n").unwrap();
    let s = lab.soap();
    let info = s.task(&format!(
        "<CreateSnapshot_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this>\
         <name>x</name><memory>false</memory><quiesce>false</quiesce></CreateSnapshot_Task>"
    ));
    assert!(
        info.contains("<state>error</state>") && info.contains("SnapshotFault"),
        "{info}"
    );
    assert!(info.contains("could not freeze"), "{info}");
    assert!(
        lab.vm_info("broken")["snapshots"].is_null(),
        "the unfrozen snapshot is removed"
    );
}
