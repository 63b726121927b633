//! The TOML configuration file: where vCenter is and how to trust it, where VDDK lives,
//! where the repository is, and defaults for parallelism, locking and compression.
//!
//! The password is never in the file itself nor on the command line: it comes from
//! `SAFEKEEPING_PASSWORD` or from `vcenter.password_file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use repository_format::{RepositoryLocation, S3Credentials};
use serde::Deserialize;
use thiserror::Error;
use vim_client::Secret;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "SAFEKEEPING_CONFIG";
/// Environment variable holding the vCenter password (takes precedence over `password_file`).
pub const PASSWORD_ENV: &str = "SAFEKEEPING_PASSWORD";
/// Environment variable holding the repository passphrase (takes precedence over
/// `repository.passphrase_file`).
pub const PASSPHRASE_ENV: &str = "SAFEKEEPING_REPOSITORY_PASSPHRASE";
/// The shorter name of [`PASSPHRASE_ENV`], also accepted.
pub const PASSPHRASE_ENV_SHORT: &str = "SAFEKEEPING_PASSPHRASE";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach vCenter.
    pub vcenter: VcenterConfig,
    /// Further vCenters by name (`[vcenters.NAME]`, the same keys as `[vcenter]`):
    /// `--vcenter NAME` (or a job's `vcenter = "NAME"`) makes a run use one, and
    /// `restore --to-vcenter NAME` restores into one (see [`Config::select_vcenter`]).
    #[serde(default)]
    pub vcenters: BTreeMap<String, VcenterConfig>,
    /// The name of the vCenter in [`Config::vcenter`] when it came from `[vcenters.NAME]`;
    /// `None` for `[vcenter]`.
    #[serde(skip)]
    pub vcenter_name: Option<String>,
    /// Whether `--vcenter` (or a job's `vcenter`) named the vCenter, `default` included: a
    /// restore then looks only at backups taken from it.
    #[serde(skip)]
    pub vcenter_pinned: bool,
    /// The instance uuid the vCenter is expected to have (a restore into the vCenter its
    /// generation came from); the login warns when the server has another.
    #[serde(skip)]
    pub expected_vcenter_uuid: Option<String>,
    /// `[vcenter]` as read, kept once another is selected (for [`Config::with_vcenter`]).
    #[serde(skip)]
    default_vcenter: Option<Box<VcenterConfig>>,
    /// Where VDDK is; needed by backup and restore only.
    #[serde(default)]
    pub vddk: Option<VddkConfig>,
    /// Where the repository is: the one every command uses unless `--repo NAME` picks one of
    /// [`Config::repositories`] (then this field holds that one, see [`Config::select`]).
    pub repository: RepositoryConfig,
    /// Further repositories by name (`[repositories.NAME]`, the same keys as `[repository]`):
    /// `--repo NAME` makes a command use one, `copy --to NAME` copies into one.
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Defaults for options that the command line may override.
    #[serde(default)]
    pub defaults: Defaults,
    /// Per-target settings (`[targets."vm:NAME"]`, `[targets."tag:CATEGORY/NAME"]`).
    #[serde(default)]
    pub targets: BTreeMap<String, crate::target_settings::TargetSettings>,
    /// VSS options of quiesced snapshots of Windows guests (`[vss]`); a target's
    /// `[targets."…".vss]` overrides them field by field.
    #[serde(default)]
    pub vss: crate::target_settings::VssSettings,
    /// Named backup jobs (`[jobs.NAME]`) that `safekeeping run NAME` runs.
    #[serde(default)]
    pub jobs: BTreeMap<String, crate::jobs::JobConfig>,
    /// Where to report runs (`[notify]`).
    #[serde(default)]
    pub notify: Option<crate::notify::NotifyConfig>,
    /// Resource limits of a run (`[performance]`).
    #[serde(default)]
    pub performance: Performance,
    /// The name of the repository in [`Config::repository`] when it came from
    /// `[repositories.NAME]`; `None` for `[repository]`.
    #[serde(skip)]
    pub repository_name: Option<String>,
    /// Set on the configuration of a second repository a command opens beside the current
    /// one (the destination of `copy`, the key source of `repo init --copy-key-from`): its
    /// own `passphrase_file` then wins over `SAFEKEEPING_PASSPHRASE`, which is the current
    /// repository's.
    #[serde(skip)]
    secondary: bool,
}

/// `[vcenter]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcenterConfig {
    /// SDK URL, e.g. `https://vcenter.example.com/sdk`.
    pub url: String,
    /// User name.
    pub user: String,
    /// File holding the password (first line, trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the server certificate, `AA:BB:..`.
    #[serde(default)]
    pub thumbprint_sha256: Option<String>,
    /// PEM file of CA certificates to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Explicit opt-out of certificate verification.
    #[serde(default)]
    pub insecure: bool,
    /// Which API manages first class disks: `auto` (VSLM on vCenter 7 and later, VIM before),
    /// `vim` or `vslm`. `SAFEKEEPING_FCD_API` overrides it.
    #[serde(default)]
    pub fcd_api: FcdApiChoice,
    /// How to log in: `password` (`SessionManager.Login`, the default) or `sso` (a SAML
    /// bearer token from the vCenter's STS for the same user and password, then
    /// `LoginByToken`).
    #[serde(default)]
    pub auth: AuthMethod,
    /// With `auth = "sso"`: the Security Token Service when it is not at `/sts/STSService`
    /// on the same server (`https://vc/sts/STSService/vsphere.local`, an external PSC).
    #[serde(default)]
    pub sts_url: Option<String>,
}

/// `[vcenter] auth`: how safekeeping logs in to vCenter. In both, VDDK connects with the
/// session that login opened, never with the password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// User and password to `SessionManager.Login`.
    #[default]
    Password,
    /// User and password to the vCenter Security Token Service (`/sts/STSService`), which
    /// issues a SAML bearer token; the token logs in with `SessionManager.LoginByToken`.
    Sso,
}

/// `[vcenter] fcd_api`: the first class disk API to use.
pub use vim_client::FcdApiChoice;

/// `[vddk]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VddkConfig {
    /// Directory containing `lib64/libvixDiskLib.so.8`.
    pub libdir: PathBuf,
    /// VDDK configuration file passed to `VixDiskLib_InitEx`.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Transport modes in order of preference, `:`-separated (`nbdssl:nbd`).
    #[serde(default)]
    pub transports: Option<String>,
}

