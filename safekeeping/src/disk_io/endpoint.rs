//! Connecting VDDK to the same vCenter as the SOAP session: the session itself (its
//! `vmware_soap_session` cookie, user and key: VDDK never receives the password, whether the
//! session came from a password login or an SSO token), the server's host and port from the
//! configured URL, and the SHA-1 thumbprint of the certificate the (verified) SOAP connection
//! saw.

use vddk::{ConnectOptions, ConnectParams, Connection, Vddk};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::vsphere::Vcenter;

/// A loaded, initialised VDDK plus what it needs to connect.
#[derive(Clone)]
pub struct VddkEndpoint {
    vddk: Vddk,
    host: String,
    port: u16,
    /// The logged-in session; read at each connect, so a re-login's new cookie is used.
    vc: Vcenter,
    thumbprint: Option<String>,
    transports: Option<String>,
}

impl std::fmt::Debug for VddkEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VddkEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.vc.user)
            .finish_non_exhaustive()
    }
}

impl VddkEndpoint {
    /// [`VddkEndpoint::new`] on a blocking thread (loading and initialising the library does
    /// file I/O), for the async commands.
    ///
    /// # Errors
    /// As [`VddkEndpoint::new`].
    pub async fn load(config: &Config, vc: &Vcenter) -> Result<VddkEndpoint> {
        let (c, v) = (config.clone(), vc.clone());
        crate::blocking::blocking(move || VddkEndpoint::new(&c, &v)).await
    }

    /// The same endpoint with another transport preference list (`hotadd:nbdssl`), for a
    /// target whose configuration section or command line asks for one.
    pub fn with_transports(&self, transports: &str) -> VddkEndpoint {
        VddkEndpoint {
            transports: Some(transports.to_string()),
            ..self.clone()
        }
    }

    /// Loads VDDK from `[vddk] libdir` and initialises it with `[vddk] config`.
    ///
    /// # Errors
    /// A missing `[vddk]` section, a library that cannot be loaded or initialised.
    pub fn new(config: &Config, vc: &Vcenter) -> Result<VddkEndpoint> {
        // VDDK gets the SOAP session's cookie: never over plain http unless asked.
        vim_client::check_url_security(&config.vcenter.url, config.vcenter.insecure)?;
        let v = config.vddk()?;
        let vddk = Vddk::load(&v.libdir)?;
        vddk.init(v.config.as_deref())?;
        let thumbprint = vc.client.server_thumbprints().map(|t| t.sha1);
        let endpoint = VddkEndpoint {
            vddk,
            host: vc.host.clone(),
            port: vc.port,
            vc: vc.clone(),
            thumbprint,
            transports: v.transports.clone(),
        };
        endpoint.clean_up_after_killed_runs();
        Ok(endpoint)
    }

    /// `VixDiskLib_Cleanup` at start-up: a run that was killed may have left hot-added disks
    /// and temporary state behind, which VMware documents cleaning up before new work. A
    /// failure is logged, not fatal: it concerns what an earlier run left, not this one.
    fn clean_up_after_killed_runs(&self) {
        let server = match self.with_login(ConnectParams::whole_server()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("VDDK cleanup of earlier runs skipped: {e}");
                return;
            }
        };
        match self.vddk.cleanup(&server) {
            Ok(r) if r.cleaned_up + r.remaining > 0 => tracing::info!(
                cleaned_up = r.cleaned_up,
                remaining = r.remaining,
                "VDDK cleanup of earlier runs"
            ),
            Ok(_) | Err(vddk::Error::Unsupported { .. }) => {}
            Err(e) => tracing::warn!("VDDK cleanup of earlier runs failed: {e}"),
        }
    }

    fn params(&self, vm_moref: &str) -> Result<ConnectParams> {
        self.with_login(ConnectParams::vm(vm_moref))
    }

    fn with_login(&self, p: ConnectParams) -> Result<ConnectParams> {
        let mut p = p
            .server(self.host.clone())
            .port(self.port)
            .credentials(self.vc.vddk_session()?);
        if let Some(t) = &self.thumbprint {
            p = p.thumbprint(t.clone());
        }
        Ok(p)
    }

    /// A read-only connection to a VM's snapshot, for backup. Blocking.
    ///
    /// # Errors
    /// VDDK connect failures.
    pub fn connect_snapshot(&self, vm_moref: &str, snapshot_moref: &str) -> Result<Connection> {
        let options = ConnectOptions {
            read_only: true,
            snapshot_moref: Some(snapshot_moref.to_string()),
            transports: self.transports.clone(),
        };
        // PrepareForAccess/EndAccess around the session: vCenter blocks Storage vMotion of the
        // VM while its disks are read.
        self.vddk
            .connect_with_access(&self.params(vm_moref)?, &options, vddk::ACCESS_IDENTITY)
            .map_err(|e| Error::vddk(format!("connect to {vm_moref} at {snapshot_moref}"), e))
    }

    /// A read-write connection to a VM, for restore. Blocking.
    ///
    /// # Errors
    /// VDDK connect failures.
    pub fn connect_writable(&self, vm_moref: &str) -> Result<Connection> {
        let options = ConnectOptions {
            read_only: false,
            snapshot_moref: None,
            transports: self.transports.clone(),
        };
        self.vddk
            .connect_with_access(&self.params(vm_moref)?, &options, vddk::ACCESS_IDENTITY)
            .map_err(|e| Error::vddk(format!("connect to {vm_moref} for writing"), e))
    }

    /// A connection to first class disk `id` on datastore `datastore_moref`: read-only at a
    /// disk snapshot for backup (`snapshot_id`), or read-write to the live disk for restore
    /// (`None`). Blocking.
    ///
    /// # Errors
    /// VDDK connect failures.
    pub fn connect_fcd(
        &self,
        id: &str,
        datastore_moref: &str,
        snapshot_id: Option<&str>,
    ) -> Result<Connection> {
        let options = ConnectOptions {
            read_only: snapshot_id.is_some(),
            snapshot_moref: None,
            transports: self.transports.clone(),
        };
        let params = self.with_login(ConnectParams::first_class_disk(
            id,
            datastore_moref,
            snapshot_id.map(str::to_string),
        ))?;
        self.vddk.connect(&params, &options).map_err(|e| {
            Error::vddk(
                format!(
                    "connect to first class disk {id} on {datastore_moref}{}",
                    snapshot_id
                        .map(|s| format!(" at snapshot {s}"))
                        .unwrap_or_default()
                ),
                e,
            )
        })
    }
}
