//! Safe wrappers over VMware's VixDiskLib (VDDK): load the library from the user's directory,
//! initialise it once, connect to a VM or first class disk, open disks and move data.
//!
//! Ownership mirrors VDDK's rules: a [`Connection`] keeps the loaded library (and its
//! initialisation) alive, a [`Disk`] keeps its connection alive, so drop order is always right
//! — disks close before their connection disconnects, which happens before VixDiskLib_Exit.
//! Handles are `Send` but not `Sync` (one thread at a time); connect, disconnect, open and
//! close are serialised process-wide as VDDK requires. VDDK's log callbacks go to `tracing`
//! under the target `vddk`.
//!
//! VMware's usage rules that this crate keeps: InitEx once per process (keep one [`Vddk`] for
//! the whole run; after its Exit the library is never initialised again, nor unloaded);
//! connect parameters are VDDK's own allocation, of which only the public fields are written,
//! and they stay alive until Disconnect; [`Vddk::connect_with_access`] wraps each backup or
//! restore session of a VM in PrepareForAccess/EndAccess; [`Vddk::cleanup`] at start-up
//! removes what a killed run left behind.
//!
//! ```no_run
//! use std::path::Path;
//! use vddk::{ConnectOptions, ConnectParams, Credentials, OpenFlags, Vddk};
//!
//! # fn main() -> Result<(), vddk::Error> {
//! let libdir = Path::new("/opt/vmware-vix-disklib-distrib");
//! vddk::ensure_library_path(libdir)?; // first thing in main: may re-execute the program
//! let vddk = Vddk::load(libdir)?;
//! vddk.init(Some(Path::new("/etc/safekeeping/vddk.conf")))?;
//! let params = ConnectParams::vm("vm-42")
//!     .server("vcenter.example.com")
//!     .thumbprint("AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD")
//!     .credentials(Credentials::UserPassword { user: "backup".into(), password: "…".into() });
//! // Once at start-up: what killed runs left behind on this server.
//! let server = ConnectParams::whole_server()
//!     .server("vcenter.example.com")
//!     .thumbprint("AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD")
//!     .credentials(Credentials::UserPassword { user: "backup".into(), password: "…".into() });
//! let report = vddk.cleanup(&server)?;
//! println!("cleaned up {}, {} still in use", report.cleaned_up, report.remaining);
//! let conn = vddk.connect_with_access(&params, &ConnectOptions {
//!     read_only: true,
//!     snapshot_moref: Some("snapshot-7".into()),
//!     transports: Some("hotadd:nbdssl".into()),
//! }, vddk::ACCESS_IDENTITY)?;
//! let mut disk = conn.open("[ds1] web01/web01.vmdk", OpenFlags::READ_ONLY)?;
//! let mut buf = vec![0u8; 1 << 20];
//! disk.read(0, &mut buf)?;
//! for block in disk.query_allocated_blocks(0, disk.info().capacity_sectors, 2048)? {
//!     println!("data at sectors {}..{}", block.offset, block.end());
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod access;
mod async_io;
mod connection;
mod create;
mod disk;
mod error;
mod info;
mod library;
mod logging;
mod params;
mod reexec;

pub use access::{AccessGuard, CleanupReport, ACCESS_IDENTITY};
pub use async_io::{Completion, IoKind, RequestId, SharedBuffer};
pub use connection::Connection;
pub use create::{CreateParams, DiskType};
pub use disk::{Block, Disk, OpenFlags, SECTOR_SIZE};
pub use error::{Error, LoadError, Result, VixError};
pub use info::{Adapter, DiskInfo, Geometry};
pub use library::Vddk;
pub use params::{ConnectOptions, ConnectParams, Credentials, Target, TRANSPORT_MODES};
pub use reexec::{ensure_library_path, library_dir, REEXEC_GUARD};
pub use vddk_sys::{VddkVersion, VIXDISKLIB_MAX_CHUNK_NUMBER, VIXDISKLIB_MIN_CHUNK_SIZE};

/// VIX error codes callers commonly match on ([`VixError::code`]).
pub mod codes {
    /// Generic failure; also rejected credentials or thumbprint at Open.
    pub const VIX_E_FAIL: u32 = vddk_sys::VIX_E_FAIL;
    /// A parameter was invalid.
    pub const VIX_E_INVALID_ARG: u32 = vddk_sys::VIX_E_INVALID_ARG;
    /// The file was not found.
    pub const VIX_E_FILE_NOT_FOUND: u32 = vddk_sys::VIX_E_FILE_NOT_FOUND;
    /// A host or guest I/O error.
    pub const VIX_E_FILE_ERROR: u32 = vddk_sys::VIX_E_FILE_ERROR;
    /// The disk or file is read-only.
    pub const VIX_E_FILE_READ_ONLY: u32 = vddk_sys::VIX_E_FILE_READ_ONLY;
    /// The file already exists.
    pub const VIX_E_FILE_ALREADY_EXISTS: u32 = vddk_sys::VIX_E_FILE_ALREADY_EXISTS;
    /// Access denied (also: no usable transport mode).
    pub const VIX_E_FILE_ACCESS_ERROR: u32 = vddk_sys::VIX_E_FILE_ACCESS_ERROR;
    /// Sector range out of bounds.
    pub const VIX_E_DISK_OUTOFRANGE: u32 = vddk_sys::VIX_E_DISK_OUTOFRANGE;
}
