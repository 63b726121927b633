//! TLS settings: which certificates to trust, pinning, and the fingerprints the server showed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// How the server's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Trust the operating system's CA certificates.
    SystemRoots,
    /// Trust the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Trust exactly the certificate with this SHA-256 fingerprint (hex, colons optional).
    PinnedSha256(String),
    /// Trust any certificate. Only for explicit opt-out by the user.
    Insecure,
}

/// Fingerprints of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbprints {
    /// SHA-256 as `AA:BB:...`.
    pub sha256: String,
    /// SHA-1 as `AA:BB:...` (the form VDDK expects).
    pub sha1: String,
}

impl Thumbprints {
    /// The fingerprints of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Thumbprints {
        Thumbprints {
            sha256: colon_hex(&sha2::Sha256::digest(der)),
            sha1: colon_hex(&sha1::Sha1::digest(der)),
        }
    }
}

/// Formats bytes as upper-case hex pairs joined by colons.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a SHA-256 fingerprint written as hex, with or without colons, any case.
///
/// # Errors
///
/// [`Error::InvalidInput`] unless it is 32 bytes of hex.
pub fn parse_sha256(pin: &str) -> Result<[u8; 32]> {
    let cleaned: String = pin
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes = hex::decode(&cleaned)
        .map_err(|e| Error::InvalidInput(format!("SHA-256 fingerprint `{pin}` is not hex: {e}")))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        Error::InvalidInput(format!(
            "SHA-256 fingerprint `{pin}` has {} bytes, expected 32",
            b.len()
        ))
    })
}

/// What the server presented during the last handshake, shared with the verifier.
#[derive(Debug, Default)]
pub(crate) struct Presented {
    pub(crate) end_entity: Mutex<Option<Vec<u8>>>,
    pub(crate) pin_mismatch: Mutex<bool>,
}

#[derive(Debug)]
enum Mode {
    WebPki(Arc<WebPkiServerVerifier>),
    Pinned([u8; 32]),
    Insecure,
}

#[derive(Debug)]
struct RecordingVerifier {
    mode: Mode,
    provider: Arc<CryptoProvider>,
    presented: Arc<Presented>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.presented.end_entity.lock() {
            *seen = Some(end_entity.to_vec());
        }
        match &self.mode {
            Mode::WebPki(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Mode::Pinned(pin) => {
                let actual: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
                if actual == *pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    if let Ok(mut flag) = self.presented.pin_mismatch.lock() {
                        *flag = true;
                    }
                    Err(rustls::Error::General(format!(
                        "certificate SHA-256 {} does not match the pinned {}",
                        colon_hex(&actual),
                        colon_hex(pin)
                    )))
                }
            }
            Mode::Insecure => Ok(ServerCertVerified::assertion()),
        }
    }

    // The handshake signature is always checked, also for pinned and insecure modes: it proves
    // the server holds the certificate's private key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds the rustls configuration for `tls`, recording presented certificates in `presented`.
pub(crate) fn client_config(tls: &Tls, presented: Arc<Presented>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = |roots: RootCertStore| -> Result<Mode> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| Error::Tls(format!("cannot build certificate verifier: {e}")))?;
        Ok(Mode::WebPki(verifier))
    };
    let mode = match tls {
        Tls::SystemRoots => {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(Error::Tls(format!(
                    "no usable system CA certificates found{}",
                    loaded
                        .errors
                        .first()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )));
            }
            webpki(roots)?
        }
        Tls::CaFile(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", path.display())))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Tls(format!("bad PEM in CA file {}: {e}", path.display())))?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::Tls(format!(
                    "CA file {} holds no usable certificate",
                    path.display()
                )));
            }
            webpki(roots)?
        }
        Tls::PinnedSha256(pin) => Mode::Pinned(parse_sha256(pin)?),
        Tls::Insecure => Mode::Insecure,
    };
    let verifier = Arc::new(RecordingVerifier {
        mode,
        provider: provider.clone(),
        presented,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("cannot configure TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pins_in_any_form() {
        let colon = "AB:".repeat(31) + "AB";
        assert_eq!(parse_sha256(&colon).unwrap(), [0xAB; 32]);
        assert_eq!(parse_sha256(&"ab".repeat(32)).unwrap(), [0xAB; 32]);
        assert!(
            matches!(parse_sha256("AB:CD"), Err(Error::InvalidInput(m)) if m.contains("2 bytes"))
        );
        assert!(matches!(parse_sha256("zz"), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn formats_thumbprints_like_vddk() {
        let t = Thumbprints::of_der(b"abc");
        assert_eq!(
            t.sha1,
            "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"
        );
        assert!(t.sha256.starts_with("BA:78:16:BF"));
    }
}
