//! What is backed up (targets) and the numbering of its generations.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The kind of thing backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A virtual machine.
    Vm,
    /// An improved virtual disk (First Class Disk).
    Ivd,
    /// A vApp.
    VApp,
}

impl TargetKind {
    /// The prefix of this kind's target keys (`vm`, `ivd`, `vapp`).
    pub fn prefix(self) -> &'static str {
        match self {
            TargetKind::Vm => "vm",
            TargetKind::Ivd => "ivd",
            TargetKind::VApp => "vapp",
        }
    }
}

/// Who a target is, as recorded in every manifest. Unknown fields survive read-modify-write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetIdentity {
    /// Kind of target.
    pub kind: TargetKind,
    /// Display name at backup time (may change in vCenter; the key does not).
    pub name: String,
    /// Managed object reference (`vm-42`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moref: Option<String>,
    /// BIOS uuid (`config.uuid`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_uuid: Option<String>,
    /// vCenter instance uuid (`config.instanceUuid`), or the IVD id for an IVD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_uuid: Option<String>,
    /// What the target's key is qualified with when ids alone could collide with another
    /// target's: safekeeping sets the vCenter's instance uuid for VMs of a vCenter other than
    /// its default one (two vCenters may both have a `vm-42`). `None` keeps the key as it
    /// always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Anything else the caller wants to keep (vCenter, datacenter, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TargetIdentity {
    /// A new identity with only kind and name; fill the ids you know.
    pub fn new(kind: TargetKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            moref: None,
            bios_uuid: None,
            instance_uuid: None,
            scope: None,
            extra: Default::default(),
        }
    }

    /// The stable folder name of this target: `<kind>-<id>` where id is the first known of
    /// instance uuid, BIOS uuid, moref, name, lower-cased with unsafe characters replaced by `_`.
    /// A VM renamed in vCenter keeps its key, so its history continues. With a
    /// [`TargetIdentity::scope`] the id is prefixed by it: `<kind>-<scope>-<id>`.
    ///
    /// # Errors
    /// [`Error::InvalidTargetKey`] if every id is empty.
    pub fn key(&self) -> Result<TargetKey> {
        let id = [&self.instance_uuid, &self.bios_uuid, &self.moref]
            .into_iter()
            .flatten()
            .map(|s| s.as_str())
            .chain(std::iter::once(self.name.as_str()))
            .find(|s| !s.trim().is_empty())
            .ok_or_else(|| Error::InvalidTargetKey(String::new()))?;
        let scoped = match self.scope.as_deref().map(str::trim) {
            Some(scope) if !scope.is_empty() => format!("{scope}-{}", id.trim()),
            _ => id.trim().to_string(),
        };
        let clean: String = scoped
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(190)
            .collect();
        TargetKey::new(format!("{}-{}", self.kind.prefix(), clean))
    }
}

/// The folder name of a target under `targets/`; validated to be a safe single path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetKey(String);

impl TargetKey {
    /// Validates `key`.
    ///
    /// # Errors
    /// [`Error::InvalidTargetKey`] unless it is 1-200 characters of `[a-z0-9._-]` not starting
    /// with `.`.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= 200
            && !key.starts_with('.')
            && key.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        if ok {
            Ok(Self(key))
        } else {
            Err(Error::InvalidTargetKey(key))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TargetKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TargetKey::new(s)
    }
}

impl From<TargetKey> for String {
    fn from(k: TargetKey) -> String {
        k.0
    }
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TargetKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TargetKey::new(s)
    }
}

/// Number of a generation within its target: 1, 2, 3, ... (next = highest + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GenerationId(pub u64);

impl GenerationId {
    /// Folder name of this generation (`gen-000042`).
    pub fn folder_name(self) -> String {
        format!("{}{:06}", crate::format::GENERATION_PREFIX, self.0)
    }