/// `[repository]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Directory of a repository in a local (or mounted) folder.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3://BUCKET/PREFIX`: a repository in S3-compatible object storage (instead of `path`).
    #[serde(default)]
    pub url: Option<String>,
    /// S3 endpoint of a non-AWS server (`https://s3.example.net:8333`); buckets are then
    /// addressed by path.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// AWS shared credentials file; without it, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` from the environment. Keys never go
    /// into this file or onto the command line.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Profile (section) of `credentials_file` (default `default`).
    #[serde(default)]
    pub profile: Option<String>,
    /// PEM file of a private CA the S3 endpoint's certificate is verified against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` endpoint (the keys' signatures and the data, encrypted or not,
    /// travel unprotected): an explicit opt-out, for loopback tests or a trusted link.
    #[serde(default)]
    pub allow_http: bool,
    /// Local folder for the S3 repository's caches (default under `~/.cache/safekeeping`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Chunk uploads in flight to S3 (default 16; 1 to 256).
    #[serde(default)]
    pub upload_concurrency: Option<usize>,
    /// S3: retries of a request that failed with a 5xx, a timeout or a reset connection
    /// (default 10; 0 to 100).
    #[serde(default)]
    pub max_retries: Option<usize>,
    /// S3: how long one request may keep being retried, in seconds (default 180; 1 to 3600).
    #[serde(default)]
    pub retry_timeout_seconds: Option<u64>,
    /// Lock lifetime in seconds: a holder renews its lock every third of it, and a lock not
    /// renewed for this long is stale (default 300; 30 to 86400). Every host using the
    /// repository should use the same value.
    #[serde(default)]
    pub lock_ttl_seconds: Option<u64>,
    /// File holding the passphrase of an encrypted repository (or
    /// `SAFEKEEPING_REPOSITORY_PASSPHRASE`; never on the command line).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
}

/// `[defaults]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Targets backed up at the same time.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// VDDK connections open at once across the whole run: each disk being read holds one, so
    /// this bounds the disks read concurrently (within and across targets) and the NFC load
    /// on the ESXi hosts. Each also holds about 15 MiB of chunk buffers.
    #[serde(default = "default_max_vddk_connections")]
    pub max_vddk_connections: usize,
    /// The file the BIOS uuid of the machine safekeeping runs on is read from, to leave its
    /// own VM out of a selection (default `/sys/class/dmi/id/product_uuid`;
    /// `SAFEKEEPING_PRODUCT_UUID_FILE` overrides it).
    #[serde(default)]
    pub product_uuid_file: Option<PathBuf>,
    /// How long to wait for a repository or target lock before failing.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_seconds: u64,
    /// zstd level for new chunks: the repository's level at `repo init`, and the level of a
    /// backup's new chunks unless the target's section sets its own `compression_level`.
    #[serde(default = "default_compression")]
    pub compression_level: i32,
    /// Longest time a guest may take to quiesce, in seconds (a target's section may set its
    /// own); unset leaves it to vSphere.
    #[serde(default)]
    pub quiesce_timeout_seconds: Option<u64>,
}

fn default_parallel() -> usize {
    2
}
fn default_max_vddk_connections() -> usize {
    8
}
fn default_lock_wait() -> u64 {
    60
}
fn default_compression() -> i32 {
    1
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            parallel: default_parallel(),
            max_vddk_connections: default_max_vddk_connections(),
            product_uuid_file: None,
            lock_wait_seconds: default_lock_wait(),
            compression_level: default_compression(),
            quiesce_timeout_seconds: None,
        }
    }
}

/// `[performance]`: what a run may use of the machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// Memory for chunks in flight (read, being hashed and compressed, being written), in MiB,
    /// shared by every disk a run backs up at once (default 96, at least 16; a restore has its
    /// own, `restore_memory_mib`). Each disk being read is guaranteed a few chunks; beyond
    /// that, disks share what is left.
    #[serde(default = "default_chunk_memory_mib")]
    pub chunk_memory_mib: u64,
    /// The same limit for a restore, in MiB (default 200, at least 16). Each disk being
    /// restored takes a fixed share (`restore::disk::WriteShape`: about 70 MiB alone, 30 MiB
    /// beside others at 2 MiB chunks) and waits for it. Larger than a backup's because a
    /// restore process holds little else (an 8-disk restore: 193 MiB resident with 240 MiB of
    /// shares), and because a restore over a transport with latency is bound by how many
    /// disks write at once.
    #[serde(default = "default_restore_memory_mib")]
    pub restore_memory_mib: u64,
}

/// The smallest `[performance] chunk_memory_mib`: a few disks' minimums at 1 MiB chunks.
pub const MIN_CHUNK_MEMORY_MIB: u64 = 16;

fn default_chunk_memory_mib() -> u64 {
    repository_format::DEFAULT_MEMORY_BUDGET >> 20
}

/// The default `[performance] restore_memory_mib`: six disks' shares beside each other at
/// 2 MiB chunks, the whole process under 256 MiB.
pub const DEFAULT_RESTORE_MEMORY_MIB: u64 = 200;

fn default_restore_memory_mib() -> u64 {
    DEFAULT_RESTORE_MEMORY_MIB
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            chunk_memory_mib: default_chunk_memory_mib(),
            restore_memory_mib: default_restore_memory_mib(),
        }
    }
}

impl Performance {
    /// The restore's chunk memory limit in bytes.
    pub fn restore_memory_bytes(&self) -> u64 {
        self.restore_memory_mib.saturating_mul(1 << 20)
    }

    /// The chunk memory limit in bytes.
    pub fn chunk_memory_bytes(&self) -> u64 {
        self.chunk_memory_mib.saturating_mul(1 << 20)
    }
}

