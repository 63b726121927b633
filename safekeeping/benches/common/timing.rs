//! What the end-to-end benchmarks share: running a step as a process and timing it, and
//! reading phase durations from safekeeping's log.

use std::process::Command;
use std::time::Instant;

/// The benchmarks' error type: any error, printed.
pub type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs `cmd` to completion; its wall time in seconds and its stdout, or an error with its
/// output when it fails.
pub fn run(cmd: &mut Command) -> BoxResult<(f64, String)> {
    let t = Instant::now();
    let out = cmd.output()?;
    let secs = t.elapsed().as_secs_f64();
    keep_log(cmd, secs, &out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Seconds between the log lines containing `from` and `to` (RFC 3339 timestamps at the start).
pub fn phase(log: &str, from: &str, to: &str) -> Option<f64> {
    let at = |needle: &str| {
        log.lines().find(|l| l.contains(needle)).and_then(|l| {
            let ts = l.split_whitespace().next()?;
            let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(t)
        })
    };
    let (a, b) = (at(from)?, at(to)?);
    Some((b - a).as_seconds_f64())
}

/// Megabytes (10^6) per second.
pub fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// CPU seconds (user + system) from fields 14 and 15 of a `/proc/.../stat` line (and 16, 17,
/// the waited-for children's, with `children`), at Linux's 100 ticks per second.
fn stat_cpu_secs(stat: &str, children: bool) -> Option<f64> {
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is fields[N - 3].
    let tick = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let mut ticks = tick(14)? + tick(15)?;
    if children {
        ticks += tick(16)? + tick(17)?;
    }
    Some(ticks as f64 / 100.0)
}

/// CPU seconds used by the children this process has waited for (each benchmark step is one):
/// the difference around a step is that step's CPU time.
pub fn children_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let own = stat_cpu_secs(&s, false)?;
            Some(stat_cpu_secs(&s, true)? - own)
        })
        .unwrap_or(0.0)
}

/// CPU seconds used so far by process `pid` (all its threads), 0 when it is gone.
pub fn process_cpu_secs(pid: u64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_secs(&s, false))
        .unwrap_or(0.0)
}

/// What [`run_peak`] measured of one step.
pub struct Measured {
    /// Wall time in seconds.
    pub secs: f64,
    /// Standard output.
    pub stdout: String,
    /// Peak resident set of the step's process in bytes (`VmHWM`, sampled every 5 ms while it
    /// runs; `VmHWM` only grows, so the last sample before exit is the peak up to then).
    pub peak_rss: u64,
    /// CPU seconds (user + system) the step's process and the children it waited for used,
    /// to 10 ms: less at the mercy of a noisy machine than wall time, and what a backup costs
    /// the host it runs on ([`children_cpu_secs`] around the step).
    pub cpu_secs: f64,
}

/// With `SAFEKEEPING_BENCH_LOG=FILE`, appends each measured step's command line, wall time and
/// standard error to FILE: run the bench with `RUST_LOG=debug` to see where a step's time went
/// (the step's own log lines carry their timestamps).
fn keep_log(cmd: &Command, secs: f64, stderr: &[u8]) {
    use std::io::Write;
    let Some(path) = std::env::var_os("SAFEKEEPING_BENCH_LOG") else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "=== {cmd:?} ({secs:.3} s)");
        let _ = f.write_all(stderr);
    }
}

/// Runs `cmd` like [`run`], also sampling its peak RSS from `/proc/PID/status`.
pub fn run_peak(cmd: &mut Command) -> BoxResult<Measured> {
    use std::io::Read;
    use std::process::Stdio;
    let cpu_before = children_cpu_secs();
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    // Drained on their own threads, so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().ok_or("no stdout")?;
    let mut err_pipe = child.stderr.take().ok_or("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let mut peak = 0u64;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
        {
            peak = peak.max(kib << 10);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = children_cpu_secs() - cpu_before;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    keep_log(cmd, secs, &stderr);
    if !status.success() {
        return Err(format!(
            "{:?} failed: {}{}",
            cmd,
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
        .into());
    }
    Ok(Measured {
        secs,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        peak_rss: peak,
        cpu_secs,
    })
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
