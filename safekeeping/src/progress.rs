//! Progress reporting: an indicatif bar when stderr is a terminal, otherwise a plain log line
//! every tenth of the work so cron logs stay readable.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every bar of the process, stacked: disks read at the same time each get a line.
fn bars() -> &'static MultiProgress {
    static BARS: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

/// Progress of one disk transfer, in bytes.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
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

    /// Ends the bar (if any).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            bars().remove(b);
        }
    }
}
