//! PrepareForAccess/EndAccess: telling vCenter a backup is reading a VM's disks, so it does
//! not migrate the VM's storage meanwhile.

use std::ffi::CString;

use crate::error::Result;
use crate::library::{cstring, serial, Vddk};
use crate::params::{ConnectParams, RawConnectParams};

/// Ends access when dropped (errors are logged); call [`AccessGuard::end`] to see them.
#[must_use = "dropping the guard ends access at once"]
pub struct AccessGuard {
    vddk: Vddk,
    params: ConnectParams,
    identity: CString,
    ended: bool,
}

impl std::fmt::Debug for AccessGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessGuard")
            .field("target", self.params.target())
            .field("identity", &self.identity)
            .finish()
    }
}

impl Vddk {
    /// Calls VixDiskLib_PrepareForAccess for the VM in `params`; `identity` names the
    /// application in vCenter's task list (e.g. `"safekeeping"`). The guard calls EndAccess.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] when the library lacks the function,
    /// [`crate::Error::NotInitialised`], [`crate::Error::Vix`].
    pub fn prepare_for_access(
        &self,
        params: &ConnectParams,
        identity: &str,
    ) -> Result<AccessGuard> {
        let identity = cstring(identity, "identity")?;
        self.access_call(params, &identity, true)?;
        Ok(AccessGuard {
            vddk: self.clone(),
            params: params.clone(),
            identity,
            ended: false,
        })
    }

    /// Calls VixDiskLib_EndAccess directly (for example after a crash left access prepared).
    ///
    /// # Errors
    /// As [`Vddk::prepare_for_access`].
    pub fn end_access(&self, params: &ConnectParams, identity: &str) -> Result<()> {
        let identity = cstring(identity, "identity")?;
        self.access_call(params, &identity, false)
    }

    fn access_call(&self, params: &ConnectParams, identity: &CString, prepare: bool) -> Result<()> {
        let state = &self.state;
        state.ensure_initialised()?;
        let api = &state.lib.api;
        let (present, name, op) = if prepare {
            (
                api.VixDiskLib_PrepareForAccess.is_ok(),
                "VixDiskLib_PrepareForAccess",
                "PrepareForAccess",
            )
        } else {
            (
                api.VixDiskLib_EndAccess.is_ok(),
                "VixDiskLib_EndAccess",
                "EndAccess",
            )
        };
        if !present {
            return Err(state.unsupported(name));
        }
        let raw = RawConnectParams::new(state, params)?;
        let rc = {
            let _g = serial();
            // SAFETY: present (checked); the params struct and identity outlive the call.
            unsafe {
                if prepare {
                    api.VixDiskLib_PrepareForAccess(raw.as_ptr(), identity.as_ptr())
                } else {
                    api.VixDiskLib_EndAccess(raw.as_ptr(), identity.as_ptr())
                }
            }
        };
        state.check(op, rc)
    }
}

impl AccessGuard {
    /// Ends access now, reporting errors.
    ///
    /// # Errors
    /// As [`Vddk::end_access`].
    pub fn end(mut self) -> Result<()> {
        self.ended = true;
        self.vddk.access_call(&self.params, &self.identity, false)
    }
}

impl Drop for AccessGuard {
    fn drop(&mut self) {
        if !self.ended {
            if let Err(e) = self.vddk.access_call(&self.params, &self.identity, false) {
                tracing::warn!(target: "vddk", "EndAccess: {e}");
            }
        }
    }
}
