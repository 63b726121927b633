//! safekeeping: backup and restore of VMware vSphere virtual machines, as a library the
//! `safekeeping` binary drives.
//!
//! # The two data flows, one module per step
//! A backup ([`backup`]): [`vsphere::resolve`] (target → VM) → [`vsphere::snapshot`] (guarded
//! snapshot; [`vsphere::fcd_snapshot`] for first class disks) → [`vsphere::changed_areas`]
//! (CBT: what to read) → [`disk_io::reader`] (VDDK reads with read-ahead) → the repository's
//! ingest (hash → dedup → compress → store chunk → disk index, in `repository-format`) →
//! commit of the manifest → snapshot removed. [`backup::disk`] is that path for one disk,
//! shared by every target kind; [`backup::vm`], [`backup::ivd`] and [`backup::vapp`] are the
//! target kinds.
//!
//! A restore ([`restore`]) walks it backwards: manifest → [`restore::plan`] (generation,
//! saved metadata, placement and [`mapping`] checked before anything is created) → the VM, disk
//! or vApp built ([`restore::create`], [`restore::import`]) → [`restore::disk`] (verified chunks
//! from the disk index → [`disk_io::writer`], VDDK writes). [`restore::vm`], [`restore::ivd`]
//! and [`restore::vapp`] each read top to bottom in one file.
//!
//! # What may import what
//! The arrows point down, and a module's folder says what it may use:
//! - [`cli`] and [`commands`]: the edge. `commands` turns parsed arguments into the plain
//!   option structs ([`backup::BackupOptions`], [`restore::RestoreOptions`]) and formats
//!   reports; nothing else imports either.
//! - [`backup`] and [`restore`]: the wings. They import the steps and the support modules,
//!   never `cli`, `commands` or each other. [`instant`] (`serve`, `files`: a generation's
//!   disk without restoring it) is a third wing under the same rule, and [`doctor`] (the setup
//!   check) a small one.
//! - [`vsphere`] and [`disk_io`]: the steps. They import the support modules and the library
//!   crates (`disk_io` also the vCenter session), never a wing.
//! - Support modules (top-level files): [`config`], [`error`], [`cancel`], [`blocking`],
//!   [`format`](mod@format), [`progress`], [`logging`], [`outcome`], [`report`], [`repo`], [`target`],
//!   [`mapping`], [`stored`], [`metrics`], [`jobs`], [`notify`], [`history`]; they import
//!   only each other.
#![warn(missing_docs)]

pub mod backup;
pub mod blocking;
pub mod cancel;
pub mod cli;
pub mod commands;
pub mod config;
pub mod disk_io;
pub mod doctor;
pub mod error;
pub mod excluded_disk;
pub mod format;
pub mod history;
pub mod instant;
pub mod jobs;
pub mod logging;
pub mod mapping;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod progress;
pub mod repo;
pub mod report;
pub mod restore;
pub mod stored;
pub mod target;
pub mod target_settings;
pub mod vcenter_origin;
pub mod vsphere;

pub use backup::{BackupOptions, DiskResult, TargetResult};
pub use error::{Error, Result};
pub use outcome::Outcome;
pub use restore::{RestoreMode, RestoreOptions};
