//! The logged-in vCenter session a command works with, and the few generic VIM calls shared
//! by the backup and restore steps.

use vim_client::{Client, ClientOptions, Secret, Tls};

use crate::config::Config;
use crate::error::{Error, Result};

/// A logged-in vCenter, plus what VDDK needs to connect to the same server.
#[derive(Debug, Clone)]
pub struct Vcenter {
    /// The SOAP client.
    pub client: Client,
    /// User name (VDDK connects with the same credentials).
    pub user: String,
    /// Password (never logged).
    pub password: Secret,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
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
        let client = Client::connect(&options).await?;
        client
            .login(&config.vcenter.user, &password)
            .await
            .map_err(|e| match e.fault_kind() {
                Some(vim_client::FaultKind::InvalidLogin) => Error::Other(format!(
                    "vCenter rejected the login of user `{}` (wrong user or password)",
                    config.vcenter.user
                )),
                _ => Error::Vim(e),
            })?;
        tracing::debug!(%host, port, "logged in to vCenter");
        Ok(Vcenter {
            client,
            user: config.vcenter.user.clone(),
            password,
            host,
            port,
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
