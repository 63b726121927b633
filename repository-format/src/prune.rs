//! Retention: which generations to keep (restic/PBS semantics), planned before anything is
//! deleted so a dry run runs the same code.
//!
//! For each rule, generations are walked newest first; a generation is kept by the rule if its
//! period (hour, day, ISO week, month, year - in UTC) differs from the last period that rule
//! kept, until the rule's count is used up. `keep_last` keeps the newest N. `keep_within` keeps
//! everything younger than the duration. Only `succeeded` generations count for the rules;
//! a `partial` generation is kept only while it is newer than the newest successful one. The
//! newest successful generation of a target is always kept. A generation pinned by a running
//! reader (`serve`, `files`; see [`crate::lock`]) is kept whatever the rules say, with the
//! reason "pinned by …", and goes with the first prune after that reader ends.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::lock::RepositoryLock;
use crate::manifest::GenerationStatus;
use crate::repository::{GenerationSummary, Repository};
use crate::target::{GenerationId, TargetKey};

/// How many generations to keep per period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Newest N.
    pub keep_last: u32,
    /// Newest per hour, for N hours that have one.
    pub keep_hourly: u32,
    /// Newest per day.
    pub keep_daily: u32,
    /// Newest per ISO week.
    pub keep_weekly: u32,
    /// Newest per month.
    pub keep_monthly: u32,
    /// Newest per year.
    pub keep_yearly: u32,
    /// Everything younger than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_seconds: Option<u64>,
}

impl RetentionPolicy {
    fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.keep_hourly == 0
            && self.keep_daily == 0
            && self.keep_weekly == 0
            && self.keep_monthly == 0
            && self.keep_yearly == 0
            && self.keep_within_seconds.is_none()
    }
}

/// The decision for one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationDecision {
    /// Generation number.
    pub id: GenerationId,
    /// Its time.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Its status.
    pub status: GenerationStatus,
    /// Kept?
    pub keep: bool,
    /// Rules that keep it (`"last"`, `"daily"`, `"newest successful"`, ...).
    pub reasons: Vec<String>,
}

/// The plan for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetPrunePlan {
    /// Target.
    pub target: TargetKey,
    /// One decision per generation, newest first.
    pub generations: Vec<GenerationDecision>,
}

/// What prune decided and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Per-target decisions.
    pub targets: Vec<TargetPrunePlan>,
    /// Generations deleted (or that would be).
    pub removed: Vec<(TargetKey, GenerationId)>,
}

type Bucket = fn(OffsetDateTime) -> i64;

fn hour(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(3600)
}
fn day(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(86400)
}
fn week(t: OffsetDateTime) -> i64 {
    let (y, w, _) = t.to_iso_week_date();
    y as i64 * 100 + w as i64
}
fn month(t: OffsetDateTime) -> i64 {
    t.year() as i64 * 100 + t.month() as i64
}
fn year(t: OffsetDateTime) -> i64 {
    t.year() as i64
}

/// Decides which generations of one target to keep. `generations` in any order; the result is
/// newest first.
pub fn plan_target(
    target: &TargetKey,
    generations: &[GenerationSummary],
    policy: &RetentionPolicy,
    now: OffsetDateTime,
) -> TargetPrunePlan {
    let mut gens: Vec<&GenerationSummary> = generations.iter().collect();
    gens.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); gens.len()];
    let ok: Vec<usize> = (0..gens.len())
        .filter(|&i| gens[i].status == GenerationStatus::Succeeded)
        .collect();
    if let Some(&newest) = ok.first() {
        reasons[newest].push("newest successful".into());
        for r in reasons.iter_mut().take(newest) {
            r.push("partial, newer than the newest successful".into());
        }
    } else {
        for r in reasons.iter_mut() {
            r.push("no successful generation".into());
        }
    }
    for &i in ok.iter().take(policy.keep_last as usize) {
        reasons[i].push("last".into());
    }
    let rules: [(&str, u32, Bucket); 5] = [
        ("hourly", policy.keep_hourly, hour),
        ("daily", policy.keep_daily, day),
        ("weekly", policy.keep_weekly, week),
        ("monthly", policy.keep_monthly, month),
        ("yearly", policy.keep_yearly, year),
    ];
    for (name, count, bucket) in rules {
        let mut left = count;
        let mut last: Option<i64> = None;
        for &i in &ok {
            if left == 0 {
                break;
            }
            let b = bucket(gens[i].time);
            if last != Some(b) {
                reasons[i].push(name.into());
                last = Some(b);
                left -= 1;
            }
        }
    }
    if let Some(secs) = policy.keep_within_seconds {
        let limit = i64::try_from(secs)
            .ok()
            .and_then(|s| now.checked_sub(time::Duration::seconds(s)))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH - time::Duration::days(365 * 1000));
        for &i in &ok {
            if gens[i].time >= limit {
                reasons[i].push("within".into());
            }
        }
    }
    TargetPrunePlan {
        target: target.clone(),
        generations: gens
            .iter()
            .zip(reasons)
            .map(|(g, reasons)| GenerationDecision {
                id: g.id,
                time: g.time,
                status: g.status,
                keep: !reasons.is_empty(),
                reasons,
            })
            .collect(),
    }
}

