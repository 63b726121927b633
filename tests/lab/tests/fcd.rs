//! First class disks: real files, frozen snapshots and changed areas through
//! VcenterVStorageObjectManager.
mod common;

use common::*;

const MGR: &str = "<_this type=\"VcenterVStorageObjectManager\">VStorageObjectManager</_this>";
const K64: u64 = 65536;

fn fcd_snapshot(s: &Soap, id: &str, ds: &str) -> String {
    let info = s.task(&format!(
        "<VStorageObjectCreateSnapshot_Task xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
         <datastore type=\"Datastore\">{ds}</datastore><description>t</description></VStorageObjectCreateSnapshot_Task>"
    ));
    assert!(info.contains("<state>success</state>"), "{info}");
    between(&info, "<id>", "<").expect("snapshot id")
}

fn details(s: &Soap, id: &str, ds: &str, snap: &str) -> (String, String) {
    let r = s
        .call(&format!(
            "<RetrieveSnapshotDetails xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
             <datastore type=\"Datastore\">{ds}</datastore><snapshotId><id>{snap}</id></snapshotId></RetrieveSnapshotDetails>"
        ))
        .ok();
    (
        between(&r, "<path>", "<").unwrap(),
        between(&r, "<changedBlockTrackingId>", "<").unwrap(),
    )
}

fn query(s: &Soap, id: &str, ds: &str, snap: &str, change_id: &str) -> Reply {
    s.call(&format!(
        "<VstorageObjectVCenterQueryChangedDiskAreas xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
         <datastore type=\"Datastore\">{ds}</datastore><snapshotId><id>{snap}</id></snapshotId>\
         <startOffset>0</startOffset><changeId>{}</changeId></VstorageObjectVCenterQueryChangedDiskAreas>",
        xml_escape(change_id)
    ))
}

fn areas(r: Reply) -> Vec<(u64, u64)> {
    let body = r.ok();
    all_between(&body, "<changedArea>", "</changedArea>")
        .iter()
        .map(|a| {
            (
                between(a, "<start>", "<").unwrap().parse().unwrap(),
                between(a, "<length>", "<").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn first_class_disk_snapshots_freeze_and_track_changes() {
    let lab = Lab::up();
    let s = lab.soap();
    let ds = lab.json()["datastore_morefs"]["datastore1"]
        .as_str()
        .unwrap()
        .to_string();
    let info = s.task(&format!(
        "<CreateDisk_Task xmlns=\"urn:vim25\">{MGR}<spec><name>fcd1</name><capacityInMB>4</capacityInMB>\
         <backingSpec xsi:type=\"VslmCreateSpecDiskFileBackingSpec\"><datastore type=\"Datastore\">{ds}</datastore>\
         <provisioningType>thin</provisioningType></backingSpec></spec></CreateDisk_Task>"
    ));
    assert!(
        info.contains("<changedBlockTrackingEnabled>true</changedBlockTrackingEnabled>"),
        "{info}"
    );
    let id = between(&info, "<id><id>", "<").unwrap();
    let path = between(&info, "<filePath>", "<").unwrap();
    let write = |offset: u64, seed: u64| {
        lab.run(&[
            "guest-write",
            "--path",
            &path,
            "--offset",
            &offset.to_string(),
            "--len",
            "100",
            "--seed",
            &seed.to_string(),
        ]);
    };

    write(3 * K64, 1);
    let before = lab.digest_path(&path);
    let s1 = fcd_snapshot(&s, &id, &ds);
    let (frozen, c1) = details(&s, &id, &ds, &s1);
    assert_ne!(frozen, path);
    write(10 * K64, 2);
    assert_eq!(
        lab.digest_path(&frozen),
        before,
        "the snapshot's copy is frozen"
    );
    assert_ne!(lab.digest_path(&path), before);

    assert_eq!(areas(query(&s, &id, &ds, &s1, "*")), vec![(3 * K64, K64)]);
    let s2 = fcd_snapshot(&s, &id, &ds);
    assert_eq!(areas(query(&s, &id, &ds, &s2, &c1)), vec![(10 * K64, K64)]);

    let bad = query(
        &s,
        &id,
        &ds,
        &s2,
        "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1",
    );
    assert!(bad.body.contains("InvalidArgumentFault"), "{}", bad.body);
    let missing = query(&s, &id, &ds, "no-such-snapshot", "*");
    assert!(missing.body.contains("NotFoundFault"), "{}", missing.body);

    let del = s.task(&format!(
        "<DeleteSnapshot_Task xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
         <datastore type=\"Datastore\">{ds}</datastore><snapshotId><id>{s1}</id></snapshotId></DeleteSnapshot_Task>"
    ));
    assert!(del.contains("<state>success</state>"), "{del}");
    assert!(
        !local(&lab, &frozen).exists(),
        "the frozen copy is deleted with its snapshot"
    );
    assert!(query(&s, &id, &ds, &s1, "*").body.contains("NotFoundFault"));
}
