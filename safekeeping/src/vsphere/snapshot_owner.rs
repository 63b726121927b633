//! Who a snapshot belongs to, written into its description, and whether a later backup may
//! remove it.
//!
//! Every snapshot a backup takes (of a VM or of a first class disk) carries, after a sentence
//! for people, a small versioned record of its owner:
//!
//! ```text
//! safekeeping backup in progress; removed when the backup ends [safekeeping v2 run=<run id> repository=<repository id> host=<host>]
//! ```
//!
//! The run id is the id of the run's claim on the repository lock
//! ([`repository_format::RepositoryLock::run_id`]), held from before the snapshot is taken until
//! after it is removed. So a snapshot of *this* repository is left over exactly when its run no
//! longer holds a live record of the repository lock ([`repository_format::Repository::live_runs`]),
//! and only then is it removed ([`judge`]). A snapshot of another repository is that
//! repository's business: its next backup removes it. A description that is not exactly ours
//! is never touched, whatever the snapshot's name.
//!
//! The previous release described its snapshots with the sentence alone
//! ([`PREVIOUS_RELEASE_DESCRIPTION`]) and recorded no owner. Such a snapshot may belong to a
//! run of that release that is still reading it (during an upgrade, from another backup host),
//! so it is removed only once it is older than [`PREVIOUS_RELEASE_GRACE`], longer than any
//! backup runs; a younger one is left with a warning.

use std::collections::HashSet;
use std::time::Duration;

use time::OffsetDateTime;

/// The sentence for people that starts every description, and the whole description of the
/// previous release's snapshots.
pub const PREVIOUS_RELEASE_DESCRIPTION: &str =
    "safekeeping backup in progress; removed when the backup ends";

/// Age after which a snapshot of the previous release (no owner recorded) is taken to be left
/// over: a day, longer than a backup of one VM runs.
pub const PREVIOUS_RELEASE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The record's tag and the only version this release writes and removes.
const TAG: &str = "safekeeping";
const VERSION: u32 = 2;

/// The longest run id and host name a record may hold (a DNS name has at most 253 octets).
const MAX_RUN_ID: usize = 64;
const MAX_HOST: usize = 253;

/// The owner of a snapshot: the backup run that took it and the repository it wrote to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOwner {
    /// Id of the run's claim on the repository lock (hex).
    pub run: String,
    /// The repository the run backed up into.
    pub repository: uuid::Uuid,
    /// Host name of the backup host, for people (never trusted to decide anything: two hosts
    /// may share a name). Characters outside `[A-Za-z0-9._-]` are written as `_`.
    pub host: String,
}

impl SnapshotOwner {
    /// The owner record of a run; the host name is cut to what a record holds.
    pub fn new(run: &str, repository: uuid::Uuid, host: &str) -> SnapshotOwner {
        let host: String = host
            .chars()
            .map(|c| if host_char(c) { c } else { '_' })
            .take(MAX_HOST)
            .collect();
        SnapshotOwner {
            run: run.to_string(),
            repository,
            host: if host.is_empty() {
                "unknown-host".into()
            } else {
                host
            },
        }
    }

    /// The snapshot description that records this owner.
    pub fn description(&self) -> String {
        format!(
            "{PREVIOUS_RELEASE_DESCRIPTION} [{TAG} v{VERSION} run={} repository={} host={}]",
            self.run,
            self.repository.hyphenated(),
            self.host
        )
    }
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// What a snapshot's description says about who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marking {
    /// Taken by a run of this release, with its owner.
    Ours(SnapshotOwner),
    /// Taken by the previous release (its exact description, no owner recorded).
    PreviousRelease,
    /// Marked by a release newer than this one (a record version this one does not know):
    /// left alone, since what that release expects is unknown.
    NewerRelease(u32),
    /// Not a safekeeping description: never touched.
    NotOurs,
}

/// Reads a description. Anything that is not exactly one of our formats is [`Marking::NotOurs`].
pub fn parse(description: &str) -> Marking {
    if description == PREVIOUS_RELEASE_DESCRIPTION {
        return Marking::PreviousRelease;
    }
    let Some(record) = description
        .strip_prefix(PREVIOUS_RELEASE_DESCRIPTION)
        .and_then(|r| r.strip_prefix(" ["))
        .and_then(|r| r.strip_suffix(']'))
    else {
        return Marking::NotOurs;
    };
    let mut words = record.split(' ');
    if words.next() != Some(TAG) {
        return Marking::NotOurs;
    }
    let Some(version) = words
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return Marking::NotOurs;
    };
    if version > VERSION {
        return Marking::NewerRelease(version);
    }
    if version != VERSION {
        return Marking::NotOurs;
    }
    let (Some(run), Some(repository), Some(host), None) = (
        words.next().and_then(|w| w.strip_prefix("run=")),
        words.next().and_then(|w| w.strip_prefix("repository=")),
        words.next().and_then(|w| w.strip_prefix("host=")),
        words.next(),
    ) else {
        return Marking::NotOurs;
    };
    let run_ok = !run.is_empty()
        && run.len() <= MAX_RUN_ID
        && run
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let host_ok = !host.is_empty() && host.len() <= MAX_HOST && host.chars().all(host_char);
    // Only the form this release writes: a record spelled differently was not written by us.
    let repository = uuid::Uuid::parse_str(repository)
        .ok()
        .filter(|u| u.hyphenated().to_string() == repository);
    match repository {
        Some(repository) if run_ok && host_ok => Marking::Ours(SnapshotOwner {
            run: run.to_string(),
            repository,
            host: host.to_string(),
        }),
        _ => Marking::NotOurs,
    }
}

