//! `copy --to NAME [TARGET...]`: copies generations of the current repository into the
//! configured repository NAME, generation by generation, and reports each one.
//!
//! The library does the work ([`Repository::copies_in`], [`Repository::copy_generation_to`]):
//! only chunks the destination lacks travel, each verified with the source's keys, and each
//! generation is committed in the destination only once all its chunks are there. A generation
//! the destination already holds (from an earlier copy, even an interrupted one that got that
//! far) is skipped, so running the same copy again sends nothing.

use std::fmt::Write as _;
use std::time::Instant;

use repository_format::{CopyProgress, GenerationId, Repository, TargetKey};
use serde::Serialize;

use crate::cli::CopyArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::progress::Progress;
use crate::repo;
use crate::report::Report;

/// What happened to one source generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    /// Copied and committed in the destination.
    Copied,
    /// The destination already holds a copy; nothing was sent.
    AlreadyThere,
    /// The copy failed; nothing of it was committed.
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationLine {
    /// The target as the command line names it (`vm:web01`).
    pub target: String,
    /// The target's key in the source.
    pub target_key: String,
    /// The source generation.
    pub generation: u64,
    /// What happened.
    pub status: CopyStatus,
    /// The target's key in the destination (copied only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_target_key: Option<String>,
    /// The generation's number in the destination (copied only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_generation: Option<u64>,
    /// Chunks sent.
    pub chunks_sent: u64,
    /// Chunks the destination already had.
    pub chunks_present: u64,
    /// Bytes of chunk blobs sent.
    pub bytes_sent: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A target that had nothing to copy.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTarget {
    /// The target.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// The `--json` document of `copy`.
#[derive(Debug, Clone, Serialize)]
pub struct CopyRun {
    /// The source (`s3://…` or a folder).
    pub from: String,
    /// The destination's configured name.
    pub to: String,
    /// The destination's location.
    pub to_location: String,
    /// True when both repositories share their key material: chunk blobs travelled as they
    /// are (same ids, same bytes). False: re-encrypted for the destination.
    pub as_is: bool,
    /// Every selected generation.
    pub generations: Vec<GenerationLine>,
    /// Targets with nothing to copy.
    pub skipped_targets: Vec<SkippedTarget>,
    /// Generations copied.
    pub copied: u64,
    /// Generations the destination already held.
    pub already_there: u64,
    /// Generations that failed.
    pub failed: u64,
    /// Chunks sent, over all generations.
    pub chunks_sent: u64,
    /// Chunks the destination already had.
    pub chunks_present: u64,
    /// Bytes of chunk blobs sent.
    pub bytes_sent: u64,
    /// Wall time, seconds.
    pub elapsed_seconds: f64,
}

/// One source target and the generations of it to copy.
struct Selected {
    label: String,
    key: TargetKey,
    generations: Vec<GenerationId>,
}

/// Runs `copy`.
///
/// # Errors
/// When the copy cannot start: an unknown destination name, either repository missing or
/// locked, a target not in the source, the same repository on both sides. Failures of single
/// generations are in the report (exit 1 when every target failed, 3 when some did).
pub fn run(config: &Config, args: &CopyArgs, quiet: bool) -> Result<Report> {
    let started = Instant::now();
    let dest_config = config
        .named(&args.to)
        .map_err(|e| Error::Other(format!("copy --to: {e}")))?;
    let src = repo::open(config)?;
    let dest = repo::open(&dest_config).map_err(|e| {
        Error::Other(format!(
            "destination {}: {e} (create it with `safekeeping --repo {} repo init`)",
            dest_config.repository_label(),
            args.to
        ))
    })?;
    if src.config().repository_id == dest.config().repository_id {
        return Err(Error::Other(format!(
            "{} and {} are the same repository ({}): nothing to copy",
            config.repository_label(),
            dest_config.repository_label(),
            src.config().repository_id
        )));
    }
    if args.generation.is_some() && args.targets.len() != 1 {
        return Err(Error::Other(
            "--generation N names a generation of one target: give exactly one TARGET".into(),
        ));
    }
    let wait = repo::lock_wait(config);
    let src_lock = src.lock_shared(wait)?;
    let dest_lock = dest.lock_shared(wait)?;
    let (selected, skipped_targets) = select(&src, args)?;
    let done = src.copies_in(&dest)?;
    let as_is = src.same_key_material(&dest);
    let mut lines = Vec::new();
    let (mut ok_targets, mut failed_targets) = (0usize, 0usize);
    for s in &selected {
        let mut target_failed = false;
        for &id in &s.generations {
            let mut line = GenerationLine {
                target: s.label.clone(),
                target_key: s.key.to_string(),
                generation: id.0,
                status: CopyStatus::AlreadyThere,
                dest_target_key: None,
                dest_generation: None,
                chunks_sent: 0,
                chunks_present: 0,
                bytes_sent: 0,
                error: None,
            };
            if done.contains(&s.key, id) {
                lines.push(line);
                continue;
            }
            let label = format!("copy {} generation {id}", s.label);
            let mut bar: Option<Progress> = None;
            let result = src.copy_generation_to(
                &src_lock,
                &dest,
                &dest_lock,
                &s.key,
                id,
                &mut |p| match p {
                    CopyProgress::Started { bytes } => {
                        bar = Some(Progress::new(label.clone(), bytes, quiet));
                    }
                    CopyProgress::Chunk { bytes } => {
                        if let Some(b) = &bar {
                            b.add(bytes);
                        }
                    }
                },
            );
            if let Some(b) = &bar {
                b.finish();
            }
            match result {
                Ok(c) => {
                    line.status = CopyStatus::Copied;
                    line.dest_target_key = Some(c.target.to_string());
                    line.dest_generation = Some(c.generation.0);
                    line.chunks_sent = c.chunks_sent;
                    line.chunks_present = c.chunks_present;
                    line.bytes_sent = c.bytes_sent;
                }
                Err(e) => {
                    tracing::error!(target = %s.label, generation = %id, error = %e, "copy failed");
                    line.status = CopyStatus::Failed;
                    line.error = Some(e.to_string());
                    target_failed = true;
                }
            }
            lines.push(line);
        }
        if target_failed {
            failed_targets += 1;
        } else {
            ok_targets += 1;
        }
    }
    drop((src_lock, dest_lock));
    let count = |st: CopyStatus| lines.iter().filter(|l| l.status == st).count() as u64;
    let run = CopyRun {
        from: src.location().display(),
        to: args.to.clone(),
        to_location: dest.location().display(),
        as_is,
        copied: count(CopyStatus::Copied),
        already_there: count(CopyStatus::AlreadyThere),
        failed: count(CopyStatus::Failed),
        chunks_sent: lines.iter().map(|l| l.chunks_sent).sum(),
        chunks_present: lines.iter().map(|l| l.chunks_present).sum(),
        bytes_sent: lines.iter().map(|l| l.bytes_sent).sum(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        generations: lines,
        skipped_targets,
    };
    let text = render(&run);
    Ok(Report::new(
        Outcome::from_counts(ok_targets, failed_targets),
        &run,
        text,
    ))
}

/// The targets and generations the arguments select.
fn select(src: &Repository, args: &CopyArgs) -> Result<(Vec<Selected>, Vec<SkippedTarget>)> {
    let mut targets = Vec::new();
    if args.targets.is_empty() {
        for s in src.targets()? {
            targets.push((format!("{}:{}", s.kind.prefix(), s.name), s.key));
        }
    } else {
        for t in &args.targets {
            let (s, _) = repo::find_target(src, t)?;
            targets.push((t.to_string(), s.key));
        }
    }
    let mut selected = Vec::new();
    let mut skipped = Vec::new();
    for (label, key) in targets {
        let generations = if args.all_generations {
            src.generations(&key)?.into_iter().map(|g| g.id).collect()
        } else if let Some(n) = args.generation {
            vec![repo::pick_generation(src, &key, Some(n))?.generation]
        } else {
            match src.latest_successful(&key)? {
                Some(g) => vec![g.id],
                None => {
                    skipped.push(SkippedTarget {
                        target: label,
                        reason: "no successful generation (--generation N or \
                                 --all-generations copies others)"
                            .into(),
                    });
                    continue;
                }
            }
        };
        selected.push(Selected {
            label,
            key,
            generations,
        });
    }
    Ok((selected, skipped))
}

fn render(run: &CopyRun) -> String {
    let mut text = String::new();
    for l in &run.generations {
        let _ = match l.status {
            CopyStatus::Copied => writeln!(
                text,
                "{} generation {} → {} generation {}: sent {} chunks ({}), {} already there",
                l.target,
                l.generation,
                run.to,
                l.dest_generation.unwrap_or_default(),
                l.chunks_sent,
                human_bytes(l.bytes_sent),
                l.chunks_present
            ),
            CopyStatus::AlreadyThere => writeln!(
                text,
                "{} generation {}: already in {}",
                l.target, l.generation, run.to
            ),
            CopyStatus::Failed => writeln!(
                text,
                "{} generation {}: FAILED: {}",
                l.target,
                l.generation,
                l.error.as_deref().unwrap_or("")
            ),
        };
    }
    for s in &run.skipped_targets {
        let _ = writeln!(text, "{}: skipped ({})", s.target, s.reason);
    }
    let _ = writeln!(
        text,
        "{} copied, {} already there, {} failed; sent {} chunks ({}) in {:.1} s; {}",
        run.copied,
        run.already_there,
        run.failed,
        run.chunks_sent,
        human_bytes(run.bytes_sent),
        run.elapsed_seconds,
        if run.as_is {
            "chunks travelled as is (same key material)"
        } else {
            "chunks re-encrypted for the destination (different keys)"
        }
    );
    text
}
