//! Storage policies of a restored VM, decided before anything is created: `--profile` for the
//! VM home and every disk, `--disk-profile N=POLICY` for one disk, otherwise the policy the
//! generation recorded, looked up by name in the vCenter restored into. A policy named on the
//! command line that does not exist is an error listing the ones that do; a recorded one that
//! does not exist there is a warning (the datastore's default policy applies, as it did before
//! policies were recorded).

use std::collections::BTreeMap;

use vim_client::StoragePolicy;

use crate::error::{Error, Result};
use crate::stored::vm::{SavedPolicies, SavedPolicy};
use crate::vsphere::Vcenter;

/// The policies to apply, by original device key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyPlan {
    /// The VM home's policy.
    pub home: Option<StoragePolicy>,
    /// `(original device key, policy)` per disk that gets one.
    pub disks: Vec<(i32, StoragePolicy)>,
}

/// The policies a restore applied, for `--json` (`storage_policies`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedPolicies {
    /// The VM home's policy name.
    pub home: Option<String>,
    /// `(original device key, policy name)` per disk.
    pub disks: Vec<AppliedDiskPolicy>,
}

/// One disk's applied policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedDiskPolicy {
    /// The disk's device key in the backed-up VM.
    pub key: i32,
    /// The policy's name.
    pub policy: String,
}

impl PolicyPlan {
    /// Whether nothing is to be applied.
    pub fn is_empty(&self) -> bool {
        self.home.is_none() && self.disks.is_empty()
    }

    /// What `--json` reports; `None` when nothing is applied.
    pub fn applied(&self) -> Option<AppliedPolicies> {
        (!self.is_empty()).then(|| AppliedPolicies {
            home: self.home.as_ref().map(|p| p.name.clone()),
            disks: self
                .disks
                .iter()
                .map(|(key, p)| AppliedDiskPolicy {
                    key: *key,
                    policy: p.name.clone(),
                })
                .collect(),
        })
    }

