//! Errors of partition tables and guest file systems.

use std::io;

/// What can go wrong reading a guest disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the disk failed (for a repository: a missing or damaged chunk).
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The disk's error.
        #[source]
        source: io::Error,
    },
    /// The partition table is damaged.
    #[error("partition table: {0}")]
    PartitionTable(String),
    /// No partition with that number.
    #[error("no partition {number} (partitions: {have})")]
    NoSuchPartition {
        /// Asked for.
        number: u32,
        /// The numbers that exist.
        have: String,
    },
    /// A partition whose content cannot be read as files here.
    #[error("partition {number} holds {found}, which safekeeping cannot read files from{hint}")]
    Unsupported {
        /// Partition number.
        number: u32,
        /// What was found.
        found: String,
        /// A suggestion.
        hint: &'static str,
    },
    /// No such file or folder.
    #[error("{0}: no such file or folder")]
    NotFound(String),
    /// A path component is not a folder.
    #[error("{0}: not a folder")]
    NotADirectory(String),
    /// The file system refused or is damaged.
    #[error("{path}: {message}")]
    FileSystem {
        /// The path being read.
        path: String,
        /// The file system crate's message (with the disk's error where there was one).
        message: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn fs(path: &str, e: impl std::fmt::Display) -> Error {
        Error::FileSystem {
            path: path.to_string(),
            message: e.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
