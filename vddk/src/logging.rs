//! VDDK's log, warning and panic callbacks, forwarded to `tracing`.
//!
//! VDDK hands a printf format and a `va_list`; the message is formatted once, on the C side,
//! by `vsnprintf`, and only the resulting text crosses into Rust code. Panics never unwind
//! into VDDK.

use std::ffi::{c_char, c_int, CStr};
use std::panic::catch_unwind;

use vddk_sys::__va_list_tag;

/// Longest message kept; VDDK's lines are far shorter.
const MAX_MESSAGE: usize = 4096;

extern "C" {
    fn vsnprintf(
        buf: *mut c_char,
        size: usize,
        fmt: *const c_char,
        ap: *mut __va_list_tag,
    ) -> c_int;
}

#[derive(Clone, Copy)]
enum Level {
    Info,
    Warn,
    Panic,
}

/// Formats the message. Never panics.
///
/// # Safety
/// `fmt` and `args` are what VDDK passed to a log callback: a valid format and matching list.
unsafe fn format(fmt: *const c_char, args: *mut __va_list_tag) -> String {
    if fmt.is_null() {
        return String::new();
    }
    let mut buf = [0 as c_char; MAX_MESSAGE];
    // SAFETY: the buffer's size is passed, so vsnprintf writes at most MAX_MESSAGE bytes
    // including the NUL; fmt/args are valid per this function's contract; `args` is consumed
    // exactly once.
    let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), fmt, args) };
    if n < 0 {
        return "<unformattable VDDK message>".into();
    }
    // SAFETY: vsnprintf NUL-terminated the buffer.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let mut s = text.trim_end().to_string();
    if n as usize >= MAX_MESSAGE {
        s.push_str(" [truncated]");
    }
    s
}

fn emit(level: Level, message: &str) {
    match level {
        Level::Info => tracing::debug!(target: "vddk", "{message}"),
        Level::Warn => tracing::warn!(target: "vddk", "{message}"),
        Level::Panic => tracing::error!(target: "vddk", "VDDK panic: {message}"),
    }
}

/// # Safety
/// Called by VDDK with a valid format and argument list.
unsafe fn forward(level: Level, fmt: *const c_char, args: *mut __va_list_tag) {
    // SAFETY: forwarded from VDDK per this function's contract.
    let message = unsafe { format(fmt, args) };
    // A panicking subscriber must not unwind into C.
    let _ = catch_unwind(|| emit(level, &message));
}

/// The log callback given to InitEx.
pub(crate) unsafe extern "C" fn log_callback(fmt: *const c_char, args: *mut __va_list_tag) {
    // SAFETY: VDDK calls this with a valid format and list.
    unsafe { forward(Level::Info, fmt, args) }
}

/// The warning callback given to InitEx.
pub(crate) unsafe extern "C" fn warn_callback(fmt: *const c_char, args: *mut __va_list_tag) {
    // SAFETY: VDDK calls this with a valid format and list.
    unsafe { forward(Level::Warn, fmt, args) }
}

/// The panic callback given to InitEx. VDDK aborts after it returns.
pub(crate) unsafe extern "C" fn panic_callback(fmt: *const c_char, args: *mut __va_list_tag) {
    // SAFETY: VDDK calls this with a valid format and list.
    unsafe { forward(Level::Panic, fmt, args) }
}
