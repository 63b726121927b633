//! Call statistics appended as JSON lines to `fake.stats_file`, for tests in other processes.

use std::io::Write;
use std::path::Path;

/// Per-disk counters, written as one `close` line when the disk is closed.
#[derive(Debug, Default)]
pub struct DiskStats {
    pub sectors_read: u64,
    pub sectors_written: u64,
    pub read_calls: u64,
    pub write_calls: u64,
    pub query_allocated_calls: u64,
    ranges: Vec<(u64, u64)>,
}

impl DiskStats {
    /// Records a successful read of `count` sectors at `start`.
    pub fn record_read(&mut self, start: u64, count: u64) {
        self.sectors_read += count;
        if let Some(last) = self.ranges.last_mut() {
            if last.0 + last.1 == start {
                last.1 += count;
                return;
            }
        }
        self.ranges.push((start, count));
    }

    /// Read ranges sorted and merged where they touch or overlap.
    pub fn coalesced_ranges(&self) -> Vec<(u64, u64)> {
        let mut r = self.ranges.clone();
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, c) in r {
            match out.last_mut() {
                Some(last) if s <= last.0 + last.1 => {
                    let end = (last.0 + last.1).max(s + c);
                    last.1 = end - last.0;
                }
                _ => out.push((s, c)),
            }
        }
        out
    }
}

/// Appends one JSON object as a line; a single `write` on an `O_APPEND` file keeps lines from
/// concurrent processes whole. Failures are reported to the caller's log, never fatal.
pub fn append(path: &Path, mut value: serde_json::Value) -> std::io::Result<()> {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("pid".into(), std::process::id().into());
        // Wall-clock microseconds, so tests can tell what overlapped in time.
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default();
        obj.insert("t_us".into(), micros.into());
    }
    let mut line = value.to_string();
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce() {
        let mut s = DiskStats::default();
        s.record_read(0, 8);
        s.record_read(8, 8);
        s.record_read(100, 4);
        s.record_read(50, 10);
        s.record_read(55, 10);
        assert_eq!(s.coalesced_ranges(), vec![(0, 16), (50, 15), (100, 4)]);
        assert_eq!(s.sectors_read, 40);
    }
}
