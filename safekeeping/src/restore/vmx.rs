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

/// VMX quoting: `|`, `"` and control characters become `|XX` (hex), so a value always stays
/// on its line and inside its quotes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '|' || c == '"' || c.is_ascii_control() {
            out.push_str(&format!("|{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Undoes [`escape`]: every `|XX` hex pair is one byte.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'|' && i + 3 <= bytes.len() {
            if let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the value of `key` from `.vmx` text, unquoted and unescaped.
pub fn value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| unescape(v.trim().trim_matches('"')))
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
        assert_eq!(
            value(&out, "displayName").as_deref(),
            Some("web01-restored")
        );
        assert_eq!(
            value(&out, "nvram").as_deref(),
            Some("web01-restored.nvram")
        );
        assert_eq!(value(&out, "memSize").as_deref(), Some("1024"));
        assert_eq!(value(&out, "guestOS").as_deref(), Some("ubuntu-64"));
        assert_eq!(
            value(&out, "ide1:0.deviceType").as_deref(),
            Some("cdrom-raw")
        );
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
        assert_eq!(value(&out, "uuid.bios").as_deref(), Some("42 15 a0 e0"));
        assert_eq!(value(&out, "vc.uuid").as_deref(), Some("50 15 11 22"));
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
        assert_eq!(value(&out, "displayName").as_deref(), Some("a\"b"));
    }

    #[test]
    fn control_characters_stay_on_the_line_and_read_back() {
        let edit = VmxEdit {
            name: "a\nb|c",
            nvram_file: "x.nvram",
            keep_identity: false,
        };
        let out = edit_vmx(VMX, &edit);
        assert!(out.contains("displayName = \"a|0Ab|7Cc\""), "{out}");
        assert_eq!(value(&out, "displayName").as_deref(), Some("a\nb|c"));
        assert_eq!(edit_vmx(&out, &edit), out, "editing twice is editing once");
    }
}
