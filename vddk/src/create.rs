//! Parameters of new disks ([`CreateParams`]).

use vddk_sys::*;

use crate::error::{Error, Result};
use crate::info::Adapter;

/// The on-disk format of a new disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskType {
    /// Preallocated VMFS flat disk (descriptor plus `-flat.vmdk`).
    #[default]
    VmfsFlat,
    /// Thin VMFS disk.
    VmfsThin,
    /// Hosted monolithic flat disk.
    MonolithicFlat,
    /// Hosted monolithic sparse disk.
    MonolithicSparse,
    /// Stream-optimised (OVF) disk.
    StreamOptimized,
}

impl DiskType {
    fn to_raw(self) -> VixDiskLibDiskType {
        match self {
            DiskType::VmfsFlat => VIXDISKLIB_DISK_VMFS_FLAT,
            DiskType::VmfsThin => VIXDISKLIB_DISK_VMFS_THIN,
            DiskType::MonolithicFlat => VIXDISKLIB_DISK_MONOLITHIC_FLAT,
            DiskType::MonolithicSparse => VIXDISKLIB_DISK_MONOLITHIC_SPARSE,
            DiskType::StreamOptimized => VIXDISKLIB_DISK_STREAM_OPTIMIZED,
        }
    }
}

/// What [`crate::Connection::create`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateParams {
    /// Format.
    pub disk_type: DiskType,
    /// Controller type recorded in the disk.
    pub adapter: Adapter,
    /// Virtual hardware version (VIXDISKLIB_HWVERSION_*; 13 is ESXi 6.5).
    pub hw_version: u16,
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical sector size (VDDK 7.0+; 512).
    pub logical_sector_size: u32,
    /// Physical sector size (VDDK 7.0+; 512 or 4096).
    pub physical_sector_size: u32,
}

impl CreateParams {
    /// A VMFS flat disk of `capacity_sectors` on an LSI Logic controller, hardware version 13.
    pub fn new(capacity_sectors: u64) -> Self {
        Self {
            disk_type: DiskType::VmfsFlat,
            adapter: Adapter::LsiLogic,
            hw_version: VIXDISKLIB_HWVERSION_ESX65 as u16,
            capacity_sectors,
            logical_sector_size: 512,
            physical_sector_size: 512,
        }
    }

    pub(crate) fn to_raw(&self) -> Result<VixDiskLibCreateParams> {
        if self.capacity_sectors == 0 {
            return Err(Error::InvalidArgument("a disk needs a capacity".into()));
        }
        Ok(VixDiskLibCreateParams {
            diskType: self.disk_type.to_raw(),
            adapterType: self.adapter.to_raw()?,
            hwVersion: self.hw_version,
            capacity: self.capacity_sectors,
            logicalSectorSize: self.logical_sector_size,
            physicalSectorSize: self.physical_sector_size,
        })
    }
}
