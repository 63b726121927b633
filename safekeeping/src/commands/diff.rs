//! `diff TARGET GEN1 GEN2`: what changed between two generations — per disk the bytes whose
//! chunks differ (compared slot by slot in the two indexes, no data read), disks added or
//! removed, and for VMs the configuration: `.vmx` keys added, removed or changed, and the
//! placement and NICs of the saved summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use repository_format::{GenerationId, Repository, TargetKey};
use serde::Serialize;

use crate::cli::DiffArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::stored;

/// One disk's difference.
#[derive(Debug, Serialize)]
struct DiskDiff {
    /// Device key.
    device_key: i32,
    /// `changed`, `unchanged`, `added` or `removed`.
    change: &'static str,
    capacity_from: Option<u64>,
    capacity_to: Option<u64>,
    /// Bytes in chunks that differ (the whole disk when added or removed).
    changed_bytes: u64,
}

/// One configuration value that differs.
#[derive(Debug, Serialize)]
struct FieldDiff {
    field: String,
    from: Option<String>,
    to: Option<String>,
}

/// Parses `.vmx` text into its `key = "value"` pairs.
fn vmx_pairs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .filter(|(k, _)| !k.is_empty() && !k.starts_with('#'))
        .collect()
}

/// Flattens JSON into `path = value` pairs (`placement.datastores[0]`).
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        other => {
            out.insert(
                prefix.to_string(),
                other.to_string().trim_matches('"').to_string(),
            );
        }
    }
}

fn compare(
    from: &BTreeMap<String, String>,
    to: &BTreeMap<String, String>,
    prefix: &str,
    out: &mut Vec<FieldDiff>,
) {
    let keys: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    for k in keys {
        let (a, b) = (from.get(k), to.get(k));
        if a != b {
            out.push(FieldDiff {
                field: format!("{prefix}{k}"),
                from: a.cloned(),
                to: b.cloned(),
            });
        }
    }
}

