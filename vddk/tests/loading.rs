//! Finding and loading the library: missing directories, missing symbols, wrong files,
//! soname order, and an older (6.5) library whose Info struct has no sector sizes.

mod common;

use std::path::PathBuf;

use common::*;
use vddk::{ConnectOptions, ConnectParams, Error, LoadError, OpenFlags, Vddk};

/// The C library this process runs with: a real shared object without VixDiskLib symbols.
fn system_libc() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .map(PathBuf::from)
        .expect("libc in /proc/self/maps")
}

#[test]
fn missing_directory_is_a_clear_error() {
    let err = Vddk::load("/nonexistent/vmware-vix-disklib-distrib".as_ref()).unwrap_err();
    assert!(matches!(
        err,
        Error::Load(LoadError::DirectoryMissing { .. })
    ));
    assert!(err
        .to_string()
        .contains("/nonexistent/vmware-vix-disklib-distrib"));
}

#[test]
fn empty_directory_lists_every_path_tried() {
    let dir = scratch("empty");
    let err = Vddk::load(&dir).unwrap_err();
    let text = err.to_string();
    for name in [
        "lib64/libvixDiskLib.so.8",
        "lib64/libvixDiskLib.so.7",
        "lib64/libvixDiskLib.so.6",
    ] {
        assert!(
            text.contains(&dir.join(name).display().to_string()),
            "{text}"
        );
    }
    assert!(text.contains(&dir.join("libvixDiskLib.so.8").display().to_string()));
}

#[test]
fn a_library_without_vixdisklib_symbols_is_refused_by_name() {
    let dir = scratch("libc");
    std::fs::create_dir_all(dir.join("lib64")).unwrap();
    std::fs::copy(system_libc(), dir.join("lib64/libvixDiskLib.so.8")).unwrap();
    match Vddk::load(&dir) {
        Err(Error::Load(LoadError::MissingSymbols { path, missing })) => {
            assert!(path.ends_with("lib64/libvixDiskLib.so.8"));
            assert!(missing.contains(&"VixDiskLib_InitEx"));
            assert!(missing.contains(&"VixDiskLib_Read"));
            assert_eq!(missing.len(), vddk_sys::REQUIRED_SYMBOLS.len());
        }
        other => panic!("expected MissingSymbols, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = scratch("garbage");
    std::fs::create_dir_all(dir.join("lib64")).unwrap();
    std::fs::write(
        dir.join("lib64/libvixDiskLib.so.7"),
        b"#!/bin/sh\necho not ELF\n",
    )
    .unwrap();
    let err = Vddk::load(&dir).unwrap_err();
    assert!(matches!(err, Error::Load(LoadError::Open { .. })), "{err}");
    assert!(err.to_string().contains("libvixDiskLib.so.7"), "{err}");
}

#[test]
fn lib64_is_preferred_and_newest_soname_wins() {
    let dir = scratch("order");
    std::fs::create_dir_all(dir.join("lib64")).unwrap();
    std::fs::copy(fake_library(), dir.join("lib64/libvixDiskLib.so.7")).unwrap();
    std::fs::copy(fake_library(), dir.join("lib64/libvixDiskLib.so.6")).unwrap();
    std::fs::copy(fake_library(), dir.join("libvixDiskLib.so.8")).unwrap();
    let vddk = Vddk::load(&dir).unwrap();
    assert!(vddk.library_path().ends_with("lib64/libvixDiskLib.so.7"));
    assert_eq!(vddk.version().major, 7);
}

/// The only test here that initialises VDDK: a 6.5 library, whose VixDiskLibInfo ends before
/// the sector sizes, so they must not be read.
#[test]
fn an_older_library_reports_no_sector_sizes() {
    let lab = Lab::new("old", "");
    let dir = scratch("v65");
    std::fs::copy(fake_library(), dir.join("libvixDiskLib.so.6")).unwrap();
    let vddk = Vddk::load(&dir).unwrap();
    assert_eq!(vddk.version().to_string(), "6.5");
    assert!(matches!(
        vddk.connect(&ConnectParams::local(), &ConnectOptions::default()),
        Err(Error::NotInitialised)
    ));
    vddk.init(Some(&lab.config)).unwrap();
    let path = lab.make_disk("old/old.vmdk", 4096, 0, &[]);
    let conn = vddk
        .connect(&good_params(), &ConnectOptions::default())
        .unwrap();
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(disk.info().capacity_sectors, 4096);
    assert_eq!(disk.info().logical_sector_size, None);
    assert_eq!(disk.info().physical_sector_size, None);
}
