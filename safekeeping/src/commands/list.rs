//! `list [TARGET]`: targets and their generations.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::target::Target;

#[derive(Serialize)]
struct Listed {
    key: String,
    name: String,
    generations: Vec<repository_format::repository::GenerationSummary>,
}

/// Lists every target (or one) with its generations.
///
/// # Errors
/// Repository errors; an unknown target.
pub fn run(config: &Config, target: Option<&Target>) -> Result<Report> {
    let r = repo::open(config)?;
    let summaries = match target {
        Some(t) => vec![repo::find_target(&r, t)?.0],
        None => r.targets()?,
    };
    let mut listed = Vec::new();
    let mut text = String::new();
    for s in summaries {
        let gens = r.generations(&s.key)?;
        let _ = writeln!(text, "vm:{}  ({})", s.name, s.key);
        let _ = writeln!(
            text,
            "  {:>4}  {:<20}  {:<11}  {:<9}  {:>12}  {:>12}",
            "gen", "time (UTC)", "mode", "status", "read", "new"
        );
        for g in &gens {
            let t = g.time.to_offset(time::UtcOffset::UTC);
            let t = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            let _ = writeln!(
                text,
                "  {:>4}  {:<20}  {:<11}  {:<9}  {:>12}  {:>12}",
                g.id.0,
                t,
                format!("{:?}", g.mode).to_lowercase(),
                format!("{:?}", g.status).to_lowercase(),
                human_bytes(g.stats.read_bytes),
                human_bytes(g.stats.new_bytes),
            );
        }
        listed.push(Listed {
            key: s.key.to_string(),
            name: s.name,
            generations: gens,
        });
    }
    if listed.is_empty() {
        text.push_str("the repository is empty\n");
    }
    Ok(Report::new(
        Outcome::Success,
        &serde_json::json!({ "targets": listed }),
        text,
    ))
}
