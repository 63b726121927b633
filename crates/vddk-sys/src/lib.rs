//! Raw C ABI of VMware's VixDiskLib (VDDK), loaded at run time.
