//! Progress reporting: an indicatif bar when stderr is a terminal, otherwise a plain log line
//! every tenth of the work so cron logs stay readable.
//!
//! On a terminal, log lines and bars share stderr: every log line is written with the bars
//! cleared and redrawn below it ([`write_above_bars`], used by the logging writer), so a redraw
//! never overwrites a line, and a finished bar is replaced by one summary line instead of
//! leaving a frame behind.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every bar of the process, stacked: the run's overall bar on top, then one line per disk
/// transferred at the same time.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Writes `bytes` (whole log lines) to stderr with the bars cleared, then redraws them: the
/// only way log output may reach a terminal while bars are drawn.
pub fn write_above_bars(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    bars().suspend(|| {
        let mut err = std::io::stderr().lock();
        err.write_all(bytes)?;
        err.flush()
    })
}

/// The overall progress of a run over several targets: `targets done/total`, elapsed time and
/// an estimate of what is left, above the per-disk bars. Nothing without a terminal (each
/// target logs its own result line there).
pub struct RunProgress {
    bar: Option<ProgressBar>,
    done: AtomicUsize,
}

impl RunProgress {
    /// Starts the overall bar for `targets` targets (none for a single target, whose disk bars
    /// say everything).
    pub fn new(what: &str, targets: usize, quiet: bool) -> RunProgress {
        let bar = (!quiet && targets > 1 && std::io::stderr().is_terminal()).then(|| {
            let b = bars().insert(0, ProgressBar::new(targets as u64));
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} {pos}/{len} targets [{bar:20}] {elapsed_precise} elapsed, eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(500));
            b
        });
        RunProgress {
            bar,
            done: AtomicUsize::new(0),
        }
    }

    /// One more target finished (succeeded or failed).
    pub fn target_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            bars().remove(b);
        }
    }
}

/// Progress of one disk transfer, in bytes.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// Starts reporting on `total` bytes of work described by `label`.
    pub fn new(label: impl Into<String>, total: u64, quiet: bool) -> Progress {
        let label = label.into();
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = bars().add(ProgressBar::new(total));
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(label.clone());
            b
        });
        Progress {
            label,
            total,
            done: AtomicU64::new(0),
            bar,
            started: Instant::now(),
        }
    }

    /// Records `n` more bytes done.
    pub fn add(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if let Some(b) = &self.bar {
            b.set_position(after);
        } else if self.total > 0 {
            let tenth = |x: u64| x.saturating_mul(10) / self.total;
            if tenth(after) > tenth(before) && after < self.total {
                tracing::info!(
                    "{}: {}% ({} of {} bytes)",
                    self.label,
                    after.saturating_mul(100) / self.total,
                    after,
                    self.total
                );
            }
        }
    }

    /// Ends the bar (if any), leaving one summary line in its place.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            bars().remove(b);
            let seconds = self.started.elapsed().as_secs_f64();
            let done = self.done.load(Ordering::Relaxed);
            let rate = if seconds > 0.0 {
                done as f64 / seconds
            } else {
                0.0
            };
            tracing::info!(
                "{}: {} in {seconds:.1} s ({}/s)",
                self.label,
                crate::format::human_bytes(done),
                crate::format::human_bytes(rate as u64)
            );
        }
    }
}

/// A [`Progress`] whose total is known only once the work starts (a check learns how many
/// chunks it reads after walking every index): nothing is shown before [`Deferred::start`].
pub struct Deferred {
    label: String,
    quiet: bool,
    progress: std::sync::OnceLock<Progress>,
}

impl Deferred {
    /// Reporting on work described by `label`, once it starts.
    pub fn new(label: impl Into<String>, quiet: bool) -> Deferred {
        Deferred {
            label: label.into(),
            quiet,
            progress: std::sync::OnceLock::new(),
        }
    }

    /// The work is `total` bytes (a second call changes nothing).
    pub fn start(&self, total: u64) {
        self.progress
            .get_or_init(|| Progress::new(self.label.clone(), total, self.quiet));
    }

    /// Records `n` more bytes done (ignored before [`Deferred::start`]).
    pub fn add(&self, n: u64) {
        if let Some(p) = self.progress.get() {
            p.add(n);
        }
    }

    /// Ends the bar, leaving its summary line.
    pub fn finish(&self) {
        if let Some(p) = self.progress.get() {
            p.finish();
        }
    }
}
