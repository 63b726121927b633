//! The logged-in vCenter session a command works with, and the few generic VIM calls shared
//! by the backup and restore steps.

use vim_client::{Client, ClientOptions, Tls};

use crate::config::{AuthMethod, Config};
use crate::error::{Error, Result};
pub use crate::vcenter_origin::VcenterOrigin;

/// A logged-in vCenter, plus what VDDK needs to connect to the same server with the same
/// session (the password stays in the SOAP client, for its one re-login, and never reaches
/// VDDK).
#[derive(Debug, Clone)]
pub struct Vcenter {
    /// The SOAP client.
    pub client: Client,
    /// User name.
    pub user: String,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Which vCenter this is: its configured name, URL and instance uuid.
    pub origin: VcenterOrigin,
}

/// The TLS policy the configuration asks for.
pub fn tls_policy(config: &Config) -> Tls {
    let v = &config.vcenter;
    if let Some(pin) = &v.thumbprint_sha256 {
        Tls::PinnedSha256(pin.clone())
    } else if let Some(ca) = &v.ca_file {
        Tls::CaFile(ca.clone())
    } else if v.insecure {
        tracing::warn!("TLS verification of vCenter is off (insecure = true in the configuration)");
        Tls::Insecure
    } else {
        Tls::SystemRoots
    }
}

/// Host and port of an `https://host:port/sdk` URL (443 by default).
///
/// # Errors
/// [`Error::Other`] when the URL has no host.
pub fn host_port(url: &str) -> Result<(String, u16)> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| Error::Other(format!("vcenter.url `{url}` has no scheme")))?;
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let default_port = if url.starts_with("http://") { 80 } else { 443 };
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| Error::Other(format!("vcenter.url `{url}` has a bad IPv6 host")))?;
        let port = after.strip_prefix(':').map(str::parse).transpose();
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse()).transpose()),
            None => (authority.to_string(), Ok(None)),
        }
    };
    let port = port
        .map_err(|_| Error::Other(format!("vcenter.url `{url}` has a bad port")))?
        .unwrap_or(default_port);
    if host.is_empty() {
        return Err(Error::Other(format!("vcenter.url `{url}` has no host")));
    }
    Ok((host, port))
}

impl Vcenter {
    /// Connects (verifying TLS as configured) and logs in.
    ///
    /// # Errors
    /// Configuration, TLS (including a pin mismatch, which names the presented fingerprint),
    /// transport and login faults.
    pub async fn connect(config: &Config) -> Result<Vcenter> {
        let password = config.password()?;
        let (host, port) = host_port(&config.vcenter.url)?;
        let mut options = ClientOptions::new(config.vcenter.url.clone(), tls_policy(config));
        // A plain http:// URL would send the password in clear: only with `insecure = true`.
        options.allow_http = config.vcenter.insecure;
        options.sts_url = config.vcenter.sts_url.clone();
        let client = Client::connect(&options).await?;
        let user = &config.vcenter.user;
        let label = config.vcenter_label();
        let login = match config.vcenter.auth {
            AuthMethod::Password => client.login(user, &password).await,
            AuthMethod::Sso => client.login_sso(user, &password).await,
        };
        login.map_err(|e| match e.fault_kind() {
            Some(vim_client::FaultKind::InvalidLogin) => Error::Other(format!(
                "vCenter {label} rejected the login of user `{user}` (wrong user or password)"
            )),
            _ => Error::Vim(e),
        })?;
        let instance_uuid = client
            .service_content()
            .about
            .instance_uuid
            .trim()
            .to_ascii_lowercase();
        if let Some(expected) = &config.expected_vcenter_uuid {
            if !instance_uuid.is_empty() && !expected.eq_ignore_ascii_case(&instance_uuid) {
                tracing::warn!(
                    vcenter = %label,
                    %instance_uuid,
                    recorded = %expected,
                    "{label} is not the vCenter the generation recorded (another instance uuid): \
                     restoring into it anyway; placement is checked against it"
                );
            }
        }
        match config.vcenter.auth {
            AuthMethod::Sso => {
                tracing::info!(vcenter = %label, %user, "logged in with an SSO token")
            }
            AuthMethod::Password => {
                tracing::debug!(%host, port, vcenter = %label, %instance_uuid, "logged in to vCenter");
            }
        }
        Ok(Vcenter {
            client,
            user: user.clone(),
            host,
            port,
            origin: VcenterOrigin {
                name: config.vcenter_name.clone(),
                url: config.vcenter.url.clone(),
                instance_uuid,
            },
        })
    }

    /// The session VDDK connects with: the `vmware_soap_session` cookie of this login, the
    /// session's user and key. VDDK never gets the password.
    ///
    /// # Errors
    /// [`Error::Other`] when the client holds no session (it always does after
    /// [`Vcenter::connect`]).
    pub fn vddk_session(&self) -> Result<vddk::Credentials> {
        let cookie = self
            .client
            .session_cookie()
            .ok_or_else(|| Error::Other("no vCenter session to hand to VDDK".into()))?;
        let session = self.client.user_session();
        Ok(vddk::Credentials::SessionCookie {
            cookie,
            user: session
                .as_ref()
                .map(|s| s.user_name.clone())
                .filter(|u| !u.is_empty())
                .or_else(|| Some(self.user.clone())),
            key: session.map(|s| s.key).filter(|k| !k.is_empty()),
        })
    }

    /// Logs out, ignoring failures (the session expires anyway).
    pub async fn logout(&self) {
        if let Err(e) = self.client.logout().await {
            tracing::debug!(error = %e, "logout failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_from_url() {
        assert_eq!(
            host_port("https://127.0.0.1:8989/sdk").unwrap(),
            ("127.0.0.1".into(), 8989)
        );
        assert_eq!(
            host_port("https://vc.example.com/sdk").unwrap(),
            ("vc.example.com".into(), 443)
        );
        assert_eq!(host_port("https://[::1]:9/sdk").unwrap(), ("::1".into(), 9));
        assert!(host_port("https://:9/sdk").is_err());
        assert!(host_port("https://h:x/sdk").is_err());
    }
}
