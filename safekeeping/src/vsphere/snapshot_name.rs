//! Names of the snapshots safekeeping creates: `safekeeping-<UTC timestamp>`, so a leftover
//! from a killed run is recognisable at the next backup.

use time::OffsetDateTime;

use crate::format::compact_utc;

/// Prefix of every snapshot safekeeping creates.
pub const SNAPSHOT_PREFIX: &str = "safekeeping-";

/// `safekeeping-20261127T104200Z`
pub fn snapshot_name(now: OffsetDateTime) -> String {
    format!("{SNAPSHOT_PREFIX}{}", compact_utc(now))
}

/// Whether a snapshot name is one of ours.
pub fn is_ours(name: &str) -> bool {
    name.strip_prefix(SNAPSHOT_PREFIX)
        .is_some_and(|rest| rest.len() == 16 && rest.as_bytes()[8] == b'T' && rest.ends_with('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn names_round_trip_through_is_ours() {
        let n = snapshot_name(datetime!(2026-11-27 10:42:05 UTC));
        assert_eq!(n, "safekeeping-20261127T104205Z");
        assert!(is_ours(&n));
        assert!(!is_ours("safekeeping-manual"));
        assert!(!is_ours("nightly"));
    }
}
