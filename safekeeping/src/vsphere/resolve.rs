//! Step 1 of a backup: from a target on the command line to one virtual machine in vCenter.

use vim_client::{FaultKind, MoRef, ObjectContent};

use crate::error::{Error, Result};
use crate::target::{Target, VmSelector};
use crate::vsphere::Vcenter;

/// The VM a target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVm {
    /// Managed object reference.
    pub moref: MoRef,
    /// Display name.
    pub name: String,
    /// BIOS uuid (`config.uuid`).
    pub bios_uuid: Option<String>,
    /// vCenter instance uuid (`config.instanceUuid`).
    pub instance_uuid: Option<String>,
}

const PROPS: &[&str] = &["name", "config.uuid", "config.instanceUuid"];

fn from_content(o: &ObjectContent) -> ResolvedVm {
    ResolvedVm {
        moref: o.obj.clone(),
        name: o.text("name").unwrap_or_default().to_string(),
        bios_uuid: o.text("config.uuid").map(str::to_ascii_lowercase),
        instance_uuid: o.text("config.instanceUuid").map(str::to_ascii_lowercase),
    }
}

/// Resolves a target to exactly one VM.
///
/// # Errors
/// [`Error::WrongTargetKind`] for `ivd:`, `vapp:` and `tag:` targets, [`Error::VmNotFound`],
/// [`Error::AmbiguousVm`] listing the matches, or vCenter errors.
pub async fn resolve(vc: &Vcenter, target: &Target) -> Result<ResolvedVm> {
    let Target::Vm(selector) = target else {
        return Err(Error::WrongTargetKind {
            target: target.to_string(),
            expected: "a vm: target is needed here",
        });
    };
    match selector {
        VmSelector::Moref(id) => {
            let moref = MoRef::new("VirtualMachine", id.clone());
            match vc.client.object_properties(&moref, PROPS).await {
                Ok(o) => Ok(from_content(&o)),
                Err(e) if e.is_fault(&FaultKind::ManagedObjectNotFound) => {
                    Err(Error::VmNotFound(target.to_string()))
                }
                Err(e) => Err(e.into()),
            }
        }
        VmSelector::InventoryPath(path) => {
            let moref = match vc.client.find_by_inventory_path(path).await {
                Ok(m) => m,
                Err(vim_client::Error::UnknownObject { .. }) => {
                    return Err(Error::VmNotFound(target.to_string()))
                }
                Err(e) => return Err(e.into()),
            };
            if moref.kind != "VirtualMachine" {
                return Err(Error::VmNotFound(format!(
                    "{target} (the path names a {}, not a VM)",
                    moref.kind
                )));
            }
            let o = vc.client.object_properties(&moref, PROPS).await?;
            Ok(from_content(&o))
        }
        VmSelector::Uuid(uuid) => {
            let all = all_vms(vc).await?;
            pick_one(
                target,
                all.into_iter()
                    .filter(|v| {
                        v.bios_uuid.as_deref() == Some(uuid.as_str())
                            || v.instance_uuid.as_deref() == Some(uuid.as_str())
                    })
                    .collect(),
            )
        }
        VmSelector::Name(name) => {
            let all = all_vms(vc).await?;
            pick_one(
                target,
                all.into_iter().filter(|v| &v.name == name).collect(),
            )
        }
    }
}

/// Every VM in the inventory with its name and uuids.
///
/// # Errors
/// vCenter errors.
pub async fn all_vms(vc: &Vcenter) -> Result<Vec<ResolvedVm>> {
    let root = vc.client.service_content().root_folder.clone();
    let objects = vc
        .client
        .container_objects(&root, "VirtualMachine", PROPS)
        .await?;
    Ok(objects.iter().map(from_content).collect())
}

fn pick_one(target: &Target, mut matches: Vec<ResolvedVm>) -> Result<ResolvedVm> {
    match matches.len() {
        0 => Err(Error::VmNotFound(target.to_string())),
        1 => Ok(matches.remove(0)),
        _ => Err(Error::AmbiguousVm {
            target: target.to_string(),
            matches: matches
                .iter()
                .map(|m| format!("{} ({})", m.moref.value, m.name))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str) -> ResolvedVm {
        ResolvedVm {
            moref: MoRef::new("VirtualMachine", id),
            name: "web".into(),
            bios_uuid: None,
            instance_uuid: None,
        }
    }

    #[test]
    fn ambiguity_lists_every_match() {
        let t: Target = "vm:web".parse().unwrap();
        let err = pick_one(&t, vec![vm("vm-1"), vm("vm-2")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("vm-1 (web)") && text.contains("vm-2 (web)"),
            "{text}"
        );
        assert!(matches!(pick_one(&t, vec![]), Err(Error::VmNotFound(_))));
        assert_eq!(pick_one(&t, vec![vm("vm-3")]).unwrap().moref.value, "vm-3");
    }
}
