//! The fake's settings: `fake.*` keys in the VDDK config file given to `VixDiskLib_InitEx`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings read from the config file; re-read at every InitEx and Open.
#[derive(Debug, Default, Clone)]
pub struct FakeConfig {
    /// Datastore name to local folder.
    pub datastores: BTreeMap<String, PathBuf>,
    /// First class disk id to `[ds] path` (or absolute path) of its descriptor.
    pub fcds: BTreeMap<String, String>,
    /// `(first class disk id, snapshot id)` to the `[ds] path` of the snapshot's frozen copy.
    pub fcd_snapshots: BTreeMap<(String, String), String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub thumbprint: Option<String>,
    pub cookie_accept: bool,
    /// `fake.sessions_file`: the vCenter's live session keys, one a line; a session cookie
    /// must name one of them.
    pub sessions_file: Option<PathBuf>,
    pub stats_file: Option<PathBuf>,
    pub fail_read_nth: Option<u64>,
    pub fail_read_sectors: Option<(u64, u64)>,
    /// Writes touching these sectors (inclusive) fail with VIX_E_FILE_ERROR.
    pub fail_write_sectors: Option<(u64, u64)>,
    pub fail_read_code: Option<u64>,
    pub read_latency_ms: u64,
    pub write_latency_ms: u64,
    /// Transport modes the fake "has", in preference order.
    pub transports: Vec<String>,
    /// Run async completions inside the ReadAsync/WriteAsync call instead of a worker thread.
    pub async_inline: bool,
    /// Worker threads per disk for async requests.
    pub async_threads: usize,
    /// Writes into a flat extent bypass the page cache (`O_DIRECT`), as ESXi writes a VMFS
    /// disk straight to its storage: the writes cost no page-cache copy and `Flush` does not
    /// have to push gigabytes out at the end. `fake.direct_writes = false` turns it off.
    pub direct_writes: bool,
    /// VixDiskLib_Wait fails at once (VIX_E_FAIL) instead of waiting, leaving requests running.
    pub fail_wait: bool,
    /// VixDiskLib_Close of a disk opened for writing closes it but returns VIX_E_FILE_ERROR,
    /// as VDDK reports a transport's buffered writes it could not complete. Read-only closes
    /// (backups) are not affected.
    pub fail_close: bool,
    /// VDDK's `tmpDirectory`: where the fake keeps the markers VixDiskLib_Cleanup looks for.
    pub tmp_directory: Option<PathBuf>,
    /// `fake.hold_open`: Open waits while this file exists (see `hold.rs`).
    pub hold_open: Option<PathBuf>,
}

impl FakeConfig {
    /// Parses `key = value` lines; `#` starts a comment; values may be double-quoted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut c = FakeConfig {
            transports: vec!["nbdssl".into(), "nbd".into()],
            async_threads: 4,
            direct_writes: true,
            ..FakeConfig::default()
        };
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected key = value", n + 1));
            };
            let key = key.trim();
            let mut value = value.trim();
            if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
                value = &value[1..value.len() - 1];
            }
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("line {}: {key} wants a number, got {v:?}", n + 1))
            };
            if let Some(rest) = key.strip_prefix("fake.fcd_snapshot.") {
                let (id, snap) = rest.split_once('.').ok_or_else(|| {
                    format!(
                        "line {}: fake.fcd_snapshot wants fake.fcd_snapshot.<disk id>.<snapshot id>",
                        n + 1
                    )
                })?;
                c.fcd_snapshots
                    .insert((id.to_string(), snap.to_string()), value.to_string());
            } else if let Some(ds) = key.strip_prefix("fake.datastore.") {
                c.datastores.insert(ds.to_string(), PathBuf::from(value));
            } else if let Some(id) = key.strip_prefix("fake.fcd.") {
                c.fcds.insert(id.to_string(), value.to_string());
            } else {
                match key {
                    "fake.user" => c.user = Some(value.to_string()),
                    "fake.password" => c.password = Some(value.to_string()),
                    "fake.password_file" => {
                        let p = std::fs::read_to_string(value)
                            .map_err(|e| format!("fake.password_file {value}: {e}"))?;
                        c.password = Some(p.trim_end_matches(['\n', '\r']).to_string());
                    }
                    "fake.thumbprint" => c.thumbprint = Some(value.to_string()),
                    "fake.cookie_accept" => c.cookie_accept = value == "true",
                    "fake.sessions_file" => c.sessions_file = Some(PathBuf::from(value)),
                    "fake.stats_file" => c.stats_file = Some(PathBuf::from(value)),
                    "fake.fail_read_nth" => c.fail_read_nth = Some(num(value)?),
                    "fake.fail_read_code" => c.fail_read_code = Some(num(value)?),
                    "fake.fail_read_sectors" => {
                        c.fail_read_sectors = Some(sector_range(key, value, n)?);
                    }
                    "fake.fail_write_sectors" => {
                        c.fail_write_sectors = Some(sector_range(key, value, n)?);
                    }
                    "fake.read_latency_ms" => c.read_latency_ms = num(value)?,
                    "fake.write_latency_ms" => c.write_latency_ms = num(value)?,
                    "fake.transports" => {
                        c.transports = value.split(':').map(str::to_string).collect();
                    }
                    "fake.async_inline" => c.async_inline = value == "true",
                    "fake.fail_wait" => c.fail_wait = value == "true",
                    "fake.fail_close" => c.fail_close = value == "true",
                    "fake.direct_writes" => c.direct_writes = value != "false",
                    "fake.hold_open" => c.hold_open = Some(PathBuf::from(value)),
                    "fake.async_threads" => {
                        c.async_threads = usize::try_from(num(value)?)
                            .map_err(|_| format!("line {}: too many threads", n + 1))?
                            .clamp(1, 64);
                    }
                    "tmpDirectory" | "vixDiskLib.tmpDirectory" => {
                        c.tmp_directory = Some(PathBuf::from(value));
                    }
                    // Other real VDDK keys (vixDiskLib.*, ...) are accepted and ignored.
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    /// The descriptor to open for first class disk `id`: the frozen copy when `snapshot` is
    /// given (never the live disk: a missing snapshot key is an error), else
    /// `fake.fcd.<id>`, else `given` (the path Open was called with).
    pub fn fcd_target(
        &self,
        id: &str,
        snapshot: Option<&str>,
        given: &str,
    ) -> Result<String, String> {
        match snapshot.filter(|s| !s.is_empty()) {
            Some(snap) => self
                .fcd_snapshots
                .get(&(id.to_string(), snap.to_string()))
                .cloned()
                .ok_or_else(|| {
                    format!("no snapshot {snap} of first class disk {id} (no fake.fcd_snapshot.{id}.{snap} key)")
                }),
            None => Ok(self.fcds.get(id).cloned().unwrap_or_else(|| given.to_string())),
        }
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text)
    }

    /// Resolves `[ds] rel/path.vmdk` through the datastore map; absolute paths pass through.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let path = path.trim();
        if let Some(rest) = path.strip_prefix('[') {
            let (ds, rel) = rest
                .split_once(']')
                .ok_or_else(|| format!("unterminated datastore name in {path:?}"))?;
            let root = self
                .datastores
                .get(ds)
                .ok_or_else(|| format!("unknown datastore [{ds}]"))?;
            let rel = rel.trim_start();
            if rel.split('/').any(|c| c == "..") {
                return Err(format!("{path:?} leaves the datastore"));
            }
            Ok(root.join(rel))
        } else if path.starts_with('/') {
            Ok(PathBuf::from(path))
        } else {
            Err(format!("{path:?} is neither [datastore] path nor absolute"))
        }
    }
}

