//! Instant access: a generation's disk served over NBD ([`serve`]) and single files read out
//! of the guest file systems in it ([`files`]), both straight from the repository through
//! [`repository_format::CachedDiskReader`] (chunks read on demand, verified, cached), without
//! restoring the disk first. Nothing here writes to the repository except the pin ([`pin`]):
//! backups, prune and gc keep running, and prune keeps the generation read here.
//!
//! A wing beside `backup` and `restore`: imports the support modules and the library crates,
//! never `cli`, `commands` or another wing.

pub mod device;
pub mod files;
pub mod overlay;
pub mod pin;
pub mod serve;
