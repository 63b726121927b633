//! An open virtual disk ([`Disk`]): info, bounds-checked reads and writes, flush and
//! allocated-block queries.

use std::cell::Cell;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::sync::Arc;

use vddk_sys::*;

use crate::async_io::AsyncRequests;
use crate::connection::ConnectionInner;
use crate::error::{Error, Result};
use crate::info::DiskInfo;
use crate::library::serial;

/// Bytes in a VDDK sector.
pub const SECTOR_SIZE: u64 = VIXDISKLIB_SECTOR_SIZE as u64;

/// Flags of [`crate::Connection::open`]; combine with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags(u32);

impl OpenFlags {
    /// No flags: read-write, buffered, whole chain.
    pub const NONE: OpenFlags = OpenFlags(0);
    /// Open read-only (VIXDISKLIB_FLAG_OPEN_READ_ONLY).
    pub const READ_ONLY: OpenFlags = OpenFlags(VIXDISKLIB_FLAG_OPEN_READ_ONLY);
    /// Bypass the host cache (VIXDISKLIB_FLAG_OPEN_UNBUFFERED).
    pub const UNBUFFERED: OpenFlags = OpenFlags(VIXDISKLIB_FLAG_OPEN_UNBUFFERED);
    /// Open only this link, not its parents (VIXDISKLIB_FLAG_OPEN_SINGLE_LINK).
    pub const SINGLE_LINK: OpenFlags = OpenFlags(VIXDISKLIB_FLAG_OPEN_SINGLE_LINK);

    /// The C flag word.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: OpenFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for OpenFlags {
    type Output = OpenFlags;
    fn bitor(self, rhs: OpenFlags) -> OpenFlags {
        OpenFlags(self.0 | rhs.0)
    }
}

/// A region holding data, from [`Disk::query_allocated_blocks`], in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    /// First sector.
    pub offset: u64,
    /// Number of sectors.
    pub length: u64,
}

impl Block {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// An open disk. `Send` but not `Sync`: one thread uses it at a time, as VDDK requires. It
/// keeps its connection (and the library) alive; dropping it waits for outstanding async
/// requests and closes it.
pub struct Disk {
    pub(crate) raw: VixDiskLibHandle,
    pub(crate) conn: Arc<ConnectionInner>,
    path: String,
    read_only: bool,
    info: DiskInfo,
    transport: Option<String>,
    pub(crate) requests: AsyncRequests,
    closed: bool,
    _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: VDDK disk handles may be used from any thread provided calls on one handle are not
// concurrent; `Disk` is !Sync and every call takes `&self`/`&mut self` on the single owner, so
// moving it to another thread cannot create concurrent calls. Async completion state is shared
// only through `Arc<Mutex<..>>`.
unsafe impl Send for Disk {}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("capacity_sectors", &self.info.capacity_sectors)
            .field("transport", &self.transport)
            .finish()
    }
}

impl Disk {
    pub(crate) fn from_raw(
        raw: VixDiskLibHandle,
        conn: Arc<ConnectionInner>,
        path: String,
        read_only: bool,
    ) -> Result<Disk> {
        let lib = conn.library.clone();
        let mut disk = Disk {
            raw,
            conn,
            path,
            read_only,
            info: DiskInfo::default(),
            transport: None,
            requests: AsyncRequests::default(),
            closed: false,
            _not_sync: PhantomData,
        };
        // From here on Drop closes the handle, also if GetInfo fails.
        disk.info = DiskInfo::fetch(&lib, raw)?;
        // SAFETY: required symbol, live handle; the result is NULL or a static string owned by
        // VDDK, copied at once.
        let mode = unsafe { lib.lib.api.VixDiskLib_GetTransportMode(raw) };
        if !mode.is_null() {
            // SAFETY: non-null, NUL-terminated, owned by VDDK and copied at once.
            let text = unsafe { CStr::from_ptr(mode) };
            disk.transport = Some(text.to_string_lossy().into_owned());
        }
        tracing::debug!(target: "vddk", path = %disk.path, transport = ?disk.transport,
            capacity = disk.info.capacity_sectors, "opened disk");
        Ok(disk)
    }

    /// The disk's geometry, capacity, adapter and sector sizes (fetched once at open).
    pub fn info(&self) -> &DiskInfo {
        &self.info
    }