    /// The number after this one.
    ///
    /// # Errors
    /// [`Error::GenerationLimit`] after `u64::MAX` (only a planted or damaged folder has it).
    pub fn next(self, target: &TargetKey) -> Result<GenerationId> {
        self.0
            .checked_add(1)
            .map(GenerationId)
            .ok_or_else(|| Error::GenerationLimit {
                target: target.to_string(),
                folder: self.folder_name(),
            })
    }

    /// Parses a folder name made by [`GenerationId::folder_name`].
    pub fn from_folder_name(name: &str) -> Option<Self> {
        let digits = name.strip_prefix(crate::format::GENERATION_PREFIX)?;
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        (GenerationId(n).folder_name() == name).then_some(GenerationId(n))
    }
}

impl std::fmt::Display for GenerationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefers_instance_uuid_and_survives_rename() {
        let mut id = TargetIdentity::new(TargetKind::Vm, "web01");
        id.moref = Some("vm-42".into());
        id.instance_uuid = Some("5012ABCD-0000-1111-2222-333344445555".into());
        let k1 = id.key().unwrap();
        assert_eq!(k1.as_str(), "vm-5012abcd-0000-1111-2222-333344445555");
        id.name = "web01-renamed".into();
        assert_eq!(id.key().unwrap(), k1);
        let only_name = TargetIdentity::new(TargetKind::VApp, "My App/../x");
        assert_eq!(only_name.key().unwrap().as_str(), "vapp-my_app_.._x");
    }

    #[test]
    fn a_scope_separates_equal_ids_and_no_scope_keeps_the_old_key() {
        let mut a = TargetIdentity::new(TargetKind::Vm, "web01");
        a.moref = Some("vm-42".into());
        a.instance_uuid = Some("5012abcd-0000-1111-2222-333344445555".into());
        let unscoped = a.key().unwrap();
        assert_eq!(unscoped.as_str(), "vm-5012abcd-0000-1111-2222-333344445555");
        let mut b = a.clone();
        b.scope = Some("DBED6E0C-bd88-4ef6-b594-21283e1c677f".into());
        let scoped = b.key().unwrap();
        assert_eq!(
            scoped.as_str(),
            "vm-dbed6e0c-bd88-4ef6-b594-21283e1c677f-5012abcd-0000-1111-2222-333344445555"
        );
        assert_ne!(scoped, unscoped);
        // An empty scope is no scope; a scope survives the manifest's JSON.
        b.scope = Some(" ".into());
        assert_eq!(b.key().unwrap(), unscoped);
        b.scope = Some("x".into());
        let json = serde_json::to_string(&b).unwrap();
        let back: TargetIdentity = serde_json::from_str(&json).unwrap();
        assert_eq!(back.scope.as_deref(), Some("x"));
        let old: TargetIdentity = serde_json::from_str(
            r#"{"kind":"vm","name":"web01","moref":"vm-42","vcenter":"https://vc/sdk"}"#,
        )
        .unwrap();
        assert_eq!(old.scope, None);
        assert_eq!(old.key().unwrap().as_str(), "vm-vm-42");
    }

    #[test]
    fn bad_keys_rejected() {
        for k in ["", ".hidden", "a/b", "UPPER", "..", "x\0"] {
            assert!(TargetKey::new(k).is_err(), "{k:?}");
        }
        assert!(TargetIdentity::new(TargetKind::Vm, "  ").key().is_err());
    }

    #[test]
    fn generation_folder_names() {
        assert_eq!(GenerationId(3).folder_name(), "gen-000003");
        assert_eq!(
            GenerationId::from_folder_name("gen-000003"),
            Some(GenerationId(3))
        );
        assert_eq!(
            GenerationId::from_folder_name("gen-1234567"),
            Some(GenerationId(1234567))
        );
        assert_eq!(GenerationId::from_folder_name("gen-0000003"), None);
        assert_eq!(GenerationId::from_folder_name("gen-3"), None);
        assert_eq!(GenerationId::from_folder_name("x"), None);
    }
}