impl Repository {
    /// Applies `policy` to every target (or only `target`), deleting what it does not keep
    /// unless `dry_run`. Chunks are freed by a following `gc`.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for an empty policy, [`Error::LockRequired`] without the
    /// exclusive lock, errors of [`Repository::delete_generation`].
    pub fn prune(
        &self,
        lock: &RepositoryLock,
        policy: &RetentionPolicy,
        target: Option<&TargetKey>,
        now: OffsetDateTime,
        dry_run: bool,
    ) -> Result<PruneReport> {
        lock.require(self.config().repository_id, "prune", true)?;
        if policy.is_empty() {
            return Err(Error::InvalidOption(
                "the retention policy keeps nothing; give at least one keep rule".into(),
            ));
        }
        let keys = match target {
            Some(k) => vec![k.clone()],
            None => self.target_keys()?,
        };
        let mut report = PruneReport {
            dry_run,
            targets: Vec::new(),
            removed: Vec::new(),
        };
        // Listed under the exclusive lock: every pin taken before it shows, and none can be
        // taken until it is released (see `crate::lock`).
        let pins = self.pins()?;
        for key in keys {
            let gens = self.generations(&key)?;
            let mut plan = plan_target(&key, &gens, policy, now);
            // The S3 object lock outranks the policy: a generation it still retains stays.
            for d in plan.generations.iter_mut().filter(|d| !d.keep) {
                if let Some(until) = self.generation_locked_until(&key, d.id)? {
                    d.keep = true;
                    d.reasons.push(format!(
                        "object lock until {}",
                        until
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    ));
                }
            }
            for d in plan.generations.iter_mut().filter(|d| !d.keep) {
                let pinned_by = pins.iter().find(|h| {
                    h.pin
                        .as_ref()
                        .is_some_and(|p| p.target == key && p.generation == d.id.0)
                });
                if let Some(h) = pinned_by {
                    tracing::info!(target = %key, generation = d.id.0, holder = %h, "generation kept: in use by a running reader");
                    d.keep = true;
                    d.reasons.push(format!(
                        "pinned by a running {} (pid {} on {})",
                        reader_name(&h.command),
                        h.pid,
                        h.host
                    ));
                }
            }
            for d in plan.generations.iter().filter(|d| !d.keep) {
                if !dry_run {
                    self.delete_generation(lock, &key, d.id)?;
                }
                report.removed.push((key.clone(), d.id));
            }
            report.targets.push(plan);
        }
        Ok(report)
    }
}

