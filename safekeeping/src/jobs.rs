//! Jobs: named backup runs in the configuration (`[jobs.NAME]`), so that cron or a systemd
//! timer runs `safekeeping run NAME` and the selection, retention and maintenance live in one
//! reviewed file instead of in crontab lines.
//!
//! A job is checked when the configuration is loaded ([`JobConfig::check`]): unknown keys,
//! an empty selection, targets that do not parse, a retention that keeps nothing, a
//! repository name that is not configured. `commands::run` executes it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::target::Target;

/// `[jobs.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Targets in any form `backup` takes (`vm:web01`, `tag:Backup/nightly`, ...).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Every target of these kinds (`vm`, `ivd`, `vapp`), like `backup --all`.
    #[serde(default)]
    pub all: Vec<String>,
    /// Left out of the selection (`vm:`, `ivd:` or `tag:`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The repository `[repositories.NAME]` to back up into (default `[repository]`).
    #[serde(default)]
    pub repository: Option<String>,
    /// The vCenter `[vcenters.NAME]` whose VMs this job backs up (default `[vcenter]`).
    #[serde(default)]
    pub vcenter: Option<String>,
    /// Targets at the same time (default `[defaults] parallel`).
    #[serde(default)]
    pub parallel: Option<u16>,
    /// VDDK connections at once (default `[defaults] max_vddk_connections`).
    #[serde(default)]
    pub max_connections: Option<u16>,
    /// Read every disk in full.
    #[serde(default)]
    pub full: bool,
    /// Ask VMware Tools to quiesce the guest (default true).
    #[serde(default = "yes")]
    pub quiesce: bool,
    /// Keep the N most recent generations of each target.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the last generation of each of the N most recent hours.
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    /// ... days.
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// ... weeks.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// ... months.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// ... years.
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// Keep every generation younger than this (`36h`, `14d`, `2w`, `6m`, `1y`).
    #[serde(default)]
    pub keep_within: Option<String>,
    /// Run `gc` after the prune.
    #[serde(default)]
    pub gc: bool,
    /// Run `check` (structure only) at the end.
    #[serde(default)]
    pub check: bool,
    /// Run `check --read-data` at the end (reads every chunk: slow on a large repository).
    #[serde(default)]
    pub check_read_data: bool,
    /// Run `check --read-data-subset` at the end on one M-th of the chunks: `"1/7"` reads a
    /// seventh each run, the part chosen by the UTC day (see [`JobConfig::read_subset_for`]),
    /// so seven nights in a row read every chunk once, as restic's rotating check does.
    #[serde(default)]
    pub check_read_data_subset: Option<String>,
    /// Write Prometheus metrics of the backup here, like `backup --metrics-file`.
    #[serde(default)]
    pub metrics_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

/// The kinds `all` accepts, as `backup --all` spells them.
pub const ALL_KINDS: [&str; 3] = ["vm", "ivd", "vapp"];

/// A job's retention rules, with `keep_within` in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobRetention {
    /// See [`JobConfig`].
    pub keep_last: u32,
    /// See [`JobConfig`].
    pub keep_hourly: u32,
    /// See [`JobConfig`].
    pub keep_daily: u32,
    /// See [`JobConfig`].
    pub keep_weekly: u32,
    /// See [`JobConfig`].
    pub keep_monthly: u32,
    /// See [`JobConfig`].
    pub keep_yearly: u32,
    /// See [`JobConfig`].
    pub keep_within_seconds: Option<u64>,
}

impl JobConfig {
    /// The parsed targets.
    ///
    /// # Errors
    /// The first target that does not parse, with why.
    pub fn parsed_targets(&self) -> Result<Vec<Target>, String> {
        parse_all(&self.targets, "targets")
    }

    /// The parsed exclusions.
    ///
    /// # Errors
    /// The first one that does not parse.
    pub fn parsed_exclude(&self) -> Result<Vec<Target>, String> {
        parse_all(&self.exclude, "exclude")
    }

