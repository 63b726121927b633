//! `files ls|get`: partitions and files of a backed-up disk, without restoring it.

use serde_json::json;

use crate::cli::{FilesCommand, FilesSource};
use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::instant::files::{self, DiskChoice, EntryInfo};
use crate::outcome::Outcome;
use crate::report::Report;

/// Runs `files ls` or `files get`.
///
/// # Errors
/// Unknown target, generation, disk or partition; unreadable content (LVM, unknown: the
/// message says what was found); a path that does not exist (ls).
pub fn run(config: &Config, command: &FilesCommand) -> Result<Report> {
    match command {
        FilesCommand::Ls(a) => ls(config, &a.source, a.path.as_deref(), a.long),
        FilesCommand::Get(a) => get(config, &a.source, &a.paths, &a.output, a.overwrite),
    }
}

fn choice(s: &FilesSource) -> DiskChoice {
    DiskChoice {
        target: s.target.clone(),
        generation: s.generation,
        disk: s.disk,
    }
}

fn ls(config: &Config, s: &FilesSource, path: Option<&str>, long: bool) -> Result<Report> {
    let disk = files::open(config, &choice(s))?;
    if s.partition.is_none() && path.is_none() {
        let parts = disk.partitions();
        let mut text = format!(
            "disk {} of generation {} of {}: {} partition table\n{:>4}  {:>14}  {:>10}  {:<28}  {}\n",
            s.disk,
            disk.generation,
            s.target,
            disk.table.kind.name(),
            "#",
            "start",
            "size",
            "type",
            "content"
        );
        for p in &parts {
            text += &format!(
                "{:>4}  {:>14}  {:>10}  {:<28}  {}{}\n",
                p.number,
                p.start,
                human_bytes(p.size),
                p.r#type,
                p.content,
                if p.label.is_empty() {
                    String::new()
                } else {
                    format!(" \"{}\"", p.label)
                }
            );
        }
        let doc = json!({
            "target": s.target.to_string(), "generation": disk.generation, "disk": s.disk,
            "table": disk.table.kind.name(), "partitions": parts, "chunks_read": disk.chunks_read(),
        });
        return Ok(Report::new(Outcome::Success, &doc, text));
    }
    let mut fs = disk.file_system(s.partition)?;
    let path = path.unwrap_or("/");
    let entries = files::list(fs.as_mut(), path)?;
    let mut text = String::new();
    for e in &entries {
        let name = match &e.link_target {
            Some(t) => format!("{} -> {t}", e.name),
            None if e.kind == "dir" => format!("{}/", e.name),
            None => e.name.clone(),
        };
        if long {
            text += &format!(
                "{} {:>12} {} {name}\n",
                mode_string(e),
                e.size,
                time_string(e.mtime)
            );
        } else {
            text += &format!("{name}\n");
        }
    }
    let doc = json!({
        "target": s.target.to_string(), "generation": disk.generation, "disk": s.disk,
        "partition": s.partition.unwrap_or(0), "path": path, "entries": entries,
        "chunks_read": disk.chunks_read(),
    });
    Ok(Report::new(Outcome::Success, &doc, text))
}

/// `drwxr-xr-x` from the kind and the mode (`?` where the file system records none).
fn mode_string(e: &EntryInfo) -> String {
    let kind = match e.kind {
        "dir" => 'd',
        "symlink" => 'l',
        "file" => '-',
        _ => '?',
    };
    let Some(m) = e.mode else {
        return format!("{kind}?????????");
    };
    let bits = ['r', 'w', 'x'];
    let perms: String = (0..9)
        .map(|i| {
            if m & (0o400 >> i) != 0 {
                bits[i % 3]
            } else {
                '-'
            }
        })
        .collect();
    format!("{kind}{perms}")
}

fn time_string(t: Option<i64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|| "-".repeat(19))
}

fn get(
    config: &Config,
    s: &FilesSource,
    paths: &[String],
    output: &std::path::Path,
    overwrite: bool,
) -> Result<Report> {
    let disk = files::open(config, &choice(s))?;
    let mut fs = disk.file_system(s.partition)?;
    let r = files::get(fs.as_mut(), paths, output, overwrite)?;
    let bytes: u64 = r.extracted.iter().map(|e| e.size).sum();
    let mut text = format!(
        "extracted {} entries ({}) from generation {} of {} into {}\n",
        r.extracted.len(),
        human_bytes(bytes),
        disk.generation,
        s.target,
        output.display()
    );
    for p in &r.skipped {
        text += &format!("skipped {p}: not a file, folder or symlink\n");
    }
    for (p, why) in &r.failed {
        text += &format!("FAILED {p}: {why}\n");
    }
    let outcome = match (r.failed.is_empty(), r.extracted.is_empty()) {
        (true, _) => Outcome::Success,
        (false, true) => Outcome::Failure,
        (false, false) => Outcome::Partial,
    };
    for (p, why) in &r.failed {
        tracing::error!(path = %p, error = %why, "file not extracted");
    }
    let doc = json!({
        "target": s.target.to_string(), "generation": disk.generation, "disk": s.disk,
        "partition": s.partition.unwrap_or(0), "output": output,
        "extracted": r.extracted, "skipped": r.skipped,
        "failed": r.failed.iter().map(|(p, w)| json!({"path": p, "error": w})).collect::<Vec<_>>(),
        "chunks_read": disk.chunks_read(),
    });
    Ok(Report::new(outcome, &doc, text))
}
