//! Safe wrappers over VixDiskLib: connect, open, read and write disks.
