//! The exported C functions, with VixDiskLib's names and signatures.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use vddk_sys::*;

use crate::async_io::{Job, Worker};
use crate::config::FakeConfig;
use crate::connection::{opt_str, FakeConnection, Params};
use crate::descriptor::{geometry, Descriptor};
use crate::disk::{FakeDisk, SECTOR};
use crate::{errors, guarded, hold, logging, params_state, stats, tmp_state};

/// State set by InitEx and cleared by Exit.
struct Global {
    config_path: Option<PathBuf>,
}

static GLOBAL: Mutex<Option<Global>> = Mutex::new(None);

/// Set by Exit: VDDK is initialised once per process and cannot be initialised again.
static EXITED: AtomicBool = AtomicBool::new(false);

/// Connections made and not yet disconnected, reported at Exit.
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// The most connections this process held at once, for tests of connection limits.
static PEAK_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// What a `VixDiskLibHandle` points to.
struct DiskHandle {
    disk: Arc<FakeDisk>,
    worker: Option<Worker>,
    /// The connection's count of open disks, decremented at Close.
    open_disks: Arc<AtomicUsize>,
    /// The Cleanup marker of a remote disk, removed at Close.
    marker: Option<PathBuf>,
}

const ERR_FAIL: VixError = VIX_E_FAIL as VixError;
const ERR_ARG: VixError = VIX_E_INVALID_ARG as VixError;
const OK: VixError = VIX_OK as VixError;

/// Runs `f`, turning a panic into VIX_E_FAIL so it never unwinds into C.
fn guard(f: impl FnOnce() -> VixError) -> VixError {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ERR_FAIL)
}

fn config_path() -> Option<PathBuf> {
    GLOBAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|g| g.config_path.clone())
}

