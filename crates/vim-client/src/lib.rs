//! A client for vCenter's VIM and VSLM SOAP APIs.
//!
//! Messages are kept as lossless XML trees ([`xml::Element`]); typed views read what a backup
//! tool needs from them. A VM's configuration stays a raw tree, so a restore can rebuild what
//! this crate does not model.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
pub mod error;
pub mod fault;
pub mod moref;
pub mod property;
mod secret;
pub mod service_content;
pub mod soap;
mod task;
pub mod tls;
pub mod xml;

pub use client::{Client, ClientOptions, Endpoint, SESSION_COOKIE};
pub use error::{Error, Result};
pub use fault::FaultKind;
pub use moref::MoRef;
pub use property::ObjectContent;
pub use secret::Secret;
pub use service_content::ServiceContent;
pub use tls::{Thumbprints, Tls};
