//! Whatever order the caller drops things in, VDDK sees disks closed before their connection
//! disconnects, and every connection gone before VixDiskLib_Exit; after Exit the library can
//! be initialised again. The only test in its process, because it exits VDDK.

mod common;

use common::*;
use vddk::{ConnectOptions, Error, OpenFlags, Vddk};

#[test]
fn drop_order_is_always_disk_then_connection_then_exit() {
    let lab = Lab::new("lifecycle", "");
    let path = lab.make_disk("life/l.vmdk", 256, 0, &[]);
    let vddk = Vddk::load(&lab.libdir).unwrap();

    // A missing config file is named; one VDDK rejects makes InitEx fail; either way nothing
    // is left initialised.
    let missing = lab.root.join("missing.conf");
    let err = vddk.init(Some(&missing)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("missing.conf"), "{err}");
    let broken = lab.root.join("broken.conf");
    std::fs::write(&broken, "fake.read_latency_ms = soon\n").unwrap();
    let err = vddk.init(Some(&broken)).unwrap_err();
    assert_eq!(
        err.vix_code(),
        Some(vddk::codes::VIX_E_INVALID_ARG),
        "{err}"
    );
    assert!(
        err.to_string().contains("VixDiskLib_InitEx failed"),
        "{err}"
    );
    assert!(matches!(
        vddk.connect(&good_params(), &ConnectOptions::default()),
        Err(Error::NotInitialised)
    ));
    vddk.init(Some(&lab.config)).unwrap();

    let conn = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let mut disk = conn.open(&path, OpenFlags::NONE).unwrap();
    // Drop the library handle and the connection first: the disk keeps both alive.
    drop(vddk);
    drop(conn);
    disk.write(0, &[9u8; 512]).unwrap();
    let events = |lab: &Lab| -> Vec<String> {
        lab.stats_lines()
            .iter()
            .map(|v| v["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!events(&lab).contains(&"exit".to_string()));
    drop(disk);
    let ev = events(&lab);
    let tail: Vec<&str> = ev.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(tail, ["close", "disconnect", "exit"]);
    let lines = lab.stats_lines();
    assert_eq!(lines[lines.len() - 2]["open_disks"], 0);
    assert_eq!(lines[lines.len() - 1]["open_connections"], 0);

    // After Exit a new handle may initialise again.
    let again = Vddk::load(&lab.libdir).unwrap();
    again.init(Some(&lab.config)).unwrap();
    let conn = again
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let mut buf = [0u8; 512];
    disk.read(0, &mut buf).unwrap();
    assert_eq!(buf, [9u8; 512]);
}
