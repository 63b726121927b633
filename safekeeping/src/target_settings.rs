//! Per-target settings: `[targets."vm:NAME"]` and `[targets."tag:CATEGORY/NAME"]` sections of
//! the configuration (`exclude_disks`, `quiesce`, `transports`, `quiesce_timeout_seconds`,
//! `compression_level`, `[targets."…".vss]`), checked when the file is read, and how the
//! command line, a VM's own section, its tags' sections and the global defaults combine.

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
    /// Longest time the guest may take to quiesce, in seconds (sent in whole minutes, 5 to
    /// 240, as vSphere's quiesce spec wants them).
    #[serde(default)]
    pub quiesce_timeout_seconds: Option<u64>,
    /// zstd level of this target's new chunks.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// VSS options for this target (Windows guests).
    #[serde(default)]
    pub vss: Option<VssSettings>,
}

/// VSS backup types (`VSS_BACKUP_TYPE`) an admin may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VssBackupType {
    /// `VSS_BT_FULL`: applications (Exchange, SQL Server) truncate their logs afterwards.
    Full,
    /// `VSS_BT_INCREMENTAL`.
    Incremental,
    /// `VSS_BT_DIFFERENTIAL`.
    Differential,
    /// `VSS_BT_LOG`.
    Log,
    /// `VSS_BT_COPY`: a copy that leaves the applications' own backup history alone.
    Copy,
}

impl VssBackupType {
    /// The `VSS_BACKUP_TYPE` number `vssBackupType` carries.
    pub fn code(self) -> i32 {
        match self {
            VssBackupType::Full => 1,
            VssBackupType::Incremental => 2,
            VssBackupType::Differential => 3,
            VssBackupType::Log => 4,
            VssBackupType::Copy => 5,
        }
    }
}

/// VSS contexts (`VirtualMachineWindowsQuiesceSpecVssBackupContext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VssBackupContext {
    /// `ctx_auto`: VMware Tools picks.
    Auto,
    /// `ctx_backup`: application-consistent, writers involved.
    Backup,
    /// `ctx_file_share_backup`: file system only, no writers.
    FileShareBackup,
}

impl VssBackupContext {
    /// The value `vssBackupContext` carries.
    pub fn wire(self) -> &'static str {
        match self {
            VssBackupContext::Auto => "ctx_auto",
            VssBackupContext::Backup => "ctx_backup",
            VssBackupContext::FileShareBackup => "ctx_file_share_backup",
        }
    }
}

/// `[vss]` (and `[targets."…".vss]`): the VSS options a quiesced snapshot of a Windows guest
/// asks for. Unset fields fall back to the next section, then to the guest's own defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VssSettings {
    /// `full`, `copy`, `incremental`, `differential` or `log`.
    #[serde(default)]
    pub backup_type: Option<VssBackupType>,
    /// Include a bootable system state.
    #[serde(default)]
    pub bootable_system_state: Option<bool>,
    /// Let writers report partial files.
    #[serde(default)]
    pub partial_file_support: Option<bool>,
    /// `auto`, `backup` or `file_share_backup`.
    #[serde(default)]
    pub backup_context: Option<VssBackupContext>,
}

impl VssSettings {
    /// These settings, with unset fields taken from `fallback`.
    pub fn or(self, fallback: VssSettings) -> VssSettings {
        VssSettings {
            backup_type: self.backup_type.or(fallback.backup_type),
            bootable_system_state: self
                .bootable_system_state
                .or(fallback.bootable_system_state),
            partial_file_support: self.partial_file_support.or(fallback.partial_file_support),
            backup_context: self.backup_context.or(fallback.backup_context),
        }
    }
}

/// Whether a guest id names a Windows guest (`windows9Server64Guest`, `winNetStandardGuest`…):
/// only those get VSS options.
pub fn is_windows_guest(guest_id: &str) -> bool {
    guest_id.to_ascii_lowercase().starts_with("win")
}

