//! Disk data in and out: VDDK connections to the vCenter the session speaks to
//! ([`VddkEndpoint`]), a VDDK disk read as the repository's source ([`VddkSource`], backup),
//! chunks written into a VDDK disk ([`VddkSink`], restore), and sparse image files
//! ([`SparseImage`], export).
//!
//! These modules import the support modules, [`crate::vsphere`] (for the session VDDK
//! authenticates like) and the library crates; never `backup`, `restore`, `commands` or `cli`.

pub mod endpoint;
pub mod reader;
pub mod sparse_image;
pub mod writer;

pub use endpoint::VddkEndpoint;
pub use reader::VddkSource;
pub use sparse_image::SparseImage;
pub use writer::VddkSink;