fn metadata(r: &Repository, key: &TargetKey, id: GenerationId, name: &str) -> Option<String> {
    r.read_metadata(key, id, name)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Compares generations `GEN1` and `GEN2` of a target; reads indexes and metadata only.
///
/// # Errors
/// An unknown target or generation; an index or manifest that cannot be read or verified.
pub fn run(config: &Config, args: &DiffArgs) -> Result<Report> {
    let r = repo::open(config)?;
    let (summary, _) = repo::find_configured_target(&r, &args.target, config)?;
    let key = summary.key;
    let _lock = r.lock_shared_for_reading(repo::lock_wait(config))?;
    let (g1, g2) = (GenerationId(args.from), GenerationId(args.to));
    let m1 = r.manifest(&key, g1).map_err(|e| {
        Error::NotInRepository(format!("generation {} of {}: {e}", args.from, args.target))
    })?;
    let m2 = r.manifest(&key, g2).map_err(|e| {
        Error::NotInRepository(format!("generation {} of {}: {e}", args.to, args.target))
    })?;

    let mut disks = Vec::new();
    let mut keys: Vec<i32> = m1
        .disks
        .iter()
        .chain(&m2.disks)
        .map(|d| d.disk.key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        let (a, b) = (m1.disk(k), m2.disk(k));
        let d = match (a, b) {
            (Some(a), Some(b)) => {
                let (ia, ib) = (r.fixed_index(&key, g1, k)?, r.fixed_index(&key, g2, k)?);
                // Only stored chunks can differ: the walk costs what was written, not the
                // disk size (a 16 TiB disk compares in milliseconds). By byte ranges, since
                // content-defined chunks of the two generations need not line up.
                let changed: u64 = ia.differing_ranges(&ib).iter().map(|&(_, len)| len).sum();
                DiskDiff {
                    device_key: k,
                    change: if changed == 0 && a.disk.capacity == b.disk.capacity {
                        "unchanged"
                    } else {
                        "changed"
                    },
                    capacity_from: Some(a.disk.capacity),
                    capacity_to: Some(b.disk.capacity),
                    changed_bytes: changed,
                }
            }
            (None, Some(b)) => DiskDiff {
                device_key: k,
                change: "added",
                capacity_from: None,
                capacity_to: Some(b.disk.capacity),
                changed_bytes: b.disk.capacity,
            },
            (Some(a), None) => DiskDiff {
                device_key: k,
                change: "removed",
                capacity_from: Some(a.disk.capacity),
                capacity_to: None,
                changed_bytes: a.disk.capacity,
            },
            (None, None) => continue,
        };
        disks.push(d);
    }

    let mut fields = Vec::new();
    if let (Some(a), Some(b)) = (
        metadata(&r, &key, g1, stored::vm::VMX_FILE),
        metadata(&r, &key, g2, stored::vm::VMX_FILE),
    ) {
        compare(&vmx_pairs(&a), &vmx_pairs(&b), "vmx.", &mut fields);
    }
    if let (Some(a), Some(b)) = (
        metadata(&r, &key, g1, stored::vm::SUMMARY_FILE),
        metadata(&r, &key, g2, stored::vm::SUMMARY_FILE),
    ) {
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_default();
        let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
        for part in ["placement", "nics", "name"] {
            flatten(part, &parse(&a)[part], &mut fa);
            flatten(part, &parse(&b)[part], &mut fb);
        }
        compare(&fa, &fb, "", &mut fields);
    }

    let mut text = format!("{}: generation {} → {}\n", args.target, args.from, args.to);
    for (i, d) in disks.iter().enumerate() {
        let _ = writeln!(
            text,
            "  disk {i} (device {}): {}{}",
            d.device_key,
            d.change,
            match d.change {
                "changed" => format!(
                    ", {} of {} differ{}",
                    human_bytes(d.changed_bytes),
                    human_bytes(d.capacity_to.unwrap_or_default()),
                    if d.capacity_from != d.capacity_to {
                        format!(
                            " (capacity {} → {})",
                            human_bytes(d.capacity_from.unwrap_or_default()),
                            human_bytes(d.capacity_to.unwrap_or_default())
                        )
                    } else {
                        String::new()
                    }
                ),
                _ => format!(
                    " ({})",
                    human_bytes(d.capacity_to.or(d.capacity_from).unwrap_or_default())
                ),
            }
        );
    }
    if fields.is_empty() {
        text.push_str("  configuration: unchanged\n");
    } else {
        for f in &fields {
            let _ = writeln!(
                text,
                "  {}: {} → {}",
                f.field,
                f.from.as_deref().unwrap_or("(none)"),
                f.to.as_deref().unwrap_or("(none)")
            );
        }
    }
    let doc = serde_json::json!({
        "target": args.target.to_string(),
        "from": args.from,
        "to": args.to,
        "disks": disks,
        "changed_bytes": disks.iter().map(|d| d.changed_bytes).sum::<u64>(),
        "configuration": fields,
    });
    Ok(Report::new(Outcome::Success, &doc, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_and_summary_differences_are_named() {
        let a = vmx_pairs("numvcpus = \"2\"\nmemSize = \"1024\"\n# comment\nguestOS = \"other\"\n");
        let b = vmx_pairs("numvcpus = \"4\"\nmemSize = \"1024\"\nfirmware = \"efi\"\n");
        let mut out = Vec::new();
        compare(&a, &b, "vmx.", &mut out);
        let got: Vec<(&str, Option<&str>, Option<&str>)> = out
            .iter()
            .map(|f| (f.field.as_str(), f.from.as_deref(), f.to.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("vmx.firmware", None, Some("efi")),
                ("vmx.guestOS", Some("other"), None),
                ("vmx.numvcpus", Some("2"), Some("4")),
            ]
        );
        let mut f = BTreeMap::new();
        flatten(
            "placement",
            &serde_json::json!({"datastores": ["ds1", "ds2"], "host": "h1"}),
            &mut f,
        );
        assert_eq!(f["placement.datastores[1]"], "ds2");
        assert_eq!(f["placement.host"], "h1");
    }
}
