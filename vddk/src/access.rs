//! PrepareForAccess/EndAccess: telling vCenter a backup is reading a VM's disks, so it does
//! not migrate the VM's storage meanwhile; and Cleanup, which removes what a killed run left
//! behind (hot-added disks, temporary state).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::error::Result;
use crate::library::{cstring, serial, Vddk};
use crate::params::{ConnectParams, RawConnectParams, Target};

/// The identity safekeeping gives PrepareForAccess and EndAccess: vCenter shows it as the
/// reason the VM's storage cannot be migrated, and EndAccess must name the same identity.
pub const ACCESS_IDENTITY: &str = "safekeeping";

/// What [`Vddk::cleanup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanupReport {
    /// Items (hot-added disks, mounts, temporary state) removed.
    pub cleaned_up: u32,
    /// Items VDDK found and could not remove (for example still used by a running process).
    pub remaining: u32,
}

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

    /// Removes what earlier runs that were killed or crashed left behind for this server
    /// (VixDiskLib_Cleanup): hot-added disks still attached to the backup appliance, and
    /// VDDK's temporary state. Call it once at start-up, before the first connection, with
    /// [`ConnectParams::whole_server`] (or any VM of the server) and the same server,
    /// credentials and thumbprint as the connections will use.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] when the library lacks the function,
    /// [`crate::Error::NotInitialised`], [`crate::Error::InvalidArgument`],
    /// [`crate::Error::Vix`].
    pub fn cleanup(&self, params: &ConnectParams) -> Result<CleanupReport> {
        let state = &self.state;
        state.ensure_initialised()?;
        let api = &state.lib.api;
        if api.VixDiskLib_Cleanup.is_err() {
            return Err(state.unsupported("VixDiskLib_Cleanup"));
        }
        let raw = RawConnectParams::new(state, params)?;
        let (mut cleaned_up, mut remaining) = (0u32, 0u32);
        let rc = {
            let _g = serial();
            // SAFETY: present (checked); the params struct outlives the call; both counters
            // are valid out-pointers.
            unsafe { api.VixDiskLib_Cleanup(raw.as_ptr(), &mut cleaned_up, &mut remaining) }
        };
        state.check("Cleanup", rc)?;
        let report = CleanupReport {
            cleaned_up,
            remaining,
        };
        if cleaned_up > 0 || remaining > 0 {
            tracing::info!(target: "vddk", cleaned_up, remaining, server = ?params.server_name(),
                "VixDiskLib_Cleanup removed what earlier runs left behind");
        }
        Ok(report)
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
        params.validate_connectable()?;
        let raw = RawConnectParams::new(state, params)?;
        let rc = {
            let _g = serial();
            // SAFETY: present (checked); the params struct (VDDK's own allocation, with only its
            // public fields written) and identity outlive the call.
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

/// Server, VM moref and identity of prepared access.
type AccessKey = (String, String, String);

/// The access prepared per VM and still held by some connection. VMware's EndAccess is not
/// counted: the first EndAccess re-enables storage migration of the VM. So connections to one
/// VM share one PrepareForAccess, and EndAccess runs when the last of them is gone.
#[derive(Default)]
pub(crate) struct AccessRegistry {
    held: Mutex<HashMap<AccessKey, Weak<SharedAccess>>>,
    /// Signalled when an entry is removed (its EndAccess has run).
    released: Condvar,
}

/// Access shared by the connections to one VM; EndAccess when the last one drops it.
pub(crate) struct SharedAccess {
    key: AccessKey,
    guard: Option<AccessGuard>,
}

impl Drop for SharedAccess {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let vddk = guard.vddk.clone();
        let registry = &vddk.state.access;
        let mut held = registry.held.lock().unwrap_or_else(|p| p.into_inner());
        // EndAccess under the registry lock, so a new session for the same VM prepares again
        // only after this one's EndAccess (never before it, which would end the new one).
        drop(guard);
        held.remove(&self.key);
        registry.released.notify_all();
    }
}

impl Vddk {
    /// The access for the VM of `params`, prepared now or shared with live connections to the
    /// same VM; `None` for targets without a VM, or a library without PrepareForAccess.
    pub(crate) fn shared_access(
        &self,
        params: &ConnectParams,
        identity: &str,
    ) -> Result<Option<Arc<SharedAccess>>> {
        let Target::Vm { moref } = params.target() else {
            return Ok(None);
        };
        let key = (
            params.server_name().unwrap_or_default().to_string(),
            moref.clone(),
            identity.to_string(),
        );
        let registry = &self.state.access;
        let mut held = registry.held.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match held.get(&key).map(Weak::upgrade) {
                Some(Some(live)) => return Ok(Some(live)),
                // Its last connection is ending access right now: wait for that to finish.
                Some(None) => {
                    held = registry
                        .released
                        .wait(held)
                        .unwrap_or_else(|p| p.into_inner());
                }
                None => break,
            }
        }
        let guard = match self.prepare_for_access(params, identity) {
            Ok(g) => g,
            Err(crate::Error::Unsupported { function, version }) => {
                tracing::warn!(target: "vddk", function, %version,
                    "connecting without PrepareForAccess");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(SharedAccess {
            key: key.clone(),
            guard: Some(guard),
        });
        held.insert(key, Arc::downgrade(&shared));
        Ok(Some(shared))
    }
}
