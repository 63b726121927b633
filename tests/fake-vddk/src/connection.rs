//! What `VixDiskLib_ConnectEx` was given, copied out of the caller's structs.

use std::ffi::{c_char, CStr};

use vddk_sys::*;

use crate::config::FakeConfig;

/// Credentials as passed in `VixDiskLibConnectParams`.
pub enum Credentials {
    None,
    UserPassword { user: String, password: String },
    SessionCookie,
}

/// A copied `VixDiskLibConnectParams`.
pub struct Params {
    pub vmx_spec: Option<String>,
    pub server: Option<String>,
    pub thumbprint: Option<String>,
    pub credentials: Credentials,
    pub port: u32,
    pub nfc_port: u32,
    /// `(id, datastore moref, snapshot id)` of a first class disk.
    pub fcd: Option<(String, String, Option<String>)>,
}

/// An open connection.
pub struct FakeConnection {
    pub params: Params,
    pub read_only: bool,
    pub snapshot: Option<String>,
    pub transports: Option<String>,
    /// Disks opened through this connection and not yet closed.
    pub open_disks: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The AllocateConnectParams allocation ConnectEx was given (`None`: the caller's own
    /// struct); VDDK refers to it until Disconnect, so it must not be freed before.
    pub params_serial: Option<u64>,
}

/// Copies a C string; NULL and invalid UTF-8 become `None`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub unsafe fn opt_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null and NUL-terminated per the caller's contract.
        unsafe { CStr::from_ptr(p) }
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

impl Params {
    /// Copies what the fake needs out of `p`.
    ///
    /// # Safety
    /// `p` points to a valid `VixDiskLibConnectParams` whose string fields are NULL or
    /// NUL-terminated, and whose active union members match `credType` and `specType`.
    pub unsafe fn copy_from(p: &VixDiskLibConnectParams) -> Self {
        // SAFETY: fields, union members and strings are read per the caller's contract above.
        unsafe {
            let credentials = match p.credType {
                VIXDISKLIB_CRED_UID => Credentials::UserPassword {
                    user: opt_str(p.creds.uid.userName).unwrap_or_default(),
                    password: opt_str(p.creds.uid.password).unwrap_or_default(),
                },
                VIXDISKLIB_CRED_SESSIONID => Credentials::SessionCookie,
                _ => Credentials::None,
            };
            let fcd = if p.specType == VIXDISKLIB_SPEC_VSTORAGE_OBJECT {
                let s = &p.spec.vStorageObjSpec;
                Some((
                    opt_str(s.id).unwrap_or_default(),
                    opt_str(s.datastoreMoRef).unwrap_or_default(),
                    opt_str(s.ssId),
                ))
            } else {
                None
            };
            Params {
                vmx_spec: opt_str(p.vmxSpec),
                server: opt_str(p.serverName).filter(|s| !s.is_empty()),
                thumbprint: opt_str(p.thumbPrint),
                credentials,
                port: p.port,
                nfc_port: p.nfcHostPort,
                fcd,
            }
        }
    }

    /// Checks thumbprint and credentials against the config, as the real library does when
    /// it first talks to the host. Local connections (no server) need neither.
    pub fn authenticate(&self, config: &FakeConfig) -> Result<(), String> {
        if self.server.is_none() {
            return Ok(());
        }
        if let Some(expected) = &config.thumbprint {
            match &self.thumbprint {
                Some(t) if t.eq_ignore_ascii_case(expected) => {}
                Some(_) => return Err("SSL thumbprint of the host does not match".into()),
                None => return Err("no SSL thumbprint given for the host".into()),
            }
        }
        match &self.credentials {
            Credentials::UserPassword { user, password } => {
                if config.user.as_ref().is_some_and(|u| u != user)
                    || config.password.as_ref().is_some_and(|p| p != password)
                {
                    return Err(
                        "cannot complete login due to an incorrect user name or password".into(),
                    );
                }
            }
            Credentials::SessionCookie => {
                if !config.cookie_accept {
                    return Err(
                        "session cookie login rejected (fake.cookie_accept is not true)".into(),
                    );
                }
            }
            Credentials::None => return Err("no credentials given".into()),
        }
        Ok(())
    }
}
