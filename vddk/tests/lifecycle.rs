//! Whatever order the caller drops things in, VDDK sees disks closed before their connection
//! disconnects, and every connection gone before VixDiskLib_Exit; after Exit VDDK is never
//! initialised again in the process (VMware documents InitEx as once per process, and VDDK
//! threads may outlive Exit). The only test in its process, because it exits VDDK.

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
    let tail: Vec<&str> = ev.iter().rev().take(4).rev().map(String::as_str).collect();
    // The connect parameters live until after Disconnect.
    assert_eq!(tail, ["close", "disconnect", "free_connect_params", "exit"]);
    let lines = lab.stats_lines();
    assert_eq!(lines[lines.len() - 3]["open_disks"], 0);
    assert_eq!(lines[lines.len() - 2]["intact"], true);
    assert_eq!(lines[lines.len() - 1]["open_connections"], 0);

    // After Exit no handle may initialise again: VDDK is initialised once per process. The
    // library stays loaded, so a new handle can still be made (and is refused at init).
    let again = Vddk::load(&lab.libdir).unwrap();
    let err = again.init(Some(&lab.config)).unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialised { .. }), "{err}");
    assert!(err.to_string().contains("once per process"), "{err}");
    assert!(matches!(
        again.connect(&good_params(), &ConnectOptions::default()),
        Err(Error::NotInitialised)
    ));
    // Exit ran once, and InitEx never again.
    let exits = events(&lab).iter().filter(|e| *e == "exit").count();
    assert_eq!(exits, 1);
}
