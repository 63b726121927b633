//! Which targets a backup run covers: the targets as given, `tag:[CATEGORY/]NAME` expanded to
//! every VM and first class disk carrying the tag, the inventory selections (`folder:`,
//! `cluster:`, `host:`, `rp:`, `datastore:`, [`crate::vsphere::place`]) expanded to their VMs
//! (templates left out), `--all vm|ivd|vapp`, minus `--exclude`
//! targets, minus the VM safekeeping itself runs in (recognised by its BIOS uuid, when the
//! machine's `/sys/class/dmi/id/product_uuid` is readable). Expanded VMs are named by moref
//! and first class disks by id, so one object selected twice is backed up once.

use std::collections::HashSet;

use clap::ValueEnum;
use serde::Serialize;
use vim_client::InventoryKind;

use crate::error::{Error, Result};
use crate::target::{InventorySelector, Target, VmSelector};
use crate::vsphere::resolve::{all_vms, resolve};
use crate::vsphere::Vcenter;

/// A kind of target `--all` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKindArg {
    /// Every virtual machine (templates excluded).
    Vm,
    /// Every first class disk on every datastore.
    Ivd,
    /// Every vApp.
    Vapp,
}

/// A target left out of the run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The target.
    pub target: String,
    /// Why it was left out.
    pub reason: String,
}

/// The targets of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// In the order given, duplicates removed.
    pub targets: Vec<Target>,
    /// Left out.
    pub skipped: Vec<Skipped>,
}

/// The file the machine's BIOS uuid is read from: `SAFEKEEPING_PRODUCT_UUID_FILE` when set,
/// else `configured` (`[defaults] product_uuid_file`), else `/sys/class/dmi/id/product_uuid`.
pub fn product_uuid_file(configured: Option<&std::path::Path>) -> std::path::PathBuf {
    std::env::var_os("SAFEKEEPING_PRODUCT_UUID_FILE")
        .map(Into::into)
        .or_else(|| configured.map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| "/sys/class/dmi/id/product_uuid".into())
}

/// The BIOS uuid of the machine safekeeping runs on, lower-case, if readable.
pub fn own_bios_uuid(configured: Option<&std::path::Path>) -> Option<String> {
    let text = std::fs::read_to_string(product_uuid_file(configured)).ok()?;
    let u = text.trim().to_ascii_lowercase();
    crate::target::is_uuid(&u).then_some(u)
}

/// Whether BIOS uuid `vm` (as vCenter reports it) is the machine's `own` (as SMBIOS reports
/// it). SMBIOS 2.6 and later store the first three groups little-endian, so VMware guests may
/// show them byte-swapped; both forms match.
pub fn same_machine(vm: &str, own: &str) -> bool {
    let vm = vm.to_ascii_lowercase();
    vm == own || swap_first_groups(&vm).as_deref() == Some(own)
}

fn swap_first_groups(u: &str) -> Option<String> {
    let g: Vec<&str> = u.split('-').collect();
    if g.len() != 5 {
        return None;
    }
    let swap = |s: &str| -> Option<String> {
        let bytes: Vec<&str> = (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2))
            .collect::<Option<_>>()?;
        Some(bytes.into_iter().rev().collect())
    };
    Some(format!(
        "{}-{}-{}-{}-{}",
        swap(g[0])?,
        swap(g[1])?,
        swap(g[2])?,
        g[3],
        g[4]
    ))
}

/// Splits `tag:` text into (category, tag): `CATEGORY/NAME` or just `NAME`.
pub fn split_tag(text: &str) -> (Option<&str>, &str) {
    match text.split_once('/') {
        Some((c, t)) if !c.is_empty() && !t.is_empty() => (Some(c), t),
        _ => (None, text),
    }
}