/// The quiesce spec for a guest: the timeout in whole minutes within vSphere's 5..=240 (a
/// clamped value is said in the log), and the VSS options for a Windows guest. `None` when
/// there is nothing to say beyond "quiesce" (plain `CreateSnapshot_Task`).
pub fn quiesce_spec(
    guest_id: Option<&str>,
    timeout_seconds: Option<u64>,
    vss: VssSettings,
) -> Option<vim_client::QuiesceSpec> {
    let windows = guest_id.is_some_and(is_windows_guest);
    let timeout_minutes = timeout_seconds.map(|s| {
        let minutes = s.div_ceil(60).clamp(5, 240);
        if minutes * 60 != s {
            tracing::info!(
                "quiesce_timeout_seconds = {s}: vSphere takes whole minutes from 5 to 240; asking for {minutes} min"
            );
        }
        minutes as i32
    });
    if !windows && timeout_minutes.is_none() {
        return None;
    }
    Some(vim_client::QuiesceSpec {
        timeout_minutes,
        windows: windows.then(|| vim_client::WindowsQuiesceSpec {
            backup_type: vss.backup_type.map(VssBackupType::code),
            bootable_system_state: vss.bootable_system_state,
            partial_file_support: vss.partial_file_support,
            backup_context: vss.backup_context.map(|c| c.wire().to_string()),
        }),
    })
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
    if let Some(level) = settings.compression_level {
        check_compression_level(level)
            .map_err(|e| format!("[targets.\"{key}\"] compression_level: {e}"))?;
    }
    if settings.quiesce_timeout_seconds == Some(0) {
        return Err(format!(
            "[targets.\"{key}\"] quiesce_timeout_seconds must be at least 1"
        ));
    }
    Ok(())
}

/// Checks a zstd level: -7 (fastest) to 22 (smallest).
///
/// # Errors
/// The level and the range.
pub fn check_compression_level(level: i32) -> Result<(), String> {
    if (-7..=22).contains(&level) {
        Ok(())
    } else {
        Err(format!("{level} is outside zstd's -7..=22"))
    }
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
/// `quiesce`, `transports`, `quiesce_timeout_seconds`, `compression_level` and each VSS
/// option; `exclude_disks` of every section that applies add up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// Disks excluded by the configuration.
    pub exclude_disks: BTreeSet<usize>,
    /// Quiesce mode from the configuration.
    pub quiesce: Option<QuiesceMode>,
    /// Transports from the configuration.
    pub transports: Option<String>,
    /// Quiesce timeout from the configuration.
    pub quiesce_timeout_seconds: Option<u64>,
    /// zstd level from the configuration.
    pub compression_level: Option<i32>,
    /// VSS options of the sections, field by field (own section first).
    pub vss: VssSettings,
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
        out.quiesce_timeout_seconds = out.quiesce_timeout_seconds.or(s.quiesce_timeout_seconds);
        out.compression_level = out.compression_level.or(s.compression_level);
        if let Some(v) = s.vss {
            out.vss = out.vss.or(v);
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
                compression_level: Some(3),
                vss: Some(VssSettings {
                    backup_type: Some(VssBackupType::Full),
                    bootable_system_state: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        sections.insert(
            "vm:web01".to_string(),
            TargetSettings {
                exclude_disks: vec![1],
                quiesce: Some(QuiesceMode::Require),
                transports: None,
                compression_level: Some(9),
                vss: Some(VssSettings {
                    backup_type: Some(VssBackupType::Copy),
                    ..Default::default()
                }),
                ..Default::default()
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
        assert_eq!(e.compression_level, Some(9));
        assert_eq!(e.vss.backup_type, Some(VssBackupType::Copy));
        assert_eq!(e.vss.bootable_system_state, Some(true));
        let untagged = effective(&sections, &vm, |_| false);
        assert_eq!(untagged.exclude_disks, [1].into());
        assert_eq!(untagged.transports, None);
    }

    #[test]
    fn quiesce_spec_for_windows_and_timeouts() {
        let vss = VssSettings {
            backup_type: Some(VssBackupType::Copy),
            backup_context: Some(VssBackupContext::FileShareBackup),
            ..Default::default()
        };
        assert_eq!(quiesce_spec(Some("otherGuest64"), None, vss), None);
        let linux = quiesce_spec(Some("otherGuest64"), Some(30), vss).unwrap();
        assert_eq!(linux.timeout_minutes, Some(5));
        assert_eq!(linux.windows, None);
        let win = quiesce_spec(Some("windows2019srv_64Guest"), Some(601), vss).unwrap();
        assert_eq!(win.timeout_minutes, Some(11));
        let w = win.windows.unwrap();
        assert_eq!(w.backup_type, Some(5));
        assert_eq!(w.backup_context.as_deref(), Some("ctx_file_share_backup"));
        assert_eq!(w.bootable_system_state, None);
        assert_eq!(
            quiesce_spec(Some("windows9Guest"), Some(100_000), vss)
                .unwrap()
                .timeout_minutes,
            Some(240)
        );
        let bad = TargetSettings {
            compression_level: Some(23),
            ..Default::default()
        };
        assert!(check_section("vm:x", &bad).unwrap_err().contains("-7..=22"));
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
