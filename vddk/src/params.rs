//! What to connect to and how: [`ConnectParams`], [`Credentials`], [`ConnectOptions`].

use std::ffi::CString;
use std::fmt;

use vddk_sys::*;

use crate::error::{Error, Result};
use crate::library::{cstring, LibraryState};

/// How to log in to vCenter or ESXi. Secrets are wiped from memory on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User name and password.
    UserPassword {
        /// User, e.g. `administrator@vsphere.local`.
        user: String,
        /// Password.
        password: String,
    },
    /// An existing vSphere API session (the `vmware_soap_session` cookie value).
    SessionCookie {
        /// The cookie.
        cookie: String,
        /// The session's user, when known.
        user: Option<String>,
        /// The session key, when known.
        key: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::SessionCookie { user, .. } => f
                .debug_struct("SessionCookie")
                .field("cookie", &"<redacted>")
                .field("user", user)
                .finish(),
        }
    }
}

/// Overwrites a string's bytes before its memory is released.
pub(crate) fn wipe(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

impl Drop for Credentials {
    fn drop(&mut self) {
        match self {
            Credentials::UserPassword { password, .. } => wipe(password),
            Credentials::SessionCookie { cookie, key, .. } => {
                wipe(cookie);
                if let Some(k) = key {
                    wipe(k);
                }
            }
        }
    }
}

/// What the connection addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A virtual machine by managed object reference (`vm-42`); disks are opened by datastore
    /// path, e.g. `[ds1] web01/web01.vmdk`.
    Vm {
        /// The moref, without `moref=`.
        moref: String,
    },
    /// A first class disk (improved virtual disk).
    FirstClassDisk {
        /// The disk's id.
        id: String,
        /// The moref of its datastore (`datastore-12`).
        datastore_moref: String,
        /// A snapshot of the disk, when reading one.
        snapshot_id: Option<String>,
    },
    /// Local files (no server): absolute paths, transport `file`.
    Local,
}

/// Parameters of a VDDK connection (VixDiskLibConnectParams), built with chained setters:
///
/// ```
/// use vddk::{ConnectParams, Credentials};
/// let p = ConnectParams::vm("vm-42")
///     .server("vcenter.example.com")
///     .thumbprint("AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD")
///     .credentials(Credentials::UserPassword { user: "backup".into(), password: "s3cret".into() });
/// assert!(!format!("{p:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    target: Target,
    server: Option<String>,
    port: u32,
    nfc_port: u32,
    thumbprint: Option<String>,
    credentials: Option<Credentials>,
}

impl ConnectParams {
    fn new(target: Target) -> Self {
        Self {
            target,
            server: None,
            port: 0,
            nfc_port: 0,
            thumbprint: None,
            credentials: None,
        }
    }

    /// A VM by moref (`vm-42`; a leading `moref=` is accepted too).
    pub fn vm(moref: impl Into<String>) -> Self {
        let m: String = moref.into();
        let m = m.strip_prefix("moref=").map(str::to_string).unwrap_or(m);
        Self::new(Target::Vm { moref: m })
    }

    /// A first class disk by id on a datastore, optionally at a disk snapshot.
    pub fn first_class_disk(
        id: impl Into<String>,
        datastore_moref: impl Into<String>,
        snapshot_id: Option<String>,
    ) -> Self {
        Self::new(Target::FirstClassDisk {
            id: id.into(),
            datastore_moref: datastore_moref.into(),
            snapshot_id,
        })
    }

    /// Local disk files, without a server.
    pub fn local() -> Self {
        Self::new(Target::Local)
    }

    /// vCenter or ESXi host name or address.
    pub fn server(mut self, host: impl Into<String>) -> Self {
        self.server = Some(host.into());
        self
    }

    /// HTTPS port of the server (0: VDDK's default, 443).
    pub fn port(mut self, port: u16) -> Self {
        self.port = u32::from(port);
        self
    }

    /// NFC port of the ESXi hosts (0: VDDK's default, 902).
    pub fn nfc_port(mut self, port: u16) -> Self {
        self.nfc_port = u32::from(port);
        self
    }

    /// SHA-1 thumbprint of the server's certificate, `AA:BB:...` (20 hex pairs).
    pub fn thumbprint(mut self, sha1: impl Into<String>) -> Self {
        self.thumbprint = Some(sha1.into());
        self
    }