/// `START-END` (inclusive sectors) of a fault-injection key on line `n` (0-based).
fn sector_range(key: &str, value: &str, n: usize) -> Result<(u64, u64), String> {
    let (a, b) = value
        .split_once('-')
        .ok_or_else(|| format!("line {}: {key} wants START-END", n + 1))?;
    let parse = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|e| format!("line {}: {key}: {e}", n + 1))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a {
        return Err(format!("line {}: END before START", n + 1));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_open_names_a_gate_file() {
        let c = FakeConfig::parse("fake.hold_open = \"/tmp/lab/gate\"\n").unwrap();
        assert_eq!(c.hold_open, Some(PathBuf::from("/tmp/lab/gate")));
        assert_eq!(FakeConfig::parse("").unwrap().hold_open, None);
    }

    #[test]
    fn parses_keys_comments_and_quotes() {
        let c = FakeConfig::parse(
            "# comment\nvixDiskLib.nfc.LogLevel = 2\nfake.datastore.ds1 = /data/ds1\n\
             fake.user = \"admin\"\nfake.fail_read_sectors = 10-20\nfake.read_latency_ms=5\n",
        )
        .unwrap();
        assert_eq!(c.datastores["ds1"], PathBuf::from("/data/ds1"));
        assert_eq!(c.user.as_deref(), Some("admin"));
        assert_eq!(c.fail_read_sectors, Some((10, 20)));
        assert_eq!(c.read_latency_ms, 5);
        assert_eq!(c.transports, ["nbdssl", "nbd"]);
    }

    #[test]
    fn first_class_disk_snapshots_open_the_frozen_copy() {
        let c = FakeConfig::parse(
            "fake.fcd.d1 = [ds1] fcd/d1.vmdk\n\
             fake.fcd_snapshot.d1.s1 = [ds1] fcd/d1-snap-s1.vmdk\n",
        )
        .unwrap();
        assert_eq!(c.fcd_target("d1", None, "x").unwrap(), "[ds1] fcd/d1.vmdk");
        assert_eq!(
            c.fcd_target("d1", Some("s1"), "x").unwrap(),
            "[ds1] fcd/d1-snap-s1.vmdk"
        );
        assert_eq!(c.fcd_target("d2", None, "given").unwrap(), "given");
        let err = c.fcd_target("d1", Some("s2"), "x").unwrap_err();
        assert!(err.contains("no snapshot s2"), "{err}");
        assert!(FakeConfig::parse("fake.fcd_snapshot.nodot = x").is_err());
    }

    #[test]
    fn rejects_bad_numbers_and_ranges() {
        assert!(FakeConfig::parse("fake.fail_read_nth = x").is_err());
        assert!(FakeConfig::parse("fake.fail_read_sectors = 20-10").is_err());
        assert!(FakeConfig::parse("fake.fail_write_sectors = 5").is_err());
        assert_eq!(
            FakeConfig::parse("fake.fail_write_sectors = 8-9")
                .unwrap()
                .fail_write_sectors,
            Some((8, 9))
        );
        assert!(FakeConfig::parse("no equals sign").is_err());
    }

    #[test]
    fn resolves_datastore_paths() {
        let c = FakeConfig::parse("fake.datastore.ds1 = /data/ds1").unwrap();
        assert_eq!(
            c.resolve("[ds1] vm/disk.vmdk").unwrap(),
            PathBuf::from("/data/ds1/vm/disk.vmdk")
        );
        assert_eq!(
            c.resolve("/abs/d.vmdk").unwrap(),
            PathBuf::from("/abs/d.vmdk")
        );
        assert!(c.resolve("[nope] a.vmdk").is_err());
        assert!(c.resolve("[ds1] ../etc/passwd").is_err());
        assert!(c.resolve("relative.vmdk").is_err());
    }
}
