//! The application's error type: one variant per kind of failure, each with enough context
//! for an admin reading a cron mail to act on it.

use thiserror::Error;

use crate::config::ConfigError;
use crate::mapping::MappingError;
use crate::target::TargetParseError;

/// Everything that can stop a command or a target.
#[derive(Debug, Error)]
pub enum Error {
    /// Configuration file problems.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A malformed target.
    #[error(transparent)]
    Target(#[from] TargetParseError),
    /// A target of a kind this step does not take (an `ivd:` where a VM is needed, a `tag:`
    /// where a stored target is).
    #[error("`{target}`: {expected}")]
    WrongTargetKind {
        /// The target as given.
        target: String,
        /// What the step takes instead.
        expected: &'static str,
    },
    /// A restore placement or mapping that names nothing.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The target matched no VM.
    #[error("no VM matches {0}")]
    VmNotFound(String),
    /// The target matched several VMs.
    #[error("{target} matches {} VMs: {}; use vm:vm-ID or an inventory path (and --vcenter NAME for VMs of several vCenters)", .matches.len(), .matches.join(", "))]
    AmbiguousVm {
        /// The target.
        target: String,
        /// `moref (path)` of each match.
        matches: Vec<String>,
    },
    /// The repository has no such target or generation.
    #[error("{0}")]
    NotInRepository(String),
    /// A restore would replace a VM that is running.
    #[error("VM `{0}` exists and is powered on: --overwrite needs --force to power it off first")]
    PoweredOn(String),
    /// A restore's name is taken.
    #[error("a VM named `{0}` already exists: choose --name or pass --overwrite")]
    NameTaken(String),
    /// SIGINT/SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// Waiting for a lock took longer than allowed.
    #[error(
        "{what} is locked by another safekeeping process; gave up after {seconds} s ({holder})"
    )]
    LockTimeout {
        /// What was locked.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Who holds it, as the repository recorded it.
        holder: String,
    },
    /// vCenter said no, or could not be reached.
    #[error("vCenter: {0}")]
    Vim(#[from] vim_client::Error),
    /// A VDDK call failed; `source` keeps the VIX error code and the library's text.
    #[error("VDDK: {context}: {source}")]
    Vddk {
        /// What was being done (`open [ds1] web01/web01.vmdk`).
        context: String,
        /// The library's error.
        source: vddk::Error,
    },
    /// VDDK could not be loaded or initialised.
    #[error("VDDK: {0}")]
    VddkLibrary(#[from] vddk::Error),
    /// The repository failed.
    #[error("repository: {0}")]
    Repository(#[from] repository_format::Error),
    /// A guest disk's partition table or file system (`files`).
    #[error("{0}")]
    GuestFs(#[from] guest_fs::Error),
    /// Local file I/O.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The generation was committed, but the snapshot the backup took could not be removed:
    /// the data is safe, the VM still carries the snapshot.
    #[error("generation {} was committed, but {source}", .generation.unwrap_or_default())]
    SnapshotNotRemoved {
        /// The committed generation.
        generation: Option<u64>,
        /// Why the removal failed.
        source: Box<Error>,
    },
    /// Anything else, with a message saying what.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Turns the repository's "lock is held" into a [`Error::LockTimeout`] after `seconds`.
    pub fn from_lock(what: String, seconds: u64, e: repository_format::Error) -> Error {
        match e {
            repository_format::Error::Locked { .. } => Error::LockTimeout {
                what,
                seconds,
                holder: e.to_string(),
            },
            other => other.into(),
        }
    }
}

/// Result with [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A VDDK call's error with what was being done.
    pub fn vddk(context: impl Into<String>, source: vddk::Error) -> Error {
        Error::Vddk {
            context: context.into(),
            source,
        }
    }

    /// An I/O error with a description of the operation.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
