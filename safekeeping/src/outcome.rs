//! How a run ended, as the process exit code cron and scripts see.

use std::process::ExitCode;

/// The result of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything succeeded: exit 0.
    Success,
    /// Everything failed, or the run could not start: exit 1.
    Failure,
    /// Some targets succeeded and some failed: exit 3.
    Partial,
}

impl Outcome {
    /// Combines per-target results: all ok → success, none ok → failure, else partial.
    pub fn from_counts(succeeded: usize, failed: usize) -> Outcome {
        match (succeeded, failed) {
            (_, 0) => Outcome::Success,
            (0, _) => Outcome::Failure,
            _ => Outcome::Partial,
        }
    }

    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Partial => 3,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_map_to_cron_exit_codes() {
        assert_eq!(Outcome::from_counts(3, 0).code(), 0);
        assert_eq!(Outcome::from_counts(0, 2).code(), 1);
        assert_eq!(Outcome::from_counts(1, 1).code(), 3);
        assert_eq!(Outcome::from_counts(0, 0).code(), 0);
    }
}
