//! A fake `libvixDiskLib.so` over local flat VMDK files, for the lab and tests.
//!
//! It exports VixDiskLib's C functions with the real signatures (from `vddk-sys`) so that
//! safekeeping's real loading and calling path runs end to end without VMware's library.
//! Disks are VMware text descriptors with one flat extent, or chains of the lab's delta disks; datastores, credentials, the host
//! thumbprint, statistics and fault injection come from `fake.*` keys in the VDDK config file
//! passed to `VixDiskLib_InitEx`. See README.md for the keys and the stats line format.
#![allow(non_snake_case)] // the library must be named libvixDiskLib.so
#![allow(clippy::missing_safety_doc)] // the C functions follow VDDK's documented contracts

mod async_io;
mod chain;
mod config;
mod connection;
mod descriptor;
mod disk;
mod errors;
mod exports;
mod guarded;
mod hold;
mod logging;
mod params_state;
mod stats;
mod tmp_state;
