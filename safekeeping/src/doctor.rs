//! `safekeeping doctor`: is this machine ready for the first night's backup?
//!
//! Each check does what a backup will do, as far as it can without snapshotting anything:
//! parse the configuration, open the repository and take (and give back) its shared lock,
//! log in to vCenter and ask which of the needed privileges the user lacks, load and
//! initialise VDDK, and read the machine's own BIOS uuid (what keeps `--all vm` from
//! snapshotting the backup appliance itself). A failed check says what to change.
//!
//! Checks that depend on another (privileges on the login) are skipped when it fails, so the
//! report shows one cause once.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::vsphere::{privileges, selection, Vcenter};

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In place.
    Ok,
    /// Works, but deserves a look (for example the repository is locked by a running prune).
    Warning,
    /// Missing or broken: the first backup would fail or misbehave.
    Failed,
}

/// One check: what was looked at, what was found, and how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name: `configuration`, `repository`, `vcenter`, `privileges`, `vddk`, `machine uuid`.
    pub name: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// For a `job` check: what each of the job's selections finds in vCenter now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobResolution>,
}

/// What a job's selections find in vCenter now (`[jobs.NAME] targets` and `all`).
#[derive(Debug, Clone, Serialize)]
pub struct JobResolution {
    /// The job's name.
    pub name: String,
    /// One entry per selection, in the configuration's order.
    pub selections: Vec<SelectionCount>,
    /// Targets the whole job would back up now (exclusions and this machine left out).
    pub targets: u64,
}

/// What one selection of a job finds.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionCount {
    /// The selection as configured (`vm:web01`, `tag:Backup/nightly`, `all = vm`).
    pub selection: String,
    /// How many targets it finds (before exclusions).
    pub found: u64,
    /// Why it could not be resolved, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            job: None,
        }
    }

    fn failed(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Failed,
            detail: detail.into(),
            fix: Some(fix.into()),
            job: None,
        }
    }
}

/// Every check, in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The checks.
    pub checks: Vec<Check>,
    /// Whether nothing failed: everything the first backup needs is in place.
    pub ready: bool,
}

/// Runs every check against the configuration at `config_path` (else the default places),
/// with the named repository `repo` (`--repo NAME`) instead of `[repository]` and the named
/// vCenter `vcenter` (`--vcenter NAME`) instead of `[vcenter]` when given.
pub async fn diagnose(
    config_path: Option<&Path>,
    repo: Option<&str>,
    vcenter_name: Option<&str>,
) -> Diagnosis {
    let mut checks = Vec::new();
    let loaded = Config::load(config_path)
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            if let Some(name) = repo {
                c.select(name).map_err(|e| format!("--repo: {e}"))?;
            }
            if let Some(name) = vcenter_name {
                c.select_vcenter(name)
                    .map_err(|e| format!("--vcenter: {e}"))?;
            }
            Ok(c)
        });
    match loaded {
        Ok(config) => {
            checks.push(Check::ok("configuration", config_source(config_path)));
            checks.push(repository(&config).await);
            let vcenter_checks = vcenter(&config).await;
            let logged_in = vcenter_checks
                .first()
                .is_some_and(|c| c.status == Status::Ok);
            checks.extend(vcenter_checks);
            // Needs the login: when it failed, that check already says why.
            if logged_in && !config.jobs.is_empty() {
                checks.extend(jobs(&config).await);
            }
            checks.push(vddk(&config).await);
            checks.push(machine_uuid(&config));
        }
        Err(e) => checks.push(Check::failed(
            "configuration",
            e,
            "write the configuration as docs/user-guide.md (\"Configuration\") describes",
        )),
    }
    let ready = checks.iter().all(|c| c.status != Status::Failed);
    Diagnosis { checks, ready }
}

fn config_source(explicit: Option<&Path>) -> String {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(crate::config::default_path)
        .display()
        .to_string()
}

/// Opens the repository and takes its shared lock: proves it is reachable, that the key
/// opens it, that this user may write there (the lock is a write), and that no prune or gc
/// holds it exclusively. The lock is given back at once.
async fn repository(config: &Config) -> Check {
    let c = config.clone();
    let result = crate::blocking::blocking(move || {
        let r = crate::repo::open(&c)?;
        let shown = r.location().display();
        let lock = r.lock_shared(Duration::ZERO);
        Ok((shown, lock.map(drop)))
    })
    .await;
    match result {
        Ok((shown, Ok(()))) => Check::ok(
            "repository",
            format!("{shown}: reachable, writable, not locked"),
        ),
        Ok((shown, Err(e @ repository_format::Error::Locked { .. }))) => Check {
            name: "repository",
            status: Status::Warning,
            detail: format!("{shown}: {e}"),
            fix: Some(
                "a prune, gc or repair holds the exclusive lock; backups wait for it (lock_wait_seconds)"
                    .into(),
            ),
            job: None,
        },
        Ok((shown, Err(e))) => Check::failed(
            "repository",
            format!("{shown}: cannot take the shared lock: {e}"),
            format!(
                "the repository must be writable by the user safekeeping runs as ({}): for a folder, `chown -R` it to that user",
                current_user()
            ),
        ),
        Err(e) => Check::failed(
            "repository",
            e.to_string(),
            "check [repository] in the configuration; a new repository is created with `safekeeping repo init`",
        ),
    }
}

