//! `Vddk::cleanup` at start-up removes what a killed run left behind (the fake's stand-in for
//! hot-added disks: markers in VDDK's `tmpDirectory`), and leaves what running processes use.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vddk::{CleanupReport, ConnectOptions, ConnectParams, Credentials, Error, OpenFlags, Vddk};

const CHILD_LIBDIR: &str = "VDDK_TEST_CHILD_LIBDIR";
const CHILD_CONFIG: &str = "VDDK_TEST_CHILD_CONFIG";
const CHILD_DISK: &str = "VDDK_TEST_CHILD_DISK";
const CHILD_READY: &str = "VDDK_TEST_CHILD_READY";

/// Run by the parent test in a child process: opens a disk, says so, and waits to be killed.
/// Without the variables (a normal test run) it does nothing.
#[test]
fn child_holds_a_disk_open_until_killed() {
    let (Some(libdir), Some(config), Some(disk), Some(ready)) = (
        std::env::var_os(CHILD_LIBDIR),
        std::env::var_os(CHILD_CONFIG),
        std::env::var(CHILD_DISK).ok(),
        std::env::var_os(CHILD_READY),
    ) else {
        return;
    };
    let vddk = Vddk::load(&PathBuf::from(libdir)).unwrap();
    vddk.init(Some(&PathBuf::from(config))).unwrap();
    let conn = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let _disk = conn.open(&disk, OpenFlags::READ_ONLY).unwrap();
    std::fs::write(ready, b"open").unwrap();
    std::thread::sleep(Duration::from_secs(120));
    panic!("the parent test should have killed this process");
}

/// The server as a whole, with the lab's login: what start-up cleanup is given.
fn server() -> ConnectParams {
    ConnectParams::whole_server()
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        })
}

fn markers(lab: &Lab) -> usize {
    std::fs::read_dir(lab.tmp_directory().join("fake-vddk-state"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn cleanup_removes_what_a_killed_run_left_and_keeps_what_is_in_use() {
    let lab = Lab::new("cleanup", "");
    let path = lab.make_disk("cl/cl.vmdk", 256, 0, &[]);
    let vddk = Vddk::load(&lab.libdir).unwrap();
    vddk.init(Some(&lab.config)).unwrap();
    assert_eq!(vddk.cleanup(&server()).unwrap(), CleanupReport::default());
    // Whole-server parameters are for cleanup only.
    assert!(matches!(
        vddk.connect(&server(), &ConnectOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    // A VM of the server works as well.
    assert_eq!(
        vddk.cleanup(&good_params()).unwrap(),
        CleanupReport::default()
    );

    let ready = lab.root.join("child-ready");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_a_disk_open_until_killed",
            "--nocapture",
        ])
        .env(CHILD_LIBDIR, &lab.libdir)
        .env(CHILD_CONFIG, &lab.config)
        .env(CHILD_DISK, &path)
        .env(CHILD_READY, &ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child never opened its disk"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(markers(&lab), 1);
    // The child is alive: its disk is in use and must stay.
    assert_eq!(
        vddk.cleanup(&server()).unwrap(),
        CleanupReport {
            cleaned_up: 0,
            remaining: 1
        }
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed: what it left behind is removed, once.
    assert_eq!(
        vddk.cleanup(&server()).unwrap(),
        CleanupReport {
            cleaned_up: 1,
            remaining: 0
        }
    );
    assert_eq!(markers(&lab), 0);
    let lines = lab.events("cleanup", "");
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["cleaned_up"], 1);
    assert_eq!(lines[3]["server"], SERVER);

    // A disk this process has open counts as remaining; closing it leaves nothing behind.
    let conn = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(vddk.cleanup(&server()).unwrap().remaining, 1);
    drop(disk);
    assert_eq!(markers(&lab), 0);
    assert_eq!(vddk.cleanup(&server()).unwrap(), CleanupReport::default());
}
