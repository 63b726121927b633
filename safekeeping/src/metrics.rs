//! Prometheus metrics of a backup run, in the text exposition format, for node_exporter's
//! textfile collector (`--metrics-file /var/lib/node_exporter/textfile/safekeeping.prom`).
//!
//! Two kinds of series: what this run did (per target: outcome, bytes, generation), and what
//! the repository holds for every target (time of the newest successful generation), so that
//! one alert rule — `time() - safekeeping_target_last_success_timestamp_seconds > 26 * 3600` —
//! catches a VM that stopped being backed up, also one this run did not try.
//!
//! The file is replaced atomically (written beside, then renamed): the collector never reads
//! half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One target of this run.
#[derive(Debug, Clone)]
pub struct TargetRun {
    /// Display name, `vm:web01`.
    pub target: String,
    /// Whether its generation was committed.
    pub succeeded: bool,
    /// The committed generation.
    pub generation: Option<u64>,
    /// Bytes read from its disks.
    pub bytes_read: u64,
    /// Bytes of new chunks stored (before compression).
    pub bytes_new: u64,
}

/// One target the repository holds.
#[derive(Debug, Clone)]
pub struct TargetHistory {
    /// Display name, `vm:web01`.
    pub target: String,
    /// Generations kept.
    pub generations: usize,
    /// When the newest successful generation was taken (seconds since the epoch).
    pub last_success: Option<i64>,
}

/// Everything one metrics file says.
#[derive(Debug, Clone)]
pub struct BackupMetrics {
    /// When the run started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// The process exit code (0, 1 or 3).
    pub exit_code: u8,
    /// The targets of this run.
    pub targets: Vec<TargetRun>,
    /// What the repository holds, when it could be read after the run.
    pub repository: Option<Vec<TargetHistory>>,
}

/// A label value escaped as the exposition format requires (`\\`, `\"`, `\n`).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Appends one metric family: HELP, TYPE, then `(labels, value)` samples.
fn family(out: &mut String, name: &str, help: &str, samples: &[(Option<&str>, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (target, value) in samples {
        match target {
            Some(t) => {
                let _ = writeln!(out, "{name}{{target=\"{}\"}} {value}", label(t));
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

/// The metrics in the text exposition format.
pub fn render(m: &BackupMetrics) -> String {
    let started = m
        .started
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut out = String::new();
    family(
        &mut out,
        "safekeeping_backup_run_start_timestamp_seconds",
        "When the last backup run started.",
        &[(None, started)],
    );
    family(
        &mut out,
        "safekeeping_backup_run_duration_seconds",
        "How long the last backup run took.",
        &[(None, m.duration.as_secs_f64())],
    );
    family(
        &mut out,
        "safekeeping_backup_run_exit_code",
        "Exit code of the last backup run: 0 all targets succeeded, 1 none or could not start, 3 some.",
        &[(None, f64::from(m.exit_code))],
    );
    let per_target = |f: &dyn Fn(&TargetRun) -> Option<f64>| -> Vec<(Option<&str>, f64)> {
        m.targets
            .iter()
            .filter_map(|t| f(t).map(|v| (Some(t.target.as_str()), v)))
            .collect()
    };
    family(
        &mut out,
        "safekeeping_backup_target_success",
        "1 when the target's generation was committed in the last run, 0 when it failed.",
        &per_target(&|t| Some(if t.succeeded { 1.0 } else { 0.0 })),
    );
    family(
        &mut out,
        "safekeeping_backup_target_generation",
        "The generation the last run committed.",
        &per_target(&|t| t.generation.map(|g| g as f64)),
    );
    family(
        &mut out,
        "safekeeping_backup_target_read_bytes",
        "Bytes read from the target's disks in the last run.",
        &per_target(&|t| Some(t.bytes_read as f64)),
    );
    family(
        &mut out,
        "safekeeping_backup_target_new_bytes",
        "Bytes of new (not yet stored) chunks in the last run, before compression.",
        &per_target(&|t| Some(t.bytes_new as f64)),
    );
    if let Some(repo) = &m.repository {
        let samples = |f: &dyn Fn(&TargetHistory) -> Option<f64>| -> Vec<(Option<&str>, f64)> {
            repo.iter()
                .filter_map(|t| f(t).map(|v| (Some(t.target.as_str()), v)))
                .collect()
        };
        family(
            &mut out,
            "safekeeping_target_last_success_timestamp_seconds",
            "When the newest successful generation the repository holds for the target was taken.",
            &samples(&|t| t.last_success.map(|s| s as f64)),
        );
        family(
            &mut out,
            "safekeeping_target_generations",
            "Generations the repository holds for the target.",
            &samples(&|t| Some(t.generations as f64)),
        );
        family(
            &mut out,
            "safekeeping_repository_targets",
            "Targets the repository holds.",
            &[(None, repo.len() as f64)],
        );
    }
    out
}

/// Writes the metrics to `path`, replacing it atomically.
///
/// # Errors
/// The folder is missing or not writable.
pub fn write(path: &Path, m: &BackupMetrics) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    // node_exporter reads only `*.prom`: the temporary name must not end in it.
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(render(m).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_absent_values_are_left_out() {
        let m = BackupMetrics {
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_millis(1500),
            exit_code: 3,
            targets: vec![
                TargetRun {
                    target: "vm:we\"b\\01".into(),
                    succeeded: true,
                    generation: Some(4),
                    bytes_read: 10,
                    bytes_new: 5,
                },
                TargetRun {
                    target: "vm:db01".into(),
                    succeeded: false,
                    generation: None,
                    bytes_read: 0,
                    bytes_new: 0,
                },
            ],
            repository: None,
        };
        let text = render(&m);
        assert!(text.contains("safekeeping_backup_run_exit_code 3\n"));
        assert!(text.contains("safekeeping_backup_run_duration_seconds 1.5\n"));
        assert!(text.contains("safekeeping_backup_target_success{target=\"vm:we\\\"b\\\\01\"} 1\n"));
        assert!(text.contains("safekeeping_backup_target_success{target=\"vm:db01\"} 0\n"));
        // The failed target committed no generation: no sample, rather than a made-up 0.
        assert!(!text.contains("safekeeping_backup_target_generation{target=\"vm:db01\"}"));
        assert!(!text.contains("safekeeping_target_last_success"));
    }
}
