//! An open fake disk: a flat extent file, or a delta disk through its chain (`chain.rs`),
//! read and written at sector offsets.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vddk_sys::*;

use crate::chain::Chain;
use crate::config::FakeConfig;
use crate::descriptor::Descriptor;
use crate::stats::DiskStats;

/// Sector size of every fake disk.
pub const SECTOR: u64 = VIXDISKLIB_SECTOR_SIZE as u64;

/// Reads issued by this process so far, for `fake.fail_read_nth`.
static PROCESS_READS: AtomicU64 = AtomicU64::new(0);

/// An open disk.
pub struct FakeDisk {
    /// The path as the caller gave it (`[ds] f/d.vmdk` or absolute).
    pub path: String,
    pub descriptor: Descriptor,
    chain: Chain,
    pub read_only: bool,
    pub transport: &'static std::ffi::CStr,
    pub config: FakeConfig,
    pub stats: Mutex<DiskStats>,
}

impl FakeDisk {
    /// Opens the descriptor at `file` and its extent; a delta disk with its parents, as VDDK
    /// opens a snapshot's disk (the frozen chain below the VM's current delta).
    pub fn open(
        path: &str,
        file: &Path,
        read_only: bool,
        transport: &'static std::ffi::CStr,
        config: FakeConfig,
    ) -> Result<Self, (VixError, String)> {
        if !file.exists() {
            return Err((
                VIX_E_FILE_NOT_FOUND as VixError,
                format!("{} not found", file.display()),
            ));
        }
        let descriptor =
            Descriptor::read(file).map_err(|e| (VIX_E_INCORRECT_FILE_TYPE as VixError, e))?;
        let read_only = read_only || descriptor.read_only;
        let chain = Chain::open(file, &descriptor, !read_only, config.direct_writes)?;
        Ok(Self {
            path: path.to_string(),
            descriptor,
            chain,
            read_only,
            transport,
            config,
            stats: Mutex::new(DiskStats::default()),
        })
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.descriptor.capacity_sectors
    }

    fn check_range(&self, start: u64, count: u64) -> Result<(), VixError> {
        match start.checked_add(count) {
            Some(end) if end <= self.capacity() => Ok(()),
            _ => Err(VIX_E_DISK_OUTOFRANGE as VixError),
        }
    }

    /// Files in the disk's chain (1 for a flat disk).
    pub fn chain_depth(&self) -> usize {
        self.chain.depth()
    }

    /// Reads `buf.len() / 512` sectors at `start`; past the flat file's end reads zeros.
    pub fn read(&self, start: u64, buf: &mut [u8]) -> Result<(), VixError> {
        let count = buf.len() as u64 / SECTOR;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read_calls += 1;
        let nth = PROCESS_READS.fetch_add(1, Ordering::SeqCst) + 1;
        self.check_range(start, count)?;
        if self.config.fail_read_nth == Some(nth) {
            return Err(self.injected_error());
        }
        if let Some((a, b)) = self.config.fail_read_sectors {
            if count > 0 && start <= b && start + count > a {
                return Err(self.injected_error());
            }
        }
        sleep_ms(self.config.read_latency_ms);
        self.chain
            .read(buf, start * SECTOR)
            .map_err(|_| VIX_E_FILE_ERROR as VixError)?;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_read(start, count);
        Ok(())
    }

    fn injected_error(&self) -> VixError {
        self.config
            .fail_read_code
            .unwrap_or(VIX_E_FILE_ERROR as VixError)
    }

    /// Writes `buf.len() / 512` sectors at `start`.
    pub fn write(&self, start: u64, buf: &[u8]) -> Result<(), VixError> {
        let count = buf.len() as u64 / SECTOR;
        if self.read_only {
            return Err(VIX_E_FILE_READ_ONLY as VixError);
        }
        self.check_range(start, count)?;
        if let Some((a, b)) = self.config.fail_write_sectors {
            if count > 0 && start <= b && start + count > a {
                return Err(VIX_E_FILE_ERROR as VixError);
            }
        }
        sleep_ms(self.config.write_latency_ms);
        self.chain
            .write(buf, start * SECTOR)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSPC) => VIX_E_DISK_FULL as VixError,
                _ => VIX_E_FILE_ERROR as VixError,
            })?;
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.write_calls += 1;
        s.sectors_written += count;
        Ok(())
    }

    /// Makes written data durable.
    pub fn flush(&self) -> Result<(), VixError> {
        if self.read_only {
            return Ok(());
        }
        self.chain.sync().map_err(|_| VIX_E_FILE_ERROR as VixError)
    }

    /// Chunks holding data between `start` and `start + count` in any file of the chain
    /// (SEEK_DATA/SEEK_HOLE on the flat base, allocated grains of deltas), widened to whole
    /// chunks, as `(offset, length)` in sectors.
    pub fn allocated(
        &self,
        start: u64,
        count: u64,
        chunk: u64,
    ) -> Result<Vec<(u64, u64)>, VixError> {
        if chunk < VIXDISKLIB_MIN_CHUNK_SIZE as u64
            || start % chunk != 0
            || count == 0
            || (count % chunk != 0 && start + count != self.capacity())
            || count.div_ceil(chunk) > VIXDISKLIB_MAX_CHUNK_NUMBER as u64
        {
            return Err(VIX_E_INVALID_ARG as VixError);
        }
        self.check_range(start, count)?;
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .query_allocated_calls += 1;
        let end = start + count;
        let ranges = self
            .chain
            .allocated(start * SECTOR, end * SECTOR)
            .map_err(|_| VIX_E_FILE_ERROR as VixError)?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (data, hole) in ranges {
            let first = data / SECTOR / chunk * chunk;
            let last = (hole.div_ceil(SECTOR).div_ceil(chunk) * chunk).min(end);
            match out.last_mut() {
                Some(prev) if first <= prev.0 + prev.1 => {
                    prev.1 = last.max(prev.0 + prev.1) - prev.0
                }
                _ => out.push((first, last - first)),
            }
        }
        Ok(out)
    }
}

fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}