    /// The retention, or `None` when the job sets no keep rule (then it does not prune).
    ///
    /// # Errors
    /// A `keep_within` that does not parse, or rules that are all zero (they would keep
    /// nothing: never what was meant).
    pub fn retention(&self) -> Result<Option<JobRetention>, String> {
        let within = match &self.keep_within {
            Some(w) => {
                Some(crate::cli::parse_keep_within(w).map_err(|e| format!("keep_within {e}"))?)
            }
            None => None,
        };
        let given = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        if given.iter().all(Option::is_none) && within.is_none() {
            return Ok(None);
        }
        let r = JobRetention {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within_seconds: within.filter(|&s| s > 0),
        };
        if r == JobRetention::default() {
            return Err("its keep_* rules are all zero and would keep nothing".into());
        }
        Ok(Some(r))
    }

    /// The share of the data a run's check reads: `1/M` from `check_read_data_subset`, or
    /// `None` when the job does not ask for a subset.
    ///
    /// # Errors
    /// A value that is not `1/M` with M ≥ 1.
    pub fn read_subset_share(&self) -> Result<Option<u32>, String> {
        let Some(text) = &self.check_read_data_subset else {
            return Ok(None);
        };
        let bad = || {
            format!(
                "check_read_data_subset `{text}` is not 1/M (for example \"1/7\": a seventh of the data per run, a different seventh each day)"
            )
        };
        let s: repository_format::ReadSubset = text.parse().map_err(|_| bad())?;
        if s.part != 1 {
            return Err(bad());
        }
        Ok(Some(s.of))
    }

    /// The part a run on `day` (days since 1970-01-01, UTC) reads for a share of `1/of`:
    /// part `day mod of + 1`, so consecutive days walk through every part.
    pub fn read_subset_for(of: u32, day: i64) -> repository_format::ReadSubset {
        let of = of.max(1);
        repository_format::ReadSubset {
            part: u32::try_from(day.rem_euclid(i64::from(of))).unwrap_or(0) + 1,
            of,
        }
    }

    /// Checks the job as the configuration is loaded.
    ///
    /// # Errors
    /// What is wrong, without the `[jobs.NAME]` prefix the caller adds.
    pub fn check(&self, repositories: &[&str]) -> Result<(), String> {
        if self.targets.is_empty() && self.all.is_empty() {
            return Err(
                "targets is empty: name at least one target (vm:NAME, tag:NAME, ...) or set all = [\"vm\"]"
                    .into(),
            );
        }
        self.parsed_targets()?;
        self.parsed_exclude()?;
        for k in &self.all {
            if !ALL_KINDS.contains(&k.as_str()) {
                return Err(format!("all: `{k}` is not one of {}", ALL_KINDS.join(", ")));
            }
        }
        self.retention()?;
        if let Some(name) = &self.repository {
            if !repositories.contains(&name.as_str()) {
                return Err(format!(
                    "repository `{name}` is not configured: {}",
                    if repositories.is_empty() {
                        "the configuration has no [repositories.NAME] tables".to_string()
                    } else {
                        format!("the configured names are {}", repositories.join(", "))
                    }
                ));
            }
        }
        self.read_subset_share()?;
        if self.check_read_data && self.check_read_data_subset.is_some() {
            return Err(
                "check_read_data and check_read_data_subset both set: choose one (read everything, or a part per run)"
                    .into(),
            );
        }
        if self.parallel == Some(0) || self.max_connections == Some(0) {
            return Err("parallel and max_connections must be at least 1".into());
        }
        Ok(())
    }
}

/// Job names become systemd instance names and run record fields: keep them plain.
///
/// # Errors
/// A name with other characters than letters, digits, `-`, `_` and `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "job name `{name}`: use 1 to 64 letters, digits, '-', '_' or '.' (it is a systemd instance name)"
        ))
    }
}

