//! Disks a VM backup leaves out, and why: independent disks (a snapshot does not freeze them,
//! so their content could never be consistent with the rest of the VM), and the disks the
//! user excludes (`backup --exclude-disk N`, `[targets."vm:NAME"] exclude_disks`).
//!
//! A generation records every disk it left out under `excluded_disks` in its manifest (the
//! manifest keeps unknown fields, so no format change): the restore needs the capacity and the
//! place on the controller to recreate the disk empty, and `show` tells the admin the data was
//! never copied.

use std::collections::BTreeSet;

use repository_format::Manifest;
use serde::{Deserialize, Serialize};

/// The manifest field holding the list.
pub const MANIFEST_FIELD: &str = "excluded_disks";

/// Why a disk was left out of the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// `independent_persistent` or `independent_nonpersistent`: snapshots do not freeze it.
    Independent,
    /// `--exclude-disk N` on the command line.
    CommandLine,
    /// `exclude_disks` in the target's `[targets."…"]` section of the configuration.
    Configuration,
}

impl ExclusionReason {
    /// The note printed and logged for the disk.
    pub fn note(self, disk_mode: Option<&str>) -> String {
        match self {
            ExclusionReason::Independent => format!(
                "skipped: disk mode {}; snapshots do not freeze independent disks",
                disk_mode.unwrap_or("independent")
            ),
            ExclusionReason::CommandLine => "skipped: excluded by --exclude-disk".into(),
            ExclusionReason::Configuration => {
                "skipped: excluded by exclude_disks in the configuration".into()
            }
        }
    }
}

/// One disk a generation does not contain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedDisk {
    /// Position in the VM (0-based), as `--exclude-disk` counts.
    pub index: usize,
    /// Device key.
    pub key: i32,
    /// Label ("Hard disk 2").
    pub label: String,
    /// Capacity in bytes, which a restore gives the empty disk it recreates.
    pub capacity: u64,
    /// vCenter's disk mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mode: Option<String>,
    /// The disk file at backup time.
    #[serde(default)]
    pub file_path: String,
    /// Why it was left out.
    pub reason: ExclusionReason,
    /// The same, in words.
    pub note: String,
}

/// Why the disk at `index` with `disk_mode` is left out, if it is. Independence comes first:
/// such a disk is never read, whatever the user asked.
pub fn why_excluded(
    index: usize,
    disk_mode: Option<&str>,
    command_line: &BTreeSet<usize>,
    configuration: &BTreeSet<usize>,
) -> Option<ExclusionReason> {
    if disk_mode.is_some_and(|m| m.starts_with("independent")) {
        Some(ExclusionReason::Independent)
    } else if command_line.contains(&index) {
        Some(ExclusionReason::CommandLine)
    } else if configuration.contains(&index) {
        Some(ExclusionReason::Configuration)
    } else {
        None
    }
}

/// The disks a generation left out, from its manifest (none for generations written before
/// disks could be excluded).
///
/// # Errors
/// A malformed `excluded_disks` field: the restore must not guess which disks exist.
pub fn from_manifest(manifest: &Manifest) -> Result<Vec<ExcludedDisk>, String> {
    match manifest.extra.get(MANIFEST_FIELD) {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "generation {} has a malformed {MANIFEST_FIELD} field: {e}",
                manifest.generation
            )
        }),
    }
}

/// The manifest value recording `disks`.
pub fn to_manifest_value(disks: &[ExcludedDisk]) -> serde_json::Value {
    serde_json::to_value(disks).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn independent_disks_are_skipped_before_any_user_choice() {
        let none = BTreeSet::new();
        let one: BTreeSet<usize> = [1].into();
        assert_eq!(
            why_excluded(0, Some("independent_persistent"), &none, &none),
            Some(ExclusionReason::Independent)
        );
        assert_eq!(
            why_excluded(1, Some("independent_nonpersistent"), &one, &one),
            Some(ExclusionReason::Independent)
        );
        assert_eq!(
            why_excluded(1, Some("persistent"), &one, &none),
            Some(ExclusionReason::CommandLine)
        );
        assert_eq!(
            why_excluded(1, None, &none, &one),
            Some(ExclusionReason::Configuration)
        );
        assert_eq!(why_excluded(0, Some("persistent"), &one, &one), None);
    }

    #[test]
    fn the_record_round_trips_through_json() {
        let d = ExcludedDisk {
            index: 1,
            key: 2001,
            label: "Hard disk 2".into(),
            capacity: 8 << 20,
            disk_mode: Some("persistent".into()),
            file_path: "[datastore1] web01/web01_1.vmdk".into(),
            reason: ExclusionReason::CommandLine,
            note: ExclusionReason::CommandLine.note(None),
        };
        let v = to_manifest_value(std::slice::from_ref(&d));
        assert_eq!(v[0]["reason"], "command_line");
        let back: Vec<ExcludedDisk> = serde_json::from_value(v).unwrap();
        assert_eq!(back, vec![d]);
    }
}
