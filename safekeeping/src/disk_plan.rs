//! The per-disk decision between a full and an incremental read, with the reason said out
//! loud: incremental only when a previous successful generation has this disk with the same
//! capacity and a change id to ask CBT from.

use serde::Serialize;

/// How a disk is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// Every allocated area (CBT `*`).
    Full,
    /// Only the areas changed since the previous generation's change id.
    Incremental,
}

/// What the previous successful generation recorded for this disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousDisk {
    /// Generation number.
    pub generation: u64,
    /// Capacity then.
    pub capacity: u64,
    /// Change id recorded then.
    pub change_id: Option<String>,
    /// The disk's uuid then (a different uuid now means another disk behind the same key).
    pub disk_uuid: Option<String>,
}

/// The decision for one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskPlan {
    /// Full or incremental.
    pub mode: DiskMode,
    /// Why, in words for the log.
    pub reason: String,
    /// What to pass to QueryChangedDiskAreas: `*` or the previous change id.
    pub since_change_id: String,
}

/// Facts the decision is based on.
#[derive(Debug, Clone)]
pub struct DiskFacts<'a> {
    /// `--full` was given.
    pub force_full: bool,
    /// CBT was switched on by this run (so no earlier change id is meaningful).
    pub cbt_just_enabled: bool,
    /// The disk's capacity now.
    pub capacity: u64,
    /// The disk's uuid now.
    pub disk_uuid: Option<&'a str>,
    /// The previous generation's record of this disk, if any.
    pub previous: Option<&'a PreviousDisk>,
}

/// Decides full or incremental for one disk.
pub fn plan_disk(f: &DiskFacts<'_>) -> DiskPlan {
    let full = |reason: String| DiskPlan {
        mode: DiskMode::Full,
        reason,
        since_change_id: "*".into(),
    };
    if f.force_full {
        return full("--full was given".into());
    }
    if f.cbt_just_enabled {
        return full("change tracking was just enabled".into());
    }
    let Some(prev) = f.previous else {
        return full("no previous successful generation has this disk".into());
    };
    if prev.capacity != f.capacity {
        return full(format!(
            "capacity changed from {} to {} bytes since generation {}",
            prev.capacity, f.capacity, prev.generation
        ));
    }
    if let (Some(then), Some(now)) = (prev.disk_uuid.as_deref(), f.disk_uuid) {
        if !then.eq_ignore_ascii_case(now) {
            return full(format!(
                "the disk was replaced since generation {} (uuid {then} is now {now})",
                prev.generation
            ));
        }
    }
    match prev.change_id.as_deref() {
        Some(id) if !id.is_empty() && id != "*" => DiskPlan {
            mode: DiskMode::Incremental,
            reason: format!(
                "changes since generation {} (change id {id})",
                prev.generation
            ),
            since_change_id: id.to_string(),
        },
        _ => full(format!(
            "generation {} recorded no change id for this disk",
            prev.generation
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev(capacity: u64, change_id: Option<&str>) -> PreviousDisk {
        PreviousDisk {
            generation: 4,
            capacity,
            change_id: change_id.map(str::to_string),
            disk_uuid: Some("6000C29a".into()),
        }
    }

    fn facts(previous: Option<&PreviousDisk>) -> DiskFacts<'_> {
        DiskFacts {
            force_full: false,
            cbt_just_enabled: false,
            capacity: 100,
            disk_uuid: Some("6000c29A"),
            previous,
        }
    }

    #[test]
    fn incremental_when_everything_matches() {
        let p = prev(100, Some("52 aa/3"));
        let plan = plan_disk(&facts(Some(&p)));
        assert_eq!(plan.mode, DiskMode::Incremental);
        assert_eq!(plan.since_change_id, "52 aa/3");
    }

    #[test]
    fn full_for_each_reason() {
        let p = prev(100, Some("52 aa/3"));
        let mut f = facts(Some(&p));
        f.force_full = true;
        assert!(plan_disk(&f).reason.contains("--full"));
        let mut f = facts(Some(&p));
        f.cbt_just_enabled = true;
        assert!(plan_disk(&f).reason.contains("just enabled"));
        assert!(plan_disk(&facts(None)).reason.contains("no previous"));
        let grown = prev(50, Some("x"));
        let plan = plan_disk(&facts(Some(&grown)));
        assert_eq!(plan.mode, DiskMode::Full);
        assert!(plan.reason.contains("capacity changed"));
        let mut f = facts(Some(&p));
        f.disk_uuid = Some("6000c29b");
        let plan = plan_disk(&f);
        assert_eq!(plan.mode, DiskMode::Full);
        assert!(plan.reason.contains("replaced"), "{}", plan.reason);
        for bad in [None, Some(""), Some("*")] {
            let p = prev(100, bad);
            let plan = plan_disk(&facts(Some(&p)));
            assert_eq!(plan.mode, DiskMode::Full, "{bad:?}");
            assert_eq!(plan.since_change_id, "*");
        }
    }
}
