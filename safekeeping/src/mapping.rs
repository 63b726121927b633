//! Placement and network mapping for restore: every name the user gives (or that the backup
//! recorded) is checked against what vCenter has before anything is created, and an unknown
//! name is an error naming it and the candidates.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// Kinds of inventory object a restore places the VM on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementKind {
    /// A datacenter.
    Datacenter,
    /// A VM folder.
    Folder,
    /// A resource pool.
    ResourcePool,
    /// A host.
    Host,
    /// A datastore.
    Datastore,
    /// A network (standard portgroup, distributed portgroup or opaque network).
    Network,
}

impl fmt::Display for PlacementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlacementKind::Datacenter => "datacenter",
            PlacementKind::Folder => "folder",
            PlacementKind::ResourcePool => "resource pool",
            PlacementKind::Host => "host",
            PlacementKind::Datastore => "datastore",
            PlacementKind::Network => "network",
        })
    }
}

/// One object that a name can resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Display name (or inventory path for folders).
    pub name: String,
    /// Managed object id.
    pub moref: String,
}

/// A name that matched nothing, or more than one object.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MappingError {
    /// Nothing of that kind has that name.
    #[error("unknown {kind} `{name}`; {}", candidate_text(.candidates))]
    Unknown {
        /// What was looked for.
        kind: PlacementKind,
        /// The name given.
        name: String,
        /// The names that exist.
        candidates: Vec<String>,
    },
    /// Several objects of that kind have that name.
    #[error("{kind} `{name}` is ambiguous: {}", .matches.join(", "))]
    Ambiguous {
        /// What was looked for.
        kind: PlacementKind,
        /// The name given.
        name: String,
        /// The morefs that match.
        matches: Vec<String>,
    },
    /// `--network OLD=NEW` where the backed-up VM has no NIC on OLD.
    #[error("--network {old}=...: the backed-up VM has no NIC on network `{old}`; its networks: {}", .networks.join(", "))]
    NoSuchSourceNetwork {
        /// The OLD name given.
        old: String,
        /// The networks the backed-up VM's NICs used.
        networks: Vec<String>,
    },
    /// `--disk-datastore N=DS` where the VM has no disk N.
    #[error("--disk-datastore {index}=...: the backed-up VM has {count} disks (numbered from 0)")]
    NoSuchDisk {
        /// The N given.
        index: u32,
        /// How many disks the generation has.
        count: usize,
    },
}

fn candidate_text(c: &[String]) -> String {
    if c.is_empty() {
        "there are none".to_string()
    } else {
        format!("candidates: {}", c.join(", "))
    }
}

/// Finds the one candidate called `name` (or whose moref is `name`).
///
/// # Errors
/// [`MappingError::Unknown`] listing every candidate's name, or [`MappingError::Ambiguous`].
pub fn pick<'a>(
    kind: PlacementKind,
    name: &str,
    candidates: &'a [Candidate],
) -> Result<&'a Candidate, MappingError> {
    let matches: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.name == name || c.moref == name)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let mut names: Vec<String> = candidates.iter().map(|c| c.name.clone()).collect();
            names.sort();
            names.dedup();
            Err(MappingError::Unknown {
                kind,
                name: name.to_string(),
                candidates: names,
            })
        }
        many => Err(MappingError::Ambiguous {
            kind,
            name: name.to_string(),
            matches: many.iter().map(|c| c.moref.clone()).collect(),
        }),
    }
}

/// `--network OLD=NEW` pairs, checked against the backed-up VM's networks.
#[derive(Debug, Clone, Default)]
pub struct NetworkMap {
    pairs: BTreeMap<String, String>,
}

