//! `backup --dry-run`: the plan of a backup run — the targets the selection finds, and per VM
//! disk full or incremental and why — made by the same selection and per-disk decisions as a
//! real run ([`crate::vsphere::selection::select`], [`crate::backup::disk::plan_disk`],
//! [`crate::backup::disk::verify_base`]). Nothing is created: no repository lock, no CBT
//! change, no snapshot, no generation.

use std::sync::Arc;

use serde::Serialize;

use crate::backup::disk::DiskMode;
use crate::backup::BackupOptions;
use crate::blocking::blocking;
use crate::config::Config;
use crate::error::Result;
use crate::target::Target;
use crate::target_settings::QuiesceMode;
use crate::vsphere::selection::{self, Skipped};
use crate::vsphere::Vcenter;

/// What `backup --dry-run` would do, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPreview {
    /// Always true: nothing was created.
    pub dry_run: bool,
    /// Per selected target, in selection order.
    pub targets: Vec<TargetPreview>,
    /// Targets the selection left out, with why.
    pub skipped: Vec<Skipped>,
}

/// The plan for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPreview {
    /// `vm:NAME` once resolved (else the target as selected).
    pub target: String,
    /// The VM's moref.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moref: Option<String>,
    /// The repository's key of the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The generation an incremental would build on (the latest successful one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_generation: Option<u64>,
    /// Whether change block tracking is on now (off: the backup switches it on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_tracking: Option<bool>,
    /// How the snapshot would be taken (`off` for a powered-off VM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<QuiesceMode>,
    /// Per disk, in the VM's order.
    pub disks: Vec<DiskPreview>,
    /// What the preview does not cover for this target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the backup of this target would fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The plan for one disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskPreview {
    /// Position in the VM (from 0).
    pub index: usize,
    /// Device label.
    pub label: String,
    /// Bytes.
    pub capacity: u64,
    /// Full or incremental; none for a disk left out of the backup.
    pub mode: Option<DiskMode>,
    /// Why (or why it is left out).
    pub reason: String,
}

impl BackupPreview {
    /// Whether every target could be planned.
    pub fn ok(&self) -> bool {
        self.targets.iter().all(|t| t.error.is_none())
    }
}

/// Plans the run `options` describes.
///
/// # Errors
/// When the run could not start: the repository, the vCenter login, the selection.
pub async fn preview(config: Arc<Config>, options: &BackupOptions) -> Result<BackupPreview> {
    let c = config.clone();
    let repo = blocking(move || crate::repo::open(&c)).await?;
    let vc = Vcenter::connect(&config).await?;
    let planned = plan_all(&vc, &config, &repo, options).await;
    vc.logout().await;
    // The repository's handles may own a runtime (S3): dropped off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(repo)).await;
    planned
}

async fn plan_all(
    vc: &Vcenter,
    config: &Config,
    repo: &repository_format::Repository,
    options: &BackupOptions,
) -> Result<BackupPreview> {
    let selection = selection::select(
        vc,
        &options.targets,
        &options.all,
        &options.exclude,
        config.defaults.product_uuid_file.as_deref(),
    )
    .await?;
    let tag_members = crate::backup::tag_members(vc, config).await;
    let mut targets = Vec::new();
    for t in &selection.targets {
        let planned = match t {
            Target::Ivd(selector) => {
                crate::backup::ivd::preview_ivd(vc, repo, options, t, selector).await
            }
            Target::Vapp(_) => Ok(TargetPreview {
                note: Some(
                    "a vApp's child VMs are planned when the backup lists them; plan them one by one with `backup vm:CHILD --dry-run`".into(),
                ),
                ..TargetPreview::unresolved(t)
            }),
            _ => crate::backup::vm::preview_vm(vc, config, repo, options, &tag_members, t).await,
        };
        targets.push(planned.unwrap_or_else(|e| TargetPreview {
            error: Some(e.to_string()),
            ..TargetPreview::unresolved(t)
        }));
    }
    Ok(BackupPreview {
        dry_run: true,
        targets,
        skipped: selection.skipped,
    })
}

impl TargetPreview {
    /// The preview of `t` before anything is known about it.
    pub(crate) fn unresolved(t: &Target) -> TargetPreview {
        TargetPreview {
            target: t.to_string(),
            moref: None,
            key: None,
            previous_generation: None,
            change_tracking: None,
            quiesce: None,
            disks: Vec::new(),
            note: None,
            error: None,
        }
    }
}
