//! Texts for VIX error codes, as `VixDiskLib_GetErrorText` returns them.

use vddk_sys::*;

/// The message for `code` (low 16 bits of a VixError).
pub fn text(code: VixError) -> &'static str {
    match (code & 0xFFFF) as u32 {
        VIX_OK => "The operation was successfully completed",
        VIX_E_FAIL => "Unknown error",
        VIX_E_OUT_OF_MEMORY => "Memory allocation failed. Out of memory.",
        VIX_E_INVALID_ARG => "One of the parameters was invalid",
        VIX_E_FILE_NOT_FOUND => "The file was not found",
        VIX_E_NOT_SUPPORTED => "The operation is not supported",
        VIX_E_FILE_ERROR => "A file access error occurred on the host or guest operating system",
        VIX_E_DISK_FULL => "There is not enough space on the disk",
        VIX_E_INCORRECT_FILE_TYPE => "The file is not a supported disk",
        VIX_E_FILE_READ_ONLY => "The file is write-protected",
        VIX_E_FILE_ALREADY_EXISTS => "The file already exists",
        VIX_E_FILE_ACCESS_ERROR => "You do not have access rights to this file",
        VIX_E_INVALID_HANDLE => "The handle is not a valid VIX object",
        VIX_E_DISK_OUTOFRANGE => "One of the parameters supplied is out of bounds",
        VIX_E_DISK_INVALID_CONNECTION => "The connection is not valid",
        VIX_ASYNC => "Asynchronous operation in progress",
        _ => "Unknown error",
    }
}
