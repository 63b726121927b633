//! Retention: which generations to keep (restic/PBS semantics), planned before anything is
//! deleted so a dry run runs the same code.
//!
//! For each rule, generations are walked newest first; a generation is kept by the rule if its
//! period (hour, day, ISO week, month, year - in UTC) differs from the last period that rule
//! kept, until the rule's count is used up. `keep_last` keeps the newest N. `keep_within` keeps
//! everything younger than the duration. Only `succeeded` generations count for the rules;
//! a `partial` generation is kept only while it is newer than the newest successful one. The
//! newest successful generation of a target is always kept.

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
        let limit = now - time::Duration::seconds(secs.min(i64::MAX as u64) as i64);
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
        for key in keys {
            let gens = self.generations(&key)?;
            let plan = plan_target(&key, &gens, policy, now);
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
