//! `show TARGET [--generation N]`: one generation's manifest, disks and VM summary.

use std::fmt::Write as _;

use crate::config::Config;
use crate::error::Result;
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;
use crate::stored::vm::{VmMetadata, CONFIG_FILE, SUMMARY_FILE};
use crate::target::Target;

/// Shows a generation.
///
/// # Errors
/// Repository errors; unknown target or generation.
pub fn run(config: &Config, target: &Target, generation: Option<u64>) -> Result<Report> {
    let r = repo::open(config)?;
    let (summary, _) = repo::find_configured_target(&r, target, config)?;
    let m = match generation {
        Some(_) => repo::pick_generation(&r, &summary.key, generation)?,
        None => {
            let latest = summary.latest.ok_or_else(|| {
                crate::Error::NotInRepository(format!("{target} has no generation"))
            })?;
            r.manifest(&summary.key, latest)?
        }
    };
    let mut text = String::new();
    let _ = writeln!(
        text,
        "vm:{} ({}) generation {}",
        m.target.name, summary.key, m.generation
    );
    // Which vCenter the generation came from (generations of older releases record the URL).
    if let Some(origin) = crate::vcenter_origin::VcenterOrigin::recorded(&m.target) {
        let uuid = if origin.instance_uuid.is_empty() {
            String::new()
        } else {
            format!(", instance uuid {}", origin.instance_uuid)
        };
        let _ = writeln!(text, "  from vCenter {}{uuid}", origin.describe());
    }
    let _ = writeln!(
        text,
        "  started {}  mode {}  status {}  parent {}",
        m.started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        format!("{:?}", m.mode).to_lowercase(),
        format!("{:?}", m.status).to_lowercase(),
        m.parent
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    );
    for (i, d) in m.disks.iter().enumerate() {
        let _ = writeln!(
            text,
            "  disk {i}: key {} {:?} {} {}  change id {}  read {}  new {}",
            d.disk.key,
            d.disk.label,
            human_bytes(d.disk.capacity),
            d.disk.file_path,
            d.disk.change_id.as_deref().unwrap_or("-"),
            human_bytes(d.stats.read_bytes),
            human_bytes(d.stats.new_bytes),
        );
    }
    // Disks the backup left out (independent or excluded): a restore recreates them empty.
    for x in crate::excluded_disk::from_manifest(&m).unwrap_or_default() {
        let _ = writeln!(
            text,
            "  vm disk {}: key {} {:?} {} {}  not backed up: {}",
            x.index,
            x.key,
            x.label,
            human_bytes(x.capacity),
            x.file_path,
            x.note
        );
    }
    // The VM's hardware as saved (vm-config.xml): what the guide promises `show` tells.
    let hardware = m
        .metadata_files
        .iter()
        .any(|f| f == CONFIG_FILE)
        .then(|| {
            r.read_metadata(&summary.key, m.generation, CONFIG_FILE)
                .ok()
        })
        .flatten()
        .and_then(|xml| vim_client::xml::parse(&xml).ok())
        .and_then(|e| vim_client::VmConfig::from_element(&e).ok());
    if let Some(h) = &hardware {
        let _ = writeln!(
            text,
            "  hardware: {} CPU{}{}, {} memory, guest {}, firmware {}, hardware version {}",
            h.num_cpu,
            if h.num_cpu == 1 { "" } else { "s" },
            h.num_cores_per_socket
                .map(|c| format!(" ({c} per socket)"))
                .unwrap_or_default(),
            human_bytes(h.memory_mb << 20),
            h.guest_id.as_deref().unwrap_or("-"),
            h.firmware.as_deref().unwrap_or("-"),
            h.version.as_deref().unwrap_or("-"),
        );
    }
    let mut saved_summary = None;
    if m.metadata_files.iter().any(|f| f == SUMMARY_FILE) {
        if let Ok(saved) = r
            .read_metadata(&summary.key, m.generation, SUMMARY_FILE)
            .map_err(crate::Error::from)
            .and_then(|b| {
                serde_json::from_slice::<VmMetadata>(&b)
                    .map_err(|e| crate::Error::Other(e.to_string()))
            })
        {
            let p = &saved.placement;
            let _ = writeln!(
                text,
                "  placement: datacenter {}, folder {}, pool {}, host {}",
                p.datacenter, p.folder, p.resource_pool, p.host
            );
            for (i, n) in saved.nics.iter().enumerate() {
                let _ = writeln!(
                    text,
                    "  nic {i}: {} on {:?}{}",
                    n.device_type,
                    n.network,
                    n.mac
                        .as_deref()
                        .map(|m| format!(", MAC {m}"))
                        .unwrap_or_default()
                );
            }
            if let Some(p) = &saved.storage_policies {
                if let Some(h) = &p.home {
                    let _ = writeln!(text, "  storage policy (VM home): {} ({})", h.name, h.id);
                }
                for d in &p.disks {
                    let _ = writeln!(
                        text,
                        "  storage policy (disk {}): {} ({})",
                        d.key, d.policy.name, d.policy.id
                    );
                }
            }
            if let Some(s) = saved.security.as_ref().filter(|s| s.encrypted || s.vtpm) {
                let _ = writeln!(
                    text,
                    "  security: {}",
                    crate::vsphere::metadata::security_note(s)
                );
            }
            for missing in &saved.missing {
                let _ = writeln!(text, "  not saved: {missing}");
            }
            saved_summary = Some(saved);
        }
    }
    if !m.metadata_files.is_empty() {
        let _ = writeln!(text, "  metadata: {}", m.metadata_files.join(", "));
    }
    // JSON: the manifest as before, plus everything the text view shows.
    let mut doc = serde_json::to_value(&m).unwrap_or_default();
    if let Some(map) = doc.as_object_mut() {
        map.insert(
            "target_name".into(),
            format!("{}:{}", summary.kind.prefix(), m.target.name).into(),
        );
        if let Some(h) = &hardware {
            map.insert(
                "hardware".into(),
                serde_json::json!({
                    "cpus": h.num_cpu,
                    "cores_per_socket": h.num_cores_per_socket,
                    "memory_mb": h.memory_mb,
                    "guest_id": h.guest_id,
                    "firmware": h.firmware,
                    "hardware_version": h.version,
                }),
            );
        }
        if let Some(saved) = &saved_summary {
            map.insert(
                "placement".into(),
                serde_json::to_value(&saved.placement).unwrap_or_default(),
            );
            map.insert(
                "nics".into(),
                serde_json::to_value(&saved.nics).unwrap_or_default(),
            );
            map.insert(
                "storage_policies".into(),
                serde_json::to_value(&saved.storage_policies).unwrap_or_default(),
            );
            map.insert(
                "security".into(),
                serde_json::to_value(&saved.security).unwrap_or_default(),
            );
            map.insert(
                "not_saved".into(),
                serde_json::to_value(&saved.missing).unwrap_or_default(),
            );
        }
    }
    Ok(Report::new(Outcome::Success, &doc, text))
}
