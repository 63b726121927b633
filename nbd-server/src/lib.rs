//! The server side of the NBD protocol, for exporting a disk image to standard clients
//! (`qemu`, `nbdinfo`, `nbdcopy`, `nbd-client`).
//!
//! What is implemented: fixed newstyle negotiation (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`, `NBD_OPT_STRUCTURED_REPLY`, the meta context options
//! with `base:allocation`), and in transmission `READ` (holes sent as `OFFSET_HOLE` chunks),
//! `BLOCK_STATUS`, `WRITE`, `FLUSH`, `TRIM`, `WRITE_ZEROES` and `DISC`, with up to 16 requests
//! of a connection served at once. TLS is refused (`NBD_REP_ERR_POLICY`): the server is meant
//! for a unix socket or loopback.
//!
//! The export is any [`BlockDevice`]; [`Server`] accepts clients until a shutdown future
//! completes. [`protocol`] holds the wire format and the pure decoders (fuzzed).
//!
//! ```no_run
//! use std::sync::Arc;
//! use nbd_server::{BlockDevice, Export, ListenAddress, Server};
//!
//! struct Zeros;
//! impl BlockDevice for Zeros {
//!     fn size(&self) -> u64 { 1 << 20 }
//!     fn read_at(&self, _: u64, buf: &mut [u8]) -> std::io::Result<()> { buf.fill(0); Ok(()) }
//! }
//! # async fn f() -> std::io::Result<()> {
//! let server = Server::bind(&ListenAddress::Unix("/tmp/zeros.sock".into()))?;
//! let export = Export { name: "zeros".into(), description: String::new(), preferred_block_size: 4096 };
//! server.run(Arc::new(Zeros), export, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod connection;
mod device;
mod listen;
pub mod protocol;

pub use connection::{serve_connection, ConnectionError, Export};
pub use device::{errno_of, BlockDevice, Extent};
pub use listen::{ListenAddress, Server};
