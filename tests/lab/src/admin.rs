//! The lab's admin endpoints (`/lab/...` on the simulator), authenticated with the lab
//! password and TLS-verified against the lab's own certificate.

use std::fs;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::lab_dir::LabDir;
use crate::server::ServerInfo;

/// A client for one lab's admin endpoints.
pub struct Admin {
    base: String,
    password: String,
    http: reqwest::blocking::Client,
}

impl Admin {
    /// Connects to the lab in `dir` (reads its password, certificate and port).
    pub fn open(dir: &LabDir, info: &ServerInfo) -> Result<Admin> {
        let password = read_password(dir)?;
        let pem =
            fs::read(dir.cert()).with_context(|| format!("reading {}", dir.cert().display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("parsing {}", dir.cert().display()))?;
        let http = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(600))
            .build()
            .context("building the HTTP client")?;
        Ok(Admin {
            base: format!("https://127.0.0.1:{}/lab", info.port),
            password,
            http,
        })
    }

    /// GET `/lab/<path>`.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let req = self
            .http
            .get(format!("{}/{path}", self.base))
            .query(query)
            .header("X-Lab-Password", &self.password);
        Self::finish(path, req)
    }

    /// POST `/lab/<path>` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let req = self
            .http
            .post(format!("{}/{path}", self.base))
            .header("X-Lab-Password", &self.password)
            .json(body);
        Self::finish(path, req)
    }

    fn finish(path: &str, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let res = req
            .send()
            .with_context(|| format!("calling the lab's {path} endpoint"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .with_context(|| format!("reading the lab's {path} answer"))?;
        if !status.is_success() {
            let msg = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            bail!("{path}: {msg}");
        }
        Ok(body)
    }
}

/// Reads the lab password (one trailing newline trimmed).
pub fn read_password(dir: &LabDir) -> Result<String> {
    let raw = fs::read_to_string(dir.password())
        .with_context(|| format!("reading {}", dir.password().display()))?;
    Ok(raw.strip_suffix('\n').unwrap_or(&raw).to_string())
}
