//! Forwarding messages to the log callbacks given to InitEx, through a real `va_list`.

use std::ffi::{c_char, CString};
use std::sync::Mutex;

use vddk_sys::VixDiskLibGenericLogFunc;

extern "C" {
    fn fake_vddk_log(sink: VixDiskLibGenericLogFunc, fmt: *const c_char, ...);
}

/// The callbacks InitEx received.
#[derive(Clone, Copy, Default)]
pub struct Sinks {
    pub log: VixDiskLibGenericLogFunc,
    pub warn: VixDiskLibGenericLogFunc,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    log: None,
    warn: None,
});

/// Installs (or, with defaults, removes) the callbacks.
pub fn install(sinks: Sinks) {
    *SINKS.lock().unwrap_or_else(|p| p.into_inner()) = sinks;
}

fn sink(warn: bool) -> VixDiskLibGenericLogFunc {
    let s = *SINKS.lock().unwrap_or_else(|p| p.into_inner());
    if warn {
        s.warn
    } else {
        s.log
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Logs `msg` the way VDDK does: a format string plus arguments.
pub fn message(warn: bool, msg: &str) {
    if let Some(f) = sink(warn) {
        let m = cstring(msg);
        // SAFETY: the format consumes exactly one string argument, which is NUL-terminated and
        // lives across the call; `f` is the callback the application registered.
        unsafe { fake_vddk_log(Some(f), c"VixDiskLib: %s\n".as_ptr(), m.as_ptr()) };
    }
}

/// Logs the opening of a disk with numeric and string arguments, exercising the callee's
/// `va_list` formatting.
pub fn opened(path: &str, sectors: u64, transport: &str) {
    if let Some(f) = sink(false) {
        let p = cstring(path);
        let t = cstring(transport);
        // SAFETY: the format's conversions (%s, %llu, %s) match the arguments' C types, and the
        // strings live across the call.
        unsafe {
            fake_vddk_log(
                Some(f),
                c"VixDiskLib: Opened '%s' (%llu sectors) using transport %s.\n".as_ptr(),
                p.as_ptr(),
                sectors as std::ffi::c_ulonglong,
                t.as_ptr(),
            )
        };
    }
}
