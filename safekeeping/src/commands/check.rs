//! `check [--read-data] [--repair]`: verify the repository; exit 1 when anything is damaged.
//!
//! `--repair` (implies `--read-data`, takes the exclusive lock) moves damaged chunks to
//! `quarantine/`, so the next backup (full or incremental) of the same data stores them again. It still exits 1
//! when it found damage: the generations using a quarantined chunk stay damaged until then.

use std::fmt::Write as _;

use std::collections::HashMap;

use repository_format::{CheckOptions, GenerationId, Problem, ProblemKind, Repository, TargetKey};

use crate::cli::CheckArgs;
use crate::config::Config;
use crate::error::Result;
use crate::format::count;
use crate::outcome::Outcome;
use crate::progress::Deferred;
use crate::repo;
use crate::report::Report;

/// The check's chunk reads shown as bytes verified.
struct CheckBar(Deferred);

impl repository_format::CheckProgress for CheckBar {
    fn started(&self, _chunks: u64, bytes: u64) {
        self.0.start(bytes);
    }

    fn chunk_read(&self, bytes: u64) {
        self.0.add(bytes);
    }
}

/// Checks the repository under the shared lock, or with `--repair` under the exclusive lock.
///
/// # Errors
/// When the repository cannot be opened or locked.
pub fn run(config: &Config, args: CheckArgs, quiet: bool) -> Result<Report> {
    let r = repo::open(config)?;
    let read_data = args.read_data || args.repair || args.read_data_subset.is_some();
    let report = if args.repair {
        let lock = r.lock_exclusive(repo::lock_wait(config))?;
        r.check_and_repair(&lock)?
    } else {
        // Works on a read-only repository too (without a recorded lock; the library warns).
        let _lock = r.lock_shared_for_reading(repo::lock_wait(config))?;
        if read_data {
            // Reading every chunk takes long on a large repository: a bar on a terminal, a
            // log line every tenth otherwise, and a summary line at the end.
            let label = match args.read_data_subset {
                Some(s) => format!("check: reading part {s} of the chunks"),
                None => "check: reading every chunk".to_string(),
            };
            let progress = CheckBar(Deferred::new(label, quiet));
            let report = r.check_reporting(true, args.read_data_subset, &progress);
            progress.0.finish();
            report?
        } else {
            r.check(&CheckOptions { read_data })?
        }
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}, {}, {}, {} referenced{}",
        count(report.targets, "target", "targets"),
        count(report.generations, "generation", "generations"),
        count(report.indexes, "index", "indexes"),
        count(report.chunks_referenced, "chunk", "chunks"),
        if read_data {
            format!(
                ", {} ({}) read and verified{}",
                count(report.chunks_verified, "chunk", "chunks"),
                crate::format::human_bytes(report.bytes_verified),
                report
                    .read_data_subset
                    .as_deref()
                    .map(|s| format!(" (part {s} of the chunks)"))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    let names = Names::of(&r);
    for p in &report.problems {
        let line = names.describe(&r, p);
        let _ = writeln!(text, "PROBLEM: {line}");
        tracing::error!("check: {line}");
    }
    for q in &report.quarantined {
        let _ = writeln!(
            text,
            "QUARANTINED: chunk {} ({}) moved to {}",
            q.chunk,
            q.fault,
            q.quarantine_path.display()
        );
        tracing::warn!(
            "check --repair: chunk {} moved to {}",
            q.chunk,
            q.quarantine_path.display()
        );
    }
    for q in &report.quarantined_indexes {
        let _ = writeln!(
            text,
            "QUARANTINED: index of {} generation {} {} ({}) moved to {}",
            names.target(&q.target),
            q.generation,
            names.disk(&r, &q.target, q.generation, q.disk),
            q.fault,
            q.quarantine_path.display()
        );
        tracing::warn!(
            "check --repair: index {} moved to {}",
            q.path.display(),
            q.quarantine_path.display()
        );
    }
    for g in &report.damaged_generations {
        let disks: Vec<String> = g
            .disks
            .iter()
            .map(|d| names.disk(&r, &g.target, g.generation, *d))
            .collect();
        let index_lost = report
            .quarantined_indexes
            .iter()
            .any(|q| q.target == g.target && q.generation == g.generation);
        let until = if index_lost {
            "until it is deleted (an index cannot be rebuilt; the next backup of the target reads \
             the disk in full)"
        } else {
            "until the next backup of the target (full or incremental) stores the quarantined \
             data again"
        };
        let _ = writeln!(
            text,
            "STILL DAMAGED: {} generation {} ({}) {until}",
            names.target(&g.target),
            g.generation,
            disks.join(", ")
        );
    }
    if let Some(note) = &report.repair_note {
        let _ = writeln!(text, "{note}");
    }
    if report.quarantine_files > 0 {
        let _ = writeln!(
            text,
            "{} files kept in quarantine/ (damaged chunks moved aside by repairs; remove them \
             by hand once they are of no use)",
            report.quarantine_files
        );
    }
    let outcome = if report.ok() {
        text.push_str("no problems found\n");
        Outcome::Success
    } else {
        let _ = writeln!(text, "{} problems found", report.problems.len());
        if args.repair {
            let _ = writeln!(
                text,
                "{} damaged chunks and {} damaged indexes quarantined",
                report.quarantined.len(),
                report.quarantined_indexes.len()
            );
        }
        Outcome::Failure
    };
    let mut doc = serde_json::to_value(&report).unwrap_or_default();
    names.rename_targets(&mut doc);
    Ok(Report::new(outcome, &doc, text))
}

/// Names for people: a target as `vm:web01` (not its folder key), a disk by its position in the
/// VM as `show` and `export --disk` count it (the device key beside it).
struct Names {
    targets: HashMap<String, (String, TargetKey)>,
}

impl Names {
    fn of(r: &Repository) -> Names {
        let targets = r
            .targets()
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key.to_string(), (crate::repo::display_name(&t), t.key)))
            .collect();
        Names { targets }
    }

    /// `vm:web01`, or the folder key when the target's name cannot be read.
    fn target(&self, key: &str) -> String {
        self.targets
            .get(key)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| format!("target {key}"))
    }

    /// The JSON vocabulary (docs/json.md): every `target` holding a folder key becomes the
    /// display name (`vm:web01`), with the folder key beside it as `key`.
    fn rename_targets(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                let key = m.get("target").and_then(|t| t.as_str()).map(str::to_string);
                if let Some((name, _)) = key.as_deref().and_then(|k| self.targets.get(k)) {
                    m.insert("target".into(), name.clone().into());
                    m.entry("key")
                        .or_insert_with(|| key.unwrap_or_default().into());
                }
                m.values_mut().for_each(|x| self.rename_targets(x));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.rename_targets(x)),
            _ => {}
        }
    }

    /// `disk 1 (device 2001)`, or `device 2001` when the manifest cannot say its position.
    fn disk(&self, r: &Repository, target: &str, generation: u64, device: i32) -> String {
        let position = self.targets.get(target).and_then(|(_, key)| {
            let m = r.manifest(key, GenerationId(generation)).ok()?;
            m.disks.iter().position(|d| d.disk.key == device)
        });
        match position {
            Some(i) => format!("disk {i} (device {device})"),
            None => format!("device {device}"),
        }
    }

    /// One problem as a sentence: what, where, why, which file.
    fn describe(&self, r: &Repository, p: &Problem) -> String {
        let what = match p.kind {
            ProblemKind::DamagedManifest => "damaged manifest",
            ProblemKind::DamagedIndex => "damaged index",
            ProblemKind::DamagedMetadata => "damaged metadata",
            ProblemKind::MissingChunk => "missing chunk",
            ProblemKind::DamagedChunk => "damaged chunk",
            ProblemKind::ForeignFile => "foreign file",
            ProblemKind::DamagedKeyFile => "damaged key file",
        };
        let mut where_ = Vec::new();
        if let Some(t) = &p.target {
            where_.push(self.target(t));
            if let Some(g) = p.generation {
                where_.push(format!("generation {g}"));
                if let Some(d) = p.disk {
                    where_.push(self.disk(r, t, g, d));
                }
            }
        }
        let mut line = what.to_string();
        if !where_.is_empty() {
            line.push_str(" in ");
            line.push_str(&where_.join(" "));
        }
        let uses = p.used_by.len();
        if uses > 0 {
            let first = &p.used_by[0];
            let _ = write!(
                line,
                ", used by {} at offset {} of {}{}",
                self.target(&first.target),
                crate::format::human_bytes(first.offset),
                self.disk(r, &first.target, first.generation, first.disk),
                if uses > 1 {
                    format!(
                        " generation {} and {} more places",
                        first.generation,
                        uses - 1
                    )
                } else {
                    format!(" generation {}", first.generation)
                }
            );
        }
        let _ = write!(line, ": {} ({})", p.detail, p.path.display());
        line
    }
}
