//! Names of the snapshots safekeeping creates: `safekeeping-<UTC timestamp>`, so a leftover
//! from a killed run is recognisable at the next backup.

use time::OffsetDateTime;

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

/// `20261127T104200Z`, used in snapshot names and default restore names.
pub fn compact_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
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

    #[test]
    fn converts_to_utc() {
        let t = datetime!(2026-11-27 12:00:00 +02:00);
        assert_eq!(compact_utc(t), "20261127T100000Z");
    }
}
