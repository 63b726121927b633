//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::fault::FaultKind;

/// Everything that can go wrong talking to vCenter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a VIM fault (a SOAP fault or a failed task).
    #[error("{kind}: {fault_string}")]
    Fault {
        /// The fault's type.
        kind: FaultKind,
        /// The server's message.
        fault_string: String,
        /// The fault object as XML, for faults whose fields matter to the caller.
        detail_xml: Option<String>,
    },
    /// The server's certificate did not match the pinned SHA-256 fingerprint.
    #[error("TLS certificate of {host} does not match the pinned SHA-256 fingerprint {expected}; the server presented {presented_sha256}")]
    CertificateMismatch {
        /// The server host.
        host: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint of what the server presented (`AA:BB:...`).
        presented_sha256: String,
    },
    /// TLS setup or verification failed for another reason.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection failed or timed out.
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The server answered with an HTTP error that is not a SOAP fault.
    #[error("HTTP {status} from {url}: {body}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The URL called.
        url: String,
        /// The start of the response body.
        body: String,
    },
    /// A response is not well-formed XML.
    #[error("malformed XML: {0}")]
    Xml(String),
    /// A response lacks something the client needs.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// An inventory object was looked up by name and not found.
    #[error("unknown {what} `{name}`; known: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownObject {
        /// What was looked for (`datastore`, `virtual machine`, ...).
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// A name matched several objects.
    #[error("{what} name `{name}` is ambiguous: {count} objects have it")]
    Ambiguous {
        /// What was looked for.
        what: &'static str,
        /// The name asked for.
        name: String,
        /// How many matched.
        count: usize,
    },
    /// Waiting for something took longer than allowed.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The time allowed.
        after: Duration,
    },
    /// An argument given to the client is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A response or file is larger than the limit for reading it (checked against the
    /// announced Content-Length before reading, and while streaming).
    #[error("{what} is larger than the limit of {limit} bytes{}", announced_suffix(*.announced))]
    TooLarge {
        /// What was read: `datastore file [ds1] vm/vm.nvram`, or the SOAP method and URL.
        what: String,
        /// The limit in bytes.
        limit: u64,
        /// The length the server announced (Content-Length), when it did.
        announced: Option<u64>,
    },
    /// The server URL is plain `http://` and the caller did not allow it.
    #[error("server URL `{url}` uses plain HTTP: the vCenter password and session would travel in clear text; use https:// (or, only for a test server on a trusted network, allow plain HTTP explicitly)")]
    PlainHttp {
        /// The URL refused.
        url: String,
    },
    /// vCenter's Security Token Service refused the user name or password (SSO login).
    #[error("the vCenter single sign-on service ({url}) refused the login of user `{user}`: {message} (wrong user or password)")]
    SsoRefused {
        /// The user name sent.
        user: String,
        /// The STS endpoint.
        url: String,
        /// The STS's own message (`Invalid credentials`); it never contains the password.
        message: String,
    },
    /// A call needs a session and the client is not logged in.
    #[error("not logged in")]
    NotLoggedIn,
    /// A `QueryChangedDiskAreas` answer does not tile the disk (gap, overlap, area outside the
    /// disk or the reply, no progress). Unlike a refused change id (a [`Error::Fault`]), a full
    /// read is not the cure: the server's change tracking answer itself is wrong.
    #[error(transparent)]
    ChangedAreas(#[from] crate::changed_areas::ChangedAreasError),
}

fn announced_suffix(announced: Option<u64>) -> String {
    announced
        .map(|n| format!(" (the server announced {n} bytes)"))
        .unwrap_or_default()
}

impl Error {
    /// The fault kind, when this is a VIM fault.
    pub fn fault_kind(&self) -> Option<&FaultKind> {
        match self {
            Error::Fault { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Whether this is a VIM fault of `kind`.
    pub fn is_fault(&self, kind: &FaultKind) -> bool {
        self.fault_kind() == Some(kind)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