/// What can go wrong reading the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// No `--config`, no `SAFEKEEPING_CONFIG`, and no file at the XDG default.
    #[error("no configuration file: pass --config FILE, set SAFEKEEPING_CONFIG, or create {0}")]
    NotFound(PathBuf),
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value is present but makes no sense.
    #[error("invalid configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which value and why.
        message: String,
    },
    /// Neither `SAFEKEEPING_PASSWORD` nor `password_file`.
    #[error("no vCenter password: set vcenter.password_file in the configuration or SAFEKEEPING_PASSWORD")]
    NoPassword,
    /// The password file could not be read.
    #[error("cannot read password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The repository passphrase file could not be read.
    #[error("cannot read the repository passphrase file {path}: {source}")]
    PassphraseFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `[vddk]` section is missing but the command needs VDDK.
    #[error("the configuration has no [vddk] section, which backup and restore need")]
    NoVddk,
}

/// Checks one `[vcenter]` or `[vcenters.NAME]` section (`label` names it in messages).
fn check_vcenter(label: &str, v: &VcenterConfig) -> Result<(), String> {
    if !(v.url.starts_with("https://") || v.url.starts_with("http://")) {
        return Err(format!("{label}.url `{}` is not an http(s) URL", v.url));
    }
    if v.thumbprint_sha256.is_none()
        && v.ca_file.is_none()
        && !v.insecure
        && v.url.starts_with("https://")
    {
        return Err(format!(
            "{label} needs thumbprint_sha256 or ca_file to verify the server \
             (insecure = true turns verification off explicitly)"
        ));
    }
    if let Some(sts) = &v.sts_url {
        if !(sts.starts_with("https://") || (v.insecure && sts.starts_with("http://"))) {
            return Err(format!("{label}.sts_url `{sts}` is not an https:// URL"));
        }
    }
    if let Some(t) = &v.thumbprint_sha256 {
        if parse_thumbprint(t).is_none() {
            return Err(format!(
                "{label}.thumbprint_sha256 `{t}` is not 32 hex bytes separated by colons"
            ));
        }
    }
    Ok(())
}

/// The configuration file used when neither `--config` nor `SAFEKEEPING_CONFIG` is given:
/// `$XDG_CONFIG_HOME/safekeeping/config.toml`, else `~/.config/safekeeping/config.toml`.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("safekeeping").join("config.toml")
}

/// Bounds of the `[repository]` knobs: beyond them a value is a typo, not a choice.
const UPLOAD_CONCURRENCY_RANGE: std::ops::RangeInclusive<usize> = 1..=256;
const MAX_RETRIES_RANGE: std::ops::RangeInclusive<usize> = 0..=100;
const RETRY_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// Below 30 s a heartbeat (every third) can be late on a slow store and another host would
/// take the lock of a live holder; above a day a crashed holder blocks everyone for too long.
const LOCK_TTL_RANGE: std::ops::RangeInclusive<u64> = 30..=86_400;

impl RepositoryConfig {
    /// Where this repository lives: `path` (a folder) or `url` (`s3://...`, with the S3 keys
    /// beside it); exactly one of the two. The knobs are checked here too.
    ///
    /// # Errors
    /// Neither or both given, a malformed URL, S3 keys beside a folder, a knob out of range.
    pub fn location(&self) -> Result<RepositoryLocation, String> {
        let r = self;
        r.check_knobs()?;
        match (&r.path, &r.url) {
            (Some(p), None) => {
                if r.endpoint.is_some() || r.credentials_file.is_some() || r.allow_http {
                    return Err("endpoint, credentials_file and allow_http go with url = \"s3://...\", not with path".into());
                }
                if r.max_retries.is_some()
                    || r.retry_timeout_seconds.is_some()
                    || r.upload_concurrency.is_some()
                {
                    return Err("max_retries, retry_timeout_seconds and upload_concurrency go with url = \"s3://...\", not with path".into());
                }
                Ok(RepositoryLocation::Local(p.clone()))
            }
            (None, Some(url)) => {
                if !url.starts_with("s3://") {
                    return Err(format!(
                        "url `{url}` is not s3://BUCKET/PREFIX (a folder is given as path = ...)"
                    ));
                }
                let mut location = RepositoryLocation::parse(url).map_err(|e| e.to_string())?;
                if let RepositoryLocation::S3(s3) = &mut location {
                    s3.endpoint = r.endpoint.clone();
                    if let Some(region) = &r.region {
                        s3.region = region.clone();
                    }
                    s3.credentials = match &r.credentials_file {
                        Some(path) => S3Credentials::File {
                            path: path.clone(),
                            profile: r.profile.clone(),
                        },
                        None => S3Credentials::Environment,
                    };
                    s3.ca_file = r.ca_file.clone();
                    s3.allow_http = r.allow_http;
                    s3.cache_dir = r.cache_dir.clone();
                    if let Some(n) = r.max_retries {
                        s3.max_retries = n;
                    }
                    if let Some(t) = r.retry_timeout_seconds {
                        s3.retry_timeout = Duration::from_secs(t);
                    }
                }
                Ok(location)
            }
            (None, None) => Err("needs path = \"/folder\" or url = \"s3://BUCKET/PREFIX\"".into()),
            (Some(_), Some(_)) => Err("give path or url, not both".into()),
        }
    }

    /// The lock lifetime, when configured.
    pub fn lock_ttl(&self) -> Option<Duration> {
        self.lock_ttl_seconds.map(Duration::from_secs)
    }

    fn check_knobs(&self) -> Result<(), String> {
        fn within<T: PartialOrd + std::fmt::Display>(
            name: &str,
            value: Option<T>,
            range: &std::ops::RangeInclusive<T>,
            unit: &str,
        ) -> Result<(), String> {
            match value {
                Some(v) if !range.contains(&v) => Err(format!(
                    "{name} = {v} is outside {}..={}{unit}",
                    range.start(),
                    range.end()
                )),
                _ => Ok(()),
            }
        }
        within(
            "upload_concurrency",
            self.upload_concurrency,
            &UPLOAD_CONCURRENCY_RANGE,
            "",
        )?;
        within("max_retries", self.max_retries, &MAX_RETRIES_RANGE, "")?;
        within(
            "retry_timeout_seconds",
            self.retry_timeout_seconds,
            &RETRY_TIMEOUT_RANGE,
            " seconds",
        )?;
        within(
            "lock_ttl_seconds",
            self.lock_ttl_seconds,
            &LOCK_TTL_RANGE,
            " seconds",
        )
    }
}