fn parse_all(texts: &[String], field: &str) -> Result<Vec<Target>, String> {
    texts
        .iter()
        .map(|t| {
            t.parse::<Target>()
                .map_err(|e| format!("{field}: `{t}`: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Result<JobConfig, String> {
        toml::from_str::<JobConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_job_parses_and_checks() {
        let j = job(r#"
            targets = ["vm:web01", "tag:Backup/nightly"]
            exclude = ["vm:scratch"]
            keep_daily = 7
            keep_within = "2d"
            repository = "offsite"
            parallel = 2
            gc = true
            check_read_data = true
            metrics_file = "/var/lib/node_exporter/sk.prom"
        "#)
        .unwrap();
        j.check(&["offsite"]).unwrap();
        let r = j.retention().unwrap().unwrap();
        assert_eq!(r.keep_daily, 7);
        assert_eq!(r.keep_within_seconds, Some(2 * 86_400));
        assert_eq!(j.parsed_targets().unwrap().len(), 2);
        assert!(j.quiesce, "quiesce by default");
    }

    #[test]
    fn a_read_data_subset_rotates_through_every_part_by_day() {
        let j = job("targets = [\"vm:a\"]\ncheck_read_data_subset = \"1/7\"").unwrap();
        j.check(&[]).unwrap();
        assert_eq!(j.read_subset_share().unwrap(), Some(7));
        let parts: Vec<u32> = (20_000..20_007)
            .map(|day| JobConfig::read_subset_for(7, day).part)
            .collect();
        let mut sorted = parts.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (1..=7).collect::<Vec<_>>(),
            "seven days read all parts: {parts:?}"
        );
        assert_eq!(
            JobConfig::read_subset_for(7, 20_007),
            JobConfig::read_subset_for(7, 20_000)
        );
        assert_eq!(JobConfig::read_subset_for(1, 20_003).to_string(), "1/1");
        for bad in ["2/7", "0/7", "7", "x"] {
            let j = job(&format!(
                "targets = [\"vm:a\"]\ncheck_read_data_subset = \"{bad}\""
            ))
            .unwrap();
            assert!(j.check(&[]).unwrap_err().contains("is not 1/M"), "{bad}");
        }
        let both =
            job("targets = [\"vm:a\"]\ncheck_read_data = true\ncheck_read_data_subset = \"1/7\"")
                .unwrap();
        assert!(both.check(&[]).unwrap_err().contains("choose one"));
    }

    #[test]
    fn bad_jobs_are_refused_with_the_reason() {
        assert!(job("targets = [\"vm:a\"]\nkeep_lats = 3")
            .unwrap_err()
            .contains("keep_lats"));
        let e = job("targets = []").unwrap().check(&[]).unwrap_err();
        assert!(e.contains("targets is empty"), "{e}");
        let e = job("targets = [\"web01\"]")
            .unwrap()
            .check(&[])
            .unwrap_err();
        assert!(e.contains("web01"), "{e}");
        let e = job("targets = [\"vm:a\"]\nkeep_last = 0")
            .unwrap()
            .check(&[])
            .unwrap_err();
        assert!(e.contains("keep nothing"), "{e}");
        let e = job("targets = [\"vm:a\"]\nkeep_within = \"3x\"")
            .unwrap()
            .check(&[])
            .unwrap_err();
        assert!(e.contains("keep_within"), "{e}");
        let e = job("targets = [\"vm:a\"]\nrepository = \"nope\"")
            .unwrap()
            .check(&["site-b"])
            .unwrap_err();
        assert!(e.contains("nope") && e.contains("site-b"), "{e}");
        let e = job("all = [\"vms\"]").unwrap().check(&[]).unwrap_err();
        assert!(e.contains("vms"), "{e}");
        assert!(job("targets = [\"vm:a\"]")
            .unwrap()
            .retention()
            .unwrap()
            .is_none());
        assert!(check_name("nightly-db.1").is_ok());
        assert!(
            check_name("a b").is_err() && check_name("../x").is_err() && check_name("").is_err()
        );
    }
}
