//! Per-target settings: `[targets."vm:NAME"]` and `[targets."tag:CATEGORY/NAME"]` sections of
//! the configuration (`exclude_disks`, `quiesce`, `transports`), checked when the file is read,
//! and how the command line, a VM's own section and its tags' sections combine.

use std::collections::BTreeSet;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::target::{Target, VmSelector};

/// Whether the backup snapshot quiesces the guest (VMware Tools flushes its file systems).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuiesceMode {
    /// Quiesce, or fail the target (no snapshot is left) when the guest cannot be quiesced.
    Require,
    /// Quiesce; when that fails, take one snapshot without quiescing and say so.
    #[default]
    Try,
    /// Never quiesce (crash-consistent snapshot).
    Off,
}

/// The VDDK transport modes VDDK accepts in its `:`-separated preference list.
pub const TRANSPORT_MODES: &[&str] = &["file", "san", "hotadd", "nbdssl", "nbd"];

/// Checks a `:`-separated transport list (`hotadd:nbdssl`): known modes, none twice.
///
/// # Errors
/// The first unknown, empty or repeated mode, with the known ones.
pub fn check_transports(list: &str) -> Result<String, String> {
    let mut seen = BTreeSet::new();
    for mode in list.split(':') {
        if !TRANSPORT_MODES.contains(&mode) {
            return Err(format!(
                "transport mode `{mode}` in `{list}` is not one of {}",
                TRANSPORT_MODES.join(", ")
            ));
        }
        if !seen.insert(mode) {
            return Err(format!("transport mode `{mode}` appears twice in `{list}`"));
        }
    }
    Ok(list.to_string())
}

/// One `[targets."…"]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Disk positions (0-based, as `--exclude-disk` counts) left out of the backup.
    #[serde(default)]
    pub exclude_disks: Vec<usize>,
    /// Quiesce mode for this target.
    #[serde(default)]
    pub quiesce: Option<QuiesceMode>,
    /// VDDK transport modes for this target (`hotadd:nbdssl`).
    #[serde(default)]
    pub transports: Option<String>,
}

/// Checks one section: the key is a `vm:` or `tag:` target and the transports are known.
///
/// # Errors
/// What is wrong, naming the section.
pub fn check_section(key: &str, settings: &TargetSettings) -> Result<(), String> {
    let target: Target = key
        .parse()
        .map_err(|e| format!("[targets.\"{key}\"]: {e}"))?;
    if !matches!(target, Target::Vm(_) | Target::Tag(_)) {
        return Err(format!(
            "[targets.\"{key}\"]: settings apply to vm: and tag: targets only"
        ));
    }
    if let Some(t) = &settings.transports {
        check_transports(t).map_err(|e| format!("[targets.\"{key}\"] transports: {e}"))?;
    }
    Ok(())
}

/// What is known about a VM to find the sections that apply to it.
#[derive(Debug, Clone, Default)]
pub struct VmFacts<'a> {
    /// Display name.
    pub name: &'a str,
    /// Moref value (`vm-123`).
    pub moref: &'a str,
    /// BIOS uuid, lower case.
    pub bios_uuid: Option<&'a str>,
    /// Instance uuid, lower case.
    pub instance_uuid: Option<&'a str>,
    /// Inventory path (`DC0/vm/prod/web01`).
    pub inventory_path: Option<&'a str>,
}

/// Whether a `vm:` selector names this VM.
pub fn selects(selector: &VmSelector, vm: &VmFacts<'_>) -> bool {
    match selector {
        VmSelector::Name(n) => n == vm.name,
        VmSelector::Moref(m) => m == vm.moref,
        VmSelector::Uuid(u) => {
            Some(u.as_str()) == vm.bios_uuid || Some(u.as_str()) == vm.instance_uuid
        }
        VmSelector::InventoryPath(p) => Some(p.trim_matches('/')) == vm.inventory_path,
    }
}

/// The settings of one VM, combined: its own `vm:` sections win over its tags' sections for
/// `quiesce` and `transports`; `exclude_disks` of every section that applies add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// Disks excluded by the configuration.
    pub exclude_disks: BTreeSet<usize>,
    /// Quiesce mode from the configuration.
    pub quiesce: Option<QuiesceMode>,
    /// Transports from the configuration.
    pub transports: Option<String>,
}

