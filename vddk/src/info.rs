//! What VDDK reports about a disk ([`DiskInfo`]).

use std::ffi::CStr;
use std::ptr::addr_of;

use vddk_sys::*;

use crate::error::{Error, Result};
use crate::library::LibraryState;

/// Cylinders, heads and sectors per track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u32,
    /// Heads.
    pub heads: u32,
    /// Sectors per track.
    pub sectors: u32,
}

/// The disk's controller type as VDDK reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Adapter {
    /// IDE.
    Ide,
    /// BusLogic SCSI.
    BusLogic,
    /// LSI Logic SCSI (VDDK also reports this for LSI SAS and paravirtual disks).
    LsiLogic,
    /// Anything else, with VDDK's number.
    #[default]
    Unknown,
    /// A value this crate does not know.
    Other(u32),
}

impl Adapter {
    pub(crate) fn from_raw(v: VixDiskLibAdapterType) -> Adapter {
        match v {
            VIXDISKLIB_ADAPTER_IDE => Adapter::Ide,
            VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC => Adapter::BusLogic,
            VIXDISKLIB_ADAPTER_SCSI_LSILOGIC => Adapter::LsiLogic,
            VIXDISKLIB_ADAPTER_UNKNOWN => Adapter::Unknown,
            other => Adapter::Other(other),
        }
    }

    pub(crate) fn to_raw(self) -> Result<VixDiskLibAdapterType> {
        match self {
            Adapter::Ide => Ok(VIXDISKLIB_ADAPTER_IDE),
            Adapter::BusLogic => Ok(VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC),
            Adapter::LsiLogic => Ok(VIXDISKLIB_ADAPTER_SCSI_LSILOGIC),
            Adapter::Unknown | Adapter::Other(_) => Err(Error::InvalidArgument(
                "a disk must be created with a known adapter type".into(),
            )),
        }
    }
}

/// A disk's description (VixDiskLibInfo), copied out of VDDK's struct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Geometry the BIOS sees.
    pub bios_geometry: Geometry,
    /// Physical geometry.
    pub physical_geometry: Geometry,
    /// Controller type.
    pub adapter: Adapter,
    /// Links in the chain (base disk plus redo logs).
    pub links: i32,
    /// Parent file of a redo log.
    pub parent_file_name_hint: Option<String>,
    /// The disk's UUID (`ddb.uuid`).
    pub uuid: Option<String>,
    /// Logical sector size (VDDK 7.0 and newer; `None` before).
    pub logical_sector_size: Option<u32>,
    /// Physical sector size (VDDK 7.0 and newer; `None` before).
    pub physical_sector_size: Option<u32>,
}

impl DiskInfo {
    /// Capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * crate::SECTOR_SIZE
    }

    /// Calls GetInfo on `raw` and copies the result, freeing VDDK's struct.
    pub(crate) fn fetch(lib: &LibraryState, raw: VixDiskLibHandle) -> Result<DiskInfo> {
        let api = &lib.lib.api;
        let mut p: *mut VixDiskLibInfo = std::ptr::null_mut();
        // SAFETY: required symbol; live handle; valid out-pointer.
        let rc = unsafe { api.VixDiskLib_GetInfo(raw, &mut p) };
        lib.check("GetInfo", rc)?;
        if p.is_null() {
            return Err(Error::Library("GetInfo succeeded without info".into()));
        }
        let sector_sizes = lib.lib.version().has_sector_sizes();
        // SAFETY: `p` is VDDK's struct, exactly as large as the library's version makes it:
        // 56 bytes before 7.0, without the sector sizes. So no reference to the whole
        // (64-byte) struct is made: each field is read through its raw place, and the sector
        // sizes only from 7.0 on. Strings are NULL or NUL-terminated and copied before the
        // struct is freed, exactly once.
        let info = unsafe {
            let text = |s: *const std::ffi::c_char| {
                (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
            };
            let geo = |g: VixDiskLibGeometry| Geometry {
                cylinders: g.cylinders,
                heads: g.heads,
                sectors: g.sectors,
            };
            let size = |v: u32| (v != 0).then_some(v);
            let (logical, physical) = if sector_sizes {
                (
                    size(addr_of!((*p).logicalSectorSize).read()),
                    size(addr_of!((*p).physicalSectorSize).read()),
                )
            } else {
                (None, None)
            };
            let info = DiskInfo {
                capacity_sectors: addr_of!((*p).capacity).read(),
                bios_geometry: geo(addr_of!((*p).biosGeo).read()),
                physical_geometry: geo(addr_of!((*p).physGeo).read()),
                adapter: Adapter::from_raw(addr_of!((*p).adapterType).read()),
                links: addr_of!((*p).numLinks).read(),
                parent_file_name_hint: text(addr_of!((*p).parentFileNameHint).read()),
                uuid: text(addr_of!((*p).uuid).read()),
                logical_sector_size: logical,
                physical_sector_size: physical,
            };
            api.VixDiskLib_FreeInfo(p);
            info
        };
        Ok(info)
    }
}
