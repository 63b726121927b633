//! A connection to a host, VM or first class disk ([`Connection`]).

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vddk_sys::*;

use crate::access::SharedAccess;
use crate::create::CreateParams;
use crate::disk::{Disk, OpenFlags};
use crate::error::{Error, Result};
use crate::library::{cstring, serial, LibraryState, Vddk};
use crate::params::{ConnectOptions, ConnectParams, RawConnectParams};

/// The shared part of a connection; disks hold it so the connection outlives them.
pub(crate) struct ConnectionInner {
    pub(crate) raw: VixDiskLibConnection,
    pub(crate) library: Arc<LibraryState>,
    pub(crate) read_only: bool,
    last_transport: Mutex<Option<String>>,
    disconnected: AtomicBool,
    /// The parameters ConnectEx was given: VDDK may refer to them (and to the state it keeps
    /// inside them) until Disconnect, so they are freed only after it. Fields drop in order:
    /// these first, then the access guard.
    _params: RawConnectParams,
    /// PrepareForAccess done for this connection's VM, shared with other connections to it;
    /// EndAccess runs after the last of them has disconnected.
    _access: Option<Arc<SharedAccess>>,
}

impl ConnectionInner {
    /// Disconnects once; later calls (and Drop) do nothing.
    fn disconnect(&self) -> Result<()> {
        let _g = serial();
        if self.disconnected.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // SAFETY: a live connection from ConnectEx, disconnected exactly once (flag above); no
        // disk remains, because disks hold this struct.
        let raw = unsafe { self.library.lib.api.VixDiskLib_Disconnect(self.raw) };
        self.library.check("Disconnect", raw)
    }
}

// SAFETY: the raw connection is only passed to Open, Create and Disconnect, which all run under
// the process-wide serial lock, so sharing the pointer between threads cannot race inside VDDK.
unsafe impl Send for ConnectionInner {}
// SAFETY: as above; the only interior mutability is behind a Mutex.
unsafe impl Sync for ConnectionInner {}

impl Drop for ConnectionInner {
    fn drop(&mut self) {
        if let Err(e) = self.disconnect() {
            tracing::warn!(target: "vddk", "{e}");
        }
    }
}

/// An open VDDK connection. Used by one thread at a time (`Send`, not `Sync`); disks opened
/// through it keep it alive, and it disconnects when it and all its disks are dropped.
pub struct Connection {
    pub(crate) inner: Arc<ConnectionInner>,
    _not_sync: PhantomData<Cell<()>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("read_only", &self.inner.read_only)
            .field("transport", &self.transport_mode())
            .finish()
    }
}

impl Vddk {
    /// Connects (VixDiskLib_ConnectEx). Credentials are checked by VDDK when the first disk
    /// is opened, not here. The connection keeps its parameters until after Disconnect.
    ///
    /// For backup and restore sessions of a VM prefer [`Vddk::connect_with_access`], which
    /// also tells vCenter that the VM's disks are in use.
    ///
    /// # Errors
    /// [`Error::NotInitialised`], [`Error::InvalidArgument`] for unusable parameters,
    /// [`Error::Vix`] when ConnectEx fails.
    pub fn connect(&self, params: &ConnectParams, options: &ConnectOptions) -> Result<Connection> {
        self.connect_inner(params, options, None)
    }

    /// PrepareForAccess with `identity` ([`crate::ACCESS_IDENTITY`] for safekeeping), then
    /// ConnectEx: the connection to use for every backup read session and restore write
    /// session of a VM. vCenter then refuses to migrate the VM's storage while its disks are
    /// read or written. Connections to the same VM (several disks at once) share one
    /// PrepareForAccess, since VMware's EndAccess is not counted: EndAccess runs by itself
    /// after the last of them disconnects (when the connections and all their disks are
    /// dropped), also when ConnectEx fails.
    ///
    /// Access is prepared only for VM targets (VDDK's PrepareForAccess names a VM); first class
    /// disk and local connections are made as by [`Vddk::connect`]. A library without
    /// PrepareForAccess connects without it (logged as a warning).
    ///
    /// # Errors
    /// As [`Vddk::connect`]; [`Error::Vix`] when PrepareForAccess fails (for example with
    /// rejected credentials).
    pub fn connect_with_access(
        &self,
        params: &ConnectParams,
        options: &ConnectOptions,
        identity: &str,
    ) -> Result<Connection> {
        self.state.ensure_initialised()?;
        options.validate()?;
        params.validate_connectable()?;
        let access = self.shared_access(params, identity)?;
        // On failure the access is released here, which ends it unless other connections to
        // the VM still hold it.
        self.connect_inner(params, options, access)
    }