/// Combines the sections for `vm`: `sections` are (key, settings) pairs from the
/// configuration; `tagged` says whether the VM carries a `tag:` key's tag.
pub fn effective<'s>(
    sections: impl IntoIterator<Item = (&'s String, &'s TargetSettings)>,
    vm: &VmFacts<'_>,
    tagged: impl Fn(&str) -> bool,
) -> Effective {
    let mut own: Vec<&TargetSettings> = Vec::new();
    let mut by_tag: Vec<&TargetSettings> = Vec::new();
    for (key, settings) in sections {
        match key.parse::<Target>() {
            Ok(Target::Vm(sel)) if selects(&sel, vm) => own.push(settings),
            Ok(Target::Tag(tag)) if tagged(&tag) => by_tag.push(settings),
            _ => {}
        }
    }
    let mut out = Effective::default();
    for s in own.iter().chain(&by_tag) {
        out.exclude_disks.extend(&s.exclude_disks);
        out.quiesce = out.quiesce.or(s.quiesce);
        if out.transports.is_none() {
            out.transports.clone_from(&s.transports);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn transports_are_checked() {
        assert_eq!(check_transports("hotadd:nbdssl").unwrap(), "hotadd:nbdssl");
        assert!(check_transports("nbd").is_ok());
        assert!(check_transports("hotad:nbd")
            .unwrap_err()
            .contains("`hotad`"));
        assert!(check_transports("nbd:nbd").unwrap_err().contains("twice"));
        assert!(check_transports("").is_err());
    }

    #[test]
    fn sections_are_vm_or_tag_targets() {
        let s = TargetSettings::default();
        assert!(check_section("vm:web01", &s).is_ok());
        assert!(check_section("tag:backup/gold", &s).is_ok());
        assert!(check_section("ivd:d1", &s)
            .unwrap_err()
            .contains("vm: and tag:"));
        assert!(check_section("web01", &s).is_err());
        let bad = TargetSettings {
            transports: Some("carrier-pigeon".into()),
            ..Default::default()
        };
        assert!(check_section("vm:web01", &bad)
            .unwrap_err()
            .contains("carrier-pigeon"));
    }

    #[test]
    fn own_sections_win_and_exclusions_add_up() {
        let mut sections = BTreeMap::new();
        sections.insert(
            "tag:backup/gold".to_string(),
            TargetSettings {
                exclude_disks: vec![2],
                quiesce: Some(QuiesceMode::Off),
                transports: Some("nbd".into()),
            },
        );
        sections.insert(
            "vm:web01".to_string(),
            TargetSettings {
                exclude_disks: vec![1],
                quiesce: Some(QuiesceMode::Require),
                transports: None,
            },
        );
        sections.insert(
            "vm:db01".to_string(),
            TargetSettings {
                exclude_disks: vec![3],
                ..Default::default()
            },
        );
        let vm = VmFacts {
            name: "web01",
            moref: "vm-7",
            ..Default::default()
        };
        let e = effective(&sections, &vm, |t| t == "backup/gold");
        assert_eq!(e.exclude_disks, [1, 2].into());
        assert_eq!(e.quiesce, Some(QuiesceMode::Require));
        assert_eq!(e.transports.as_deref(), Some("nbd"));
        let untagged = effective(&sections, &vm, |_| false);
        assert_eq!(untagged.exclude_disks, [1].into());
        assert_eq!(untagged.transports, None);
    }

    #[test]
    fn a_section_names_a_vm_by_name_moref_uuid_or_path() {
        let vm = VmFacts {
            name: "web01",
            moref: "vm-7",
            bios_uuid: Some("4215a0e0-1111-2222-3333-444455556666"),
            instance_uuid: None,
            inventory_path: Some("DC0/vm/prod/web01"),
        };
        for key in [
            "vm:web01",
            "vm:vm-7",
            "vm:4215A0E0-1111-2222-3333-444455556666",
            "vm:DC0/vm/prod/web01",
        ] {
            let Ok(Target::Vm(sel)) = key.parse::<Target>() else {
                panic!("{key} parses as a vm target");
            };
            assert!(selects(&sel, &vm), "{key}");
        }
        assert!(!selects(&VmSelector::Name("web02".into()), &vm));
    }
}
