//! The steps that talk to vCenter, shared by both wings: the session ([`Vcenter`]), finding
//! targets ([`resolve`], [`selection`], inventory places: [`place`]), the inventory a restore maps into ([`inventory`]),
//! snapshots of VMs and first class disks and whose they are ([`snapshot`], [`fcd_snapshot`],
//! [`snapshot_owner`]), changed block tracking ([`changed_areas`]) and what a backup saves
//! besides the disks ([`metadata`]).
//!
//! These modules import only the crate's support modules and the library crates (never
//! `backup`, `restore`, `commands` or `cli`): every SOAP detail lives in `vim-client`.

pub mod changed_areas;
pub mod fcd;
pub mod fcd_snapshot;
pub mod inventory;
pub mod metadata;
pub mod place;
pub mod privileges;
pub mod resolve;
pub mod selection;
pub mod session;
pub mod snapshot;
pub mod snapshot_name;
pub mod snapshot_owner;

pub use session::Vcenter;