/// What can go wrong picking a named repository.
#[derive(Debug, Error)]
#[error("no repository named `{name}` in the configuration: {}", describe_names(.known))]
pub struct UnknownRepository {
    /// The name asked for.
    pub name: String,
    /// The names configured (`[repositories.NAME]`).
    pub known: Vec<String>,
}

fn describe_names(known: &[String]) -> String {
    if known.is_empty() {
        "it has no [repositories.NAME] tables, only [repository]".into()
    } else {
        format!("the configured names are {}", known.join(", "))
    }
}

/// The name that stands for `[vcenter]` where a vCenter is named (`--vcenter`,
/// `--to-vcenter`, a job's `vcenter`); no `[vcenters.NAME]` may take it.
pub const DEFAULT_VCENTER: &str = "default";

/// What can go wrong picking a named vCenter.
#[derive(Debug, Error)]
#[error("no vCenter named `{name}` in the configuration: {}", describe_vcenters(.known))]
pub struct UnknownVcenter {
    /// The name asked for.
    pub name: String,
    /// The names configured (`[vcenters.NAME]`).
    pub known: Vec<String>,
}

fn describe_vcenters(known: &[String]) -> String {
    if known.is_empty() {
        "it has no [vcenters.NAME] tables, only [vcenter] (`default`)".into()
    } else {
        format!(
            "the configured names are {} (and `default` for [vcenter])",
            known.join(", ")
        )
    }
}

impl Config {
    /// Makes `[vcenters.NAME]` the vCenter this run talks to (`--vcenter NAME`).
    ///
    /// # Errors
    /// [`UnknownVcenter`] listing the configured names.
    pub fn select_vcenter(&mut self, name: &str) -> Result<(), UnknownVcenter> {
        if name == DEFAULT_VCENTER {
            *self = self.with_vcenter(None)?;
            self.vcenter_pinned = true;
            return Ok(());
        }
        let chosen = self
            .vcenters
            .get(name)
            .ok_or_else(|| UnknownVcenter {
                name: name.to_string(),
                known: self.vcenters.keys().cloned().collect(),
            })?
            .clone();
        self.vcenter = chosen;
        self.vcenter_name = Some(name.to_string());
        self.vcenter_pinned = true;
        Ok(())
    }

    /// This configuration with `[vcenters.NAME]` as its vCenter (`None`: the default
    /// `[vcenter]`, whatever was selected before).
    ///
    /// # Errors
    /// [`UnknownVcenter`] listing the configured names.
    pub fn with_vcenter(&self, name: Option<&str>) -> Result<Config, UnknownVcenter> {
        let mut other = self.clone();
        match name {
            Some(n) => other.select_vcenter(n)?,
            None => {
                if let Some(default) = &self.default_vcenter {
                    other.vcenter = (**default).clone();
                }
                other.vcenter_name = None;
                other.vcenter_pinned = false;
            }
        }
        Ok(other)
    }

    /// The vCenter whose backups a repository lookup is limited to: the one `--vcenter`
    /// named (`default` for `[vcenter]`), else `None` (any vCenter).
    pub fn source_vcenter(&self) -> Option<String> {
        self.vcenter_pinned.then(|| {
            self.vcenter_name
                .clone()
                .unwrap_or_else(|| DEFAULT_VCENTER.to_string())
        })
    }

    /// How the current vCenter is named in messages: `[vcenter]` or `[vcenters.NAME]`.
    pub fn vcenter_label(&self) -> String {
        match &self.vcenter_name {
            Some(n) => format!("[vcenters.{n}]"),
            None => "[vcenter]".into(),
        }
    }

    /// Where the repository lives: `[repository] path` (a folder) or `url` (`s3://...`, with
    /// the S3 keys beside it); exactly one of the two.
    ///
    /// # Errors
    /// Neither or both given, a malformed URL, S3 keys beside a folder.
    pub fn repository_location(&self) -> Result<RepositoryLocation, String> {
        self.repository.location()
    }

    /// How the current repository is named in messages: `[repository]` or
    /// `[repositories.NAME]`.
    pub fn repository_label(&self) -> String {
        match &self.repository_name {
            Some(n) => format!("[repositories.{n}]"),
            None => "[repository]".into(),
        }
    }

    /// Makes `[repositories.NAME]` the repository every command uses (`--repo NAME`).
    ///
    /// # Errors
    /// [`UnknownRepository`] listing the configured names.
    pub fn select(&mut self, name: &str) -> Result<(), UnknownRepository> {
        let chosen = self
            .repositories
            .get(name)
            .ok_or_else(|| UnknownRepository {
                name: name.to_string(),
                known: self.repositories.keys().cloned().collect(),
            })?
            .clone();
        self.repository = chosen;
        self.repository_name = Some(name.to_string());
        Ok(())
    }

    /// This configuration with `[repositories.NAME]` as its repository, for a second
    /// repository beside the current one (its own `passphrase_file` comes before
    /// `SAFEKEEPING_PASSPHRASE`).
    ///
    /// # Errors
    /// [`UnknownRepository`] listing the configured names.
    pub fn named(&self, name: &str) -> Result<Config, UnknownRepository> {
        let mut other = self.clone();
        other.select(name)?;
        other.secondary = true;
        Ok(other)
    }

    /// Loads the configuration from `explicit` (the `--config` flag, which clap already
    /// fills from `SAFEKEEPING_CONFIG`) or from the XDG default.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing, unreadable or invalid.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = default_path();
                if !p.exists() {
                    return Err(ConfigError::NotFound(p));
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses configuration text; `path` is used in messages and to resolve relative paths.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = if base.is_relative() {
            std::env::current_dir()
                .map(|d| d.join(&base))
                .unwrap_or(base)
        } else {
            base
        };
        config.resolve_relative(&base);
        config.validate(path)?;
        config.default_vcenter = Some(Box::new(config.vcenter.clone()));
        Ok(config)
    }