/// Expands tags and `--all`, removes exclusions, duplicates and the VM we run in (its BIOS
/// uuid read as [`own_bios_uuid`] says, `own_uuid_file` being the configured file).
///
/// # Errors
/// An unknown tag or an `--exclude` target that names nothing (a typo there must not back up
/// what the user meant to leave out), vCenter errors.
pub async fn select(
    vc: &Vcenter,
    given: &[Target],
    all: &[TargetKindArg],
    exclude: &[Target],
    own_uuid_file: Option<&std::path::Path>,
) -> Result<Selection> {
    let mut expanded: Vec<Target> = Vec::new();
    for t in given {
        match t {
            Target::Tag(text) => expanded.extend(expand_tag(vc, text).await?),
            Target::Inventory(place) => {
                let vms = expand_place(vc, place).await?;
                if vms.is_empty() {
                    tracing::warn!(target = %t, "the selection holds no VM now");
                }
                expanded.extend(vms);
            }
            other => expanded.push(other.clone()),
        }
    }
    for kind in all {
        match kind {
            TargetKindArg::Vm => {
                for vm in vc.client.list_vms().await? {
                    if !vm.template {
                        expanded.push(Target::Vm(VmSelector::Moref(vm.moref.value)));
                    }
                }
            }
            TargetKindArg::Ivd => {
                for ds in vc.client.list_named(InventoryKind::Datastore).await? {
                    for id in vc.client.fcd_list(&ds.moref).await? {
                        expanded.push(Target::Ivd(id));
                    }
                }
            }
            TargetKindArg::Vapp => {
                for v in vc.client.list_named(InventoryKind::VirtualApp).await? {
                    expanded.push(Target::Vapp(v.name));
                }
            }
        }
    }

    // Exclusions and the own VM are compared by moref (VMs) and disk id (FCDs).
    let mut excluded_vms = HashSet::new();
    let mut excluded_ivds = HashSet::new();
    let mut excluded_other = HashSet::new();
    for t in exclude {
        match t {
            Target::Vm(_) => {
                excluded_vms.insert(resolve(vc, t).await?.moref.value);
            }
            Target::Ivd(s) => {
                excluded_ivds.insert(crate::vsphere::fcd::find(vc, s).await?.object.id);
            }
            Target::Tag(text) => {
                for x in expand_tag(vc, text).await? {
                    match x {
                        Target::Vm(VmSelector::Moref(m)) => excluded_vms.insert(m),
                        Target::Ivd(id) => excluded_ivds.insert(id),
                        other => excluded_other.insert(other.to_string()),
                    };
                }
            }
            Target::Inventory(place) => {
                for x in expand_place(vc, place).await? {
                    if let Target::Vm(VmSelector::Moref(m)) = x {
                        excluded_vms.insert(m);
                    }
                }
            }
            Target::Vapp(_) => {
                excluded_other.insert(t.to_string());
            }
        }
    }
    let own = own_bios_uuid(own_uuid_file);
    let vms = if expanded.iter().any(|t| matches!(t, Target::Vm(_))) {
        all_vms(vc).await?
    } else {
        Vec::new()
    };
    let mut selection = Selection::default();
    let mut seen = HashSet::new();
    for t in expanded {
        // A VM given by name stays as given (its own errors are its result); find its moref
        // where it is unambiguous, for exclusions and duplicates.
        let (key, bios) = match &t {
            Target::Vm(sel) => {
                let hits: Vec<_> = vms
                    .iter()
                    .filter(|v| match sel {
                        VmSelector::Moref(m) => &v.moref.value == m,
                        VmSelector::Name(n) => &v.name == n,
                        VmSelector::Uuid(u) => {
                            v.bios_uuid.as_deref() == Some(u.as_str())
                                || v.instance_uuid.as_deref() == Some(u.as_str())
                        }
                        VmSelector::InventoryPath(_) => false,
                    })
                    .collect();
                match hits.as_slice() {
                    [one] => (format!("vm:{}", one.moref.value), one.bios_uuid.clone()),
                    _ => (t.to_string(), None),
                }
            }
            Target::Ivd(id) => (format!("ivd:{}", id.to_ascii_lowercase()), None),
            other => (other.to_string(), None),
        };
        let excluded = match &t {
            Target::Vm(_) => key
                .strip_prefix("vm:")
                .is_some_and(|m| excluded_vms.contains(m)),
            Target::Ivd(_) => key
                .strip_prefix("ivd:")
                .is_some_and(|id| excluded_ivds.iter().any(|x| x.eq_ignore_ascii_case(id))),
            other => excluded_other.contains(&other.to_string()),
        };
        if excluded {
            selection.skipped.push(Skipped {
                target: t.to_string(),
                reason: "excluded".into(),
            });
            continue;
        }
        if let (Some(b), Some(o)) = (&bios, &own) {
            if same_machine(b, o) {
                tracing::warn!(target = %t, "not backing up the VM safekeeping runs in");
                selection.skipped.push(Skipped {
                    target: t.to_string(),
                    reason: format!("the VM safekeeping runs in (BIOS uuid {o})"),
                });
                continue;
            }
        }
        if seen.insert(key) {
            selection.targets.push(t);
        }
    }
    Ok(selection)
}

