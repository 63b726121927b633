//! What `VixDiskLib_ConnectEx` was given, copied out of the caller's structs.

use std::ffi::{c_char, CStr};

use vddk_sys::*;

use crate::config::FakeConfig;

/// Credentials as passed in `VixDiskLibConnectParams`.
pub enum Credentials {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    /// `VIXDISKLIB_CRED_SESSIONID`: a vCenter session (cookie, its user and key).
    SessionCookie {
        cookie: String,
        user: Option<String>,
        key: Option<String>,
    },
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
                VIXDISKLIB_CRED_SESSIONID => Credentials::SessionCookie {
                    cookie: opt_str(p.creds.sessionId.cookie).unwrap_or_default(),
                    user: opt_str(p.creds.sessionId.userName),
                    key: opt_str(p.creds.sessionId.key),
                },
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
            Credentials::SessionCookie { cookie, user, key } => {
                if !config.cookie_accept {
                    return Err(
                        "session cookie login rejected (fake.cookie_accept is not true)".into(),
                    );
                }
                check_session(config, cookie, user.as_deref(), key.as_deref())?;
            }
            Credentials::None => return Err("no credentials given".into()),
        }
        Ok(())
    }
}

/// What the fake can check of a session handed over as `VIXDISKLIB_CRED_SESSIONID`: a cookie
/// is present, the password is in none of the fields (a session login must not carry it), the
/// session's user is the configured one (SSO names it as the token's subject, in any case), and
/// with `fake.sessions_file` (written by the lab: one live session key per line) the cookie
/// names a session the vCenter knows.
fn check_session(
    config: &FakeConfig,
    cookie: &str,
    user: Option<&str>,
    key: Option<&str>,
) -> Result<(), String> {
    let bare = cookie.trim().trim_matches('"');
    if bare.is_empty() {
        return Err("session login without a session cookie".into());
    }
    if let Some(password) = config.password.as_deref().filter(|p| !p.is_empty()) {
        let fields = [Some(cookie), user, key];
        if fields.iter().flatten().any(|f| f.contains(password)) {
            return Err("the vCenter password was passed with a session login".into());
        }
    }
    if let (Some(expected), Some(user)) = (&config.user, user) {
        if !expected.eq_ignore_ascii_case(user) {
            return Err(format!(
                "the session belongs to `{user}`, not to the configured user"
            ));
        }
    }
    if let Some(path) = &config.sessions_file {
        let live = std::fs::read_to_string(path)
            .map_err(|e| format!("fake.sessions_file {}: {e}", path.display()))?;
        if !live.lines().any(|l| l.trim() == bare) {
            return Err("the session cookie names no live vCenter session".into());
        }
    }
    Ok(())
}
