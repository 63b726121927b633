//! The restore wing: a backup's data flow walked backwards.
//!
//! One restore is one target, chosen by kind, and each kind reads top to bottom in its file:
//! - [`vm`]: plan and check everything ([`plan`]), set a VM that `--overwrite` replaces aside,
//!   build the new VM in folders of its own ([`create`] or [`import`]), write its disks
//!   ([`disk`]), power it on if asked, then destroy the VM it replaced; any failure undoes
//!   what was built and puts the old VM back;
//! - [`ivd`]: a new first class disk, its data written, optionally attached to a VM;
//! - [`vapp`]: every child planned first, then the vApp and its children built, start order
//!   applied.
//!
//! [`disk`] is the one data step they share: the generation's disk index → verified,
//! decompressed chunks → VDDK writes into the new disk. The repository is only read, under its
//! shared lock, held until the restore ends so that no prune or gc removes what it reads.

pub mod create;
pub mod disk;
pub mod import;
pub mod ivd;
pub mod options;
pub mod plan;
pub mod policy;
pub mod preview;
pub mod vapp;
pub mod vcenter;
pub mod vm;
pub mod vmx;

use repository_format::{Manifest, Repository, RepositoryLock, TargetKey};
use serde::Serialize;

use crate::cancel::Cancel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::target::Target;

pub use disk::RestoredDisk;
pub use ivd::IvdRestoreResult;
pub use options::{RestoreMode, RestoreOptions};
pub use vapp::VappRestoreResult;
pub use vm::{RestoreResult, VmRestoreReport};

/// What a restore did, as `restore --json` prints it (one shape per target kind).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Restored {
    /// A VM.
    Vm(VmRestoreReport),
    /// A first class disk.
    Ivd(IvdRestoreResult),
    /// A vApp with its children.
    Vapp(VappRestoreResult),
}

/// Restores one target.
///
/// # Errors
/// Every failure: a restore is one target, so any error fails the run. What was built before
/// the failure is removed again (the error says so, or says what is left).
pub async fn run(config: &Config, options: &RestoreOptions, cancel: &Cancel) -> Result<Restored> {
    match &options.target {
        Target::Ivd(selector) => ivd::restore_ivd(config, options, selector, cancel)
            .await
            .map(Restored::Ivd),
        Target::Vapp(_) => vapp::restore_vapp(config, options, cancel)
            .await
            .map(Restored::Vapp),
        _ => vm::restore_vm(config, options, cancel)
            .await
            .map(Restored::Vm),
    }
}

/// Refuses options that do not apply to the target's kind, before anything is looked up (a
/// usage error is reported as one, not as whatever the lookup finds first).
///
/// # Errors
/// `--profile`/`--disk-profile` on a first class disk: refused rather than ignored, since a
/// first class disk is created without a policy override.
pub fn check_options(options: &RestoreOptions) -> Result<()> {
    if matches!(options.target, Target::Ivd(_))
        && (options.profile.is_some() || !options.disk_profile.is_empty())
    {
        return Err(Error::Other(
            "--profile and --disk-profile apply to VM (and vApp) restores, not to a first class disk".into(),
        ));
    }
    Ok(())
}

/// Default name of a restored VM: `<name>-restored-<UTC>`.
pub fn default_name(original: &str, now: time::OffsetDateTime) -> String {
    format!("{original}-restored-{}", crate::format::compact_utc(now))
}

/// Opens the repository and takes its shared lock (blocking).
pub(crate) fn open_shared(
    config: &Config,
    options: &RestoreOptions,
) -> Result<(Repository, RepositoryLock)> {
    let repo = crate::repo::open(config)?;
    // The disks' chunks in flight are bounded as a backup's are (restore::disk::WriteShape),
    // by the restore's own limit.
    let budget = repo.memory_budget();
    budget.set_limit(config.performance.restore_memory_bytes());
    // Called before any disk is written (by the vCenter choice and the plan): the mark is
    // this restore's.
    budget.reset_high_water();
    let wait = options.lock_wait;
    // A read-only repository (a snapshot, an offsite copy mounted read-only) restores without
    // a recorded lock; the library warns.
    let lock = repo
        .lock_shared_for_reading(wait)
        .map_err(|e| Error::from_lock("the repository".into(), wait.as_secs(), e))?;
    Ok((repo, lock))
}

/// Reads metadata file `name` of generation `m`, which must list it (blocking).
pub(crate) fn read_metadata(
    repo: &Repository,
    key: &TargetKey,
    m: &Manifest,
    name: &str,
) -> Result<Vec<u8>> {
    if !m.metadata_files.iter().any(|f| f == name) {
        return Err(Error::NotInRepository(format!(
            "generation {} of {key} has no {name}",
            m.generation
        )));
    }
    Ok(repo.read_metadata(key, m.generation, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_has_utc_stamp() {
        let t = time::macros::datetime!(2026-11-27 10:00:00 UTC);
        assert_eq!(default_name("web01", t), "web01-restored-20261127T100000Z");
    }
}
