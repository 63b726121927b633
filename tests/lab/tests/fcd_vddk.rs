//! First class disk snapshots through the public vddk API: the lab keeps `fake.fcd.*` and
//! `fake.fcd_snapshot.*` in DIR/vddk/vddk.conf, so a connect naming a snapshot reads the
//! frozen copy, not the live disk.
mod common;

use common::*;
use vddk::{ConnectOptions, ConnectParams, Credentials, OpenFlags, Vddk};

const MGR: &str = "<_this type=\"VcenterVStorageObjectManager\">VStorageObjectManager</_this>";
const K64: u64 = 65536;

fn conf(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.join("vddk/vddk.conf")).unwrap()
}

#[test]
fn first_class_disk_snapshots_open_their_frozen_copy() {
    let lab = Lab::up();
    let s = lab.soap();
    let json = lab.json();
    let ds = json["datastore_morefs"]["datastore1"].as_str().unwrap();
    // A fault-injection key a test appended must survive the lab's rewrites.
    let mut text = conf(&lab);
    text.push_str("fake.read_latency_ms = 0\n");
    std::fs::write(lab.dir.join("vddk/vddk.conf"), text).unwrap();

    let info = s.task(&format!(
        "<CreateDisk_Task xmlns=\"urn:vim25\">{MGR}<spec><name>fcd-v</name><capacityInMB>2</capacityInMB>\
         <backingSpec xsi:type=\"VslmCreateSpecDiskFileBackingSpec\"><datastore type=\"Datastore\">{ds}</datastore>\
         <provisioningType>thin</provisioningType></backingSpec></spec></CreateDisk_Task>"
    ));
    let id = between(&info, "<id><id>", "<").unwrap();
    let path = between(&info, "<filePath>", "<").unwrap();
    assert!(
        conf(&lab).contains(&format!("fake.fcd.{id} = {path}\n")),
        "{}",
        conf(&lab)
    );
    let write = |seed: u64| {
        lab.run(&[
            "guest-write",
            "--path",
            &path,
            "--offset",
            &K64.to_string(),
            "--len",
            "4096",
            "--seed",
            &seed.to_string(),
        ]);
    };
    write(1);
    let snap = s.task(&format!(
        "<VStorageObjectCreateSnapshot_Task xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
         <datastore type=\"Datastore\">{ds}</datastore><description>t</description></VStorageObjectCreateSnapshot_Task>"
    ));
    let snap = between(&snap, "<result xsi:type=\"ID\"><id>", "<")
        .or_else(|| between(&snap, "<id>", "<"))
        .unwrap();
    write(2);
    let text = conf(&lab);
    let key = format!("fake.fcd_snapshot.{id}.{snap} = ");
    assert!(text.contains(&key), "{text}");
    assert!(text.contains("fake.read_latency_ms = 0\n"), "{text}");
    assert!(text.contains("fake.datastore.datastore1 = "), "{text}");

    let root = lab.dir.parent().unwrap().join("vddk-fresh");
    let vddk = Vddk::load(&fresh_fake(&root)).unwrap();
    vddk.init(Some(&lab.dir.join("vddk/vddk.conf"))).unwrap();
    let password = std::fs::read_to_string(lab.dir.join("password")).unwrap();
    let params = |snapshot: Option<String>| {
        ConnectParams::first_class_disk(id.clone(), ds, snapshot)
            .server("127.0.0.1")
            .port(json["port"].as_u64().unwrap() as u16)
            .thumbprint(json["thumbprint_sha1"].as_str().unwrap())
            .credentials(Credentials::UserPassword {
                user: json["user"].as_str().unwrap().to_string(),
                password: password.trim_end().to_string(),
            })
    };
    let options = ConnectOptions {
        read_only: true,
        ..ConnectOptions::default()
    };
    let read = |snapshot: Option<String>| -> vddk::Result<Vec<u8>> {
        let conn = vddk.connect(&params(snapshot), &options)?;
        let mut disk = conn.open(&path, OpenFlags::READ_ONLY)?;
        let mut buf = vec![0u8; 4096];
        disk.read(K64 / 512, &mut buf)?;
        disk.close()?;
        conn.disconnect()?;
        Ok(buf)
    };
    assert_eq!(
        read(Some(snap.clone())).unwrap(),
        pattern(1, 4096),
        "the snapshot shows the data as it was when it was taken"
    );
    assert_eq!(read(None).unwrap(), pattern(2, 4096), "the live disk");

    let del = s.task(&format!(
        "<DeleteSnapshot_Task xmlns=\"urn:vim25\">{MGR}<id><id>{id}</id></id>\
         <datastore type=\"Datastore\">{ds}</datastore><snapshotId><id>{snap}</id></snapshotId></DeleteSnapshot_Task>"
    ));
    assert!(del.contains("<state>success</state>"), "{del}");
    assert!(!conf(&lab).contains(&key), "{}", conf(&lab));
    let err = read(Some(snap)).unwrap_err();
    assert_eq!(
        err.vix_code(),
        Some(4),
        "a deleted snapshot is not found (VIX_E_FILE_NOT_FOUND): {err}"
    );
    assert!(conf(&lab).contains("fake.read_latency_ms = 0\n"));
}