fn initialised() -> bool {
    GLOBAL.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Re-reads the config so tests can change faults between runs.
fn current_config() -> Result<FakeConfig, VixError> {
    match config_path() {
        None => Ok(FakeConfig::parse("").unwrap_or_default()),
        Some(p) => FakeConfig::load(&p).map_err(|e| {
            logging::message(true, &format!("fake config: {e}"));
            ERR_FAIL
        }),
    }
}

fn record(config: &FakeConfig, value: serde_json::Value) {
    if let Some(path) = &config.stats_file {
        if let Err(e) = stats::append(path, value) {
            logging::message(true, &format!("cannot append to {}: {e}", path.display()));
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_InitEx(
    major: u32,
    minor: u32,
    log: VixDiskLibGenericLogFunc,
    warn: VixDiskLibGenericLogFunc,
    _panic: VixDiskLibGenericLogFunc,
    _lib_dir: *const c_char,
    config_file: *const c_char,
) -> VixError {
    guard(|| {
        logging::install(logging::Sinks { log, warn });
        if EXITED.load(Ordering::SeqCst) {
            logging::message(
                true,
                "VixDiskLib_InitEx after VixDiskLib_Exit: VDDK is initialised once per process",
            );
            return ERR_FAIL;
        }
        if initialised() {
            logging::message(
                true,
                "VixDiskLib_InitEx called twice without VixDiskLib_Exit",
            );
            return ERR_FAIL;
        }
        // SAFETY: NULL or a NUL-terminated path, per InitEx's contract.
        let config_path = unsafe { opt_str(config_file) }.map(PathBuf::from);
        if let Some(p) = &config_path {
            if let Err(e) = FakeConfig::load(p) {
                logging::message(true, &format!("cannot use config file: {e}"));
                return if p.exists() {
                    ERR_ARG
                } else {
                    VIX_E_FILE_NOT_FOUND as VixError
                };
            }
        }
        *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) = Some(Global { config_path });
        logging::message(
            false,
            &format!("fake VixDiskLib initialised for API version {major}.{minor}"),
        );
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Exit() {
    let _ = guard(|| {
        logging::message(false, "fake VixDiskLib exiting");
        if let Ok(config) = current_config() {
            record(
                &config,
                json!({"event": "exit",
                       "open_connections": OPEN_CONNECTIONS.load(Ordering::SeqCst),
                       "peak_connections": PEAK_CONNECTIONS.load(Ordering::SeqCst)}),
            );
        }
        *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) = None;
        EXITED.store(true, Ordering::SeqCst);
        logging::install(logging::Sinks::default());
        OK
    });
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_ListTransportModes() -> *const c_char {
    c"file:san:hotadd:nbdssl:nbd".as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_AllocateConnectParams() -> *mut VixDiskLibConnectParams {
    params_state::allocate()
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_FreeConnectParams(params: *mut VixDiskLibConnectParams) {
    let _ = guard(|| {
        // The caller owns any strings it stored; only the struct and its state are ours.
        // SAFETY: NULL or a readable struct per the API contract.
        let freed = unsafe { params_state::free(params) };
        let config = current_config().ok();
        match freed {
            Ok(f) => {
                if !f.intact {
                    logging::message(
                        true,
                        "VixDiskLib_FreeConnectParams: the struct's internal fields were \
                         overwritten; VDDK would lose its connect params state",
                    );
                }
                if let (Some(config), Some(serial)) = (config, f.serial) {
                    let users = CONNECTIONS_BY_PARAMS
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|s| **s == serial)
                        .count();
                    record(
                        &config,
                        json!({"event": "free_connect_params", "params": serial,
                               "intact": f.intact, "connections": users,
                               "strings_left": f.strings_left}),
                    );
                }
            }
            Err(e) => logging::message(true, &e),
        }
        OK
    });
}

/// Serials of the connect params of connections not yet disconnected.
static CONNECTIONS_BY_PARAMS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Checks the internal fields of the caller's connect params; logs and returns
/// VIX_E_INVALID_ARG when they were tampered with.
///
/// # Safety
/// `params` is non-null and readable.
unsafe fn check_params(
    params: *const VixDiskLibConnectParams,
    function: &str,
) -> Result<Option<u64>, VixError> {
    // SAFETY: per the contract.
    unsafe { params_state::check(params, function) }.map_err(|e| {
        logging::message(true, &e);
        ERR_ARG
    })
}

fn prepare_or_end(
    params: *const VixDiskLibConnectParams,
    identity: *const c_char,
    event: &str,
    function: &str,
) -> VixError {
    guard(|| {
        if params.is_null() || !initialised() {
            return ERR_ARG;
        }
        // SAFETY: non-null and readable per the API contract.
        if let Err(e) = unsafe { check_params(params, function) } {
            return e;
        }
        // SAFETY: non-null, and the caller passes a valid struct per the API contract.
        let p = unsafe { Params::copy_from(&*params) };
        let config = match current_config() {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = p.authenticate(&config) {
            logging::message(true, &e);
            return ERR_FAIL;
        }
        // SAFETY: NULL or NUL-terminated.
        let identity = unsafe { opt_str(identity) };
        record(
            &config,
            json!({"event": event, "vmx_spec": p.vmx_spec, "identity": identity}),
        );
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_PrepareForAccess(
    params: *const VixDiskLibConnectParams,
    identity: *const c_char,
) -> VixError {
    prepare_or_end(
        params,
        identity,
        "prepare_for_access",
        "VixDiskLib_PrepareForAccess",
    )
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_EndAccess(
    params: *const VixDiskLibConnectParams,
    identity: *const c_char,
) -> VixError {
    prepare_or_end(params, identity, "end_access", "VixDiskLib_EndAccess")
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Cleanup(
    params: *const VixDiskLibConnectParams,
    cleaned_up: *mut u32,
    remaining: *mut u32,
) -> VixError {
    guard(|| {
        if params.is_null() || !initialised() {
            return ERR_ARG;
        }
        // SAFETY: non-null and readable per the API contract.
        if let Err(e) = unsafe { check_params(params, "VixDiskLib_Cleanup") } {
            return e;
        }
        // SAFETY: non-null; the caller passes a valid struct per the API contract.
        let p = unsafe { Params::copy_from(&*params) };
        let config = match current_config() {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = p.authenticate(&config) {
            logging::message(true, &e);
            return ERR_FAIL;
        }
        let (done, left) = match (&p.server, &config.tmp_directory) {
            (Some(server), Some(tmp)) => match tmp_state::cleanup(tmp, server) {
                Ok(counts) => counts,
                Err(e) => {
                    logging::message(true, &format!("Cleanup: {e}"));
                    return VIX_E_FILE_ERROR as VixError;
                }
            },
            _ => (0, 0),
        };
        // SAFETY: NULL or writable counters per the API contract.
        unsafe {
            if !cleaned_up.is_null() {
                *cleaned_up = done;
            }
            if !remaining.is_null() {
                *remaining = left;
            }
        }
        logging::message(
            false,
            &format!("Cleanup: {done} item(s) cleaned up, {left} remaining"),
        );
        record(
            &config,
            json!({"event": "cleanup", "server": p.server, "cleaned_up": done,
                   "remaining": left}),
        );
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_ConnectEx(
    params: *const VixDiskLibConnectParams,
    read_only: Bool,
    snapshot_ref: *const c_char,
    transport_modes: *const c_char,
    connection: *mut VixDiskLibConnection,
) -> VixError {
    guard(|| {
        if params.is_null() || connection.is_null() {
            return ERR_ARG;
        }
        if !initialised() {
            return VIX_E_DISK_NOINIT as VixError;
        }
        // SAFETY: non-null and readable per the API contract.
        let params_serial = match unsafe { check_params(params, "VixDiskLib_ConnectEx") } {
            Ok(s) => s,
            Err(e) => return e,
        };
        // SAFETY: non-null; the caller passes a valid struct per the API contract.
        let p = unsafe { Params::copy_from(&*params) };
        // SAFETY: NULL or NUL-terminated strings per the API contract.
        let (snapshot, transports) = unsafe { (opt_str(snapshot_ref), opt_str(transport_modes)) };
        let config = match current_config() {
            Ok(c) => c,
            Err(e) => return e,
        };
        let fcd = p.fcd.as_ref();
        record(
            &config,
            json!({
                "event": "connect",
                "vmx_spec": p.vmx_spec,
                "fcd_id": fcd.map(|f| &f.0),
                "fcd_datastore": fcd.map(|f| &f.1),
                "fcd_snapshot": fcd.and_then(|f| f.2.as_ref()),
                "server": p.server,
                "port": p.port,
                "nfc_port": p.nfc_port,
                "snapshot": snapshot,
                "transports": transports,
                "read_only": read_only != 0,
                "params": params_serial,
            }),
        );
        let conn = Box::new(FakeConnection {
            params: p,
            read_only: read_only != 0,
            snapshot,
            transports,
            open_disks: Arc::new(AtomicUsize::new(0)),
            params_serial,
        });
        if let Some(serial) = params_serial {
            CONNECTIONS_BY_PARAMS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(serial);
        }
        let open = OPEN_CONNECTIONS.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK_CONNECTIONS.fetch_max(open, Ordering::SeqCst);
        // SAFETY: `connection` is non-null and writable per the API contract.
        unsafe { *connection = Box::into_raw(conn).cast() };
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Disconnect(connection: VixDiskLibConnection) -> VixError {
    guard(|| {
        if connection.is_null() {
            return VIX_E_INVALID_HANDLE as VixError;
        }
        // SAFETY: a pointer VixDiskLib_ConnectEx returned, disconnected once.
        let conn = unsafe { Box::from_raw(connection.cast::<FakeConnection>()) };
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
        if let Some(serial) = conn.params_serial {
            let mut users = CONNECTIONS_BY_PARAMS
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(i) = users.iter().position(|s| *s == serial) {
                users.swap_remove(i);
            }
        }
        let open_disks = conn.open_disks.load(Ordering::SeqCst);
        if open_disks > 0 {
            logging::message(
                true,
                &format!("Disconnect with {open_disks} disk(s) still open"),
            );
        }
        if let Ok(config) = current_config() {
            record(
                &config,
                json!({"event": "disconnect", "vmx_spec": conn.params.vmx_spec,
                       "open_disks": open_disks,
                       "peak_connections": PEAK_CONNECTIONS.load(Ordering::SeqCst)}),
            );
        }
        OK
    })
}

/// Picks the transport a disk is opened with: local connections use "file"; remote ones the
/// first requested mode that the fake "has" (`fake.transports`).
fn choose_transport(conn: &FakeConnection, config: &FakeConfig) -> Option<&'static CStr> {
    if conn.params.server.is_none() {
        return Some(c"file");
    }
    let requested = conn
        .transports
        .clone()
        .unwrap_or_else(|| "san:hotadd:nbdssl:nbd".to_string());
    requested
        .split(':')
        .find(|m| config.transports.iter().any(|t| t == m))
        .and_then(|m| match m {
            "nbd" => Some(c"nbd"),
            "nbdssl" => Some(c"nbdssl"),
            "hotadd" => Some(c"hotadd"),
            "san" => Some(c"san"),
            "file" => Some(c"file"),
            _ => None,
        })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Open(
    connection: VixDiskLibConnection,
    path: *const c_char,
    flags: u32,
    handle: *mut VixDiskLibHandle,
) -> VixError {
    guard(|| {
        if connection.is_null() || path.is_null() || handle.is_null() {
            return ERR_ARG;
        }
        // SAFETY: a live connection from ConnectEx, used by one thread at a time.
        let conn = unsafe { &*connection.cast::<FakeConnection>() };
        // SAFETY: non-null and NUL-terminated.
        let Some(given) = (unsafe { opt_str(path) }) else {
            return VIX_E_INVALID_UTF8_STRING as VixError;
        };
        if conn.params_serial.is_some_and(params_state::is_freed) {
            logging::message(
                true,
                &format!(
                    "Cannot open {given}: the connection's VixDiskLibConnectParams were freed \
                     before VixDiskLib_Disconnect"
                ),
            );
            return ERR_ARG;
        }
        let config = match current_config() {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = conn.params.authenticate(&config) {
            logging::message(true, &format!("Cannot open {given}: {e}"));
            return ERR_FAIL;
        }
        if let Some(gate) = &config.hold_open {
            hold::while_present(gate, &format!("Open {given}"));
        }
        let Some(transport) = choose_transport(conn, &config) else {
            logging::message(true, "Cannot use any of the requested transport modes");
            return VIX_E_FILE_ACCESS_ERROR as VixError;
        };
        let target = match &conn.params.fcd {
            Some((id, _, snapshot)) => match config.fcd_target(id, snapshot.as_deref(), &given) {
                Ok(t) => t,
                Err(e) => {
                    logging::message(true, &format!("Cannot open {given}: {e}"));
                    return VIX_E_FILE_NOT_FOUND as VixError;
                }
            },
            None => given.clone(),
        };
        let file = match config.resolve(&target) {
            Ok(f) => f,
            Err(e) => {
                logging::message(true, &e);
                return VIX_E_FILE_NOT_FOUND as VixError;
            }
        };
        let read_only = conn.read_only || flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY != 0;
        let disk = match FakeDisk::open(&given, &file, read_only, transport, config) {
            Ok(d) => Arc::new(d),
            Err((code, msg)) => {
                logging::message(true, &msg);
                return code;
            }
        };
        logging::opened(&given, disk.capacity(), transport.to_str().unwrap_or("?"));
        record(
            &disk.config,
            json!({"event": "open", "path": given, "transport": transport.to_str().ok(),
                   "read_only": read_only, "flags": flags, "snapshot": conn.snapshot}),
        );
        let marker = match (&conn.params.server, &disk.config.tmp_directory) {
            (Some(server), Some(tmp)) => {
                let transport = transport.to_str().unwrap_or("?");
                match tmp_state::create(
                    tmp,
                    server,
                    conn.params.vmx_spec.as_deref(),
                    &given,
                    transport,
                ) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        logging::message(true, &format!("cannot write to tmpDirectory: {e}"));
                        return VIX_E_FILE_ERROR as VixError;
                    }
                }
            }
            _ => None,
        };
        conn.open_disks.fetch_add(1, Ordering::SeqCst);
        let h = Box::new(DiskHandle {
            disk,
            worker: None,
            open_disks: conn.open_disks.clone(),
            marker,
        });
        // SAFETY: non-null and writable per the API contract.
        unsafe { *handle = Box::into_raw(h).cast() };
        OK
    })
}

/// Borrows the handle's state.
///
/// # Safety
/// `h` is NULL or a live handle from VixDiskLib_Open used by one thread at a time.
unsafe fn disk_handle<'a>(h: VixDiskLibHandle) -> Option<&'a mut DiskHandle> {
    // SAFETY: per the function contract.
    unsafe { h.cast::<DiskHandle>().as_mut() }
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Close(handle: VixDiskLibHandle) -> VixError {
    guard(|| {
        if handle.is_null() {
            return VIX_E_INVALID_HANDLE as VixError;
        }
        // SAFETY: a live handle from Open, closed once.
        let mut h = unsafe { Box::from_raw(handle.cast::<DiskHandle>()) };
        drop(h.worker.take()); // waits for outstanding async requests
        h.open_disks.fetch_sub(1, Ordering::SeqCst);
        if let Some(m) = h.marker.take() {
            let _ = std::fs::remove_file(m);
        }
        let disk = &h.disk;
        let s = disk.stats.lock().unwrap_or_else(|p| p.into_inner());
        record(
            &disk.config,
            json!({
                "event": "close",
                "path": disk.path,
                "transport": disk.transport.to_str().ok(),
                "read_only": disk.read_only,
                "sectors_read": s.sectors_read,
                "sectors_written": s.sectors_written,
                "read_calls": s.read_calls,
                "write_calls": s.write_calls,
                "query_allocated_calls": s.query_allocated_calls,
                "read_ranges": s.coalesced_ranges(),
            }),
        );
        if disk.config.fail_close && !disk.read_only {
            logging::message(true, "Close failed (fake.fail_close)");
            return VIX_E_FILE_ERROR as VixError;
        }
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_GetTransportMode(handle: VixDiskLibHandle) -> *const c_char {
    // SAFETY: NULL or a live handle.
    match unsafe { disk_handle(handle) } {
        Some(h) => h.disk.transport.as_ptr(),
        None => std::ptr::null(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_GetInfo(
    handle: VixDiskLibHandle,
    info: *mut *mut VixDiskLibInfo,
) -> VixError {
    guard(|| {
        // SAFETY: NULL or a live handle.
        let Some(h) = (unsafe { disk_handle(handle) }) else {
            return VIX_E_INVALID_HANDLE as VixError;
        };
        if info.is_null() {
            return ERR_ARG;
        }
        let d = &h.disk.descriptor;
        let adapter_name = d
            .ddb
            .get("ddb.adapterType")
            .map(String::as_str)
            .unwrap_or("lsilogic");
        let adapter = match adapter_name {
            "ide" => VIXDISKLIB_ADAPTER_IDE,
            "buslogic" => VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC,
            "lsilogic" | "lsisas1068" | "pvscsi" => VIXDISKLIB_ADAPTER_SCSI_LSILOGIC,
            _ => VIXDISKLIB_ADAPTER_UNKNOWN,
        };
        let (c, hd, s) = geometry(adapter_name, d.capacity_sectors);
        let phys = VixDiskLibGeometry {
            cylinders: d.ddb_u32("ddb.geometry.cylinders").unwrap_or(c),
            heads: d.ddb_u32("ddb.geometry.heads").unwrap_or(hd),
            sectors: d.ddb_u32("ddb.geometry.sectors").unwrap_or(s),
        };
        let bios = VixDiskLibGeometry {
            cylinders: d
                .ddb_u32("ddb.geometry.biosCylinders")
                .unwrap_or(phys.cylinders),
            heads: d.ddb_u32("ddb.geometry.biosHeads").unwrap_or(phys.heads),
            sectors: d
                .ddb_u32("ddb.geometry.biosSectors")
                .unwrap_or(phys.sectors),
        };
        let uuid = d
            .ddb
            .get("ddb.uuid")
            .and_then(|u| CString::new(u.as_str()).ok())
            // SAFETY: strdup of a valid C string; freed by FreeInfo.
            .map(|u| unsafe { libc::strdup(u.as_ptr()) })
            .unwrap_or(std::ptr::null_mut());
        let parent_hint = d
            .parent_hint
            .as_deref()
            .and_then(|p| CString::new(p).ok())
            // SAFETY: strdup of a valid C string; freed by FreeInfo.
            .map(|p| unsafe { libc::strdup(p.as_ptr()) })
            .unwrap_or(std::ptr::null_mut());
        let links = h.disk.chain_depth() as std::os::raw::c_int;
        let sector_sizes = claimed_major() >= 7;
        let size = info_size(sector_sizes);
        let out = guarded::alloc(size).cast::<VixDiskLibInfo>();
        if out.is_null() {
            return VIX_E_OUT_OF_MEMORY as VixError;
        }
        // SAFETY: `out` has exactly `size` writable bytes (a VDDK 6.x struct ends before the
        // sector sizes, which are then not written); each field is written through its raw
        // place, never through a reference to the whole (larger) struct; `info` is writable.
        unsafe {
            addr_of_mut!((*out).biosGeo).write(bios);
            addr_of_mut!((*out).physGeo).write(phys);
            addr_of_mut!((*out).capacity).write(d.capacity_sectors);
            addr_of_mut!((*out).adapterType).write(adapter);
            addr_of_mut!((*out).numLinks).write(links);
            addr_of_mut!((*out).parentFileNameHint).write(parent_hint);
            addr_of_mut!((*out).uuid).write(uuid);
            if sector_sizes {
                addr_of_mut!((*out).logicalSectorSize).write(SECTOR as u32);
                addr_of_mut!((*out).physicalSectorSize).write(SECTOR as u32);
            }
            *info = out;
        }
        OK
    })
}

/// Bytes of `VixDiskLibInfo` in the VDDK version the fake claims: 56 before 7.0 (no sector
/// sizes), 64 from 7.0 on.
fn info_size(sector_sizes: bool) -> usize {
    if sector_sizes {
        std::mem::size_of::<VixDiskLibInfo>()
    } else {
        std::mem::offset_of!(VixDiskLibInfo, logicalSectorSize)
    }
}

/// The VDDK major version the fake claims to be: the number at the end of the file name it
/// was loaded from (`libvixDiskLib.so.6` is a 6.x library), 8 when there is none.
fn claimed_major() -> u32 {
    static MAJOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MAJOR.get_or_init(|| {
        let mut dl: libc::Dl_info = empty_dl_info();
        let anchor = VixDiskLib_GetInfo as *const c_void;
        // SAFETY: dladdr only reads the address and fills `dl`; dli_fname stays valid while
        // the library is loaded.
        let found = unsafe { libc::dladdr(anchor, &mut dl) } != 0 && !dl.dli_fname.is_null();
        if !found {
            return 8;
        }
        // SAFETY: non-null, NUL-terminated file name owned by the dynamic loader.
        let name = unsafe { CStr::from_ptr(dl.dli_fname) }.to_string_lossy();
        name.rsplit_once(".so.")
            .and_then(|(_, v)| v.split('.').next()?.parse().ok())
            .unwrap_or(8)
    })
}

fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_FreeInfo(info: *mut VixDiskLibInfo) {
    if !info.is_null() {
        // SAFETY: a struct from GetInfo; its uuid and parentFileNameHint came from strdup (or
        // are NULL) and are read through their raw places (the allocation may end before the
        // sector sizes).
        unsafe {
            libc::free(addr_of!((*info).uuid).read().cast());
            libc::free(addr_of!((*info).parentFileNameHint).read().cast());
            guarded::free(info.cast());
        }
    }
}

fn check_io(handle: VixDiskLibHandle, buf: *const u8) -> Result<&'static mut DiskHandle, VixError> {
    // SAFETY: NULL or a live handle.
    let h = unsafe { disk_handle(handle) }.ok_or(VIX_E_INVALID_HANDLE as VixError)?;
    if buf.is_null() {
        return Err(ERR_ARG);
    }
    Ok(h)
}

fn byte_len(sectors: u64) -> Result<usize, VixError> {
    sectors
        .checked_mul(SECTOR)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(VIX_E_DISK_OUTOFRANGE as VixError)
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Read(
    handle: VixDiskLibHandle,
    start: VixDiskLibSectorType,
    count: VixDiskLibSectorType,
    buf: *mut u8,
) -> VixError {
    guard(|| {
        let h = match check_io(handle, buf) {
            Ok(h) => h,
            Err(e) => return e,
        };
        let len = match byte_len(count) {
            Ok(l) => l,
            Err(e) => return e,
        };
        // SAFETY: the caller provides `count` sectors of writable buffer.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf, len) };
        h.disk.read(start, slice).err().unwrap_or(OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Write(
    handle: VixDiskLibHandle,
    start: VixDiskLibSectorType,
    count: VixDiskLibSectorType,
    buf: *const u8,
) -> VixError {
    guard(|| {
        let h = match check_io(handle, buf) {
            Ok(h) => h,
            Err(e) => return e,
        };
        let len = match byte_len(count) {
            Ok(l) => l,
            Err(e) => return e,
        };
        // SAFETY: the caller provides `count` sectors of readable buffer.
        let slice = unsafe { std::slice::from_raw_parts(buf, len) };
        h.disk.write(start, slice).err().unwrap_or(OK)
    })
}

fn submit(
    handle: VixDiskLibHandle,
    write: bool,
    start: u64,
    count: u64,
    buf: *const u8,
    callback: VixDiskLibCompletionCB,
    data: *mut c_void,
) -> VixError {
    guard(|| {
        let h = match check_io(handle, buf) {
            Ok(h) => h,
            Err(e) => return e,
        };
        let Some(callback) = callback else {
            return ERR_ARG;
        };
        let len = match byte_len(count) {
            Ok(l) => l,
            Err(e) => return e,
        };
        if start
            .checked_add(count)
            .is_none_or(|end| end > h.disk.capacity())
        {
            return VIX_E_DISK_OUTOFRANGE as VixError; // refused up front, no callback
        }
        if write && h.disk.read_only {
            return VIX_E_FILE_READ_ONLY as VixError;
        }
        let job = Job {
            write,
            start,
            buf: buf as usize,
            len,
            callback,
            data: data as usize,
        };
        if h.disk.config.async_inline {
            // SAFETY: the caller keeps the buffer valid until completion, which is now.
            unsafe { job.run(&h.disk) };
        } else {
            let disk = h.disk.clone();
            let threads = h.disk.config.async_threads;
            let worker = h.worker.get_or_insert_with(|| Worker::start(disk, threads));
            if !worker.submit(job) {
                return ERR_FAIL;
            }
        }
        VIX_ASYNC as VixError
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_ReadAsync(
    handle: VixDiskLibHandle,
    start: VixDiskLibSectorType,
    count: VixDiskLibSectorType,
    buf: *mut u8,
    callback: VixDiskLibCompletionCB,
    data: *mut c_void,
) -> VixError {
    submit(handle, false, start, count, buf, callback, data)
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_WriteAsync(
    handle: VixDiskLibHandle,
    start: VixDiskLibSectorType,
    count: VixDiskLibSectorType,
    buf: *const u8,
    callback: VixDiskLibCompletionCB,
    data: *mut c_void,
) -> VixError {
    submit(handle, true, start, count, buf, callback, data)
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Wait(handle: VixDiskLibHandle) -> VixError {
    guard(|| {
        // SAFETY: NULL or a live handle.
        let Some(h) = (unsafe { disk_handle(handle) }) else {
            return VIX_E_INVALID_HANDLE as VixError;
        };
        if h.disk.config.fail_wait {
            logging::message(true, "Wait failed (fake.fail_wait); requests keep running");
            return ERR_FAIL;
        }
        if let Some(w) = &h.worker {
            w.pending.wait_idle();
        }
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Flush(handle: VixDiskLibHandle) -> VixError {
    guard(|| {
        // SAFETY: NULL or a live handle.
        let Some(h) = (unsafe { disk_handle(handle) }) else {
            return VIX_E_INVALID_HANDLE as VixError;
        };
        if let Some(w) = &h.worker {
            w.pending.wait_idle();
        }
        h.disk.flush().err().unwrap_or(OK)
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_QueryAllocatedBlocks(
    handle: VixDiskLibHandle,
    start: VixDiskLibSectorType,
    count: VixDiskLibSectorType,
    chunk: VixDiskLibSectorType,
    list: *mut *mut VixDiskLibBlockList,
) -> VixError {
    guard(|| {
        // SAFETY: NULL or a live handle.
        let Some(h) = (unsafe { disk_handle(handle) }) else {
            return VIX_E_INVALID_HANDLE as VixError;
        };
        if list.is_null() {
            return ERR_ARG;
        }
        let blocks = match h.disk.allocated(start, count, chunk) {
            Ok(b) => b,
            Err(e) => return e,
        };
        let size = std::mem::size_of::<VixDiskLibBlockList>()
            + blocks.len().saturating_sub(1) * std::mem::size_of::<VixDiskLibBlock>();
        // SAFETY: calloc of a block list with room for every block; freed by FreeBlockList.
        let out = unsafe { libc::calloc(1, size) }.cast::<VixDiskLibBlockList>();
        if out.is_null() {
            return VIX_E_OUT_OF_MEMORY as VixError;
        }
        // SAFETY: `out` has room for `blocks.len()` entries starting at `blocks`.
        unsafe {
            (*out).numBlocks = blocks.len() as u32;
            let first = std::ptr::addr_of_mut!((*out).blocks).cast::<VixDiskLibBlock>();
            for (i, (offset, length)) in blocks.iter().enumerate() {
                first.add(i).write(VixDiskLibBlock {
                    offset: *offset,
                    length: *length,
                });
            }
            *list = out;
        }
        OK
    })
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_FreeBlockList(list: *mut VixDiskLibBlockList) -> VixError {
    // SAFETY: NULL or a list from QueryAllocatedBlocks.
    unsafe { libc::free(list.cast()) };
    OK
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_Create(
    connection: VixDiskLibConnection,
    path: *const c_char,
    params: *const VixDiskLibCreateParams,
    progress: VixDiskLibProgressFunc,
    progress_data: *mut c_void,
) -> VixError {
    guard(|| {
        if connection.is_null() || path.is_null() || params.is_null() {
            return ERR_ARG;
        }
        // SAFETY: a live connection; `params` points to a valid struct per the API contract.
        let (conn, p) = unsafe { (&*connection.cast::<FakeConnection>(), &*params) };
        // SAFETY: non-null, NUL-terminated.
        let Some(given) = (unsafe { opt_str(path) }) else {
            return VIX_E_INVALID_UTF8_STRING as VixError;
        };
        if conn.read_only {
            return VIX_E_FILE_READ_ONLY as VixError;
        }
        let config = match current_config() {
            Ok(c) => c,
            Err(e) => return e,
        };
        if let Err(e) = conn.params.authenticate(&config) {
            logging::message(true, &e);
            return ERR_FAIL;
        }
        let file = match config.resolve(&given) {
            Ok(f) => f,
            Err(e) => {
                logging::message(true, &e);
                return VIX_E_FILE_NOT_FOUND as VixError;
            }
        };
        let create_type = match p.diskType {
            VIXDISKLIB_DISK_VMFS_FLAT => "vmfs",
            VIXDISKLIB_DISK_VMFS_THIN => "vmfsThin",
            VIXDISKLIB_DISK_MONOLITHIC_FLAT => "monolithicFlat",
            _ => return VIX_E_NOT_SUPPORTED as VixError,
        };
        let adapter = match p.adapterType {
            VIXDISKLIB_ADAPTER_IDE => "ide",
            VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC => "buslogic",
            VIXDISKLIB_ADAPTER_SCSI_LSILOGIC => "lsilogic",
            _ => return ERR_ARG,
        };
        if p.capacity == 0 {
            return ERR_ARG;
        }
        report_progress(progress, progress_data, 0);
        match create_disk(&file, create_type, adapter, p) {
            Ok(()) => {
                report_progress(progress, progress_data, 100);
                record(
                    &config,
                    json!({"event": "create", "path": given, "capacity": p.capacity}),
                );
                OK
            }
            Err((code, msg)) => {
                logging::message(true, &msg);
                code
            }
        }
    })
}

fn report_progress(f: VixDiskLibProgressFunc, data: *mut c_void, percent: c_int) {
    if let Some(f) = f {
        // SAFETY: the caller's progress callback with its own data.
        unsafe { f(data, percent) };
    }
}

fn create_disk(
    file: &std::path::Path,
    create_type: &str,
    adapter: &str,
    p: &VixDiskLibCreateParams,
) -> Result<(), (VixError, String)> {
    use std::io::Write;
    let io = |e: std::io::Error| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => VIX_E_FILE_NOT_FOUND,
            std::io::ErrorKind::PermissionDenied => VIX_E_FILE_ACCESS_ERROR,
            _ => VIX_E_FILE_ERROR,
        };
        (code as VixError, format!("{}: {e}", file.display()))
    };
    if file.exists() {
        return Err((
            VIX_E_FILE_ALREADY_EXISTS as VixError,
            format!("{} already exists", file.display()),
        ));
    }
    let dir = file.parent().ok_or((ERR_ARG, "no folder".to_string()))?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or((ERR_ARG, "bad file name".to_string()))?;
    let flat_name = format!("{stem}-flat.vmdk");
    let flat_path = dir.join(&flat_name);
    let (c, h, s) = geometry(adapter, p.capacity);
    let uuid = pseudo_uuid();
    let mut ddb = std::collections::BTreeMap::new();
    ddb.insert("ddb.adapterType".to_string(), adapter.to_string());
    ddb.insert("ddb.geometry.cylinders".to_string(), c.to_string());
    ddb.insert("ddb.geometry.heads".to_string(), h.to_string());
    ddb.insert("ddb.geometry.sectors".to_string(), s.to_string());
    ddb.insert("ddb.uuid".to_string(), uuid.0);
    ddb.insert(
        "ddb.virtualHWVersion".to_string(),
        p.hwVersion.max(4).to_string(),
    );
    if create_type == "vmfsThin" {
        ddb.insert("ddb.thinProvisioned".to_string(), "1".to_string());
    }
    let desc = Descriptor {
        parent_hint: None,
        create_type: create_type.to_string(),
        capacity_sectors: p.capacity,
        extent_file: flat_name,
        extent_offset: 0,
        read_only: false,
        ddb,
    };
    // The flat extent first (sparse, full size), then the descriptor atomically.
    let flat = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&flat_path)
        .map_err(io)?;
    flat.set_len(p.capacity * SECTOR).map_err(io)?;
    flat.sync_all().map_err(io)?;
    let tmp = dir.join(format!(".{stem}.vmdk.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(desc.render(uuid.1).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// A VMware-style disk UUID and CID, unique enough for a test double.
fn pseudo_uuid() -> (String, u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    let mut bytes = [0u8; 16];
    for b in &mut bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    (
        format!("{}-{}", hex[..8].join(" "), hex[8..].join(" ")),
        x as u32,
    )
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_GetErrorText(
    err: VixError,
    _locale: *const c_char,
) -> *mut c_char {
    let text = CString::new(errors::text(err)).unwrap_or_default();
    // SAFETY: strdup of a valid C string; freed by FreeErrorText.
    unsafe { libc::strdup(text.as_ptr()) }
}

#[no_mangle]
pub unsafe extern "C" fn VixDiskLib_FreeErrorText(text: *mut c_char) {
    // SAFETY: NULL or a string from GetErrorText (strdup).
    unsafe { libc::free(text.cast()) };
}
