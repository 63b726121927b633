//! Struct sizes and field offsets must match VDDK's ABI on x86-64 Linux.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::mem::{offset_of, size_of};
use vddk_sys::*;

#[test]
fn connect_params_is_128_bytes_with_vddk_offsets() {
    assert_eq!(size_of::<VixDiskLibConnectParams>(), 128);
    assert_eq!(offset_of!(VixDiskLibConnectParams, vmxSpec), 0);
    assert_eq!(offset_of!(VixDiskLibConnectParams, serverName), 8);
    assert_eq!(offset_of!(VixDiskLibConnectParams, thumbPrint), 16);
    assert_eq!(offset_of!(VixDiskLibConnectParams, credType), 32);
    assert_eq!(offset_of!(VixDiskLibConnectParams, creds), 40);
    assert_eq!(offset_of!(VixDiskLibConnectParams, port), 64);
    assert_eq!(offset_of!(VixDiskLibConnectParams, nfcHostPort), 68);
    assert_eq!(offset_of!(VixDiskLibConnectParams, vimApiVer), 72);
    // VDDK's internal fields: the library's magic and its private state pointer.
    assert_eq!(offset_of!(VixDiskLibConnectParams, reserved), 80);
    assert_eq!(offset_of!(VixDiskLibConnectParams, state), 88);
    assert_eq!(offset_of!(VixDiskLibConnectParams, spec), 96);
    assert_eq!(offset_of!(VixDiskLibConnectParams, specType), 120);
    assert_eq!(size_of::<VixDiskLibVStorageObjectSpec>(), 24);
    assert_eq!(offset_of!(VixDiskLibSessionIdCreds, key), 16);
}

#[test]
fn info_is_64_bytes_with_sector_sizes_at_the_end() {
    assert_eq!(size_of::<VixDiskLibInfo>(), 64);
    assert_eq!(offset_of!(VixDiskLibInfo, physGeo), 12);
    assert_eq!(offset_of!(VixDiskLibInfo, capacity), 24);
    assert_eq!(offset_of!(VixDiskLibInfo, adapterType), 32);
    assert_eq!(offset_of!(VixDiskLibInfo, numLinks), 36);
    assert_eq!(offset_of!(VixDiskLibInfo, parentFileNameHint), 40);
    assert_eq!(offset_of!(VixDiskLibInfo, uuid), 48);
    // Pre-7.0 libraries allocate exactly these first 56 bytes.
    assert_eq!(offset_of!(VixDiskLibInfo, logicalSectorSize), 56);
    assert_eq!(offset_of!(VixDiskLibInfo, physicalSectorSize), 60);
}

#[test]
fn create_params_is_32_bytes() {
    assert_eq!(size_of::<VixDiskLibCreateParams>(), 32);
    assert_eq!(offset_of!(VixDiskLibCreateParams, adapterType), 4);
    assert_eq!(offset_of!(VixDiskLibCreateParams, hwVersion), 8);
    assert_eq!(offset_of!(VixDiskLibCreateParams, capacity), 16);
    assert_eq!(offset_of!(VixDiskLibCreateParams, logicalSectorSize), 24);
    assert_eq!(offset_of!(VixDiskLibCreateParams, physicalSectorSize), 28);
}

#[test]
fn block_list_layout() {
    assert_eq!(size_of::<VixDiskLibBlock>(), 16);
    assert_eq!(offset_of!(VixDiskLibBlockList, blocks), 8);
    assert_eq!(size_of::<VixDiskLibGeometry>(), 12);
}