/// What a backup knows when it looks at a target's snapshots: read *after* the snapshot list,
/// so that any run whose snapshot is in the list and is still running shows in `live_runs`
/// (a run holds the repository lock before it takes a snapshot and until it has removed it).
#[derive(Debug, Clone)]
pub struct Judge {
    /// This repository.
    pub repository: uuid::Uuid,
    /// This run.
    pub own_run: String,
    /// Runs holding a live record of this repository's lock.
    pub live_runs: HashSet<String>,
    /// Now, to age snapshots of the previous release by their creation time.
    pub now: OffsetDateTime,
}

/// Whether a snapshot is removed, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Provably left over by a run that has ended: remove it.
    Remove(String),
    /// Someone else's, or possibly still in use: leave it, and tell the administrator when
    /// it looks like ours.
    Keep {
        /// Why it stays.
        why: String,
        /// Whether to warn: a snapshot that looks like ours but stays deserves a look.
        warn: bool,
    },
}

fn keep(why: impl Into<String>, warn: bool) -> Verdict {
    Verdict::Keep {
        why: why.into(),
        warn,
    }
}

/// Decides about one snapshot. `named_like_ours` is whether its name has our form (VM
/// snapshots; first class disk snapshots have no name and pass `true`); `created` is its
/// creation time as vCenter reports it (`xsd:dateTime`).
pub fn judge(judge: &Judge, description: &str, named_like_ours: bool, created: &str) -> Verdict {
    if !named_like_ours {
        return keep("not named like a safekeeping snapshot", false);
    }
    match parse(description) {
        Marking::NotOurs => keep("its description is not one safekeeping writes", false),
        Marking::NewerRelease(v) => keep(
            format!("taken by a newer safekeeping (description record v{v}); that release removes it"),
            true,
        ),
        Marking::Ours(owner) if owner.repository != judge.repository => keep(
            format!(
                "taken by run {} on {} for repository {}; that repository's next backup removes it once that run has ended",
                owner.run, owner.host, owner.repository
            ),
            false,
        ),
        Marking::Ours(owner) if owner.run == judge.own_run => {
            keep("taken by this run", false)
        }
        Marking::Ours(owner) if judge.live_runs.contains(&owner.run) => keep(
            format!(
                "run {} on {} still holds this repository's lock: the snapshot is in use",
                owner.run, owner.host
            ),
            true,
        ),
        Marking::Ours(owner) => Verdict::Remove(format!(
            "left by an earlier run {} on {}, which has ended (it holds no live lock of this repository)",
            owner.run, owner.host
        )),
        Marking::PreviousRelease => {
            let created = OffsetDateTime::parse(
                created,
                &time::format_description::well_known::Rfc3339,
            );
            match created {
                Ok(t) if judge.now - t > PREVIOUS_RELEASE_GRACE => Verdict::Remove(format!(
                    "taken by the previous release (no owner recorded) {} hours ago, longer than any backup runs",
                    (judge.now - t).whole_hours()
                )),
                Ok(t) => keep(
                    format!(
                        "taken by the previous release (no owner recorded) {} minutes ago: it may belong to a backup still running; removed once older than {} hours, or remove it by hand",
                        (judge.now - t).whole_minutes(),
                        PREVIOUS_RELEASE_GRACE.as_secs() / 3600
                    ),
                    true,
                ),
                Err(_) => keep(
                    format!("taken by the previous release, at an unreadable time {created:?}: remove it by hand once no backup of it runs"),
                    true,
                ),
            }
        }
    }
}

