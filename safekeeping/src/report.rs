//! What a command hands back to `main`: one JSON document for `--json`, text otherwise, and
//! the exit outcome.

use serde::Serialize;

use crate::outcome::Outcome;

/// The printable result of a command.
#[derive(Debug)]
pub struct Report {
    /// Exit outcome.
    pub outcome: Outcome,
    /// The `--json` document.
    pub json: serde_json::Value,
    /// Human-readable text for stdout.
    pub text: String,
    /// Whether stdout is free for the report: false when the command wrote its data there
    /// (`export --output -`), where a report would corrupt the stream, even with `--json`.
    pub printable: bool,
}

impl Report {
    /// A report from a serializable document and its text rendering.
    pub fn new(outcome: Outcome, doc: &impl Serialize, text: String) -> Report {
        let mut json = serde_json::to_value(doc).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("cannot serialize report: {e}") }),
        );
        if let Some(map) = json.as_object_mut() {
            map.insert("exit_code".into(), outcome.code().into());
        }
        Report {
            outcome,
            json,
            text,
            printable: true,
        }
    }

    /// The same report, never printed (its command's data went to stdout).
    pub fn without_output(mut self) -> Report {
        self.printable = false;
        self
    }

    /// The report of a command that could not run at all.
    pub fn failed(message: &str) -> Report {
        Report::new(
            Outcome::Failure,
            &serde_json::json!({ "error": message }),
            String::new(),
        )
    }

    /// Prints to stdout in the chosen form. `quiet` (`-q`) prints nothing after a success, so
    /// that cron, which mails any output, mails only failures.
    pub fn print(&self, json: bool, quiet: bool) {
        if !self.printable || (quiet && !json && self.outcome == Outcome::Success) {
            return;
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.json).unwrap_or_default()
            );
        } else if !self.text.is_empty() {
            print!("{}", self.text);
            if !self.text.ends_with('\n') {
                println!();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_exit_code() {
        let r = Report::new(
            Outcome::Partial,
            &serde_json::json!({"targets": []}),
            "x".into(),
        );
        assert_eq!(r.json["exit_code"], 3);
        assert_eq!(Report::failed("boom").json["error"], "boom");
    }
}
