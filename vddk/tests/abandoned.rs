//! When async requests had to be abandoned (VixDiskLib_Wait failed with requests still
//! running), VixDiskLib_Exit is not called and the library stays loaded: VDDK may still be
//! working on them. VDDK is not initialised again in the process either. The only test in its
//! process, because it ends VDDK's use for the process.

mod common;

use common::*;
use vddk::{ConnectOptions, Error, OpenFlags, Vddk};

#[test]
fn abandoned_requests_keep_vddk_loaded_and_skip_exit() {
    let lab = Lab::new(
        "abandoned",
        "fake.fail_wait = true\nfake.read_latency_ms = 200\n",
    );
    let path = lab.make_disk("ab/ab.vmdk", 256, 0, &[]);
    let vddk = Vddk::load(&lab.libdir).unwrap();
    vddk.init(Some(&lab.config)).unwrap();
    let conn = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let mut disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    disk.read_async(0, vec![0u8; 512]).unwrap();
    disk.read_async(1, vec![0u8; 512]).unwrap();
    assert!(disk.wait().is_err(), "Wait fails (fake.fail_wait)");
    assert_eq!(disk.in_flight(), 2);
    // Closing cannot collect them: they are abandoned (buffers leaked, not freed).
    drop(disk);
    drop(conn);
    drop(vddk);
    let events: Vec<String> = lab
        .stats_lines()
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert!(events.contains(&"close".to_string()));
    assert!(events.contains(&"disconnect".to_string()));
    assert!(
        !events.contains(&"exit".to_string()),
        "Exit must be skipped while abandoned requests may run: {events:?}"
    );
    // Late completions find the library's code and their (leaked) buffers still there.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let again = Vddk::load(&lab.libdir).unwrap();
    assert!(matches!(
        again.init(Some(&lab.config)),
        Err(Error::AlreadyInitialised { .. })
    ));
}
