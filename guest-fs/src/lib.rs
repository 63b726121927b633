//! Guest disks read as files, without mounting: partition tables (GPT, MBR with logical
//! partitions) and read-only ext2/3/4, NTFS and FAT file systems, over any positional reader
//! ([`ReadAt`]) — for safekeeping, a backed-up disk read chunk by chunk from the repository.
//!
//! ```no_run
//! use std::sync::Arc;
//! use guest_fs::{Disk, PartitionTable};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk: Disk = Arc::new(std::fs::File::open("disk.raw")?);
//! let table = PartitionTable::read(&disk)?;
//! let part = table.get(1)?;
//! let mut fs = guest_fs::open(&disk, part)?;
//! for e in fs.list("/etc")? {
//!     println!("{} {}", e.kind.name(), e.name);
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod disk;
mod error;
mod ext;
mod fat;
mod fs;
mod ntfs;
mod partition;
mod probe;

pub use disk::{Disk, ReadAt, Window};
pub use error::{Error, Result};
pub use fs::{open, Entry, EntryKind, GuestFs};
pub use partition::{Partition, PartitionTable, TableKind};
pub use probe::{probe, Content};
