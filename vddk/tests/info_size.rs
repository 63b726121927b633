//! The fake is as strict as VDDK about `VixDiskLibInfo`'s size: a library that claims 6.x
//! (`libvixDiskLib.so.6`) hands out exactly the 56 bytes of the pre-7.0 struct, followed by an
//! inaccessible page, so a caller that reads 7.0's sector sizes from it crashes instead of
//! silently reading heap garbage. `vddk` reads only the fields of the version it loaded.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use vddk::{ConnectOptions, ConnectParams, OpenFlags, Vddk};
use vddk_sys::{VddkLibrary, VixDiskLibConnectParams, VixDiskLibHandle, VixDiskLibInfo};

const CHILD_DIR: &str = "VDDK_TEST_INFO_CHILD_DIR";
const CHILD_DISK: &str = "VDDK_TEST_INFO_CHILD_DISK";
const CHILD_OFFSET: &str = "VDDK_TEST_INFO_CHILD_OFFSET";

/// Run in a child process by the test below: reads one byte at `offset` of the struct GetInfo
/// returns. Without the variables (a normal test run) it does nothing.
#[test]
fn child_reads_one_byte_of_get_info() {
    let (Some(dir), Some(disk), Some(offset)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_DISK).ok(),
        std::env::var(CHILD_OFFSET).ok(),
    ) else {
        return;
    };
    let offset: usize = offset.parse().unwrap();
    // SAFETY: the directory holds the fake VixDiskLib built for these tests.
    let lib = unsafe { VddkLibrary::load(&PathBuf::from(dir)) }.unwrap();
    let api = &lib.api;
    let disk = std::ffi::CString::new(disk).unwrap();
    // SAFETY: the fake's C functions are called with valid arguments as VDDK documents: a
    // zeroed caller-owned connect params struct is a local connection; out-pointers are valid.
    // The read at `offset` is the point of the test (it may fault, in this child only).
    unsafe {
        assert_eq!(
            api.VixDiskLib_InitEx(6, 5, None, None, None, std::ptr::null(), std::ptr::null()),
            0
        );
        let params = VixDiskLibConnectParams::default();
        let mut conn = std::ptr::null_mut();
        assert_eq!(
            api.VixDiskLib_ConnectEx(&params, 1, std::ptr::null(), std::ptr::null(), &mut conn),
            0
        );
        let mut handle: VixDiskLibHandle = std::ptr::null_mut();
        assert_eq!(api.VixDiskLib_Open(conn, disk.as_ptr(), 4, &mut handle), 0);
        let mut info: *mut VixDiskLibInfo = std::ptr::null_mut();
        assert_eq!(api.VixDiskLib_GetInfo(handle, &mut info), 0);
        let byte = std::ptr::read_volatile(info.cast::<u8>().add(offset));
        println!("byte {offset} = {byte}");
    }
    std::process::exit(0);
}

fn run_child(
    dir: &std::path::Path,
    disk: &std::path::Path,
    offset: usize,
) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_reads_one_byte_of_get_info", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_DISK, disk)
        .env(CHILD_OFFSET, offset.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn a_6x_library_hands_out_exactly_56_bytes_of_info() {
    let lab = Lab::new("info-size", "");
    lab.make_disk("i/i.vmdk", 2048, 0, &[]);
    let disk = lab.datastore.join("i/i.vmdk");
    let v6 = scratch("info-v6");
    std::fs::copy(fake_library(), v6.join("libvixDiskLib.so.6")).unwrap();

    // The last byte of the 6.x struct is readable; the first byte after it is not.
    assert!(run_child(&v6, &disk, 55).success());
    let past = run_child(&v6, &disk, 56);
    assert_eq!(past.signal(), Some(libc::SIGSEGV), "{past:?}");
    // A 7.0+ library has the sector sizes (64 bytes).
    let v8 = scratch("info-v8");
    std::fs::copy(fake_library(), v8.join("libvixDiskLib.so.8")).unwrap();
    assert!(run_child(&v8, &disk, 63).success());

    // And vddk reads a 6.x library's info without touching what is not there.
    let vddk = Vddk::load(&v6).unwrap();
    vddk.init(None).unwrap();
    let conn = vddk
        .connect(&ConnectParams::local(), &ConnectOptions::default())
        .unwrap();
    let d = conn
        .open(disk.to_str().unwrap(), OpenFlags::READ_ONLY)
        .unwrap();
    assert_eq!(d.info().capacity_sectors, 2048);
    assert_eq!(d.info().logical_sector_size, None);
}
