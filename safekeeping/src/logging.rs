//! Log output: plain tracing lines on stderr (stdout is kept for `--json`), optionally copied
//! to a `--log-file`.

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// A log event on its way to stderr: collected whole, then written above the progress bars
/// (which are cleared for it and redrawn below), so that no redraw overwrites a log line.
struct LineAboveBars(Vec<u8>);

impl std::io::Write for LineAboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineAboveBars {
    fn drop(&mut self) {
        // The fmt layer drops its writer after each event: that is the whole line.
        if !self.0.is_empty() {
            let _ = crate::progress::write_above_bars(&self.0);
        }
    }
}

/// The level for a `-v`/`-q` balance: 0 is `info`.
pub fn level_for(verbose: u8, quiet: u8) -> &'static str {
    match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the level when set.
///
/// # Errors
/// When the log file cannot be opened for appending.
pub fn init(verbose: u8, quiet: u8, log_file: Option<&Path>) -> std::io::Result<()> {
    let level = level_for(verbose, quiet);
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("warn,safekeeping={level}")))
    };
    let stderr = fmt::layer()
        .with_writer(|| LineAboveBars(Vec::new()))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter());
    let file_layer = match log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?;
            Some(
                fmt::layer()
                    .with_writer(Mutex::new(f))
                    .with_ansi(false)
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    // A second init (tests) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::level_for;

    #[test]
    fn verbosity_balance() {
        assert_eq!(level_for(0, 0), "info");
        assert_eq!(level_for(1, 0), "debug");
        assert_eq!(level_for(3, 0), "trace");
        assert_eq!(level_for(0, 1), "warn");
        assert_eq!(level_for(0, 5), "error");
        assert_eq!(level_for(2, 2), "info");
    }
}