/// Logs in (TLS verified as configured) and checks the privileges of the user.
async fn vcenter(config: &Config) -> Vec<Check> {
    let vc = match Vcenter::connect(config).await {
        Ok(vc) => vc,
        Err(e) => {
            return vec![Check::failed(
                "vcenter",
                format!("{}: {e}", config.vcenter.url),
                "check [vcenter] url, user and password_file (or SAFEKEEPING_PASSWORD); TLS needs thumbprint_sha256 or ca_file for a certificate the system does not trust",
            )]
        }
    };
    let about = &vc.client.service_content().about;
    let login = Check::ok(
        "vcenter",
        format!(
            "{}: logged in as {} ({}, API {})",
            config.vcenter.url, vc.user, about.full_name, about.api_version
        ),
    );
    let privileges = match privileges::missing(&vc).await {
        Ok(missing) if missing.is_empty() => Check::ok(
            "privileges",
            format!(
                "all {} backup and restore privileges granted on the root folder",
                privileges::BACKUP.len() + privileges::RESTORE.len()
            ),
        ),
        Ok(missing) => {
            let list = |op: &str| {
                missing
                    .iter()
                    .filter(|(o, _)| *o == op)
                    .map(|(_, p)| *p)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut parts = Vec::new();
            for op in ["backup", "restore"] {
                let l = list(op);
                if !l.is_empty() {
                    parts.push(format!("for {op}: {l}"));
                }
            }
            Check::failed(
                "privileges",
                format!("user {} lacks {}", vc.user, parts.join("; ")),
                format!(
                    "grant them to a role of {} on the vCenter root folder, with \"propagate to children\" (docs/user-guide.md, \"vCenter\")",
                    vc.user
                ),
            )
        }
        Err(e) => Check::failed(
            "privileges",
            format!("cannot check privileges: {e}"),
            "vCenter 6.5 or later answers HasPrivilegeOnEntities; check the privileges by hand against docs/user-guide.md",
        ),
    };
    vc.logout().await;
    vec![login, privileges]
}

/// Resolves each job's selections as `run JOB` will: one `job` check per job, failed when a
/// selection finds nothing (a renamed VM, a tag nobody carries, a typo) or an exclusion names
/// nothing, since the nightly run would then skip what the admin meant to protect.
async fn jobs(config: &Config) -> Vec<Check> {
    let vc = match Vcenter::connect(config).await {
        Ok(vc) => vc,
        Err(e) => {
            return vec![Check::failed(
                "job",
                format!("cannot log in to resolve the jobs' targets: {e}"),
                "see the vcenter check",
            )]
        }
    };
    let own = config.defaults.product_uuid_file.as_deref();
    let mut checks = Vec::new();
    for (name, job) in &config.jobs {
        checks.push(job_check(&vc, name, job, own).await);
    }
    vc.logout().await;
    checks
}

/// The `job` check of one job.
async fn job_check(
    vc: &Vcenter,
    name: &str,
    job: &crate::jobs::JobConfig,
    own: Option<&Path>,
) -> Check {
    use clap::ValueEnum as _;
    let (Ok(targets), Ok(exclude)) = (job.parsed_targets(), job.parsed_exclude()) else {
        // The configuration check refuses these before doctor gets here.
        return Check::failed(
            "job",
            format!("{name}: targets do not parse"),
            "see the configuration check",
        );
    };
    let all: Vec<selection::TargetKindArg> = job
        .all
        .iter()
        .filter_map(|k| selection::TargetKindArg::from_str(k, true).ok())
        .collect();
    let mut counts = Vec::new();
    for t in &targets {
        counts.push(match count_one(vc, t, own).await {
            Ok(n) => SelectionCount {
                selection: t.to_string(),
                found: n,
                error: None,
            },
            Err(e) => SelectionCount {
                selection: t.to_string(),
                found: 0,
                error: Some(e.to_string()),
            },
        });
    }
    for (kind, text) in all.iter().zip(&job.all) {
        let found = selection::select(vc, &[], std::slice::from_ref(kind), &[], own).await;
        counts.push(SelectionCount {
            selection: format!("all = {text}"),
            found: found.as_ref().map_or(0, |s| s.targets.len() as u64),
            error: found.err().map(|e| e.to_string()),
        });
    }
    let whole = selection::select(vc, &targets, &all, &exclude, own).await;
    let total = whole.as_ref().map_or(0, |s| s.targets.len() as u64);
    let summary = counts
        .iter()
        .map(|c| format!("{} finds {}", c.selection, c.found))
        .collect::<Vec<_>>()
        .join(", ");
    let empty: Vec<&str> = counts
        .iter()
        .filter(|c| c.found == 0)
        .map(|c| c.selection.as_str())
        .collect();
    let resolution = JobResolution {
        name: name.to_string(),
        selections: counts.clone(),
        targets: total,
    };
    let mut check = if let Err(e) = &whole {
        Check::failed(
            "job",
            format!("{name}: {summary}; the job's selection fails: {e}"),
            format!("fix [jobs.{name}] targets or exclude: every exclusion must name something that exists"),
        )
    } else if !empty.is_empty() {
        let why = counts
            .iter()
            .filter_map(|c| c.error.as_ref().map(|e| format!(" ({}: {e})", c.selection)))
            .collect::<String>();
        Check::failed(
            "job",
            format!("{name}: {summary}{why}"),
            format!(
                "{} in [jobs.{name}] found nothing: correct the name (see `govc find` or the vSphere client), tag the VMs, or remove the selection",
                empty.join(", ")
            ),
        )
    } else {
        Check::ok(
            "job",
            format!(
                "{name}: {summary}; {} to back up",
                crate::format::count(total, "target", "targets")
            ),
        )
    };
    check.job = Some(resolution);
    check
}

/// How many targets one selection finds now: a named VM, disk or vApp is 1 when it exists;
/// a tag or a place of the inventory is what it expands to.
async fn count_one(
    vc: &Vcenter,
    target: &crate::target::Target,
    own: Option<&Path>,
) -> crate::error::Result<u64> {
    use crate::target::Target;
    match target {
        Target::Vm(_) => match crate::vsphere::resolve::resolve(vc, target).await {
            Ok(_) => Ok(1),
            Err(crate::error::Error::VmNotFound(_)) => Ok(0),
            Err(e) => Err(e),
        },
        Target::Ivd(s) => Ok(u64::from(crate::vsphere::fcd::find(vc, s).await.is_ok())),
        Target::Vapp(name) => Ok(vc
            .client
            .list_named(vim_client::InventoryKind::VirtualApp)
            .await?
            .iter()
            .filter(|v| &v.name == name)
            .count() as u64),
        Target::Tag(_) | Target::Inventory(_) => {
            let s = selection::select(vc, std::slice::from_ref(target), &[], &[], own).await?;
            Ok(s.targets.len() as u64)
        }
    }
}

/// Loads VDDK from `[vddk] libdir` and initialises it, as a backup does first.
async fn vddk(config: &Config) -> Check {
    let v = match config.vddk() {
        Ok(v) => v.clone(),
        Err(e) => {
            return Check::failed(
                "vddk",
                e.to_string(),
                "unpack VMware's VDDK and set [vddk] libdir to its folder",
            )
        }
    };
    let result = crate::blocking::blocking(move || {
        let lib = vddk::Vddk::load(&v.libdir).map_err(crate::error::Error::from)?;
        lib.init(v.config.as_deref())
            .map_err(crate::error::Error::from)?;
        Ok((lib.version(), v.libdir))
    })
    .await;
    match result {
        Ok((version, libdir)) => Check::ok(
            "vddk",
            format!("VDDK {version} loaded from {}", libdir.display()),
        ),
        Err(e) => Check::failed(
            "vddk",
            e.to_string(),
            "set [vddk] libdir to the folder where VDDK is unpacked (the one holding lib64/libvixDiskLib.so)",
        ),
    }
}

/// Reads the machine's BIOS uuid, which keeps a selection from backing up this machine.
fn machine_uuid(config: &Config) -> Check {
    let path = selection::product_uuid_file(config.defaults.product_uuid_file.as_deref());
    match std::fs::read_to_string(&path) {
        Ok(text) if selection::own_bios_uuid(Some(&path)).is_some() => Check::ok(
            "machine uuid",
            format!("{} (from {})", text.trim(), path.display()),
        ),
        Ok(text) => Check::failed(
            "machine uuid",
            format!("{} holds `{}`, not a uuid", path.display(), text.trim()),
            "point [defaults] product_uuid_file at a file holding this machine's BIOS uuid",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check {
            name: "machine uuid",
            status: Status::Warning,
            detail: format!(
                "{} does not exist (not a VM, or a container without /sys/class/dmi): safekeeping cannot recognise its own VM in a selection",
                path.display()
            ),
            fix: Some(
                "if this machine is a vSphere VM, set [defaults] product_uuid_file to a file holding its BIOS uuid".into(),
            ),
            job: None,
        },
        Err(e) => Check::failed(
            "machine uuid",
            format!(
                "cannot read {}: {e}; without it `--all vm` and tag selections may back up this machine itself",
                path.display()
            ),
            format!(
                "{} is readable by root only: copy it at boot (for example a systemd unit running `install -m 0644 {} /var/lib/safekeeping/product_uuid`) and set [defaults] product_uuid_file = \"/var/lib/safekeeping/product_uuid\"",
                path.display(),
                path.display()
            ),
        ),
    }
}

/// The user this process runs as, for messages: the name from `USER` when set, and the uid.
fn current_user() -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
        .unwrap_or_else(|_| "?".into());
    match std::env::var("USER") {
        Ok(name) if !name.is_empty() => format!("{name}, uid {uid}"),
        _ => format!("uid {uid}"),
    }
}