/// The subcommand of a pin holder's command line (`serve`, `files`), for the reason text.
fn reader_name(command: &str) -> &str {
    command
        .split_whitespace()
        .find(|w| matches!(*w, "serve" | "files"))
        .unwrap_or("reader")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{BackupMode, DiskStats};
    use time::macros::datetime;

    fn gens(times: &[(u64, OffsetDateTime, GenerationStatus)]) -> Vec<GenerationSummary> {
        times
            .iter()
            .map(|&(id, time, status)| GenerationSummary {
                id: GenerationId(id),
                time,
                mode: BackupMode::Full,
                status,
                parent: None,
                disks: vec![2000],
                stats: DiskStats::default(),
            })
            .collect()
    }

    fn kept(plan: &TargetPrunePlan) -> Vec<u64> {
        let mut k: Vec<u64> = plan
            .generations
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0)
            .collect();
        k.sort();
        k
    }

    fn every_6h(n: u64, start: OffsetDateTime) -> Vec<GenerationSummary> {
        let v: Vec<_> = (0..n)
            .map(|i| {
                (
                    i + 1,
                    start + time::Duration::hours(6 * i as i64),
                    GenerationStatus::Succeeded,
                )
            })
            .collect();
        gens(&v)
    }

    const NOW: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

    #[test]
    fn keep_last_and_daily() {
        let key = TargetKey::new("vm-x").unwrap();
        // 2026-01-01 00:00 .. every 6 hours, 40 generations = 10 days (Jan 1..Jan 10).
        let g = every_6h(40, datetime!(2026-01-01 00:00 UTC));
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_last: 3,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![38, 39, 40]);
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_daily: 3,
                ..Default::default()
            },
            NOW,
        );
        // newest of Jan 10, Jan 9, Jan 8 = 18:00 of each day = ids 40, 36, 32
        assert_eq!(kept(&p), vec![32, 36, 40]);
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_hourly: 2,
                keep_daily: 2,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![36, 39, 40]);
        let d = p.generations.iter().find(|d| d.id.0 == 40).unwrap();
        assert_eq!(d.reasons, vec!["newest successful", "hourly", "daily"]);
    }

    #[test]
    fn weekly_monthly_yearly_use_iso_weeks_and_calendar() {
        let key = TargetKey::new("vm-x").unwrap();
        let g = gens(&[
            (
                1,
                datetime!(2024-12-30 10:00 UTC),
                GenerationStatus::Succeeded,
            ), // ISO week 2025-W01
            (
                2,
                datetime!(2025-01-05 10:00 UTC),
                GenerationStatus::Succeeded,
            ), // 2025-W01, newest of it
            (
                3,
                datetime!(2025-01-06 10:00 UTC),
                GenerationStatus::Succeeded,
            ), // 2025-W02
            (
                4,
                datetime!(2025-02-01 10:00 UTC),
                GenerationStatus::Succeeded,
            ),
            (
                5,
                datetime!(2025-02-20 10:00 UTC),
                GenerationStatus::Succeeded,
            ),
            (
                6,
                datetime!(2026-01-02 10:00 UTC),
                GenerationStatus::Succeeded,
            ),
        ]);
        let weekly = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_weekly: 4,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&weekly), vec![3, 4, 5, 6]);
        // 2024-12-30 lies in ISO week 2025-W01 with generation 2, so 1 is never a weekly.
        let weekly = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_weekly: 10,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&weekly), vec![2, 3, 4, 5, 6]);
        let monthly = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_monthly: 3,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&monthly), vec![3, 5, 6]);
        let yearly = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_yearly: 10,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&yearly), vec![1, 5, 6]);
        let within = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_within_seconds: Some(60 * 86400),
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&within), vec![6]);
        let forever = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_within_seconds: Some(u64::MAX),
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&forever), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn newest_successful_always_kept_and_partials_handled() {
        let key = TargetKey::new("vm-x").unwrap();
        let g = gens(&[
            (
                1,
                datetime!(2026-01-01 00:00 UTC),
                GenerationStatus::Succeeded,
            ),
            (
                2,
                datetime!(2026-01-02 00:00 UTC),
                GenerationStatus::Succeeded,
            ),
            (
                3,
                datetime!(2026-01-03 00:00 UTC),
                GenerationStatus::Partial,
            ),
            (
                4,
                datetime!(2026-01-04 00:00 UTC),
                GenerationStatus::Partial,
            ),
        ]);
        // keep_hourly 1 would pick the newest generation; only successful ones count.
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_hourly: 1,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![2, 3, 4]);
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_last: 2,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![1, 2, 3, 4]);
        // A partial older than the newest successful one goes.
        let g = gens(&[
            (
                1,
                datetime!(2026-01-01 00:00 UTC),
                GenerationStatus::Partial,
            ),
            (
                2,
                datetime!(2026-01-02 00:00 UTC),
                GenerationStatus::Succeeded,
            ),
        ]);
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_daily: 7,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![2]);
        // Only partials: nothing is removed.
        let g = gens(&[(
            1,
            datetime!(2026-01-01 00:00 UTC),
            GenerationStatus::Partial,
        )]);
        let p = plan_target(
            &key,
            &g,
            &RetentionPolicy {
                keep_last: 1,
                ..Default::default()
            },
            NOW,
        );
        assert_eq!(kept(&p), vec![1]);
    }
}
