//! Backup targets as written on the command line: `vm:NAME`, `vm:vm-123`, `vm:UUID`,
//! `vm:DC/vm/folder/NAME`, `ivd:NAME|ID`, `vapp:NAME` and `tag:[CATEGORY/]NAME`, and the
//! inventory selections that expand to every VM below a place: `folder:DC/vm/PATH`,
//! `cluster:NAME`, `host:NAME`, `rp:DC/host/CLUSTER/Resources/PATH`, `datastore:NAME`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A target as given by the user, checked for syntax only (resolution happens in `resolve`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A virtual machine.
    Vm(VmSelector),
    /// A First Class Disk (improved virtual disk), by id or name.
    Ivd(String),
    /// A vApp, by name (backup only).
    Vapp(String),
    /// Every VM, first class disk and vApp carrying a vSphere tag (`[CATEGORY/]NAME`).
    Tag(String),
    /// Every VM in a place of the inventory, as found when the run starts.
    Inventory(InventorySelector),
}

/// A place in the vCenter inventory whose VMs a selection covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InventorySelector {
    /// `folder:DC/vm/PATH`: every VM in the folder and its subfolders.
    Folder(String),
    /// `cluster:NAME`: every VM on the cluster's hosts.
    Cluster(String),
    /// `host:NAME`: every VM registered on the host.
    Host(String),
    /// `rp:DC/host/CLUSTER/Resources/PATH`: every VM in the pool and its child pools (vApps
    /// included).
    Pool(String),
    /// `datastore:NAME`: every VM with a file (a disk) on the datastore.
    Datastore(String),
}

impl InventorySelector {
    /// The prefix word (`folder`, `cluster`, `host`, `rp`, `datastore`).
    pub fn kind(&self) -> &'static str {
        match self {
            InventorySelector::Folder(_) => "folder",
            InventorySelector::Cluster(_) => "cluster",
            InventorySelector::Host(_) => "host",
            InventorySelector::Pool(_) => "rp",
            InventorySelector::Datastore(_) => "datastore",
        }
    }

    /// The name or path after the prefix.
    pub fn value(&self) -> &str {
        match self {
            InventorySelector::Folder(s)
            | InventorySelector::Cluster(s)
            | InventorySelector::Host(s)
            | InventorySelector::Pool(s)
            | InventorySelector::Datastore(s) => s,
        }
    }
}

/// How a `vm:` target names its virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VmSelector {
    /// A managed object reference such as `vm-123`.
    Moref(String),
    /// A BIOS uuid or an instance uuid.
    Uuid(String),
    /// An inventory path such as `DC0/vm/folder/web01`.
    InventoryPath(String),
    /// A display name.
    Name(String),
}

/// Why a target string was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetParseError {
    /// No `kind:` prefix.
    #[error(
        "target `{0}` has no kind: write it as vm:NAME, vm:vm-123, vm:UUID or vm:DC/vm/folder/NAME"
    )]
    MissingKind(String),
    /// An unknown `kind:` prefix.
    #[error("target `{target}` has unknown kind `{kind}`: expected vm, ivd, vapp, tag, folder, cluster, host, rp or datastore")]
    UnknownKind {
        /// The whole target.
        target: String,
        /// The unrecognized kind.
        kind: String,
    },
    /// Nothing after the prefix.
    #[error("target `{0}` names nothing after its kind")]
    Empty(String),
    /// An inventory path with an empty element (`DC//vm`).
    #[error("target `{0}` is an inventory path with an empty element")]
    BadPath(String),
    /// A `folder:` or `rp:` path that does not have the shape vCenter gives it.
    #[error("target `{target}` is not a {what} path: write {shape}")]
    BadPlace {
        /// The whole target.
        target: String,
        /// `folder` or `resource pool`.
        what: &'static str,
        /// The expected shape.
        shape: &'static str,
    },
    /// An inventory path too short to name a VM.
    #[error(
        "target `{0}` is not an inventory path to a VM: write vm:DATACENTER/vm/[FOLDER/...]NAME"
    )]
    ShortPath(String),
}

