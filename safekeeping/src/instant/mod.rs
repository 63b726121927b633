//! Instant access: a generation's disk served over NBD ([`serve`]) and single files read out
//! of the guest file systems in it ([`files`]), both straight from the repository through
//! [`repository_format::CachedDiskReader`] (chunks read on demand, verified, cached), without
//! restoring the disk first. Nothing here writes to the repository; the repository lock taken
//! is a shared one.
//!
//! A wing beside `backup` and `restore`: imports the support modules and the library crates,
//! never `cli`, `commands` or another wing.

pub mod device;
pub mod files;
pub mod overlay;
pub mod serve;