    /// Relative paths in the file are relative to the file's own directory.
    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for v in std::iter::once(&mut self.vcenter).chain(self.vcenters.values_mut()) {
            if let Some(p) = v.password_file.as_mut() {
                fix(p);
            }
            if let Some(p) = v.ca_file.as_mut() {
                fix(p);
            }
        }
        if let Some(v) = self.vddk.as_mut() {
            fix(&mut v.libdir);
            if let Some(c) = v.config.as_mut() {
                fix(c);
            }
        }
        for r in std::iter::once(&mut self.repository).chain(self.repositories.values_mut()) {
            for p in [
                r.path.as_mut(),
                r.credentials_file.as_mut(),
                r.ca_file.as_mut(),
                r.cache_dir.as_mut(),
                r.passphrase_file.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
        if let Some(p) = self.defaults.product_uuid_file.as_mut() {
            fix(p);
        }
        for job in self.jobs.values_mut() {
            if let Some(p) = job.metrics_file.as_mut() {
                fix(p);
            }
        }
        if let Some(p) = self.notify.as_mut().and_then(|n| n.ca_file.as_mut()) {
            fix(p);
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        check_vcenter("vcenter", &self.vcenter).map_err(invalid)?;
        for (name, v) in &self.vcenters {
            if name == DEFAULT_VCENTER {
                return Err(invalid(
                    "[vcenters.default]: `default` names [vcenter]; give this vCenter another name"
                        .into(),
                ));
            }
            check_vcenter(&format!("vcenters.{name}"), v).map_err(invalid)?;
        }
        self.repository_location()
            .map_err(|e| invalid(format!("[repository]: {e}")))?;
        for (name, r) in &self.repositories {
            r.location()
                .map_err(|e| invalid(format!("[repositories.{name}]: {e}")))?;
        }
        for (key, settings) in &self.targets {
            crate::target_settings::check_section(key, settings).map_err(invalid)?;
        }
        if let Some(t) = self.vddk.as_ref().and_then(|v| v.transports.as_deref()) {
            crate::target_settings::check_transports(t)
                .map_err(|e| invalid(format!("vddk.transports: {e}")))?;
        }
        if self.defaults.parallel == 0 {
            return Err(invalid("defaults.parallel must be at least 1".into()));
        }
        if self.defaults.max_vddk_connections == 0 {
            return Err(invalid(
                "defaults.max_vddk_connections must be at least 1".into(),
            ));
        }
        let names: Vec<&str> = self.repositories.keys().map(String::as_str).collect();
        for (name, job) in &self.jobs {
            crate::jobs::check_name(name).map_err(|e| invalid(format!("[jobs.{name}]: {e}")))?;
            job.check(&names)
                .map_err(|e| invalid(format!("[jobs.{name}]: {e}")))?;
            if let Some(vc) = &job.vcenter {
                if vc != DEFAULT_VCENTER && !self.vcenters.contains_key(vc) {
                    let e = UnknownVcenter {
                        name: vc.clone(),
                        known: self.vcenters.keys().cloned().collect(),
                    };
                    return Err(invalid(format!("[jobs.{name}]: vcenter: {e}")));
                }
            }
        }
        if let Some(n) = &self.notify {
            n.check().map_err(|e| invalid(format!("[notify]: {e}")))?;
        }
        if self.defaults.quiesce_timeout_seconds == Some(0) {
            return Err(invalid(
                "defaults.quiesce_timeout_seconds must be at least 1".into(),
            ));
        }
        for (name, mib) in [
            ("chunk_memory_mib", self.performance.chunk_memory_mib),
            ("restore_memory_mib", self.performance.restore_memory_mib),
        ] {
            if !(MIN_CHUNK_MEMORY_MIB..=1 << 20).contains(&mib) {
                return Err(invalid(format!(
                    "performance.{name} {mib} is outside {MIN_CHUNK_MEMORY_MIB}..=1048576"
                )));
            }
        }
        if !(-7..=22).contains(&self.defaults.compression_level) {
            return Err(invalid(format!(
                "defaults.compression_level {} is outside zstd's -7..=22",
                self.defaults.compression_level
            )));
        }
        Ok(())
    }

    /// The `[vddk]` section, or an error saying it is needed.
    ///
    /// # Errors
    /// [`ConfigError::NoVddk`].
    pub fn vddk(&self) -> Result<&VddkConfig, ConfigError> {
        self.vddk.as_ref().ok_or(ConfigError::NoVddk)
    }

    /// Reads the vCenter password from `SAFEKEEPING_PASSWORD` or the password file, warning
    /// when the file is readable by group or others.
    ///
    /// # Errors
    /// [`ConfigError::NoPassword`] or [`ConfigError::PasswordFile`].
    pub fn password(&self) -> Result<Secret, ConfigError> {
        // A named vCenter with its own password file uses it: the environment variable is
        // the default vCenter's (a run talks to one vCenter, but a shell may keep the
        // variable set for the default one).
        let own_file_first = self.vcenter_name.is_some() && self.vcenter.password_file.is_some();
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            if !p.is_empty() && !own_file_first {
                return Ok(Secret::new(p));
            }
        }
        let path = self
            .vcenter
            .password_file
            .as_ref()
            .ok_or(ConfigError::NoPassword)?;
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::PasswordFile {
            path: path.clone(),
            source,
        })?;
        warn_if_shared(path, &meta);
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::PasswordFile {
            path: path.clone(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            return Err(ConfigError::PasswordFile {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
            });
        }
        Ok(Secret::new(line))
    }
}

impl Config {
    /// The repository passphrase, if one is configured (`SAFEKEEPING_REPOSITORY_PASSPHRASE`,
    /// then `repository.passphrase_file`, which gets the same permission check as the
    /// password file). For a second repository (see [`Config::named`]) its own
    /// `passphrase_file` comes first: the environment variable is the current repository's.
    ///
    /// # Errors
    /// [`ConfigError::PassphraseFile`] when the file cannot be read or is empty.
    pub fn passphrase(&self) -> Result<Option<repository_format::Passphrase>, ConfigError> {
        let from_env_first = !(self.secondary && self.repository.passphrase_file.is_some());
        for var in [PASSPHRASE_ENV, PASSPHRASE_ENV_SHORT]
            .into_iter()
            .filter(|_| from_env_first)
        {
            if let Ok(p) = std::env::var(var) {
                if !p.is_empty() {
                    return Ok(Some(repository_format::Passphrase::from(p)));
                }
            }
        }
        let Some(path) = &self.repository.passphrase_file else {
            return Ok(None);
        };
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::PassphraseFile {
            path: path.clone(),
            source,
        })?;
        warn_if_shared(path, &meta);
        repository_format::Passphrase::read_file(path)
            .map(Some)
            .map_err(|e| ConfigError::PassphraseFile {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "password file {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path, _meta: &std::fs::Metadata) {}

/// Parses `AA:BB:...` (32 bytes) into bytes; `None` when malformed.
pub fn parse_thumbprint(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 32 {
        return None;
    }
    for (o, p) in out.iter_mut().zip(parts) {
        // Exactly two hex digits (`from_str_radix` alone would take "+A").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

    fn sample(extra: &str) -> String {
        format!(
            r#"
[vcenter]
url = "https://127.0.0.1:8989/sdk"
user = "user"
password_file = "pw"
thumbprint_sha256 = "{PIN}"
[vddk]
libdir = "/opt/vddk"
config = "vddk.conf"
transports = "nbdssl:nbd"
[repository]
path = "repo"
{extra}
"#
        )
    }

    #[test]
    fn named_vcenters_are_selected_by_name_and_default_stands_for_vcenter() {
        let text = sample(&format!(
            "[vcenters.dr]\nurl = \"https://dr.example.com/sdk\"\nuser = \"backup\"\n\
             password_file = \"dr-pw\"\nthumbprint_sha256 = \"{PIN}\"\nauth = \"sso\"\n"
        ));
        let mut c = Config::parse(&text, Path::new("/etc/sk/c.toml")).unwrap();
        assert_eq!(c.vcenter.auth, AuthMethod::Password);
        assert_eq!(c.vcenter_label(), "[vcenter]");
        assert_eq!(c.source_vcenter(), None);
        c.select_vcenter("dr").unwrap();
        assert_eq!(c.vcenter.url, "https://dr.example.com/sdk");
        assert_eq!(c.vcenter.auth, AuthMethod::Sso);
        assert_eq!(
            c.vcenter.password_file.as_deref(),
            Some(Path::new("/etc/sk/dr-pw"))
        );
        assert_eq!(c.vcenter_label(), "[vcenters.dr]");
        assert_eq!(c.source_vcenter().as_deref(), Some("dr"));
        let back = c.with_vcenter(None).unwrap();
        assert_eq!(back.vcenter.url, "https://127.0.0.1:8989/sdk");
        assert_eq!(back.vcenter_name, None);
        c.select_vcenter("default").unwrap();
        assert_eq!(c.vcenter.url, "https://127.0.0.1:8989/sdk");
        assert_eq!(c.source_vcenter().as_deref(), Some("default"));
        let err = c.select_vcenter("nosuch").unwrap_err().to_string();
        assert!(err.contains("no vCenter named `nosuch`"), "{err}");
        assert!(err.contains("the configured names are dr"), "{err}");
    }

    #[test]
    fn a_named_vcenter_is_checked_like_vcenter_and_cannot_be_called_default() {
        let unverified = sample("[vcenters.dr]\nurl = \"https://dr/sdk\"\nuser = \"u\"\n");
        let err = Config::parse(&unverified, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vcenters.dr needs thumbprint_sha256"), "{err}");
        let reserved =
            sample("[vcenters.default]\nurl = \"https://dr/sdk\"\nuser = \"u\"\ninsecure = true\n");
        let err = Config::parse(&reserved, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`default` names [vcenter]"), "{err}");
        let plain_sts = sample("").replace(
            "user = \"user\"",
            "user = \"user\"\nauth = \"sso\"\nsts_url = \"http://vc/sts/STSService\"",
        );
        let err = Config::parse(&plain_sts, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vcenter.sts_url"), "{err}");
        let bad_auth =
            sample("").replace("user = \"user\"", "user = \"user\"\nauth = \"kerberos\"");
        assert!(Config::parse(&bad_auth, Path::new("c.toml")).is_err());
        let job = sample("[jobs.nightly]\ntargets = [\"vm:web\"]\nvcenter = \"dr\"\n");
        let err = Config::parse(&job, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[jobs.nightly]: vcenter: no vCenter named `dr`"),
            "{err}"
        );
    }

    #[test]
    fn a_repository_is_a_folder_or_an_s3_url_never_both() {
        let c = Config::parse(&sample(""), Path::new("/etc/sk/c.toml")).unwrap();
        assert!(matches!(
            c.repository_location().unwrap(),
            RepositoryLocation::Local(p) if p == Path::new("/etc/sk/repo")
        ));
        let s3 = sample("").replace(
            "path = \"repo\"",
            "url = \"s3://backups/site-a\"\nendpoint = \"https://s3.example.net:8333\"\n\
             region = \"eu-1\"\ncredentials_file = \"creds\"\nprofile = \"proxy\"",
        );
        let c = Config::parse(&s3, Path::new("/etc/sk/c.toml")).unwrap();
        let RepositoryLocation::S3(l) = c.repository_location().unwrap() else {
            panic!("not S3");
        };
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("backups", "site-a")
        );
        assert_eq!(l.endpoint.as_deref(), Some("https://s3.example.net:8333"));
        assert_eq!(l.region, "eu-1");
        assert!(!l.allow_http);
        assert_eq!(
            l.credentials,
            S3Credentials::File {
                path: PathBuf::from("/etc/sk/creds"),
                profile: Some("proxy".into())
            }
        );
        for (bad, says) in [
            (sample("").replace("path = \"repo\"", ""), "needs path"),
            (
                sample("").replace("path = \"repo\"", "path = \"repo\"\nurl = \"s3://b/p\""),
                "not both",
            ),
            (
                sample("").replace("path = \"repo\"", "url = \"/srv/repo\""),
                "not s3://",
            ),
            (
                sample("").replace("path = \"repo\"", "path = \"repo\"\nallow_http = true"),
                "go with url",
            ),
        ] {
            let e = Config::parse(&bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn named_repositories_are_selected_by_name_and_unknown_names_list_the_known_ones() {
        let text = sample(
            "[repositories.offsite]\nurl = \"s3://vault/site-a\"\n\
             endpoint = \"https://s3.example.net\"\npassphrase_file = \"offsite-pass\"\n\
             lock_ttl_seconds = 600\n\
             [repositories.spare]\npath = \"spare\"\n",
        );
        let c = Config::parse(&text, Path::new("/etc/sk/c.toml")).unwrap();
        assert_eq!(c.repository_label(), "[repository]");
        assert!(matches!(
            c.repository_location().unwrap(),
            RepositoryLocation::Local(_)
        ));
        let mut picked = c.clone();
        picked.select("offsite").unwrap();
        assert_eq!(picked.repository_label(), "[repositories.offsite]");
        let RepositoryLocation::S3(l) = picked.repository_location().unwrap() else {
            panic!("offsite is not S3");
        };
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("vault", "site-a"));
        assert_eq!(picked.repository.lock_ttl(), Some(Duration::from_secs(600)));
        // Relative paths of named tables are resolved like [repository]'s.
        assert_eq!(
            picked.repository.passphrase_file.as_deref(),
            Some(Path::new("/etc/sk/offsite-pass"))
        );
        let spare = c.named("spare").unwrap();
        assert!(matches!(
            spare.repository_location().unwrap(),
            RepositoryLocation::Local(p) if p == Path::new("/etc/sk/spare")
        ));
        // The original is untouched by `named`.
        assert_eq!(
            c.repository.path.as_deref(),
            Some(Path::new("/etc/sk/repo"))
        );
        let e = c.clone().select("ofsite").unwrap_err().to_string();
        assert!(
            e.contains("`ofsite`") && e.contains("offsite, spare"),
            "{e}"
        );
        let none = Config::parse(&sample(""), Path::new("c.toml")).unwrap();
        let e = none.named("x").unwrap_err().to_string();
        assert!(e.contains("no [repositories.NAME]"), "{e}");
        // A broken named table fails the whole file, naming the table.
        let bad = sample("[repositories.broken]\npath = \"a\"\nurl = \"s3://b/p\"\n");
        let e = Config::parse(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[repositories.broken]") && e.contains("not both"),
            "{e}"
        );
    }

    #[test]
    fn a_secondary_repository_reads_its_own_passphrase_file_before_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let text = sample("[repositories.dest]\npath = \"d\"\npassphrase_file = \"dest-pass\"\n");
        let c = Config::parse(&text, &dir.path().join("c.toml")).unwrap();
        let dest = c.named("dest").unwrap();
        // The file is consulted whatever SAFEKEEPING_PASSPHRASE says (that variable belongs to
        // the current repository): a missing file is an error naming it.
        let e = dest.passphrase().unwrap_err().to_string();
        assert!(e.contains("dest-pass"), "{e}");
        std::fs::write(dir.path().join("dest-pass"), "dest secret\n").unwrap();
        assert!(dest.passphrase().unwrap().is_some());
    }

    #[test]
    fn repository_knobs_are_range_checked_and_reach_the_location() {
        let s3 = |knobs: &str| {
            sample("").replace(
                "path = \"repo\"",
                &format!("url = \"s3://bkt/p\"\nendpoint = \"https://s3.example.net\"\n{knobs}"),
            )
        };
        let c = Config::parse(
            &s3("max_retries = 3\nretry_timeout_seconds = 30\nupload_concurrency = 32\nlock_ttl_seconds = 120"),
            Path::new("c.toml"),
        )
        .unwrap();
        let RepositoryLocation::S3(l) = c.repository_location().unwrap() else {
            panic!("not S3");
        };
        assert_eq!(l.max_retries, 3);
        assert_eq!(l.retry_timeout, Duration::from_secs(30));
        assert_eq!(c.repository.upload_concurrency, Some(32));
        assert_eq!(c.repository.lock_ttl(), Some(Duration::from_secs(120)));
        // Defaults when unset.
        let c = Config::parse(&s3(""), Path::new("c.toml")).unwrap();
        let RepositoryLocation::S3(l) = c.repository_location().unwrap() else {
            panic!("not S3");
        };
        assert_eq!(
            l.max_retries,
            repository_format::storage::location::DEFAULT_MAX_RETRIES
        );
        assert_eq!(c.repository.lock_ttl(), None);
        for (knob, says) in [
            (
                "upload_concurrency = 0",
                "upload_concurrency = 0 is outside 1..=256",
            ),
            ("upload_concurrency = 10000", "upload_concurrency = 10000"),
            (
                "max_retries = 1000",
                "max_retries = 1000 is outside 0..=100",
            ),
            (
                "retry_timeout_seconds = 0",
                "retry_timeout_seconds = 0 is outside 1..=3600 seconds",
            ),
            (
                "lock_ttl_seconds = 5",
                "lock_ttl_seconds = 5 is outside 30..=86400 seconds",
            ),
            ("lock_ttl_seconds = 999999", "lock_ttl_seconds = 999999"),
        ] {
            let e = Config::parse(&s3(knob), Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("[repository]") && e.contains(says),
                "{knob}: {e}"
            );
        }
        // S3-only knobs beside a folder are a mistake, said so; the lock lifetime is not.
        let e = Config::parse(&sample("max_retries = 2"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("go with url"), "{e}");
        let c = Config::parse(&sample("lock_ttl_seconds = 60"), Path::new("c.toml")).unwrap();
        assert_eq!(c.repository.lock_ttl(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn parses_the_lab_format_and_resolves_relative_paths() {
        let c = Config::parse(
            &sample("[defaults]\nparallel = 3\n"),
            Path::new("/etc/sk/c.toml"),
        )
        .unwrap();
        assert_eq!(c.vcenter.user, "user");
        assert_eq!(c.repository.path, Some(PathBuf::from("/etc/sk/repo")));
        assert_eq!(
            c.vcenter.password_file.as_deref(),
            Some(Path::new("/etc/sk/pw"))
        );
        let v = c.vddk().unwrap();
        assert_eq!(v.libdir, PathBuf::from("/opt/vddk"));
        assert_eq!(v.config.as_deref(), Some(Path::new("/etc/sk/vddk.conf")));
        assert_eq!(c.defaults.parallel, 3);
        assert_eq!(c.defaults.lock_wait_seconds, 60);
        assert_eq!(c.defaults.max_vddk_connections, 8);
        assert_eq!(c.defaults.product_uuid_file, None);
        let c = Config::parse(
            &sample("[defaults]\nproduct_uuid_file = \"uuid\"\n"),
            Path::new("/etc/sk/c.toml"),
        )
        .unwrap();
        assert_eq!(
            c.defaults.product_uuid_file.as_deref(),
            Some(Path::new("/etc/sk/uuid"))
        );
    }

    #[test]
    fn rejects_unknown_keys() {
        let err =
            Config::parse(&sample("[defaults]\nparalel = 3\n"), Path::new("c.toml")).unwrap_err();
        assert!(err.to_string().contains("paralel"), "{err}");
    }

    #[test]
    fn jobs_and_notify_are_checked_when_the_configuration_is_loaded() {
        let c = Config::parse(
            &sample(
                "[repositories.offsite]\npath = \"off\"\n[jobs.nightly]\ntargets = [\"vm:web01\"]\nkeep_last = 3\nrepository = \"offsite\"\nmetrics_file = \"m.prom\"\n[notify]\nwebhook = \"https://hooks.example.net/x\"\n",
            ),
            Path::new("/etc/sk/c.toml"),
        )
        .unwrap();
        assert_eq!(c.jobs["nightly"].keep_last, Some(3));
        assert_eq!(
            c.jobs["nightly"].metrics_file.as_deref(),
            Some(Path::new("/etc/sk/m.prom"))
        );
        for (extra, expect) in [
            ("[jobs.a]\ntargets = []\n", "[jobs.a]: targets is empty"),
            (
                "[jobs.a]\ntargets = [\"vm:x\"]\nrepository = \"gone\"\n",
                "repository `gone`",
            ),
            (
                "[jobs.a]\ntargets = [\"vm:x\"]\nkeep_dayly = 3\n",
                "keep_dayly",
            ),
            ("[jobs.\"a b\"]\ntargets = [\"vm:x\"]\n", "job name"),
            ("[notify]\nwebhook = \"http://h/\"\n", "[notify]"),
        ] {
            let err = Config::parse(&sample(extra), Path::new("c.toml")).unwrap_err();
            assert!(err.to_string().contains(expect), "{extra}: {err}");
        }
    }

    #[test]
    fn requires_a_way_to_verify_tls() {
        let text = sample("").replace(&format!("thumbprint_sha256 = \"{PIN}\""), "");
        let err = Config::parse(&text, Path::new("c.toml")).unwrap_err();
        assert!(
            err.to_string().contains("thumbprint_sha256 or ca_file"),
            "{err}"
        );
        let ok = text.replace("user = \"user\"", "user = \"user\"\ninsecure = true");
        assert!(
            Config::parse(&ok, Path::new("c.toml"))
                .unwrap()
                .vcenter
                .insecure
        );
    }

    #[test]
    fn rejects_malformed_pin_and_zero_parallelism() {
        let bad = sample("").replace(PIN, "AA:BB");
        assert!(Config::parse(&bad, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
            .contains("32 hex bytes"));
        assert!(
            Config::parse(&sample("[defaults]\nparallel = 0\n"), Path::new("c.toml"))
                .unwrap_err()
                .to_string()
                .contains("parallel")
        );
        assert!(Config::parse(
            &sample("[defaults]\nmax_vddk_connections = 0\n"),
            Path::new("c.toml")
        )
        .unwrap_err()
        .to_string()
        .contains("max_vddk_connections"));
        let c = Config::parse(
            &sample("[defaults]\nmax_vddk_connections = 3\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.defaults.max_vddk_connections, 3);
    }

    #[test]
    fn fcd_api_is_auto_unless_set() {
        let c = Config::parse(&sample(""), Path::new("c.toml")).unwrap();
        assert_eq!(c.vcenter.fcd_api, FcdApiChoice::Auto);
        let text = sample("").replace("user = \"user\"", "user = \"user\"\nfcd_api = \"vim\"");
        let c = Config::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(c.vcenter.fcd_api, FcdApiChoice::Vim);
        let bad = sample("").replace("user = \"user\"", "user = \"user\"\nfcd_api = \"nfs\"");
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains("nfs"), "{e}");
    }

    #[test]
    fn password_from_file_ignores_newline_and_hides_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let mut c = Config::parse(&sample(""), &dir.path().join("c.toml")).unwrap();
        c.vcenter.password_file = Some(pw);
        // The environment variable would win; this test does not set it.
        if std::env::var(PASSWORD_ENV).is_err() {
            let p = c.password().unwrap();
            assert_eq!(p.expose(), "s3cret");
            assert!(!format!("{p:?}").contains("s3cret"));
        }
    }

    #[test]
    fn thumbprint_parsing() {
        assert_eq!(parse_thumbprint(PIN).unwrap()[0], 0xAA);
        assert!(parse_thumbprint("zz").is_none());
        let plus = format!("+A{}", &PIN[2..]);
        assert!(
            parse_thumbprint(&plus).is_none(),
            "a sign is not a hex digit"
        );
    }

    #[test]
    fn chunk_memory_defaults_to_the_library_budget_and_is_bounded() {
        let c = Config::parse(&sample(""), Path::new("c.toml")).unwrap();
        assert_eq!(
            c.performance.chunk_memory_bytes(),
            repository_format::DEFAULT_MEMORY_BUDGET
        );
        let c = Config::parse(
            &sample("[performance]\nchunk_memory_mib = 96\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.performance.chunk_memory_bytes(), 96 << 20);
        for bad in ["chunk_memory_mib = 4", "chunk_memory_mib = 99999999"] {
            let e = Config::parse(
                &sample(&format!("[performance]\n{bad}\n")),
                Path::new("c.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("performance.chunk_memory_mib"), "{bad}: {e}");
        }
        let e = Config::parse(
            &sample("[performance]\nchunk_memory = 96\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chunk_memory"), "{e}");
    }

    #[test]
    fn restore_memory_has_its_own_default_and_bounds() {
        let c = Config::parse(&sample(""), Path::new("c.toml")).unwrap();
        assert_eq!(c.performance.restore_memory_bytes(), 200 << 20);
        let c = Config::parse(
            &sample("[performance]\nrestore_memory_mib = 64\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.performance.restore_memory_bytes(), 64 << 20);
        assert_eq!(
            c.performance.chunk_memory_bytes(),
            repository_format::DEFAULT_MEMORY_BUDGET
        );
        let e = Config::parse(
            &sample("[performance]\nrestore_memory_mib = 8\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("performance.restore_memory_mib 8"), "{e}");
    }
}