impl Target {
    /// The kind word of this target (`vm`, `ivd`, `vapp`, `tag`).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Vm(_) => "vm",
            Target::Ivd(_) => "ivd",
            Target::Vapp(_) => "vapp",
            Target::Tag(_) => "tag",
            Target::Inventory(sel) => sel.kind(),
        }
    }
}

impl FromStr for Target {
    type Err = TargetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(TargetParseError::MissingKind(s.to_string()));
        };
        if rest.trim().is_empty() {
            return Err(TargetParseError::Empty(s.to_string()));
        }
        let rest = rest.to_string();
        match kind.to_ascii_lowercase().as_str() {
            "vm" => Ok(Target::Vm(parse_vm(s, rest)?)),
            "ivd" | "fcd" => Ok(Target::Ivd(rest)),
            "vapp" => Ok(Target::Vapp(rest)),
            "tag" => Ok(Target::Tag(rest)),
            "folder" => Ok(Target::Inventory(InventorySelector::Folder(place_path(
                s,
                rest,
                "vm",
                "folder",
                "folder:DATACENTER/vm/FOLDER[/...]",
            )?))),
            "rp" | "pool" => Ok(Target::Inventory(InventorySelector::Pool(place_path(
                s,
                rest,
                "host",
                "resource pool",
                "rp:DATACENTER/host/CLUSTER/Resources[/POOL...]",
            )?))),
            "cluster" => Ok(Target::Inventory(InventorySelector::Cluster(rest))),
            "host" => Ok(Target::Inventory(InventorySelector::Host(rest))),
            "datastore" | "ds" => Ok(Target::Inventory(InventorySelector::Datastore(rest))),
            _ => Err(TargetParseError::UnknownKind {
                target: s.to_string(),
                kind: kind.to_string(),
            }),
        }
    }
}

/// A `folder:` or `rp:` inventory path: DATACENTER/`second`/..., no empty element.
fn place_path(
    whole: &str,
    rest: String,
    second: &str,
    what: &'static str,
    shape: &'static str,
) -> Result<String, TargetParseError> {
    let path = rest.trim_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(TargetParseError::BadPath(whole.to_string()));
    }
    if parts.len() < 2 || parts[1] != second || (second == "host" && parts.len() < 4) {
        return Err(TargetParseError::BadPlace {
            target: whole.to_string(),
            what,
            shape,
        });
    }
    Ok(path.to_string())
}

fn parse_vm(whole: &str, rest: String) -> Result<VmSelector, TargetParseError> {
    if rest.contains('/') {
        let path = rest.trim_matches('/');
        if path.split('/').any(str::is_empty) {
            return Err(TargetParseError::BadPath(whole.to_string()));
        }
        // DATACENTER/vm/NAME at least: anything shorter cannot name a VM (and would print
        // back as a name).
        if path.split('/').count() < 3 {
            return Err(TargetParseError::ShortPath(whole.to_string()));
        }
        return Ok(VmSelector::InventoryPath(path.to_string()));
    }
    if is_moref(&rest) {
        return Ok(VmSelector::Moref(rest));
    }
    if is_uuid(&rest) {
        return Ok(VmSelector::Uuid(rest.to_ascii_lowercase()));
    }
    Ok(VmSelector::Name(rest))
}

/// `vm-` followed by digits, as vCenter assigns them.
fn is_moref(s: &str) -> bool {
    s.strip_prefix("vm-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The 8-4-4-4-12 hexadecimal form.
pub(crate) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Vm(sel) => write!(f, "vm:{sel}"),
            Target::Ivd(s) => write!(f, "ivd:{s}"),
            Target::Vapp(s) => write!(f, "vapp:{s}"),
            Target::Tag(s) => write!(f, "tag:{s}"),
            Target::Inventory(sel) => write!(f, "{}:{}", sel.kind(), sel.value()),
        }
    }
}