impl NetworkMap {
    /// Builds the map; every OLD must be a network one of the saved NICs used.
    ///
    /// # Errors
    /// [`MappingError::NoSuchSourceNetwork`].
    pub fn new(
        pairs: &[(String, String)],
        saved_networks: &[String],
    ) -> Result<NetworkMap, MappingError> {
        let mut map = BTreeMap::new();
        for (old, new) in pairs {
            if !saved_networks.iter().any(|n| n == old) {
                let mut networks = saved_networks.to_vec();
                networks.sort();
                networks.dedup();
                return Err(MappingError::NoSuchSourceNetwork {
                    old: old.clone(),
                    networks,
                });
            }
            map.insert(old.clone(), new.clone());
        }
        Ok(NetworkMap { pairs: map })
    }

    /// The network a NIC that was on `old` goes to.
    pub fn target<'a>(&'a self, old: &'a str) -> &'a str {
        self.pairs.get(old).map(String::as_str).unwrap_or(old)
    }
}

/// Per-disk datastore choice: `--disk-datastore N=DS` over `--datastore DS` over the disk's
/// original datastore.
pub fn disk_datastores(
    originals: &[String],
    all: Option<&str>,
    per_disk: &[(u32, String)],
) -> Result<Vec<String>, MappingError> {
    let mut out: Vec<String> = originals
        .iter()
        .map(|o| all.map(str::to_string).unwrap_or_else(|| o.clone()))
        .collect();
    for (index, ds) in per_disk {
        let slot = out
            .get_mut(*index as usize)
            .ok_or(MappingError::NoSuchDisk {
                index: *index,
                count: originals.len(),
            })?;
        *slot = ds.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands() -> Vec<Candidate> {
        vec![
            Candidate {
                name: "LocalDS_0".into(),
                moref: "datastore-1".into(),
            },
            Candidate {
                name: "LocalDS_1".into(),
                moref: "datastore-2".into(),
            },
        ]
    }

    #[test]
    fn picks_by_name_or_moref() {
        assert_eq!(
            pick(PlacementKind::Datastore, "LocalDS_1", &cands())
                .unwrap()
                .moref,
            "datastore-2"
        );
        assert_eq!(
            pick(PlacementKind::Datastore, "datastore-1", &cands())
                .unwrap()
                .name,
            "LocalDS_0"
        );
    }

    #[test]
    fn unknown_name_lists_candidates() {
        let err = pick(PlacementKind::Datastore, "nope", &cands()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown datastore `nope`; candidates: LocalDS_0, LocalDS_1"
        );
        let err = pick(PlacementKind::Network, "x", &[]).unwrap_err();
        assert_eq!(err.to_string(), "unknown network `x`; there are none");
    }

    #[test]
    fn duplicate_names_are_ambiguous() {
        let mut c = cands();
        c[1].name = "LocalDS_0".into();
        assert!(matches!(
            pick(PlacementKind::Datastore, "LocalDS_0", &c),
            Err(MappingError::Ambiguous { .. })
        ));
    }

    #[test]
    fn network_map_checks_sources_and_defaults_to_same_name() {
        let saved = vec!["VM Network".to_string(), "DVS0-DVUplinks".to_string()];
        let m = NetworkMap::new(&[("VM Network".into(), "DMZ".into())], &saved).unwrap();
        assert_eq!(m.target("VM Network"), "DMZ");
        assert_eq!(m.target("DVS0-DVUplinks"), "DVS0-DVUplinks");
        let err = NetworkMap::new(&[("Nope".into(), "DMZ".into())], &saved).unwrap_err();
        assert!(
            err.to_string().contains("DVS0-DVUplinks, VM Network"),
            "{err}"
        );
    }

    #[test]
    fn disk_datastore_precedence() {
        let orig = vec!["a".to_string(), "b".to_string()];
        assert_eq!(disk_datastores(&orig, None, &[]).unwrap(), orig);
        assert_eq!(
            disk_datastores(&orig, Some("c"), &[(1, "d".into())]).unwrap(),
            vec!["c".to_string(), "d".to_string()]
        );
        assert!(matches!(
            disk_datastores(&orig, None, &[(2, "d".into())]),
            Err(MappingError::NoSuchDisk { index: 2, count: 2 })
        ));
    }
}