    /// How to log in.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// What the connection addresses.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The server, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server.as_deref()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let remote = self.server.is_some();
        match (&self.target, remote) {
            (Target::Local, true) => {
                return Err(Error::InvalidArgument(
                    "a local connection takes no server".into(),
                ))
            }
            (Target::Vm { .. } | Target::FirstClassDisk { .. }, false) => {
                return Err(Error::InvalidArgument(
                    "a VM or first class disk connection needs a server".into(),
                ))
            }
            _ => {}
        }
        if let Target::Vm { moref } = &self.target {
            if moref.is_empty() {
                return Err(Error::InvalidArgument("empty VM moref".into()));
            }
        }
        if let Some(t) = &self.thumbprint {
            validate_thumbprint(t)?;
        }
        if remote && self.credentials.is_none() {
            return Err(Error::InvalidArgument(
                "a remote connection needs credentials".into(),
            ));
        }
        Ok(())
    }
}

/// Checks the `AA:BB:...` form VDDK expects for a SHA-1 thumbprint.
fn validate_thumbprint(t: &str) -> Result<()> {
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() == 20
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "thumbprint {t:?} is not a SHA-1 thumbprint (20 hex pairs separated by colons)"
        )))
    }
}

/// Transport modes VDDK knows.
pub const TRANSPORT_MODES: &[&str] = &["file", "san", "hotadd", "nbdssl", "nbd"];

/// Options of [`crate::Vddk::connect`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Open disks read-only (required for backups of a running VM's snapshot).
    pub read_only: bool,
    /// Moref of the VM snapshot to read (`snapshot-7`), for VM connections.
    pub snapshot_moref: Option<String>,
    /// Colon-separated transport modes in preference order, e.g. `"hotadd:nbdssl"`; `None`
    /// lets VDDK choose.
    pub transports: Option<String>,
}

