//! The library's private state inside a `VixDiskLibConnectParams` it allocated, checked as
//! strictly as VDDK 6.7+ relies on it.
//!
//! Real VDDK's `AllocateConnectParams` fills the internal fields (`reserved`, `state`) and
//! ConnectEx, PrepareForAccess, EndAccess, Cleanup and FreeConnectParams use them: a caller
//! that writes a whole struct over VDDK's (or zeroes it before freeing) makes the real library
//! lose or dereference its own state. The fake stores magic bytes and a private state object
//! there and refuses, with a message saying why, every call whose struct was tampered with. It
//! also remembers which allocations are still alive, so a connection whose parameters were
//! freed before Disconnect is caught at its next Open.

use std::collections::HashMap;
use std::ptr::addr_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use vddk_sys::{VixDiskLibConnectParams, VixDiskLibConnectParamsState};

/// What `AllocateConnectParams` writes into `reserved`.
pub const MAGIC: [u8; 8] = *b"fkVDDKcp";

/// The private object `state` points to.
struct State {
    magic: u64,
    serial: u64,
}

const STATE_MAGIC: u64 = 0x5354_4154_4546_4b56;

/// Live allocations: struct address to (state address, serial).
static LIVE: Mutex<Option<HashMap<usize, (usize, u64)>>> = Mutex::new(None);
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);
/// Serials of allocations that have been freed.
static FREED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<usize, (usize, u64)>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Allocates a zeroed struct with the library's internal fields filled in.
pub fn allocate() -> *mut VixDiskLibConnectParams {
    // SAFETY: calloc of one struct; all-zero is a valid VixDiskLibConnectParams.
    let p = unsafe { libc::calloc(1, std::mem::size_of::<VixDiskLibConnectParams>()) }
        .cast::<VixDiskLibConnectParams>();
    if p.is_null() {
        return p;
    }
    let serial = NEXT_SERIAL.fetch_add(1, Ordering::SeqCst);
    let state = Box::into_raw(Box::new(State {
        magic: STATE_MAGIC,
        serial,
    }));
    // SAFETY: `p` is a fresh, exclusively owned allocation of the whole struct.
    unsafe {
        (*p).reserved = MAGIC.map(|b| b as std::ffi::c_char);
        (*p).state = state.cast::<VixDiskLibConnectParamsState>();
    }
    live()
        .get_or_insert_with(HashMap::new)
        .insert(p as usize, (state as usize, serial));
    p
}

/// Checks the internal fields of `p` before a call named `function` uses it. Returns the
/// allocation's serial (`None` for a struct the caller allocated itself, which is allowed
/// when its internal fields are zero, as with VDDK 6.5).
///
/// # Safety
/// `p` points to a readable `VixDiskLibConnectParams`.
pub unsafe fn check(
    p: *const VixDiskLibConnectParams,
    function: &str,
) -> Result<Option<u64>, String> {
    // SAFETY: per the contract; the fields are read through raw places.
    let (reserved, state) =
        unsafe { (addr_of!((*p).reserved).read(), addr_of!((*p).state).read()) };
    let reserved = reserved.map(|b| b as u8);
    let registered = live().as_ref().and_then(|m| m.get(&(p as usize)).copied());
    match registered {
        Some((state_addr, serial)) => {
            if reserved != MAGIC || state as usize != state_addr {
                return Err(format!(
                    "{function}: the internal fields of VixDiskLibConnectParams (reserved, state) \
                     no longer hold what VixDiskLib_AllocateConnectParams put there: the caller \
                     overwrote the struct instead of writing only its public fields"
                ));
            }
            // SAFETY: the registered state object is ours and alive while registered.
            let s = unsafe { &*(state_addr as *const State) };
            if s.magic != STATE_MAGIC || s.serial != serial {
                return Err(format!("{function}: the connect params state is corrupt"));
            }
            Ok(Some(serial))
        }
        None if reserved == [0; 8] && state.is_null() => Ok(None),
        None => Err(format!(
            "{function}: VixDiskLibConnectParams has internal fields set but was not allocated \
             by VixDiskLib_AllocateConnectParams (or was already freed)"
        )),
    }
}

/// Whether the allocation with `serial` has been freed.
pub fn is_freed(serial: u64) -> bool {
    FREED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&serial)
}

/// What `free` found.
pub struct Freed {
    /// Whether the internal fields were intact.
    pub intact: bool,
    /// The allocation's serial, when it was one of ours.
    pub serial: Option<u64>,
    /// Caller strings still referenced by the public fields when it was freed (VDDK's own
    /// FreeConnectParams must not be given pointers it would treat as its own).
    pub strings_left: usize,
}

/// Releases a struct from [`allocate`] and its state; a struct that is not ours is left alone
/// (freeing it would corrupt the caller's heap) and reported.
///
/// # Safety
/// `p` is NULL or points to a readable `VixDiskLibConnectParams`.
pub unsafe fn free(p: *mut VixDiskLibConnectParams) -> Result<Freed, String> {
    if p.is_null() {
        return Ok(Freed {
            intact: true,
            serial: None,
            strings_left: 0,
        });
    }
    // SAFETY: per the contract.
    let intact = unsafe { check(p, "VixDiskLib_FreeConnectParams") };
    // SAFETY: per the contract; every field is read through its raw place (the unions as the
    // pointer-sized words they hold, whatever member was written).
    let strings_left = unsafe {
        let uid = addr_of!((*p).creds.uid).read();
        let session_key = addr_of!((*p).creds.sessionId.key).read();
        let spec = addr_of!((*p).spec.vStorageObjSpec).read();
        [
            addr_of!((*p).vmxSpec).read(),
            addr_of!((*p).serverName).read(),
            addr_of!((*p).thumbPrint).read(),
            uid.userName,
            uid.password,
            session_key,
            spec.id,
            spec.datastoreMoRef,
            spec.ssId,
        ]
        .iter()
        .filter(|s| !s.is_null())
        .count()
    };
    let Some((state_addr, serial)) = live().as_mut().and_then(|m| m.remove(&(p as usize))) else {
        return Err(
            "VixDiskLib_FreeConnectParams of a struct VixDiskLib_AllocateConnectParams did not \
             return (or freed twice)"
                .into(),
        );
    };
    FREED.lock().unwrap_or_else(|p| p.into_inner()).push(serial);
    // SAFETY: both came from `allocate` and are released once (removed from LIVE above).
    unsafe {
        drop(Box::from_raw(state_addr as *mut State));
        libc::free(p.cast());
    }
    Ok(Freed {
        intact: intact.is_ok(),
        serial: Some(serial),
        strings_left,
    })
}
