//! Where a repository lives, as the application configures it: a local folder or
//! `s3://BUCKET/PREFIX` with its endpoint, region, credentials and TLS settings.
//!
//! Credentials are never part of the location's text: they come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or from an AWS shared
//! credentials file and profile, and are read only when connecting. Debug output shows where
//! they come from, never their values.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Backend, LocalBackend};

/// Default region when none is configured (what most S3-compatible servers accept).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default number of attempts after the first for a failed request (5xx, timeouts, resets).
pub const DEFAULT_MAX_RETRIES: usize = 10;
/// Default time one request may keep being retried: 3 minutes.
pub const DEFAULT_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// A repository's place.
// One value per opened repository: its size does not matter, and boxing the S3 side would
// only make every caller's pattern longer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryLocation {
    /// A local (or mounted) folder.
    Local(PathBuf),
    /// A prefix of an S3-compatible bucket.
    S3(S3Location),
}

/// Where the S3 credentials come from. The values themselves are read at connect time.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    Environment,
    /// An AWS shared credentials file (`[profile]` sections with `aws_access_key_id`,
    /// `aws_secret_access_key`, optionally `aws_session_token`).
    File {
        /// The file.
        path: PathBuf,
        /// The section; `default` when `None`.
        profile: Option<String>,
    },
    /// Keys given by the program (e.g. from a secret store); never printed.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: Arc<Zeroizing<String>>,
        /// Session token, for temporary credentials.
        session_token: Option<Arc<Zeroizing<String>>>,
    },
}

impl S3Credentials {
    /// Keys a program holds (from its own secret store): wiped from memory when the last copy
    /// is dropped, never printed.
    pub fn from_keys(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: Arc::new(Zeroizing::new(secret_access_key.into())),
            session_token: session_token.map(|t| Arc::new(Zeroizing::new(t))),
        }
    }
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Credentials::Environment => f.write_str("Environment"),
            S3Credentials::File { path, profile } => f
                .debug_struct("File")
                .field("path", path)
                .field("profile", profile)
                .finish(),
            S3Credentials::Static { .. } => f.write_str("Static(<redacted>)"),
        }
    }
}

/// The S3 side of [`RepositoryLocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; empty for the whole bucket).
    pub prefix: String,
    /// Endpoint URL for S3-compatible servers (`https://s3.example.net:8333`); `None` for AWS.
    /// With an endpoint, buckets are addressed by path (`endpoint/bucket/key`).
    pub endpoint: Option<String>,
    /// Region (`us-east-1` unless the server wants another).
    pub region: String,
    /// Where the keys come from.
    pub credentials: S3Credentials,
    /// PEM file of a private CA to trust in addition to the system's roots. TLS is always
    /// verified.
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` endpoint (loopback tests, a trusted link). Off by default.
    pub allow_http: bool,
    /// Local folder for caches (generation catalog, known chunks); default
    /// `$XDG_CACHE_HOME/safekeeping/<repository id>` or `~/.cache/safekeeping/<repository id>`.
    pub cache_dir: Option<PathBuf>,
    /// Retries after the first attempt of a request that failed with a 5xx, a timeout or a
    /// reset connection (exponential backoff from 100 ms to 15 s, within `retry_timeout`).
    pub max_retries: usize,
    /// How long one request may keep being retried before its error is final
    /// ([`DEFAULT_RETRY_TIMEOUT`]).
    pub retry_timeout: std::time::Duration,
    /// S3 object lock: write every object but lock records and markers with a
    /// `COMPLIANCE` retention of this many days (the bucket must have object lock enabled),
    /// and refuse to delete one before its retention ends. Recorded in the repository's
    /// config by `init`, and taken from there when a repository is opened.
    pub object_lock_days: Option<u32>,
}

impl S3Location {
    /// A location with defaults for everything but bucket and prefix.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            endpoint: None,
            region: DEFAULT_REGION.to_string(),
            credentials: S3Credentials::Environment,
            ca_file: None,
            allow_http: false,
            cache_dir: None,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            object_lock_days: None,
        }
    }

    /// `s3://bucket/prefix`, the name users see (never holding credentials).
    pub fn display(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The endpoint as shown in messages.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn endpoint_name(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.region))
    }

    /// The cache folder for a repository with id `repository_id`.
    pub fn cache_dir_for(&self, repository_id: &uuid::Uuid) -> Option<PathBuf> {
        if let Some(d) = &self.cache_dir {
            return Some(d.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("safekeeping").join(repository_id.to_string()))
    }

    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn resolve_credentials(&self) -> io::Result<ResolvedCredentials> {
        let missing = |what: &str| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("repository {}: no S3 credentials: {what}", self.display()),
            )
        };
        match &self.credentials {
            S3Credentials::Environment => {
                let get = |n: &str| {
                    std::env::var(n)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .map(Zeroizing::new)
                };
                Ok(ResolvedCredentials {
                    access_key_id: get("AWS_ACCESS_KEY_ID")
                        .ok_or_else(|| missing("AWS_ACCESS_KEY_ID is not set"))?,
                    secret_access_key: get("AWS_SECRET_ACCESS_KEY")
                        .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY is not set"))?,
                    session_token: get("AWS_SESSION_TOKEN"),
                })
            }
            S3Credentials::File { path, profile } => {
                let profile = profile.as_deref().unwrap_or("default");
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("S3 credentials file {}: {e}", path.display()),
                    )
                })?);
                parse_credentials_file(&text, profile).ok_or_else(|| {
                    missing(&format!(
                        "profile [{profile}] in {} has no aws_access_key_id and \
                         aws_secret_access_key",
                        path.display()
                    ))
                })
            }
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Ok(ResolvedCredentials {
                access_key_id: Zeroizing::new(access_key_id.clone()),
                secret_access_key: Zeroizing::new(secret_access_key.as_str().to_string()),
                session_token: session_token
                    .as_ref()
                    .map(|t| Zeroizing::new(t.as_str().to_string())),
            }),
        }
    }
}