impl ConnectOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(t) = &self.transports {
            for m in t.split(':') {
                if !TRANSPORT_MODES.contains(&m) {
                    return Err(Error::InvalidArgument(format!(
                        "unknown transport mode {m:?} (known: {})",
                        TRANSPORT_MODES.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A filled-in C `VixDiskLibConnectParams` and the strings it points to. Secret strings are
/// wiped on drop.
pub(crate) struct RawConnectParams<'a> {
    state: &'a LibraryState,
    ptr: *mut VixDiskLibConnectParams,
    allocated_by_vddk: bool,
    strings: Vec<CString>,
    secrets: Vec<CString>,
}

impl<'a> RawConnectParams<'a> {
    pub(crate) fn new(state: &'a LibraryState, p: &ConnectParams) -> Result<Self> {
        p.validate()?;
        let api = &state.lib.api;
        // Prefer VDDK's allocator (6.7+), which sizes the struct for the library's version.
        let (ptr, allocated_by_vddk) = if api.VixDiskLib_AllocateConnectParams.is_ok() {
            // SAFETY: present (checked); returns a zeroed struct or NULL.
            let ptr = unsafe { api.VixDiskLib_AllocateConnectParams() };
            (ptr, true)
        } else {
            (
                Box::into_raw(Box::<VixDiskLibConnectParams>::default()),
                false,
            )
        };
        if ptr.is_null() {
            return Err(Error::Library(
                "VixDiskLib_AllocateConnectParams returned NULL".into(),
            ));
        }
        let mut raw = Self {
            state,
            ptr,
            allocated_by_vddk,
            strings: Vec::new(),
            secrets: Vec::new(),
        };
        raw.fill(p)?;
        Ok(raw)
    }

    fn keep(&mut self, s: &str, what: &str) -> Result<*mut std::ffi::c_char> {
        let c = cstring(s, what)?;
        let p = c.as_ptr().cast_mut();
        self.strings.push(c);
        Ok(p)
    }

    fn keep_secret(&mut self, s: &str, what: &str) -> Result<*mut std::ffi::c_char> {
        let c = cstring(s, what)?;
        let p = c.as_ptr().cast_mut();
        self.secrets.push(c);
        Ok(p)
    }

    fn fill(&mut self, p: &ConnectParams) -> Result<()> {
        let mut c = VixDiskLibConnectParams::default();
        match &p.target {
            Target::Vm { moref } => {
                c.vmxSpec = self.keep(&format!("moref={moref}"), "VM moref")?;
                c.specType = VIXDISKLIB_SPEC_VMX;
            }
            Target::FirstClassDisk {
                id,
                datastore_moref,
                snapshot_id,
            } => {
                c.specType = VIXDISKLIB_SPEC_VSTORAGE_OBJECT;
                c.spec.vStorageObjSpec.id = self.keep(id, "disk id")?;
                c.spec.vStorageObjSpec.datastoreMoRef =
                    self.keep(datastore_moref, "datastore moref")?;
                if let Some(s) = snapshot_id {
                    c.spec.vStorageObjSpec.ssId = self.keep(s, "snapshot id")?;
                }
            }
            Target::Local => c.specType = VIXDISKLIB_SPEC_VMX,
        }
        if let Some(s) = &p.server {
            c.serverName = self.keep(s, "server")?;
        }
        if let Some(t) = &p.thumbprint {
            c.thumbPrint = self.keep(t, "thumbprint")?;
        }
        c.port = p.port;
        c.nfcHostPort = p.nfc_port;
        match &p.credentials {
            Some(Credentials::UserPassword { user, password }) => {
                c.credType = VIXDISKLIB_CRED_UID;
                c.creds.uid.userName = self.keep(user, "user")?;
                c.creds.uid.password = self.keep_secret(password, "password")?;
            }
            Some(Credentials::SessionCookie { cookie, user, key }) => {
                c.credType = VIXDISKLIB_CRED_SESSIONID;
                c.creds.sessionId.cookie = self.keep_secret(cookie, "cookie")?;
                if let Some(u) = user {
                    c.creds.sessionId.userName = self.keep(u, "user")?;
                }
                if let Some(k) = key {
                    c.creds.sessionId.key = self.keep_secret(k, "session key")?;
                }
            }
            None => c.credType = VIXDISKLIB_CRED_UNKNOWN,
        }
        // SAFETY: `ptr` points to a live struct at least as large as this header's (VDDK's
        // allocator sizes it for its own, newer-or-equal layout; ours is exact).
        unsafe { self.ptr.write(c) };
        Ok(())
    }

    pub(crate) fn as_ptr(&self) -> *const VixDiskLibConnectParams {
        self.ptr
    }
}

impl Drop for RawConnectParams<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the live struct created in `new`. Our string pointers are cleared
        // first so FreeConnectParams never frees memory VDDK did not allocate.
        unsafe {
            self.ptr.write(VixDiskLibConnectParams::default());
            if self.allocated_by_vddk {
                self.state.lib.api.VixDiskLib_FreeConnectParams(self.ptr);
            } else {
                drop(Box::from_raw(self.ptr));
            }
        }
        for s in self.secrets.drain(..) {
            let mut bytes = s.into_bytes_with_nul();
            bytes.fill(0);
            std::hint::black_box(&bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";

    fn creds() -> Credentials {
        Credentials::UserPassword {
            user: "u".into(),
            password: "topsecret".into(),
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let p = ConnectParams::vm("vm-1").server("h").credentials(creds());
        assert!(!format!("{p:?}").contains("topsecret"));
        let c = Credentials::SessionCookie {
            cookie: "cookie-value".into(),
            user: None,
            key: Some("k".into()),
        };
        assert!(!format!("{c:?}").contains("cookie-value"));
    }

    #[test]
    fn moref_prefix_is_accepted() {
        assert_eq!(
            ConnectParams::vm("moref=vm-7").target(),
            &Target::Vm {
                moref: "vm-7".into()
            }
        );
    }

    #[test]
    fn validation_catches_bad_combinations() {
        assert!(ConnectParams::vm("vm-1").validate().is_err()); // no server
        assert!(ConnectParams::vm("vm-1").server("h").validate().is_err()); // no creds
        assert!(ConnectParams::local().server("h").validate().is_err());
        assert!(ConnectParams::vm("vm-1")
            .server("h")
            .credentials(creds())
            .thumbprint("aa:bb")
            .validate()
            .is_err());
        assert!(ConnectParams::vm("vm-1")
            .server("h")
            .credentials(creds())
            .thumbprint(TP)
            .validate()
            .is_ok());
        assert!(ConnectParams::local().validate().is_ok());
    }

    #[test]
    fn transports_are_checked() {
        let ok = ConnectOptions {
            transports: Some("hotadd:nbdssl".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = ConnectOptions {
            transports: Some("nbd:carrier-pigeon".into()),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("carrier-pigeon"));
    }

    #[test]
    fn wipe_empties_the_string() {
        let mut s = String::from("secret");
        wipe(&mut s);
        assert!(s.is_empty());
    }
}