    fn connect_inner(
        &self,
        params: &ConnectParams,
        options: &ConnectOptions,
        access: Option<Arc<SharedAccess>>,
    ) -> Result<Connection> {
        self.state.ensure_initialised()?;
        options.validate()?;
        params.validate_connectable()?;
        let raw_params = RawConnectParams::new(&self.state, params)?;
        let snapshot = options
            .snapshot_moref
            .as_deref()
            .map(|s| cstring(s, "snapshot moref"))
            .transpose()?;
        let transports = options
            .transports
            .as_deref()
            .map(|s| cstring(s, "transport modes"))
            .transpose()?;
        let mut conn: VixDiskLibConnection = std::ptr::null_mut();
        let raw = {
            let _g = serial();
            // SAFETY: required symbol; the params struct lives until after Disconnect (it moves
            // into the connection below) and the strings outlive the call; `conn` is a valid
            // out-pointer.
            unsafe {
                self.state.lib.api.VixDiskLib_ConnectEx(
                    raw_params.as_ptr(),
                    Bool::from(options.read_only),
                    snapshot.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    transports.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                    &mut conn,
                )
            }
        };
        self.state.check("ConnectEx", raw)?;
        if conn.is_null() {
            return Err(Error::Library(
                "ConnectEx succeeded without a connection".into(),
            ));
        }
        tracing::debug!(target: "vddk", server = ?params.server_name(), target = ?params.target(), read_only = options.read_only, "connected");
        Ok(Connection {
            inner: Arc::new(ConnectionInner {
                raw: conn,
                library: self.state.clone(),
                read_only: options.read_only,
                last_transport: Mutex::new(None),
                disconnected: AtomicBool::new(false),
                _params: raw_params,
                _access: access,
            }),
            _not_sync: PhantomData,
        })
    }

    /// Creates a new disk through `conn` (VixDiskLib_Create).
    ///
    /// # Errors
    /// See [`Connection::create`].
    pub fn create(&self, conn: &Connection, path: &str, params: CreateParams) -> Result<()> {
        conn.create(path, &params)
    }
}

impl Connection {
    /// Opens a disk: a datastore path (`[ds1] web01/web01.vmdk`) for VM connections, an
    /// absolute path for local ones. Use [`OpenFlags::READ_ONLY`] for backups.
    ///
    /// # Errors
    /// [`Error::Vix`] (VIX_E_FAIL for rejected credentials or thumbprint, VIX_E_FILE_NOT_FOUND,
    /// ...), [`Error::InvalidArgument`] for a path with a NUL byte.
    pub fn open(&self, path: &str, flags: OpenFlags) -> Result<Disk> {
        let lib = &self.inner.library;
        let c_path = cstring(path, "disk path")?;
        let mut handle: VixDiskLibHandle = std::ptr::null_mut();
        let raw = {
            let _g = serial();
            // SAFETY: required symbol; live connection; valid string and out-pointer.
            unsafe {
                lib.lib.api.VixDiskLib_Open(
                    self.inner.raw,
                    c_path.as_ptr(),
                    flags.bits(),
                    &mut handle,
                )
            }
        };
        lib.check("Open", raw)?;
        if handle.is_null() {
            return Err(Error::Library("Open succeeded without a handle".into()));
        }
        let read_only = self.inner.read_only || flags.contains(OpenFlags::READ_ONLY);
        let disk = Disk::from_raw(handle, self.inner.clone(), path.to_string(), read_only)?;
        *self
            .inner
            .last_transport
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = disk.transport_mode();
        Ok(disk)
    }

    /// The transport mode of the most recently opened disk (VDDK picks it per disk at Open),
    /// or `None` before any disk was opened.
    pub fn transport_mode(&self) -> Option<String> {
        self.inner
            .last_transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the connection was made read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Creates a new disk at `path` (VixDiskLib_Create). Real VDDK supports this for local
    /// connections; remote disks are created through vCenter.
    ///
    /// # Errors
    /// [`Error::Vix`] (VIX_E_FILE_ALREADY_EXISTS, ...), [`Error::InvalidArgument`].
    pub fn create(&self, path: &str, params: &CreateParams) -> Result<()> {
        let lib = &self.inner.library;
        let c_path = cstring(path, "disk path")?;
        let raw_params = params.to_raw()?;
        let raw = {
            let _g = serial();
            // SAFETY: required symbol; live connection; the params struct and string outlive
            // the call; no progress callback.
            unsafe {
                lib.lib.api.VixDiskLib_Create(
                    self.inner.raw,
                    c_path.as_ptr(),
                    &raw_params,
                    None,
                    std::ptr::null_mut(),
                )
            }
        };
        lib.check("Create", raw)
    }

    /// Disconnects now, reporting errors (dropping disconnects too, logging them).
    ///
    /// # Errors
    /// [`Error::InUse`] while disks opened through this connection are still open.
    pub fn disconnect(self) -> Result<()> {
        let disks = Arc::strong_count(&self.inner) - 1;
        if disks > 0 {
            return Err(Error::InUse(disks));
        }
        self.inner.disconnect()
    }
}
