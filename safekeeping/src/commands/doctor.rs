//! `doctor` and `config check`: the setup check's report, as text or JSON.

use std::fmt::Write as _;
use std::path::Path;

use crate::doctor::{diagnose, Status};
use crate::outcome::Outcome;
use crate::report::Report;

/// Runs every check; exit 0 only when none failed (warnings pass).
pub async fn run(config_path: Option<&Path>, repo: Option<&str>, vcenter: Option<&str>) -> Report {
    let d = diagnose(config_path, repo, vcenter).await;
    let mut text = String::new();
    for c in &d.checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warning => "warn",
            Status::Failed => "FAIL",
        };
        let _ = writeln!(text, "{mark}  {:<13} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(text, "      {:<13} fix: {fix}", "");
        }
    }
    let failed = d
        .checks
        .iter()
        .filter(|c| c.status == Status::Failed)
        .count();
    if d.ready {
        text.push_str("ready for the first backup\n");
    } else {
        let _ = writeln!(
            text,
            "not ready: {failed} check{} failed",
            if failed == 1 { "" } else { "s" }
        );
    }
    let outcome = if d.ready {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    Report::new(outcome, &d, text)
}
