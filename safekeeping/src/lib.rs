//! safekeeping: backup and restore of VMware vSphere virtual machines.
//!
//! The data flow of a backup, one module per step:
//! [`resolve`] (target → VM) → [`snapshot`] (guarded snapshot) → [`changed_areas`] (CBT) →
//! [`disk_reader`] (VDDK reads feeding the repository) → [`disk_ingest`] (one disk into the
//! generation, shared by `vm:` and `ivd:`) → [`backup`] (orchestration, commit).
//! A restore goes through [`mapping`] (placement checked up front), then [`restore_create`] or
//! [`restore_import`], and writes the disks back through VDDK. One module per command lives
//! under [`commands`].
#![warn(missing_docs)]

pub mod backup;
pub mod cancel;
pub mod changed_areas;
pub mod cli;
pub mod commands;
pub mod config;
pub mod disk_ingest;
pub mod disk_plan;
pub mod disk_reader;
pub mod disk_writer;
pub mod error;
pub mod fcd;
pub mod fcd_snapshot;
pub mod inventory;
pub mod ivd_backup;
pub mod ivd_restore;
pub mod logging;
pub mod mapping;
pub mod metadata;
pub mod outcome;
pub mod progress;
pub mod repo;
pub mod report;
pub mod resolve;
pub mod restore;
pub mod restore_create;
pub mod restore_import;
pub mod selection;
pub mod snapshot;
pub mod snapshot_name;
pub mod sparse_image;
pub mod target;
pub mod vapp_backup;
pub mod vapp_restore;
pub mod vcenter;
pub mod vddk_session;
pub mod vmx;

pub use error::{Error, Result};
pub use outcome::Outcome;
