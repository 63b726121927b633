//! A client for vCenter's VIM and VSLM SOAP APIs.
//!
//! Messages are kept as lossless XML trees ([`xml::Element`]); typed views read what a backup
//! tool needs from them. A VM's configuration stays a raw tree, so a restore can rebuild what
//! this crate does not model.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod changed_areas;
mod client;
pub mod config_spec;
mod datastore_file;
pub mod device;
pub mod error;
pub mod fault;
mod fcd;
mod inventory;
pub mod moref;
pub mod property;
mod secret;
pub mod service_content;
mod snapshot;
pub mod soap;
mod task;
pub mod tls;
mod updates;
mod vm;
mod vm_config;
mod vslm;
pub mod xml;

pub use changed_areas::{DiskArea, DiskChangeInfo};
pub use client::{Client, ClientOptions, Endpoint, UserSession, SESSION_COOKIE};
pub use config_spec::{
    config_spec_from_info, CdromPolicy, DiskTarget, MacPolicy, RestoreConfig, RestoreOptions,
};
pub use datastore_file::DatastorePath;
pub use device::{Device, DeviceKind, DiskBacking, NicBacking, VirtualDisk};
pub use error::{Error, Result};
pub use fault::FaultKind;
pub use fcd::{FcdSnapshot, Provisioning, VStorageObject};
pub use inventory::{InventoryKind, Named, UuidKind};
pub use moref::MoRef;
pub use property::ObjectContent;
pub use secret::Secret;
pub use service_content::ServiceContent;
pub use snapshot::{SnapshotInfo, SnapshotTree};
pub use tls::{Thumbprints, Tls};
pub use vm::{PowerState, VmInfo, VmListEntry};
pub use vm_config::VmConfig;
pub use vslm::Vslm;
