//! Opening the configured repository and finding a target's history in it from a command-line
//! target, without asking vCenter (so `list`, `show`, `export` work when vCenter is down).

use std::time::Duration;

use repository_format::{
    GenerationId, Manifest, Repository, RepositoryLocation, TargetKey, TargetKind, TargetSummary,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::target::{is_uuid, Target, VmSelector};

/// The configured repository's location (`[repository] path` or `url`).
///
/// # Errors
/// A configuration that names neither or both (caught when the configuration is loaded).
pub fn location(config: &Config) -> Result<RepositoryLocation> {
    config
        .repository_location()
        .map_err(|e| Error::Other(format!("{}: {e}", config.repository_label())))
}

/// Opens the configured repository: a folder (`[repository] path`) or an S3 prefix
/// (`[repository] url`).
///
/// # Errors
/// When it does not exist or is not a repository (the message suggests `repo init`), or
/// cannot be reached (S3 errors name the repository).
pub fn open(config: &Config) -> Result<Repository> {
    let location = location(config)?;
    if let RepositoryLocation::Local(path) = &location {
        if !path.exists() {
            return Err(Error::Other(format!(
                "no repository at {}: run `safekeeping repo init` first",
                path.display()
            )));
        }
    }
    let passphrase = config.passphrase()?;
    let mut repo = Repository::open_location(&location, passphrase.as_ref()).map_err(|e| match e {
        repository_format::Error::PassphraseRequired { .. } => Error::Other(format!(
            "the repository at {} is encrypted: set SAFEKEEPING_PASSPHRASE (or SAFEKEEPING_REPOSITORY_PASSPHRASE), or name a file holding it with --passphrase-file or repository.passphrase_file in the configuration",
            location.display()
        )),
        other => other.into(),
    })?;
    if let Some(n) = config.repository.upload_concurrency {
        repo.set_upload_concurrency(n);
    }
    if let Some(ttl) = config.repository.lock_ttl() {
        repo.set_lock_ttl(ttl);
    }
    Ok(repo)
}

/// How long to wait for locks.
pub fn lock_wait(config: &Config) -> Duration {
    Duration::from_secs(config.defaults.lock_wait_seconds)
}

/// Whether a generation's recorded identity matches a command-line target.
pub fn matches(target: &Target, m: &Manifest) -> bool {
    let id = &m.target;
    let Target::Vm(sel) = target else {
        return false;
    };
    if id.kind != repository_format::TargetKind::Vm {
        return false;
    }
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    match sel {
        VmSelector::Name(n) => &id.name == n,
        VmSelector::Moref(m) => eq(&id.moref, m),
        VmSelector::Uuid(u) => eq(&id.bios_uuid, u) || eq(&id.instance_uuid, u),
        VmSelector::InventoryPath(p) => {
            id.extra.get("inventory_path").and_then(|v| v.as_str()) == Some(p.as_str())
        }
    }
}

/// The repository target that `target` names, with its newest manifest.
///
/// # Errors
/// [`Error::NotInRepository`] when nothing matches (listing what the repository has), or
/// [`Error::AmbiguousVm`] when several targets match.
pub fn find_target(repo: &Repository, target: &Target) -> Result<(TargetSummary, Manifest)> {
    find_target_where(repo, target, &|_| true)
}

/// [`find_target`] among the targets backed up from the vCenter `[vcenters.NAME]` (`vcenter`;
/// `default` for `[vcenter]`; `None`: from any vCenter). Two vCenters may both have a `web01`; `--vcenter NAME` says
/// which one's backup is meant.
///
/// # Errors
/// As [`find_target`].
pub fn find_target_from(
    repo: &Repository,
    target: &Target,
    vcenter: Option<&str>,
) -> Result<(TargetSummary, Manifest)> {
    match vcenter {
        None => find_target(repo, target),
        Some(name) => find_target_where(repo, target, &|m| {
            // Generations that record no name came from the default `[vcenter]`.
            let recorded = crate::vcenter_origin::VcenterOrigin::recorded(&m.target)
                .and_then(|o| o.name)
                .unwrap_or_else(|| crate::config::DEFAULT_VCENTER.to_string());
            recorded == name
        }),
    }
}

/// [`find_target_from`] limited as the configuration says ([`Config::source_vcenter`]:
/// `--vcenter NAME`).
///
/// # Errors
/// As [`find_target`].
pub fn find_configured_target(
    repo: &Repository,
    target: &Target,
    config: &Config,
) -> Result<(TargetSummary, Manifest)> {
    find_target_from(repo, target, config.source_vcenter().as_deref())
}

fn find_target_where(
    repo: &Repository,
    target: &Target,
    keep: &dyn Fn(&Manifest) -> bool,
) -> Result<(TargetSummary, Manifest)> {
    if let Target::Ivd(selector) = target {
        return find_ivd_where(repo, selector, keep);
    }
    if let Target::Vapp(name) = target {
        return find_vapp(repo, name, keep);
    }
    if !matches!(target, Target::Vm(_)) {
        return Err(Error::WrongTargetKind {
            target: target.to_string(),
            expected:
                "a tag: selects targets to back up; this command takes a vm:, ivd: or vapp: target",
        });
    }
    let mut found = Vec::new();
    let summaries = repo.targets()?;
    for s in &summaries {
        let Some(latest) = s.latest else { continue };
        let m = repo.manifest(&s.key, latest)?;
        if matches(target, &m) && keep(&m) {
            found.push((s.clone(), m));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let names: Vec<String> = summaries
                .iter()
                .map(|s| format!("vm:{} ({})", s.name, s.key))
                .collect();
            Err(Error::NotInRepository(format!(
                "the repository has no backup of {target}; it has: {}",
                if names.is_empty() {
                    "nothing yet".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
        _ => Err(Error::AmbiguousVm {
            target: target.to_string(),
            matches: found
                .iter()
                .map(
                    |(s, m)| match crate::vcenter_origin::VcenterOrigin::recorded(&m.target) {
                        Some(o) => format!("{} ({}, from {})", s.key, s.name, o.describe()),
                        None => format!("{} ({})", s.key, s.name),
                    },
                )
                .collect(),
        }),
    }
}

/// The `vapp` target named `name`.
/// Finds the `ivd` target `selector` (a disk id or name) in the repository.
///
/// # Errors
/// [`Error::NotInRepository`] when none or several match.
pub fn find_ivd(
    repo: &Repository,
    selector: &str,
) -> Result<(repository_format::TargetSummary, Manifest)> {
    find_ivd_where(repo, selector, &|_| true)
}

fn find_ivd_where(
    repo: &Repository,
    selector: &str,
    keep: &dyn Fn(&Manifest) -> bool,
) -> Result<(repository_format::TargetSummary, Manifest)> {
    let mut found = Vec::new();
    let mut have = Vec::new();
    for s in repo.targets()? {
        if s.kind != TargetKind::Ivd {
            continue;
        }
        let Some(latest) = s.latest else { continue };
        let m = repo.manifest(&s.key, latest)?;
        if !keep(&m) {
            continue;
        }
        let id = m.target.instance_uuid.clone().unwrap_or_default();
        have.push(format!("ivd:{} ({id})", m.target.name));
        let hit = if is_uuid(selector) {
            id.eq_ignore_ascii_case(selector)
        } else {
            m.target.name == selector
        };
        if hit {
            found.push((s, m));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::NotInRepository(format!(
            "the repository has no backup of ivd:{selector}; first class disks: {}",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        ))),
        n => Err(Error::NotInRepository(format!(
            "ivd:{selector} matches {n} first class disks in the repository ({}); use ivd:ID",
            have.join(", ")
        ))),
    }
}

fn find_vapp(
    repo: &Repository,
    name: &str,
    keep: &dyn Fn(&Manifest) -> bool,
) -> Result<(TargetSummary, Manifest)> {
    let mut found = Vec::new();
    for s in repo.targets()? {
        if s.kind != repository_format::TargetKind::VApp || s.name != name {
            continue;
        }
        let Some(latest) = s.latest else { continue };
        let m = repo.manifest(&s.key, latest)?;
        if keep(&m) {
            found.push((s, m));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::NotInRepository(format!(
            "the repository has no backup of vapp:{name}"
        ))),
        n => Err(Error::NotInRepository(format!(
            "vapp:{name} matches {n} vApps in the repository: {}",
            found
                .iter()
                .map(|(s, _)| s.key.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The generation to use: `wanted`, else the newest successful one.
///
/// # Errors
/// [`Error::NotInRepository`] when there is none.
pub fn pick_generation(
    repo: &Repository,
    key: &TargetKey,
    wanted: Option<u64>,
) -> Result<Manifest> {
    match wanted {
        Some(n) => repo.manifest(key, GenerationId(n)).map_err(|e| match e {
            repository_format::Error::GenerationNotFound { .. } => {
                let have: Vec<String> = repo
                    .generations(key)
                    .map(|g| g.iter().map(|g| g.id.to_string()).collect())
                    .unwrap_or_default();
                Error::NotInRepository(format!(
                    "generation {n} of {key} does not exist; generations: {}",
                    have.join(", ")
                ))
            }
            other => other.into(),
        }),
        None => {
            let latest = repo.latest_successful(key)?.ok_or_else(|| {
                Error::NotInRepository(format!("{key} has no successful generation"))
            })?;
            Ok(repo.manifest(key, latest.id)?)
        }
    }
}

/// Threads that read, decompress and verify chunks ahead of a restore or export.
pub fn read_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// A target as people name it everywhere (`vm:web01`): its kind and its name at backup time.
pub fn display_name(t: &TargetSummary) -> String {
    format!("{}:{}", t.kind.prefix(), t.name)
}

/// The display names of a repository's targets by folder key, so that every command names a
/// target the same way and shows the key only where it has no name.
#[derive(Debug, Default)]
pub struct TargetNames(std::collections::HashMap<String, String>);

impl TargetNames {
    /// The names of every target of `r`.
    ///
    /// # Errors
    /// The targets cannot be listed.
    pub fn of(r: &Repository) -> Result<TargetNames> {
        Ok(TargetNames(
            r.targets()?
                .iter()
                .map(|t| (t.key.to_string(), display_name(t)))
                .collect(),
        ))
    }

    /// `vm:web01` for a folder key, else the key itself.
    pub fn name(&self, key: &TargetKey) -> String {
        self.0
            .get(key.as_str())
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }
}
