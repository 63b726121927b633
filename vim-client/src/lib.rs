//! A client for vCenter's VIM (`/sdk`) and VSLM (`/vslm/sdk`) SOAP APIs, made for backup and
//! restore.
//!
//! # Design
//!
//! * **Lossless trees.** Every message is parsed into an [`xml::Element`] tree: names and
//!   `xsi:type` are resolved by namespace URI (vcsim's `XMLSchema-instance:type="vim25:X"` and
//!   vCenter's `xsi:type="X"` read the same), unknown types and fields are kept, and writing a
//!   tree back gives an equal tree. Typed views ([`VmConfig`], [`Device`], [`SnapshotInfo`],
//!   [`ServiceContent`], ...) read what a backup tool needs and keep the raw tree beside them;
//!   [`config_spec_from_info`] rebuilds a `CreateVM` spec from a saved configuration.
//! * **Faults are typed.** SOAP faults and failed tasks become [`Error::Fault`] with a
//!   [`FaultKind`] (`InvalidLogin`, `NotAuthenticated`, `ManagedObjectNotFound`,
//!   `InvalidPowerState`, `FileAlreadyExists`, ...), the server's message and the fault XML.
//! * **Session.** [`Client::login`] keeps the password in memory only (in a [`Secret`], redacted
//!   from `Debug`) to log in again once, transparently, when the server answers
//!   `NotAuthenticated`. [`Client::session_cookie`] and [`Client::user_session`] hand the
//!   session to VDDK.
//! * **TLS** is always verified: system roots, a CA file, or a pinned SHA-256 fingerprint;
//!   [`Tls::Insecure`] exists only as an explicit choice. A pin mismatch names the fingerprint the
//!   server presented; [`Client::server_thumbprints`] gives SHA-256 and SHA-1 (VDDK's form).
//! * **Tasks** are followed with `WaitForUpdatesEx` on a private property collector (polling as
//!   a fallback), with a timeout ([`ClientOptions::task_timeout`]).
//!
//! # First class disks, vApps and tags
//!
//! * **First class disks** have two APIs. VIM's `VcenterVStorageObjectManager` on `/sdk`
//!   ([`Client::fcd_create`], [`Client::fcd_create_snapshot`], [`Client::fcd_changed_disk_areas`],
//!   ...; every call names the datastore) works on every vCenter since 6.5 and is the default.
//!   VSLM on `/vslm/sdk` ([`Client::vslm`] → [`Vslm`]; no datastore needed, tasks are
//!   `VslmTask`s) is vCenter 7.0+ only and absent on ESXi; use it when the datastore of a
//!   disk is unknown or VIM answers `NotSupported`. Both share the session. Which VMs use a
//!   disk: [`Client::vms_with_fcd`]; FCD tags: [`Client::fcd_attach_tag`],
//!   [`Client::fcd_attached_to_tag`], [`Client::fcd_tags`].
//! * **vApps**: [`Client::find_vapp_by_name`], [`Client::list_vapps`], [`Client::vapp_info`]
//!   (children, start order, raw `vAppConfig` and resource config), [`Client::create_vapp`],
//!   [`Client::create_child_vm`], [`Client::update_vapp_config`], [`Client::power_on_vapp`],
//!   [`Client::power_off_vapp`], [`Client::destroy`]; [`vapp_config_spec_from_info`] rebuilds
//!   the specs from a saved configuration with children remapped (see its module for the
//!   restore order).
//! * **Tags** live in vCenter's vAPI REST service: [`Client::tagging`] logs in there with the
//!   SOAP login's credentials and TLS settings and gives a [`Tagging`] session
//!   ([`Tagging::find_tag`], [`Tagging::attached_objects`] → [`TaggedObject`]s with morefs,
//!   [`Tagging::logout`]).
//!
//! # Example
//!
//! ```no_run
//! use vim_client::{Client, ClientOptions, Secret, Tls};
//!
//! # async fn run() -> vim_client::Result<()> {
//! let options = ClientOptions::new("https://vcenter.example.com", Tls::PinnedSha256(
//!     "75:B3:F7:20:57:2C:40:F3:90:B6:67:7D:2B:80:AA:EC:D1:3F:05:4F:CF:83:E4:CA:6E:B3:00:40:D8:61:4A:3F".into(),
//! ));
//! let client = Client::connect(&options).await?;
//! client.login("backup@vsphere.local", &Secret::from_file("/etc/safekeeping/password".as_ref())?).await?;
//!
//! let vm = client.find_vm_by_name("web01").await?;
//! let snapshot = client.create_snapshot(&vm, "safekeeping", "backup", false, true).await?;
//! let config = client.snapshot_config(&snapshot).await?;
//! for (device, disk) in config.disks() {
//!     // The change id to ask for next time, to read only what changed since this snapshot.
//!     let next = disk.backing.change_id.as_deref().unwrap_or("none");
//!     let areas = client
//!         .changed_disk_areas(&vm, Some(&snapshot), device.key, disk.capacity_in_bytes, "*")
//!         .await?;
//!     println!("{}: {} areas; next change id {next}", disk.backing.file_name, areas.len());
//! }
//! client.remove_snapshot(&snapshot, true).await?;
//! client.logout().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Testing
//!
//! `tests/fixtures.rs` parses the 341 recorded responses of real servers in
//! `shared/fixtures/vcenter-soap`; `tests/against_lab.rs` runs every operation against the lab
//! (`safekeeping-lab up`, built by `cargo build -p safekeeping-lab`); `tests/mock_server.rs`
//! checks the VSLM endpoint and error paths with canned answers.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bounded;
mod changed_areas;
mod client;
pub mod config_spec;
mod datastore_file;
pub mod device;
pub mod error;
pub mod fault;
mod fcd;
mod fcd_api;
mod fcd_attachments;
mod inventory;
pub mod moref;
mod pbm;
mod placement;
mod privileges;
pub mod property;
mod secret;
pub mod service_content;
mod snapshot;
pub mod soap;
pub mod sts;
mod tagging;
mod task;
pub mod tls;
mod updates;
mod vapp;
mod vm;
mod vm_config;
mod vslm;
pub mod xml;