/// The VMs in an inventory place, templates left out (as `--all vm` leaves them out).
async fn expand_place(vc: &Vcenter, place: &InventorySelector) -> Result<Vec<Target>> {
    let vms = crate::vsphere::place::vms_in(vc, place).await?;
    let templates: HashSet<String> = vc
        .client
        .list_vms()
        .await?
        .into_iter()
        .filter(|v| v.template)
        .map(|v| v.moref.value)
        .collect();
    Ok(vms
        .into_iter()
        .filter(|m| !templates.contains(&m.value))
        .map(|m| Target::Vm(VmSelector::Moref(m.value)))
        .collect())
}

/// The morefs of the VMs carrying tag `text` (`[CATEGORY/]NAME`).
///
/// # Errors
/// An unknown tag, vCenter errors.
pub async fn tagged_vms(vc: &Vcenter, text: &str) -> Result<HashSet<String>> {
    Ok(expand_tag(vc, text)
        .await?
        .into_iter()
        .filter_map(|t| match t {
            Target::Vm(VmSelector::Moref(m)) => Some(m),
            _ => None,
        })
        .collect())
}

/// The VMs (by moref) and first class disks (by id) carrying a tag; vApps by name.
async fn expand_tag(vc: &Vcenter, text: &str) -> Result<Vec<Target>> {
    let (category, name) = split_tag(text);
    let tagging = vc.client.tagging().await?;
    let found = tagging.find_tag(category, name).await;
    let tag = match found {
        Ok(t) => t,
        Err(e) => {
            let _ = tagging.logout().await;
            return Err(Error::Other(format!("tag:{text}: {e}")));
        }
    };
    let objects = tagging.attached_objects(&tag.id).await;
    let _ = tagging.logout().await;
    let mut out = Vec::new();
    let mut fcds = HashSet::new();
    for o in objects? {
        if let Some(id) = o.first_class_disk_id() {
            if fcds.insert(id.to_string()) {
                out.push(Target::Ivd(id.to_string()));
            }
        } else if o.kind == "VirtualMachine" {
            out.push(Target::Vm(VmSelector::Moref(o.id.clone())));
        } else if let Some(m) = o.moref().filter(|_| o.kind == "VirtualApp") {
            out.push(Target::Vapp(vc.client.name_of(&m).await?));
        } else {
            tracing::info!(tag = %text, "skipping tagged {} {} (not a backup target)", o.kind, o.id);
        }
    }
    // vCenter keeps first class disk tags apart from vAPI associations.
    if let Ok(cat) = tagging_category_name(vc, &tag.category_id).await {
        for id in vc.client.fcd_attached_to_tag(&cat, &tag.name).await? {
            if fcds.insert(id.clone()) {
                out.push(Target::Ivd(id));
            }
        }
    }
    tracing::info!(tag = %text, "tag selects {} target(s)", out.len());
    Ok(out)
}

async fn tagging_category_name(vc: &Vcenter, id: &str) -> Result<String> {
    let tagging = vc.client.tagging().await?;
    let c = tagging.category(id).await;
    let _ = tagging.logout().await;
    Ok(c?.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_uuids_match_in_either_byte_order() {
        let vc = "4215a0e0-1122-3344-5566-77889900aabb";
        assert!(same_machine(vc, vc));
        assert!(same_machine(
            "4215A0E0-1122-3344-5566-77889900AABB",
            "e0a01542-2211-4433-5566-77889900aabb"
        ));
        assert!(!same_machine(vc, "4215a0e0-1122-3344-5566-77889900aabc"));
        assert!(!same_machine("garbage", vc));
    }

    #[test]
    fn tag_text_splits_into_category_and_name() {
        assert_eq!(split_tag("gold"), (None, "gold"));
        assert_eq!(split_tag("backup/gold"), (Some("backup"), "gold"));
        assert_eq!(split_tag("/gold"), (None, "/gold"));
    }
}