    /// The disk policies as `(key in the spec, profile id)`, through the spec's key map.
    pub fn disk_ids(&self, key_map: &std::collections::HashMap<i32, i32>) -> Vec<(i32, String)> {
        self.disks
            .iter()
            .filter_map(|(k, p)| Some((*key_map.get(k)?, p.id.clone())))
            .collect()
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// `--profile`.
    pub all: Option<&'a str>,
    /// `--disk-profile N=POLICY`.
    pub per_disk: &'a [(u32, String)],
}

/// Decides the policies of a restored VM. `disk_keys` are the original keys of the disks the
/// new VM gets, the generation's disks first (numbered as `--disk-profile` counts them), then
/// disks recreated empty.
///
/// # Errors
/// A `--disk-profile` number the generation does not have, a policy named on the command line
/// that this vCenter lacks (the error lists its policies), PBM errors when the command line
/// names a policy.
pub async fn plan_policies(
    vc: &Vcenter,
    saved: Option<&SavedPolicies>,
    backed_up_disks: usize,
    disk_keys: &[i32],
    request: PolicyRequest<'_>,
) -> Result<PolicyPlan> {
    if let Some((n, _)) = request
        .per_disk
        .iter()
        .find(|(n, _)| *n as usize >= backed_up_disks)
    {
        return Err(Error::Other(format!(
            "--disk-profile {n}=…: the generation has {backed_up_disks} disk(s), numbered from 0"
        )));
    }
    let asked = request.all.is_some() || !request.per_disk.is_empty();
    let recorded = saved.is_some_and(|s| s.home.is_some() || !s.disks.is_empty());
    if !asked && !recorded {
        return Ok(PolicyPlan::default());
    }
    let available = match read_policies(vc).await {
        Ok(a) => a,
        Err(e) if !asked => {
            tracing::warn!("cannot read this vCenter's storage policies ({e}); the recorded policies are not applied, the datastores' defaults are");
            return Ok(PolicyPlan::default());
        }
        Err(e) => {
            return Err(Error::Other(format!(
                "cannot read this vCenter's storage policies: {e}"
            )))
        }
    };
    choose(&available, saved, backed_up_disks, disk_keys, request)
}

async fn read_policies(vc: &Vcenter) -> Result<Vec<StoragePolicy>> {
    Ok(vc.client.pbm().await?.storage_policies().await?)
}

/// The decision itself, from the policies the vCenter has.
///
/// # Errors
/// As [`plan_policies`].
pub fn choose(
    available: &[StoragePolicy],
    saved: Option<&SavedPolicies>,
    backed_up_disks: usize,
    disk_keys: &[i32],
    request: PolicyRequest<'_>,
) -> Result<PolicyPlan> {
    let named = |name: &str| -> Result<StoragePolicy> {
        available
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = available.iter().map(|p| p.name.as_str()).collect();
                Error::Other(format!(
                    "storage policy `{name}` does not exist in this vCenter; its storage policies are: {}",
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })
    };
    // A recorded policy is looked up by name: ids differ between vCenters.
    let recorded = |what: &str, p: &SavedPolicy| -> Option<StoragePolicy> {
        let found = available.iter().find(|a| a.name == p.name).cloned();
        if found.is_none() {
            tracing::warn!(
                "the storage policy `{}` of {what} at backup time does not exist in this vCenter; the datastore's default applies",
                p.name
            );
        }
        found
    };
    let all = request.all.map(named).transpose()?;
    let home = match &all {
        Some(p) => Some(p.clone()),
        None => saved
            .and_then(|s| s.home.as_ref())
            .and_then(|p| recorded("the VM home", p)),
    };
    let per_disk: BTreeMap<u32, StoragePolicy> = request
        .per_disk
        .iter()
        .map(|(n, name)| Ok((*n, named(name)?)))
        .collect::<Result<_>>()?;
    let mut disks = Vec::new();
    for (i, key) in disk_keys.iter().enumerate() {
        let explicit = (i < backed_up_disks)
            .then(|| per_disk.get(&(i as u32)).cloned())
            .flatten();
        let chosen = explicit.or_else(|| all.clone()).or_else(|| {
            saved
                .and_then(|s| s.disks.iter().find(|d| d.key == *key))
                .and_then(|d| recorded(&format!("disk {i}"), &d.policy))
        });
        if let Some(p) = chosen {
            disks.push((*key, p));
        }
    }
    Ok(PolicyPlan { home, disks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::vm::SavedDiskPolicy;

    fn policy(id: &str, name: &str) -> StoragePolicy {
        StoragePolicy {
            id: id.into(),
            name: name.into(),
        }
    }

    fn saved(name: &str, id: &str) -> SavedPolicy {
        SavedPolicy {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn recorded_by_name_overridden_per_disk_unknown_named() {
        let available = [policy("g1", "Gold"), policy("s1", "Silver")];
        let rec = SavedPolicies {
            home: Some(saved("Gold", "old-g")),
            disks: vec![
                SavedDiskPolicy {
                    key: 2000,
                    policy: saved("Gold", "old-g"),
                },
                SavedDiskPolicy {
                    key: 2001,
                    policy: saved("Bronze", "old-b"),
                },
            ],
        };
        let none = PolicyRequest {
            all: None,
            per_disk: &[],
        };
        let p = choose(&available, Some(&rec), 2, &[2000, 2001], none).unwrap();
        assert_eq!(p.home, Some(policy("g1", "Gold")));
        // Bronze does not exist here: left to the datastore's default.
        assert_eq!(p.disks, vec![(2000, policy("g1", "Gold"))]);

        let per_disk = [(1, "Silver".to_string())];
        let p = choose(
            &available,
            Some(&rec),
            2,
            &[2000, 2001],
            PolicyRequest {
                all: None,
                per_disk: &per_disk,
            },
        )
        .unwrap();
        assert_eq!(
            p.disks,
            vec![(2000, policy("g1", "Gold")), (2001, policy("s1", "Silver"))]
        );

        let p = choose(
            &available,
            None,
            2,
            &[2000, 2001, 2002],
            PolicyRequest {
                all: Some("Silver"),
                per_disk: &[],
            },
        )
        .unwrap();
        assert_eq!(p.home, Some(policy("s1", "Silver")));
        assert_eq!(p.disks.len(), 3);

        let e = choose(
            &available,
            None,
            2,
            &[2000],
            PolicyRequest {
                all: Some("Platinum"),
                per_disk: &[],
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`Platinum`") && e.contains("Gold, Silver"),
            "{e}"
        );
    }
}
