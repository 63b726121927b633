//! Notifications: `[notify] webhook` receives a JSON summary of a backup run (or `run JOB`)
//! by HTTP POST, on failure or always.
//!
//! A notification never changes the run's exit code and never holds the run up for longer
//! than `timeout_seconds` in total: attempts are retried (a 5xx, a timeout, a refused
//! connection) within that budget, then the failure is logged and the run ends as it would
//! have. TLS is verified (the system's web PKI roots, or `ca_file`); plain `http://` needs
//! `allow_http = true`. The URL may carry a token (chat webhooks do), so only its host is
//! ever logged.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `[notify]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The URL the summary is posted to (`https://...`).
    pub webhook: String,
    /// When to post: `failure` (default: a run that did not fully succeed) or `always`.
    #[serde(default)]
    pub on: NotifyOn,
    /// The whole notification's time budget, retries included (default 10; 1 to 300).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// PEM file of a private CA the webhook's certificate is verified against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` webhook (the summary travels unprotected): an explicit opt-out.
    #[serde(default)]
    pub allow_http: bool,
}

fn default_timeout() -> u64 {
    10
}

/// `[notify] on`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// Only runs that did not fully succeed (exit 1 or 3).
    #[default]
    Failure,
    /// Every run.
    Always,
}

/// Bounds of `timeout_seconds`: a notification must not hold a nightly run up for long.
const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=300;

impl NotifyConfig {
    /// Checks the section as the configuration is loaded.
    ///
    /// # Errors
    /// A URL that is not http(s), `http://` without `allow_http`, a timeout out of range.
    pub fn check(&self) -> Result<(), String> {
        let url = &self.webhook;
        if url.starts_with("http://") {
            if !self.allow_http {
                return Err(format!(
                    "webhook {} is plain http: use https, or set allow_http = true to send the summary unprotected",
                    host_of(url)
                ));
            }
        } else if !url.starts_with("https://") {
            return Err("webhook must be an https:// URL".into());
        }
        if !TIMEOUT_RANGE.contains(&self.timeout_seconds) {
            return Err(format!(
                "timeout_seconds = {} is outside {}..={}",
                self.timeout_seconds,
                TIMEOUT_RANGE.start(),
                TIMEOUT_RANGE.end()
            ));
        }
        Ok(())
    }

    /// Whether a run with this exit code is notified.
    pub fn wants(&self, exit_code: u8) -> bool {
        self.on == NotifyOn::Always || exit_code != 0
    }
}

/// The scheme and host of a URL, never its path or query (which may hold a token).
fn host_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // user:password@host never reaches a log either.
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

/// Posts `summary` to the webhook if the configuration wants this run notified. Never fails:
/// every problem is logged, and the whole call returns within `timeout_seconds`.
pub async fn send(config: &NotifyConfig, exit_code: u8, summary: &serde_json::Value) {
    if !config.wants(exit_code) {
        return;
    }
    let budget = Duration::from_secs(config.timeout_seconds);
    let host = host_of(&config.webhook);
    match tokio::time::timeout(budget, post_with_retries(config, summary, budget)).await {
        Ok(Ok(attempts)) => tracing::info!(webhook = %host, attempts, "notification sent"),
        Ok(Err(e)) => tracing::error!(webhook = %host, "notification not sent: {e}"),
        Err(_) => tracing::error!(
            webhook = %host,
            "notification not sent: no success within timeout_seconds = {}",
            config.timeout_seconds
        ),
    }
}

/// How many attempts a notification gets at most within its budget.
const ATTEMPTS: u32 = 4;

async fn post_with_retries(
    config: &NotifyConfig,
    summary: &serde_json::Value,
    budget: Duration,
) -> Result<u32, String> {
    let client = client(config)?;
    let body = serde_json::to_vec(summary).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let left = budget.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        let result = client
            .post(&config.webhook)
            .header("content-type", "application/json")
            .timeout(left)
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            // A 4xx will not get better by trying again: the URL or its token is wrong.
            Ok(r) if r.status().is_client_error() => {
                return Err(format!("the webhook answered {}", r.status()))
            }
            Ok(r) => last = format!("the webhook answered {}", r.status()),
            // reqwest's error text names the URL, which may hold a token: keep the kind only.
            Err(e) => last = describe(&e),
        }
        if attempt == ATTEMPTS {
            break;
        }
        tracing::warn!(webhook = %host_of(&config.webhook), attempt, "notification failed: {last}; retrying");
        let pause =
            Duration::from_millis(250 << attempt).min(budget.saturating_sub(start.elapsed()));
        tokio::time::sleep(pause).await;
    }
    Err(last)
}

/// What went wrong, without the URL reqwest's own message carries: the kind, and the
/// innermost cause (a refused connection, an untrusted certificate), which names no URL.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_string(),
    }
}

fn client(config: &NotifyConfig) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!config.allow_http);
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| format!("cannot set up HTTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<NotifyConfig, String> {
        let c: NotifyConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    #[test]
    fn http_needs_an_explicit_opt_out_and_the_timeout_is_bounded() {
        let c = cfg("webhook = \"https://hooks.example.net/x?token=s3cret\"").unwrap();
        assert_eq!(c.on, NotifyOn::Failure);
        assert_eq!(c.timeout_seconds, 10);
        assert!(!c.wants(0) && c.wants(1) && c.wants(3));
        let e = cfg("webhook = \"http://h.example/t0ken\"").unwrap_err();
        assert!(e.contains("allow_http") && !e.contains("t0ken"), "{e}");
        assert!(
            cfg("webhook = \"http://h\"\nallow_http = true\non = \"always\"")
                .unwrap()
                .wants(0)
        );
        assert!(cfg("webhook = \"ftp://h\"").is_err());
        assert!(cfg("webhook = \"https://h\"\ntimeout_seconds = 0").is_err());
        assert!(cfg("webhook = \"https://h\"\non = \"sometimes\"").is_err());
    }

    #[test]
    fn only_the_host_is_logged() {
        assert_eq!(
            host_of("https://user:pw@hooks.example.net:8443/services/T0KEN?x=1"),
            "https://hooks.example.net:8443"
        );
    }

    #[tokio::test]
    async fn a_dead_webhook_returns_within_the_budget() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = cfg(&format!(
            "webhook = \"http://127.0.0.1:{port}/hook\"\nallow_http = true\ntimeout_seconds = 2"
        ))
        .unwrap();
        let r = post_with_retries(&c, &serde_json::json!({}), Duration::from_secs(2)).await;
        let e = r.unwrap_err();
        assert!(e.starts_with("cannot connect"), "{e}");
        assert!(!e.contains("/hook"), "no URL in the message: {e}");
    }
}
