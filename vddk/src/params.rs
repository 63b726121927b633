//! What to connect to and how: [`ConnectParams`], [`Credentials`], [`ConnectOptions`].

use std::ffi::{c_char, CString};
use std::fmt;
use std::ptr::addr_of_mut;
use std::sync::Arc;

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
    /// The server as a whole, without a VM or disk: only for [`crate::Vddk::cleanup`], which
    /// cleans up after every earlier run against that server. Connecting with it is refused.
    WholeServer,
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

    /// The server as a whole (set it with [`ConnectParams::server`], with credentials and
    /// thumbprint), for [`crate::Vddk::cleanup`] at start-up; not for connecting.
    pub fn whole_server() -> Self {
        Self::new(Target::WholeServer)
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
            (Target::Vm { .. } | Target::FirstClassDisk { .. } | Target::WholeServer, false) => {
                return Err(Error::InvalidArgument(
                    "a VM, first class disk or whole-server target needs a server".into(),
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

    /// Refuses targets that cannot be connected to or prepared for access.
    pub(crate) fn validate_connectable(&self) -> Result<()> {
        if self.target == Target::WholeServer {
            return Err(Error::InvalidArgument(
                "whole-server parameters are only for cleanup; connect to a VM, a first class \
                 disk or local files"
                    .into(),
            ));
        }
        self.validate()
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

/// The value a public field of `VixDiskLibConnectParams` had before [`RawConnectParams`]
/// wrote it, put back before the struct goes back to VDDK: only what was written is touched.
#[derive(Clone, Copy)]
enum Saved {
    VmxSpec(*mut c_char),
    ServerName(*mut c_char),
    ThumbPrint(*mut c_char),
    CredType(VixDiskLibCredType),
    Creds(VixDiskLibConnectParams__bindgen_ty_1),
    Port(u32),
    NfcHostPort(u32),
    Spec(VixDiskLibVStorageObjectSpec),
    SpecType(VixDiskLibSpecType),
}

/// A C `VixDiskLibConnectParams` with our values in its public fields, and the strings it
/// points to. Secret strings are wiped on drop.
///
/// VDDK 6.7 and newer allocate the struct themselves (AllocateConnectParams) and keep their own
/// state in its internal fields (`reserved`, `state`); ConnectEx, PrepareForAccess, EndAccess
/// and FreeConnectParams use that state. So only the public fields are ever written, one by
/// one, and only those written are cleared before FreeConnectParams. A connection keeps its
/// parameters until after Disconnect, as VMware's samples do.
pub(crate) struct RawConnectParams {
    state: Arc<LibraryState>,
    ptr: *mut VixDiskLibConnectParams,
    allocated_by_vddk: bool,
    saved: Vec<Saved>,
    strings: Vec<CString>,
    secrets: Vec<CString>,
}

// SAFETY: the struct and the strings it points to are owned by this value and only read by
// VDDK calls made through it; VDDK's connect functions run under the process-wide serial lock.
unsafe impl Send for RawConnectParams {}
// SAFETY: as above; `&self` gives out only a const pointer, used under the serial lock.
unsafe impl Sync for RawConnectParams {}

impl RawConnectParams {
    pub(crate) fn new(state: &Arc<LibraryState>, p: &ConnectParams) -> Result<Self> {
        p.validate()?;
        let api = &state.lib.api;
        // Prefer VDDK's allocator (6.7+): it sizes the struct for the library's version and
        // sets up the library's private state inside it.
        let (ptr, allocated_by_vddk) = if api.VixDiskLib_AllocateConnectParams.is_ok() {
            // SAFETY: present (checked); returns an initialised struct or NULL.
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
            state: state.clone(),
            ptr,
            allocated_by_vddk,
            saved: Vec::new(),
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

    /// Writes the public fields for `p`, each on its own, never the internal ones.
    fn fill(&mut self, p: &ConnectParams) -> Result<()> {
        // Strings first (they may fail), so the struct is written only when all are ready.
        let vmx = match &p.target {
            Target::Vm { moref } => Some(self.keep(&format!("moref={moref}"), "VM moref")?),
            _ => None,
        };
        let fcd = match &p.target {
            Target::FirstClassDisk {
                id,
                datastore_moref,
                snapshot_id,
            } => Some(VixDiskLibVStorageObjectSpec {
                id: self.keep(id, "disk id")?,
                datastoreMoRef: self.keep(datastore_moref, "datastore moref")?,
                ssId: match snapshot_id {
                    Some(s) => self.keep(s, "snapshot id")?,
                    None => std::ptr::null_mut(),
                },
            }),
            _ => None,
        };
        let server = p
            .server
            .as_deref()
            .map(|s| self.keep(s, "server"))
            .transpose()?;
        let thumbprint = p
            .thumbprint
            .as_deref()
            .map(|t| self.keep(t, "thumbprint"))
            .transpose()?;
        let (cred_type, creds) = match &p.credentials {
            Some(Credentials::UserPassword { user, password }) => {
                let mut c = VixDiskLibConnectParams__bindgen_ty_1::default();
                c.uid = VixDiskLibUidPasswdCreds {
                    userName: self.keep(user, "user")?,
                    password: self.keep_secret(password, "password")?,
                };
                (VIXDISKLIB_CRED_UID, Some(c))
            }
            Some(Credentials::SessionCookie { cookie, user, key }) => {
                let mut c = VixDiskLibConnectParams__bindgen_ty_1::default();
                c.sessionId = VixDiskLibSessionIdCreds {
                    cookie: self.keep_secret(cookie, "cookie")?,
                    userName: match user {
                        Some(u) => self.keep(u, "user")?,
                        None => std::ptr::null_mut(),
                    },
                    key: match key {
                        Some(k) => self.keep_secret(k, "session key")?,
                        None => std::ptr::null_mut(),
                    },
                };
                (VIXDISKLIB_CRED_SESSIONID, Some(c))
            }
            None => (VIXDISKLIB_CRED_UNKNOWN, None),
        };
        let spec_type = if fcd.is_some() {
            VIXDISKLIB_SPEC_VSTORAGE_OBJECT
        } else {
            VIXDISKLIB_SPEC_VMX
        };
        let ptr = self.ptr;
        // SAFETY: `ptr` is a live struct (VDDK's, at least as large as this header's layout,
        // or our own Box). Each write goes through a raw place of one public field, so the
        // internal fields (`reserved`, `state`, `privateUse`, `vimApiVer`) are never touched
        // and no reference to the whole struct is made.
        unsafe {
            let saved = &mut self.saved;
            if let Some(v) = vmx {
                saved.push(Saved::VmxSpec(addr_of_mut!((*ptr).vmxSpec).replace(v)));
            }
            if let Some(spec) = fcd {
                saved.push(Saved::Spec(
                    addr_of_mut!((*ptr).spec.vStorageObjSpec).replace(spec),
                ));
            }
            saved.push(Saved::SpecType(
                addr_of_mut!((*ptr).specType).replace(spec_type),
            ));
            if let Some(v) = server {
                saved.push(Saved::ServerName(
                    addr_of_mut!((*ptr).serverName).replace(v),
                ));
            }
            if let Some(v) = thumbprint {
                saved.push(Saved::ThumbPrint(
                    addr_of_mut!((*ptr).thumbPrint).replace(v),
                ));
            }
            if p.port != 0 {
                saved.push(Saved::Port(addr_of_mut!((*ptr).port).replace(p.port)));
            }
            if p.nfc_port != 0 {
                saved.push(Saved::NfcHostPort(
                    addr_of_mut!((*ptr).nfcHostPort).replace(p.nfc_port),
                ));
            }
            saved.push(Saved::CredType(
                addr_of_mut!((*ptr).credType).replace(cred_type),
            ));
            if let Some(c) = creds {
                saved.push(Saved::Creds(addr_of_mut!((*ptr).creds).replace(c)));
            }
        }
        Ok(())
    }

    pub(crate) fn as_ptr(&self) -> *const VixDiskLibConnectParams {
        self.ptr
    }
}

impl Drop for RawConnectParams {
    fn drop(&mut self) {
        let ptr = self.ptr;
        // SAFETY: `ptr` is the live struct created in `new`. Only the fields we wrote get their
        // earlier values back, through their raw places (so FreeConnectParams never sees our
        // strings, and finds its own state as it left it); then the struct goes back to
        // whoever allocated it, exactly once.
        unsafe {
            for saved in self.saved.drain(..).rev() {
                match saved {
                    Saved::VmxSpec(v) => addr_of_mut!((*ptr).vmxSpec).write(v),
                    Saved::ServerName(v) => addr_of_mut!((*ptr).serverName).write(v),
                    Saved::ThumbPrint(v) => addr_of_mut!((*ptr).thumbPrint).write(v),
                    Saved::CredType(v) => addr_of_mut!((*ptr).credType).write(v),
                    Saved::Creds(v) => addr_of_mut!((*ptr).creds).write(v),
                    Saved::Port(v) => addr_of_mut!((*ptr).port).write(v),
                    Saved::NfcHostPort(v) => addr_of_mut!((*ptr).nfcHostPort).write(v),
                    Saved::Spec(v) => addr_of_mut!((*ptr).spec.vStorageObjSpec).write(v),
                    Saved::SpecType(v) => addr_of_mut!((*ptr).specType).write(v),
                }
            }
            if self.allocated_by_vddk {
                self.state.lib.api.VixDiskLib_FreeConnectParams(ptr);
            } else {
                drop(Box::from_raw(ptr));
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
