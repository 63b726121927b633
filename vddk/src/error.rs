//! The crate's error type.

use std::path::PathBuf;

pub use vddk_sys::LoadError;

/// A failed VixDiskLib call: the operation, the VixError code and the library's own text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VixDiskLib_{operation} failed: {text} (VixError {code}{})", raw_suffix(*.raw))]
pub struct VixError {
    /// The VixDiskLib function that failed, without the `VixDiskLib_` prefix.
    pub operation: &'static str,
    /// The error code (the low 16 bits of the VixError).
    pub code: u32,
    /// The full 64-bit VixError as returned.
    pub raw: u64,
    /// The library's description of the error.
    pub text: String,
}

fn raw_suffix(raw: u64) -> String {
    if raw > 0xFFFF {
        format!(", raw {raw:#x}")
    } else {
        String::new()
    }
}

/// Everything that can go wrong using VDDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library could not be found or loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A VixDiskLib function returned an error.
    #[error(transparent)]
    Vix(#[from] VixError),
    /// `connect`, `create` or `prepare_for_access` was called before [`crate::Vddk::init`].
    #[error("VDDK is not initialised: call Vddk::init first")]
    NotInitialised,
    /// VDDK was already initialised in this process with different settings.
    #[error("VDDK is already initialised in this process ({detail})")]
    AlreadyInitialised {
        /// What differs.
        detail: String,
    },
    /// An optional VixDiskLib function is absent from this library version.
    #[error("{function} is not available in the loaded VDDK {version}")]
    Unsupported {
        /// The missing function.
        function: &'static str,
        /// The library's version.
        version: String,
    },
    /// A caller-supplied value is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An I/O request falls outside the disk.
    #[error("sectors {start}..{end} are outside the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector requested.
        start: u64,
        /// One past the last sector requested.
        end: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A buffer length is not a whole number of 512-byte sectors.
    #[error("buffer of {len} bytes is not a multiple of the 512-byte sector size")]
    NotSectorMultiple {
        /// The buffer's length.
        len: usize,
    },
    /// A write on a disk opened read-only was refused before reaching VDDK.
    #[error("disk {path} is open read-only")]
    ReadOnly {
        /// The disk's path.
        path: String,
    },
    /// The connection still has open disks.
    #[error("connection still has {0} open disk handle(s)")]
    InUse(usize),
    /// Setting up the library path by re-executing failed.
    #[error("cannot re-execute {exe} with {dir} on LD_LIBRARY_PATH: {source}")]
    Reexec {
        /// The executable.
        exe: PathBuf,
        /// The VDDK library directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// VixDiskLib broke its own contract (e.g. Wait returned with requests outstanding).
    #[error("VixDiskLib misbehaved: {0}")]
    Library(String),
}

impl Error {
    /// The VixError code, if this error came from VixDiskLib.
    pub fn vix_code(&self) -> Option<u32> {
        match self {
            Error::Vix(v) => Some(v.code),
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
