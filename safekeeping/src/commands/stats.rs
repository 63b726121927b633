//! `stats [TARGET]`: where the space goes — per target and in all, the bytes the generations
//! describe, the distinct data among them, what it takes on the store, and the ratios.

use std::fmt::Write as _;

use repository_format::SpaceStats;
use serde_json::json;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::target::Target;

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.1}:1")).unwrap_or_else(|| "-".into())
}

fn row(text: &mut String, name: &str, s: &SpaceStats) {
    let _ = writeln!(
        text,
        "{name:<24} {:>5} {:>11} {:>11} {:>11} {:>8} {:>8}",
        s.generations,
        human_bytes(s.logical_bytes),
        human_bytes(s.unique_bytes),
        human_bytes(s.stored_bytes),
        ratio(s.dedup_ratio),
        ratio(s.compression_ratio)
    );
}

fn space_json(s: &SpaceStats) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

/// Prints the figures of `target` (else of every target and the total) under the shared lock.
///
/// # Errors
/// An unknown target; a manifest or index that cannot be read or verified.
pub fn run(config: &Config, target: Option<&Target>) -> Result<Report> {
    let r = repo::open(config)?;
    let key = match target {
        Some(t) => Some(repo::find_configured_target(&r, t, config)?.0.key),
        None => None,
    };
    let _lock = r.lock_shared_for_reading(repo::lock_wait(config))?;
    let stats = r.stats(key.as_ref())?;
    let names = repo::TargetNames::of(&r)?;
    let name = |k: &repository_format::TargetKey| names.name(k);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<24} {:>5} {:>11} {:>11} {:>11} {:>8} {:>8}",
        "target", "gens", "logical", "unique", "stored", "dedup", "compress"
    );
    for t in &stats.targets {
        row(&mut text, &name(&t.key), &t.space);
    }
    if target.is_none() {
        row(&mut text, "all targets", &stats.total);
        let referenced = stats.total.unique_chunks;
        let _ = writeln!(
            text,
            "{} chunk objects on the store ({}); {} not referenced by any generation (gc removes them)",
            stats.chunk_objects,
            human_bytes(stats.chunk_object_bytes),
            stats.chunk_objects.saturating_sub(referenced)
        );
    }
    let _ = writeln!(
        text,
        "logical: what restoring every generation would write; unique: distinct data (zeros not stored); \
         a chunk shared by several targets counts for each, and once in all targets"
    );
    let doc = json!({
        "targets": stats.targets.iter().map(|t| {
            let mut v = space_json(&t.space);
            if let Some(m) = v.as_object_mut() {
                m.insert("target".into(), name(&t.key).into());
                m.insert("key".into(), t.key.to_string().into());
            }
            v
        }).collect::<Vec<_>>(),
        "total": space_json(&stats.total),
        "chunk_objects": stats.chunk_objects,
        "chunk_object_bytes": stats.chunk_object_bytes,
    });
    Ok(Report::new(Outcome::Success, &doc, text))
}