/// This machine's host name, for the owner record.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const REPO: uuid::Uuid = uuid::uuid!("8d9b1c2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e");
    const OTHER_REPO: uuid::Uuid = uuid::uuid!("00000000-1111-4222-8333-444444444444");
    const RUN: &str = "0123456789abcdef0123456789abcdef";

    fn owner() -> SnapshotOwner {
        SnapshotOwner::new(RUN, REPO, "backup01.example.com")
    }

    fn judge_with(live: &[&str]) -> Judge {
        Judge {
            repository: REPO,
            own_run: "ffffffffffffffffffffffffffffffff".into(),
            live_runs: live.iter().map(|s| s.to_string()).collect(),
            now: datetime!(2026-12-04 12:00 UTC),
        }
    }

    #[test]
    fn a_description_round_trips() {
        let o = owner();
        let d = o.description();
        assert_eq!(
            d,
            "safekeeping backup in progress; removed when the backup ends [safekeeping v2 \
             run=0123456789abcdef0123456789abcdef repository=8d9b1c2e-4f5a-4b6c-8d7e-9f0a1b2c3d4e \
             host=backup01.example.com]"
        );
        assert_eq!(parse(&d), Marking::Ours(o));
    }

    #[test]
    fn host_names_are_kept_to_safe_characters() {
        let o = SnapshotOwner::new(RUN, REPO, "bad host]name=x");
        assert_eq!(o.host, "bad_host_name_x");
        assert_eq!(parse(&o.description()), Marking::Ours(o));
        let o = SnapshotOwner::new(RUN, REPO, &"h".repeat(400));
        assert_eq!(o.host.len(), 253);
        assert_eq!(parse(&o.description()), Marking::Ours(o));
        assert_eq!(SnapshotOwner::new(RUN, REPO, "").host, "unknown-host");
    }

    #[test]
    fn foreign_and_altered_descriptions_are_not_ours() {
        let d = owner().description();
        for foreign in [
            "",
            "nightly before patching",
            "safekeeping",
            &format!("{d} "),
            &format!(" {d}"),
            &d.replace("v2", "v1"),
            &d.replace("v2", "v"),
            &d.replace("v2", "vx"),
            &d.replace("run=", "run:"),
            &d.replace(RUN, ""),
            &d.replace(RUN, &"a".repeat(65)),
            &d.replace(RUN, &RUN.to_uppercase()),
            &d.replace("8d9b1c2e-", "8d9b1c2e"),
            &d.replace("8d9b1c2e", "8D9B1C2E"),
            &d.replace("host=backup01.example.com", "host="),
            &d.replace("host=backup01.example.com", "host=a b"),
            &d.replace("]", " extra=1]"),
            &d.replace(" [safekeeping", " [other"),
            &d.replace("in progress", "in  progress"),
            d.trim_end_matches(']'),
        ] {
            assert_eq!(parse(foreign), Marking::NotOurs, "{foreign:?}");
        }
    }

    #[test]
    fn the_previous_release_and_newer_records_are_recognised() {
        assert_eq!(
            parse("safekeeping backup in progress; removed when the backup ends"),
            Marking::PreviousRelease
        );
        let newer = owner().description().replace("v2", "v3");
        assert_eq!(parse(&newer), Marking::NewerRelease(3));
    }

    #[test]
    fn only_a_snapshot_of_this_repository_whose_run_has_ended_is_removed() {
        let d = owner().description();
        let created = "2026-12-04T11:59:00Z";
        assert!(matches!(
            judge(&judge_with(&[]), &d, true, created),
            Verdict::Remove(_)
        ));
        // Its run still holds the repository lock: in use.
        assert!(matches!(
            judge(&judge_with(&[RUN]), &d, true, created),
            Verdict::Keep { warn: true, .. }
        ));
        // This run's own.
        let mut j = judge_with(&[]);
        j.own_run = RUN.into();
        assert!(matches!(judge(&j, &d, true, created), Verdict::Keep { .. }));
        // Another repository's: never, whether its run is alive or not.
        let other = SnapshotOwner::new(RUN, OTHER_REPO, "h").description();
        assert!(matches!(
            judge(&judge_with(&[]), &other, true, created),
            Verdict::Keep { .. }
        ));
        // Not named like ours, or not described like ours.
        assert!(matches!(
            judge(&judge_with(&[]), &d, false, created),
            Verdict::Keep { warn: false, .. }
        ));
        assert!(matches!(
            judge(&judge_with(&[]), "taken by hand", true, created),
            Verdict::Keep { warn: false, .. }
        ));
        let newer = d.replace("v2", "v7");
        assert!(matches!(
            judge(&judge_with(&[]), &newer, true, created),
            Verdict::Keep { warn: true, .. }
        ));
    }

    #[test]
    fn a_previous_release_snapshot_is_removed_only_after_the_grace() {
        let j = judge_with(&[]);
        let old = PREVIOUS_RELEASE_DESCRIPTION;
        assert!(matches!(
            judge(&j, old, true, "2026-12-03T11:59:59Z"),
            Verdict::Remove(_)
        ));
        assert!(matches!(
            judge(&j, old, true, "2026-12-03T12:00:01.5Z"),
            Verdict::Keep { warn: true, .. }
        ));
        assert!(matches!(
            judge(&j, old, true, "2026-12-04T11:00:00+01:00"),
            Verdict::Keep { warn: true, .. }
        ));
        assert!(matches!(
            judge(&j, old, true, "yesterday"),
            Verdict::Keep { warn: true, .. }
        ));
        // Named otherwise, the old description alone does not make it ours.
        assert!(matches!(
            judge(&j, old, false, "2020-01-01T00:00:00Z"),
            Verdict::Keep { warn: false, .. }
        ));
    }
}
