//! A fake libvixDiskLib.so over local flat VMDK files, for the lab.
