//! Editing a saved `.vmx` for restore by import: new name, identity cleared (unless recovery),
//! and every disk, disk controller and NIC removed — restore adds those back with
//! ReconfigVM_Task so they land on the mapped datastores and networks.

/// What to change in the `.vmx`.
#[derive(Debug, Clone)]
pub struct VmxEdit<'a> {
    /// The restored VM's display name.
    pub name: &'a str,
    /// File name of the uploaded `.nvram`, relative to the VM directory.
    pub nvram_file: &'a str,
    /// Keep uuids (recovery of a VM that is gone).
    pub keep_identity: bool,
}

/// Keys that name the identity of the original VM.
const IDENTITY_KEYS: &[&str] = &["uuid.bios", "uuid.location", "vc.uuid"];

/// Keys tied to the original VM's files or host that must not follow it.
const STALE_KEYS: &[&str] = &[
    "sched.swap.derivedName",
    "checkpoint.vmState",
    "extendedConfigFile",
    "migrate.hostLog",
    "migrate.hostLogState",
    "migrate.migrationId",
    "vmotion.checkpointFBSize",
    "vmotion.checkpointSVGAPrimarySize",
];

/// Device families removed and re-added through ReconfigVM_Task.
const DEVICE_PREFIXES: &[&str] = &["scsi", "sata", "nvme", "ethernet"];

/// Returns the edited `.vmx` text.
pub fn edit_vmx(text: &str, edit: &VmxEdit<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let Some((key, _value)) = line.split_once('=') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("displayName")
            || key.eq_ignore_ascii_case("nvram")
            || STALE_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
            || (!edit.keep_identity && IDENTITY_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)))
            || is_device_key(key)
            || is_ide_disk_key(key, text)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("displayName = \"{}\"\n", escape(edit.name)));
    out.push_str(&format!("nvram = \"{}\"\n", escape(edit.nvram_file)));
    out
}

/// `scsi0.present`, `scsi0:1.fileName`, `ethernet0.networkName` ...
fn is_device_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    DEVICE_PREFIXES.iter().any(|p| {
        lower
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// Keys of an IDE unit whose backing is a `.vmdk` (a disk, not a CD-ROM).
fn is_ide_disk_key(key: &str, text: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("ide") else {
        return false;
    };
    let Some((unit, _)) = rest.split_once('.') else {
        return false;
    };
    if !unit.contains(':') {
        return false;
    }
    let file_key = format!("ide{unit}.filename");
    text.lines().any(|l| {
        l.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case(&file_key)
                && v.trim().trim_matches('"').ends_with(".vmdk")
        })
    })
}

fn escape(s: &str) -> String {
    s.replace('|', "|7C").replace('"', "|22")
}

/// Reads the value of `key` from `.vmx` text (unquoted).
pub fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMX: &str = r#".encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "web01"
nvram = "web01.nvram"
memSize = "1024"
numvcpus = "2"
uuid.bios = "42 15 a0 e0"
vc.uuid = "50 15 11 22"
sched.swap.derivedName = "/vmfs/volumes/ds/web01/web01-1.vswp"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "web01.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-raw"
ide0:0.fileName = "old.vmdk"
ide0:0.present = "TRUE"
ethernet0.present = "TRUE"
ethernet0.networkName = "VM Network"
ethernet0.generatedAddress = "00:50:56:aa:bb:cc"
guestOS = "ubuntu-64"
"#;

    #[test]
    fn import_edit_clears_identity_and_devices() {
        let out = edit_vmx(
            VMX,
            &VmxEdit {
                name: "web01-restored",
                nvram_file: "web01-restored.nvram",
                keep_identity: false,
            },
        );
        assert_eq!(value(&out, "displayName"), Some("web01-restored"));
        assert_eq!(value(&out, "nvram"), Some("web01-restored.nvram"));
        assert_eq!(value(&out, "memSize"), Some("1024"));
        assert_eq!(value(&out, "guestOS"), Some("ubuntu-64"));
        assert_eq!(value(&out, "ide1:0.deviceType"), Some("cdrom-raw"));
        for gone in [
            "uuid.bios",
            "vc.uuid",
            "sched.swap.derivedName",
            "scsi0.present",
            "scsi0:0.fileName",
            "ethernet0.networkName",
            "ide0:0.fileName",
            "ide0:0.present",
        ] {
            assert_eq!(value(&out, gone), None, "{gone} should be removed");
        }
        assert_eq!(out.matches("displayName").count(), 1);
    }

    #[test]
    fn recovery_keeps_identity() {
        let out = edit_vmx(
            VMX,
            &VmxEdit {
                name: "web01",
                nvram_file: "web01.nvram",
                keep_identity: true,
            },
        );
        assert_eq!(value(&out, "uuid.bios"), Some("42 15 a0 e0"));
        assert_eq!(value(&out, "vc.uuid"), Some("50 15 11 22"));
    }

    #[test]
    fn quotes_in_names_are_escaped() {
        let out = edit_vmx(
            VMX,
            &VmxEdit {
                name: "a\"b",
                nvram_file: "x.nvram",
                keep_identity: false,
            },
        );
        assert!(out.contains("displayName = \"a|22b\""));
    }
}