/// Credentials read for one connection; wiped from memory when dropped.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) struct ResolvedCredentials {
    pub access_key_id: Zeroizing<String>,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

/// Reads one profile of an AWS shared credentials file (INI: `[name]` sections, `key = value`
/// lines, `#`/`;` comments). `[profile name]` is accepted as well (the config file's spelling).
fn parse_credentials_file(text: &str, profile: &str) -> Option<ResolvedCredentials> {
    let mut in_section = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = name.strip_prefix("profile ").unwrap_or(name).trim();
            in_section = name == profile;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = Zeroizing::new(v.trim().to_string());
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some(ResolvedCredentials {
        access_key_id: id.filter(|v| !v.is_empty())?,
        secret_access_key: secret.filter(|v| !v.is_empty())?,
        session_token: token.filter(|v| !v.is_empty()),
    })
}

impl RepositoryLocation {
    /// Parses what a user writes for a repository: `s3://BUCKET[/PREFIX]` is an S3 location
    /// with default settings (credentials from the environment, AWS endpoint); anything else
    /// is a local path. The caller then fills in endpoint, region, credentials and TLS
    /// settings from its configuration.
    ///
    /// # Errors
    /// [`crate::Error::InvalidOption`] for an `s3://` URL without a valid bucket name, or with
    /// a user, password, port, query or fragment (credentials never go in the URL).
    pub fn parse(text: &str) -> crate::Result<RepositoryLocation> {
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(RepositoryLocation::Local(PathBuf::from(text)));
        };
        let bad = |why: &str| crate::Error::InvalidOption(format!("repository URL: {why}"));
        if rest.contains(['@', '?', '#']) {
            return Err(bad(
                "s3://BUCKET/PREFIX takes no user, password, query or fragment; credentials \
                 come from the environment or a credentials file",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !valid_bucket {
            return Err(bad(&format!(
                "{bucket:?} is not a valid bucket name (3 to 63 of a-z, 0-9, '-', '.')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        // Keys are used as they are in requests: keep prefixes to characters no store or
        // client encodes differently.
        let plain = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !prefix.is_empty() && (!plain || super::check_key(prefix).is_err()) {
            return Err(bad(&format!(
                "bad prefix {prefix:?} (use a-z, A-Z, 0-9, '-', '_', '.' and '/')"
            )));
        }
        Ok(RepositoryLocation::S3(S3Location::new(bucket, prefix)))
    }

    /// The name users see: the folder, or `s3://bucket/prefix`.
    pub fn display(&self) -> String {
        match self {
            RepositoryLocation::Local(p) => p.display().to_string(),
            RepositoryLocation::S3(s) => s.display(),
        }
    }

    /// Makes the backend for this location (connects lazily: nothing is sent yet).
    ///
    /// # Errors
    /// [`crate::Error::Io`] for missing credentials or bad TLS settings;
    /// [`crate::Error::InvalidOption`] for S3 in a build without the `s3` feature.
    pub fn backend(&self) -> crate::Result<Arc<dyn Backend>> {
        match self {
            RepositoryLocation::Local(p) => Ok(Arc::new(LocalBackend::new(p))),
            #[cfg(feature = "s3")]
            RepositoryLocation::S3(s) => Ok(Arc::new(super::S3Backend::connect(s).map_err(
                |source| crate::Error::Io {
                    op: "connect to",
                    path: PathBuf::from(s.display()),
                    source,
                },
            )?)),
            #[cfg(not(feature = "s3"))]
            RepositoryLocation::S3(s) => Err(crate::Error::InvalidOption(format!(
                "{}: this build has no S3 support (feature `s3` of repository-format)",
                s.display()
            ))),
        }
    }

    /// The local folder, for a local location.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            RepositoryLocation::Local(p) => Some(p),
            RepositoryLocation::S3(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_paths() {
        assert_eq!(
            RepositoryLocation::parse("/srv/repo").unwrap(),
            RepositoryLocation::Local("/srv/repo".into())
        );
        let RepositoryLocation::S3(s) = RepositoryLocation::parse("s3://backups/site-a/").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("backups", "site-a")
        );
        assert_eq!(s.display(), "s3://backups/site-a");
        assert!(!s.allow_http);
        for bad in [
            "s3://a",
            "s3://Bad_Bucket/x",
            "s3://user:pw@bucket/x",
            "s3://bucket/x?a=b",
            "s3://bucket/a/../b",
            "s3://bucket/with space",
        ] {
            assert!(RepositoryLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_file_profiles_and_redaction() {
        let text = "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK1\n\n\
                    # comment\n[profile lab]\naws_access_key_id=AK2\naws_secret_access_key=SK2\n\
                    aws_session_token = T2\n[empty]\naws_access_key_id = X\n";
        let d = parse_credentials_file(text, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.secret_access_key.as_str()),
            ("AK1", "SK1")
        );
        assert!(d.session_token.is_none());
        let l = parse_credentials_file(text, "lab").unwrap();
        assert_eq!(l.session_token.as_deref().map(String::as_str), Some("T2"));
        assert!(parse_credentials_file(text, "empty").is_none());
        assert!(parse_credentials_file(text, "nope").is_none());
        let mut loc = S3Location::new("bucket", "p");
        loc.credentials = S3Credentials::Static {
            access_key_id: "AKIDSECRETLOOKING".into(),
            secret_access_key: Arc::new(Zeroizing::new("very-secret".into())),
            session_token: None,
        };
        let dbg = format!("{loc:?}");
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("AKIDSECRETLOOKING"),
            "{dbg}"
        );
    }
}
