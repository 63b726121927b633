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

const VSLM: &str = "<_this type=\"VslmVStorageObjectManager\">VStorageObjectManager</_this>";

/// Runs a VSLM task and returns its VslmQueryInfo reply.
fn vslm_task(s: &Soap, body: &str) -> String {
    let reply = s.vslm(body).ok();
    let task = between(&reply, "<returnval type=\"VslmTask\">", "<").expect("VslmTask moref");
    let info = s
        .vslm(&format!("<VslmQueryInfo xmlns=\"urn:vslm\"><_this type=\"VslmTask\">{task}</_this></VslmQueryInfo>"))
        .ok();
    assert!(info.contains("<state>success</state>"), "{info}");
    info
}

#[test]
fn the_vslm_endpoint_manages_first_class_disks() {
    let lab = Lab::up();
    let s = lab.soap();
    let anon = Soap::client(&lab);
    let content_call = "<RetrieveContent xmlns=\"urn:vslm\"><_this type=\"VslmServiceInstance\">ServiceInstance</_this></RetrieveContent>";
    assert!(anon.vslm(content_call).body.contains("NotAuthenticated"));
    let content = s.vslm(content_call).ok();
    assert!(content.contains("<vStorageObjectManager type=\"VslmVStorageObjectManager\">VStorageObjectManager</vStorageObjectManager>"), "{content}");

    let ds = lab.json()["datastore_morefs"]["datastore2"]
        .as_str()
        .unwrap()
        .to_string();
    let created = vslm_task(&s, &format!(
        "<VslmCreateDisk_Task xmlns=\"urn:vslm\">{VSLM}<spec><name>v1</name><capacityInMB>2</capacityInMB>\
         <backingSpec xsi:type=\"VslmCreateSpecDiskFileBackingSpec\"><datastore type=\"Datastore\">{ds}</datastore>\
         <provisioningType>thin</provisioningType></backingSpec></spec></VslmCreateDisk_Task>"
    ));
    let id = between(&created, "<id><id>", "<").unwrap();
    let path = between(&created, "<filePath>", "<").unwrap();
    assert!(path.starts_with("[datastore2] fcd/"), "{path}");
    assert!(std::fs::read_to_string(local(&lab, &path))
        .unwrap()
        .contains("RW 4096 VMFS"));

    let got = s.vslm(&format!("<VslmRetrieveVStorageObject xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id></VslmRetrieveVStorageObject>")).ok();
    assert!(got.contains("<name>v1</name>"), "{got}");
    let list = s.vslm(&format!(
        "<VslmListVStorageObjectForSpec xmlns=\"urn:vslm\">{VSLM}<query><queryField>datastoreMoId</queryField>\
         <queryOperator>equals</queryOperator><queryValue>{ds}</queryValue></query><maxResult>100</maxResult></VslmListVStorageObjectForSpec>"
    )).ok();
    assert!(list.contains(&format!("<id>{id}</id>")), "{list}");

    lab.run(&[
        "guest-write",
        "--path",
        &path,
        "--offset",
        "0",
        "--len",
        "10",
        "--seed",
        "1",
    ]);
    let snap = |desc: &str| -> String {
        let info = vslm_task(&s, &format!(
            "<VslmCreateSnapshot_Task xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id><description>{desc}</description></VslmCreateSnapshot_Task>"
        ));
        between(&info, "<result", "</result>")
            .and_then(|r| between(&r, "<id>", "<"))
            .expect("snapshot id")
    };
    let s1 = snap("one");
    let details = s.vslm(&format!(
        "<VslmRetrieveSnapshotDetails xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id><snapshotId><id>{s1}</id></snapshotId></VslmRetrieveSnapshotDetails>"
    )).ok();
    let c1 = between(&details, "<changedBlockTrackingId>", "<").unwrap();
    lab.run(&[
        "guest-write",
        "--path",
        &path,
        "--offset",
        "1M",
        "--len",
        "10",
        "--seed",
        "2",
    ]);
    let s2 = snap("two");
    let areas = s.vslm(&format!(
        "<VslmQueryChangedDiskAreas xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id><snapshotId><id>{s2}</id></snapshotId>\
         <startOffset>0</startOffset><changeId>{c1}</changeId></VslmQueryChangedDiskAreas>"
    )).ok();
    assert_eq!(
        all_between(&areas, "<changedArea>", "</changedArea>"),
        vec!["<start>1048576</start><length>65536</length>".to_string()],
        "{areas}"
    );

    vslm_task(&s, &format!(
        "<VslmDeleteSnapshot_Task xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id><snapshotId><id>{s1}</id></snapshotId></VslmDeleteSnapshot_Task>"
    ));
    let info = s.vslm(&format!("<VslmRetrieveSnapshotInfo xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id></VslmRetrieveSnapshotInfo>")).ok();
    assert!(info.contains(&s2) && !info.contains(&s1), "{info}");
    vslm_task(&s, &format!("<VslmDeleteVStorageObject_Task xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id></VslmDeleteVStorageObject_Task>"));
    assert!(!local(&lab, &path).exists(), "the disk's files are deleted");
    let gone = s.vslm(&format!("<VslmRetrieveVStorageObject xmlns=\"urn:vslm\">{VSLM}<id><id>{id}</id></id></VslmRetrieveVStorageObject>"));
    assert_eq!(gone.status, 500);
    assert!(gone.body.contains("NotFoundFault"), "{}", gone.body);
}