    /// The transport VDDK chose for this disk (`nbdssl`, `hotadd`, `file`, ...).
    pub fn transport_mode(&self) -> Option<String> {
        self.transport.clone()
    }

    /// The path the disk was opened with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Checks that `len` bytes at `start` lie inside the disk; returns the sector count.
    pub(crate) fn check_io(&self, start: u64, len: usize) -> Result<u64> {
        if len as u64 % SECTOR_SIZE != 0 {
            return Err(Error::NotSectorMultiple { len });
        }
        let count = len as u64 / SECTOR_SIZE;
        let capacity = self.info.capacity_sectors;
        match start.checked_add(count) {
            Some(end) if end <= capacity => Ok(count),
            end => Err(Error::OutOfRange {
                start,
                end: end.unwrap_or(u64::MAX),
                capacity,
            }),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly {
                path: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Reads `buf.len() / 512` sectors starting at `start_sector`.
    ///
    /// # Errors
    /// [`Error::NotSectorMultiple`], [`Error::OutOfRange`] (checked before calling VDDK), or
    /// [`Error::Vix`].
    pub fn read(&mut self, start_sector: u64, buf: &mut [u8]) -> Result<()> {
        let count = self.check_io(start_sector, buf.len())?;
        if count == 0 {
            return Ok(());
        }
        let lib = &self.conn.library;
        // SAFETY: required symbol; live handle used by this thread only; `buf` holds exactly
        // `count` sectors and is writable for the call's duration.
        let raw = unsafe {
            lib.lib
                .api
                .VixDiskLib_Read(self.raw, start_sector, count, buf.as_mut_ptr())
        };
        lib.check("Read", raw)
    }

    /// Writes `buf.len() / 512` sectors starting at `start_sector`.
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::NotSectorMultiple`], [`Error::OutOfRange`], or
    /// [`Error::Vix`].
    pub fn write(&mut self, start_sector: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        let count = self.check_io(start_sector, buf.len())?;
        if count == 0 {
            return Ok(());
        }
        let lib = &self.conn.library;
        // SAFETY: required symbol; live handle used by this thread only; `buf` holds exactly
        // `count` sectors.
        let raw = unsafe {
            lib.lib
                .api
                .VixDiskLib_Write(self.raw, start_sector, count, buf.as_ptr())
        };
        lib.check("Write", raw)
    }

    /// Makes written data durable. Outstanding async requests are waited for first (VixDiskLib_Wait);
    /// their completions stay available to [`Disk::take_completed`].
    ///
    /// # Errors
    /// [`Error::Vix`] from Wait or Flush.
    pub fn flush(&mut self) -> Result<()> {
        let lib = self.conn.library.clone();
        if self.in_flight() > 0 {
            // SAFETY: required symbol; live handle used by this thread only.
            let raw = unsafe { lib.lib.api.VixDiskLib_Wait(self.raw) };
            lib.check("Wait", raw)?;
        }
        // SAFETY: required symbol; live handle used by this thread only.
        let raw = unsafe { lib.lib.api.VixDiskLib_Flush(self.raw) };
        lib.check("Flush", raw)
    }

    /// The regions of `[start_sector, start_sector + sector_count)` that hold data, at
    /// `chunk_sectors` granularity (at least 128 sectors; `start_sector` and `sector_count` are
    /// multiples of it, except that the range may end at the disk's end). Long ranges are
    /// split into calls of at most VIXDISKLIB_MAX_CHUNK_NUMBER chunks; touching blocks are
    /// merged.
    ///
    /// # Errors
    /// [`Error::Unsupported`] before VDDK 6.7, [`Error::InvalidArgument`],
    /// [`Error::OutOfRange`], [`Error::Vix`].
    pub fn query_allocated_blocks(
        &mut self,
        start_sector: u64,
        sector_count: u64,
        chunk_sectors: u64,
    ) -> Result<Vec<Block>> {
        let lib = self.conn.library.clone();
        let api = &lib.lib.api;
        if api.VixDiskLib_QueryAllocatedBlocks.is_err() || api.VixDiskLib_FreeBlockList.is_err() {
            return Err(lib.unsupported("VixDiskLib_QueryAllocatedBlocks"));
        }
        let capacity = self.info.capacity_sectors;
        let end = start_sector
            .checked_add(sector_count)
            .filter(|e| *e <= capacity)
            .ok_or(Error::OutOfRange {
                start: start_sector,
                end: start_sector.saturating_add(sector_count),
                capacity,
            })?;
        if chunk_sectors < u64::from(VIXDISKLIB_MIN_CHUNK_SIZE) {
            return Err(Error::InvalidArgument(format!(
                "chunk of {chunk_sectors} sectors is below VDDK's minimum of {VIXDISKLIB_MIN_CHUNK_SIZE}"
            )));
        }
        if start_sector % chunk_sectors != 0
            || (sector_count % chunk_sectors != 0 && end != capacity)
        {
            return Err(Error::InvalidArgument(format!(
                "range {start_sector}+{sector_count} is not aligned to chunks of {chunk_sectors} sectors"
            )));
        }
        let per_call = chunk_sectors.saturating_mul(u64::from(VIXDISKLIB_MAX_CHUNK_NUMBER));
        let mut out: Vec<Block> = Vec::new();
        let mut pos = start_sector;
        while pos < end {
            let n = (end - pos).min(per_call);
            let mut list: *mut VixDiskLibBlockList = std::ptr::null_mut();
            // SAFETY: present (checked); live handle used by this thread only; `list` is a
            // valid out-pointer.
            let raw = unsafe {
                api.VixDiskLib_QueryAllocatedBlocks(self.raw, pos, n, chunk_sectors, &mut list)
            };
            lib.check("QueryAllocatedBlocks", raw)?;
            if !list.is_null() {
                // SAFETY: VDDK returned a list of `numBlocks` entries laid out from `blocks`;
                // it is copied and then freed exactly once.
                unsafe {
                    let count = (*list).numBlocks as usize;
                    let first = std::ptr::addr_of!((*list).blocks).cast::<VixDiskLibBlock>();
                    for i in 0..count {
                        let b = first.add(i).read();
                        push_merged(
                            &mut out,
                            Block {
                                offset: b.offset,
                                length: b.length,
                            },
                        );
                    }
                    api.VixDiskLib_FreeBlockList(list);
                }
            }
            pos += n;
        }
        Ok(out)
    }

    /// Closes the disk now, reporting errors (dropping closes too, logging them).
    ///
    /// # Errors
    /// [`Error::Vix`] from Wait or Close.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let waited = if self.requests.in_flight() > 0 {
            self.wait().map(drop)
        } else {
            Ok(())
        };
        if self.requests.in_flight() > 0 {
            // Buffers VDDK may still write into must not be freed: leak them.
            self.requests.abandon();
        }
        let lib = self.conn.library.clone();
        let raw = {
            let _g = serial();
            // SAFETY: required symbol; live handle, closed exactly once (flag below).
            unsafe { lib.lib.api.VixDiskLib_Close(self.raw) }
        };
        self.closed = true;
        waited.and(lib.check("Close", raw))
    }
}

fn push_merged(out: &mut Vec<Block>, b: Block) {
    if b.length == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if b.offset <= last.end() {
            let end = last.end().max(b.end());
            last.length = end - last.offset;
            return;
        }
    }
    out.push(b);
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(target: "vddk", path = %self.path, "closing disk: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_combine() {
        let f = OpenFlags::READ_ONLY | OpenFlags::UNBUFFERED;
        assert_eq!(f.bits(), 5);
        assert!(f.contains(OpenFlags::READ_ONLY));
        assert!(!f.contains(OpenFlags::SINGLE_LINK));
    }

    #[test]
    fn blocks_merge_when_touching() {
        let mut v = Vec::new();
        push_merged(
            &mut v,
            Block {
                offset: 0,
                length: 128,
            },
        );
        push_merged(
            &mut v,
            Block {
                offset: 128,
                length: 128,
            },
        );
        push_merged(
            &mut v,
            Block {
                offset: 512,
                length: 128,
            },
        );
        push_merged(
            &mut v,
            Block {
                offset: 600,
                length: 0,
            },
        );
        assert_eq!(
            v,
            vec![
                Block {
                    offset: 0,
                    length: 256
                },
                Block {
                    offset: 512,
                    length: 128
                }
            ]
        );
    }
}