impl fmt::Display for VmSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmSelector::Moref(s)
            | VmSelector::Uuid(s)
            | VmSelector::InventoryPath(s)
            | VmSelector::Name(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_vm_form() {
        assert_eq!(
            "vm:web01".parse(),
            Ok(Target::Vm(VmSelector::Name("web01".into())))
        );
        assert_eq!(
            "vm:vm-123".parse(),
            Ok(Target::Vm(VmSelector::Moref("vm-123".into())))
        );
        assert_eq!(
            "vm:4215A0E0-1111-2222-3333-444455556666".parse(),
            Ok(Target::Vm(VmSelector::Uuid(
                "4215a0e0-1111-2222-3333-444455556666".into()
            )))
        );
        assert_eq!(
            "vm:DC0/vm/prod/web01".parse(),
            Ok(Target::Vm(VmSelector::InventoryPath(
                "DC0/vm/prod/web01".into()
            )))
        );
    }

    #[test]
    fn names_that_look_almost_like_morefs_stay_names() {
        assert_eq!(
            "vm:vm-web".parse(),
            Ok(Target::Vm(VmSelector::Name("vm-web".into())))
        );
        assert_eq!(
            "vm:vm-".parse(),
            Ok(Target::Vm(VmSelector::Name("vm-".into())))
        );
    }

    #[test]
    fn other_kinds_parse_syntactically() {
        assert_eq!("ivd:disk1".parse(), Ok(Target::Ivd("disk1".into())));
        assert_eq!("vapp:shop".parse(), Ok(Target::Vapp("shop".into())));
        assert_eq!("tag:gold".parse(), Ok(Target::Tag("gold".into())));
    }

    #[test]
    fn rejects_bad_targets_with_specific_errors() {
        assert_eq!(
            "web01".parse::<Target>(),
            Err(TargetParseError::MissingKind("web01".into()))
        );
        assert_eq!(
            "hots:esx1".parse::<Target>(),
            Err(TargetParseError::UnknownKind {
                target: "hots:esx1".into(),
                kind: "hots".into()
            })
        );
        assert_eq!(
            "vm:".parse::<Target>(),
            Err(TargetParseError::Empty("vm:".into()))
        );
        assert_eq!(
            "vm:DC0//web".parse::<Target>(),
            Err(TargetParseError::BadPath("vm:DC0//web".into()))
        );
        // A one- or two-element "path" names no VM (and would print back as a name).
        assert_eq!(
            "vm:/web01".parse::<Target>(),
            Err(TargetParseError::ShortPath("vm:/web01".into()))
        );
        assert!("vm:DC0/web01".parse::<Target>().is_err());
        assert_eq!(
            "vm:/DC0/vm/web01".parse(),
            Ok(Target::Vm(VmSelector::InventoryPath("DC0/vm/web01".into())))
        );
    }

    #[test]
    fn inventory_selections_parse_and_check_their_paths() {
        use InventorySelector::*;
        let inv = |s: &str| match s.parse::<Target>() {
            Ok(Target::Inventory(sel)) => Ok(sel),
            other => Err(other),
        };
        assert_eq!(
            inv("folder:DC0/vm/prod/web"),
            Ok(Folder("DC0/vm/prod/web".into()))
        );
        assert_eq!(inv("folder:/DC0/vm/"), Ok(Folder("DC0/vm".into())));
        assert_eq!(inv("cluster:C1"), Ok(Cluster("C1".into())));
        assert_eq!(inv("host:esx1.lab"), Ok(Host("esx1.lab".into())));
        assert_eq!(inv("datastore:ds 1"), Ok(Datastore("ds 1".into())));
        assert_eq!(
            inv("rp:DC0/host/C1/Resources/gold"),
            Ok(Pool("DC0/host/C1/Resources/gold".into()))
        );
        assert!(matches!(
            "folder:DC0/host/x".parse::<Target>(),
            Err(TargetParseError::BadPlace { what: "folder", .. })
        ));
        assert!(matches!(
            "rp:DC0/host/C1".parse::<Target>(),
            Err(TargetParseError::BadPlace {
                what: "resource pool",
                ..
            })
        ));
        assert!(matches!(
            "folder:DC0/vm//a".parse::<Target>(),
            Err(TargetParseError::BadPath(_))
        ));
        assert_eq!("cluster:C1".parse::<Target>().unwrap().kind(), "cluster");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "vm:web01",
            "vm:vm-7",
            "vm:DC0/vm/a",
            "tag:gold",
            "folder:DC0/vm/a",
            "cluster:C1",
            "host:h1",
            "rp:DC0/host/C1/Resources/p",
            "datastore:ds1",
        ] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
    }
}