pub use bounded::{DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RESPONSE_BYTES};
pub use changed_areas::{ChangedAreasError, ChangedAreasProblem, DiskArea, DiskChangeInfo};
pub use client::{
    check_url_security, Client, ClientOptions, Endpoint, UserSession, SESSION_COOKIE,
};
pub use config_spec::{
    config_spec_from_info, import_devices_spec, CdromPolicy, DiskTarget, MacPolicy, NetworkBacking,
    RestoreConfig, RestoreOptions,
};
pub use datastore_file::DatastorePath;
pub use device::{Device, DeviceKind, DiskBacking, NicBacking, VirtualDisk};
pub use error::{Error, Result};
pub use fault::FaultKind;
pub use fcd::{FcdSnapshot, Provisioning, VStorageObject};
pub use fcd_api::{FcdApi, FcdApiChoice};
pub use fcd_attachments::FcdAttachment;
pub use inventory::{InventoryKind, Named, UuidKind};
pub use moref::MoRef;
pub use pbm::{apply_profiles, profile_spec, Pbm, StoragePolicy, VmPolicyIds};
pub use placement::DatastoreSummary;
pub use privileges::PrivilegeCheck;
pub use property::ObjectContent;
pub use secret::Secret;
pub use service_content::ServiceContent;
pub use snapshot::{QuiesceSpec, SnapshotInfo, SnapshotTree, WindowsQuiesceSpec};
pub use sts::SamlToken;
pub use tagging::{Tag, TagCategory, TaggedObject, Tagging};
pub use tls::{Thumbprints, Tls};
pub use vapp::{
    default_resource_config_spec, resource_config_spec_from_saved, vapp_config_spec_from_info,
    vapp_config_spec_from_saved, VAppEntity, VAppInfo, VAppRestoreSpec,
};
pub use vm::{PowerState, VmInfo, VmListEntry};
pub use vm_config::VmConfig;
pub use vslm::Vslm;
