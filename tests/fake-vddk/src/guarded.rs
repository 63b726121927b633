//! Allocations that end exactly at an inaccessible page, so a caller reading past the size the
//! library hands out (for example a `VixDiskLibInfo` of a 6.x library read as 7.0's larger
//! struct) crashes at once instead of silently reading heap garbage.

use std::ffi::c_void;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// Returns `size` zeroed bytes (8-byte aligned when `size` is a multiple of 8) whose end is
/// followed by a PROT_NONE page, or NULL.
pub fn alloc(size: usize) -> *mut c_void {
    let page = page();
    if size == 0 || size > page {
        return std::ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping of two pages; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // SAFETY: the second page lies inside the mapping just made.
    let guard = unsafe { base.cast::<u8>().add(page) };
    // SAFETY: protects the second page of our own mapping.
    if unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) } != 0 {
        // SAFETY: unmaps our own mapping.
        unsafe { libc::munmap(base, 2 * page) };
        return std::ptr::null_mut();
    }
    // SAFETY: `size <= page`, so this stays inside the first page.
    unsafe { guard.sub(size).cast() }
}

/// Releases an allocation from [`alloc`].
///
/// # Safety
/// `p` is NULL or came from [`alloc`] and is not used afterwards.
pub unsafe fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let page = page();
    let base = (p as usize) & !(page - 1);
    // SAFETY: `base` is the start of the two-page mapping `alloc` made (the pointer lies in its
    // first page), unmapped once per the contract.
    unsafe { libc::munmap(base as *mut c_void, 2 * page) };
}
