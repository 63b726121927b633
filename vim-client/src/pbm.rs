//! Storage policies through the SPBM endpoint (`/pbm/sdk`, namespace `urn:pbm`).
//!
//! PBM shares the VIM session: the `vmware_soap_session` cookie travels both as the HTTP cookie
//! and as the `vcSessionCookie` SOAP header (as for VSLM). A VM's home (its configuration
//! files) and each of its disks have their own policy; PBM names them by server object
//! references: `virtualMachine` with the VM's moref, `virtualDiskId` with `vm-N:DEVICEKEY`.
//! Applying a policy is a VIM call: a `VirtualMachineDefinedProfileSpec` in the VM's config
//! spec (`vmProfile`) and in each disk's device spec (`profile`), see [`profile_spec`].

use crate::client::{Client, Endpoint};
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// A storage policy: PBM's unique id and its display name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoragePolicy {
    /// The profile's unique id (`aa6d5a82-1c88-45da-85d3-3d74b91a5bad`).
    pub id: String,
    /// Its name (`vSAN Default Storage Policy`).
    pub name: String,
}

/// The policies associated with one VM: its home and its disks by device key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmPolicyIds {
    /// Profile ids of the VM home (normally one).
    pub home: Vec<String>,
    /// `(device key, profile ids)` per disk asked about.
    pub disks: Vec<(i32, Vec<String>)>,
}

/// A handle on the PBM service of a logged-in [`Client`].
#[derive(Debug, Clone)]
pub struct Pbm {
    client: Client,
    profile_manager: MoRef,
}

impl Client {
    /// Connects to the PBM endpoint with this client's session (`PbmRetrieveServiceContent`).
    ///
    /// # Errors
    ///
    /// Faults and transport errors (HTTP 404 on servers without SPBM, such as ESXi).
    pub async fn pbm(&self) -> Result<Pbm> {
        let body = Element::vim("PbmRetrieveServiceContent")
            .child(MoRef::new("PbmServiceInstance", "ServiceInstance").to_element("_this"));
        let response = self.call_at(Endpoint::Pbm, body).await?;
        let profile_manager = response
            .path("returnval/profileManager")
            .ok_or_else(|| Error::Unexpected("PBM service content has no profileManager".into()))
            .and_then(MoRef::from_element)?;
        Ok(Pbm {
            client: self.clone(),
            profile_manager,
        })
    }
}

impl Pbm {
    /// Every storage (requirement) policy the server knows, sorted by name.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn storage_policies(&self) -> Result<Vec<StoragePolicy>> {
        let body = Element::vim("PbmQueryProfile")
            .child(self.profile_manager.to_element("_this"))
            .child(Element::vim("resourceType").text_child("resourceType", "STORAGE"))
            .text_child("profileCategory", "REQUIREMENT");
        let response = self.client.call_at(Endpoint::Pbm, body).await?;
        let ids: Vec<String> = response
            .all("returnval")
            .filter_map(|e| e.text_at("uniqueId"))
            .map(str::to_owned)
            .collect();
        let mut out = self.policies(&ids).await?;
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The names of the policies with these ids (`PbmRetrieveContent`).
    ///
    /// # Errors
    ///
    /// Faults (an unknown id is `InvalidArgument`) and transport errors.
    pub async fn policies(&self, ids: &[String]) -> Result<Vec<StoragePolicy>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut body =
            Element::vim("PbmRetrieveContent").child(self.profile_manager.to_element("_this"));
        for id in ids {
            body.push(Element::vim("profileIds").text_child("uniqueId", id.clone()));
        }
        let response = self.client.call_at(Endpoint::Pbm, body).await?;
        Ok(response
            .all("returnval")
            .filter_map(|p| {
                Some(StoragePolicy {
                    id: p.text_at("profileId/uniqueId")?.to_owned(),
                    name: p.text_at("name").unwrap_or_default().to_owned(),
                })
            })
            .collect())
    }

    /// The policies associated with `vm`'s home and with its disks `disk_keys`
    /// (`PbmQueryAssociatedProfiles`, one call for all).
    ///
    /// # Errors
    ///
    /// Faults and transport errors; a per-object fault in the answer is
    /// [`Error::Unexpected`] naming the object.
    pub async fn vm_policies(&self, vm: &MoRef, disk_keys: &[i32]) -> Result<VmPolicyIds> {
        let uuid = self.client.service_content().about.instance_uuid.clone();
        let object = |kind: &str, key: String| {
            let mut e = Element::vim("entities")
                .text_child("objectType", kind)
                .text_child("key", key);
            if !uuid.is_empty() {
                e = e.text_child("serverUuid", uuid.clone());
            }
            e
        };
        let mut body = Element::vim("PbmQueryAssociatedProfiles")
            .child(self.profile_manager.to_element("_this"))
            .child(object("virtualMachine", vm.value.clone()));
        for key in disk_keys {
            body.push(object("virtualDiskId", format!("{}:{key}", vm.value)));
        }
        let response = self.client.call_at(Endpoint::Pbm, body).await?;
        let mut out = VmPolicyIds::default();
        for result in response.all("returnval") {
            let kind = result.text_at("object/objectType").unwrap_or_default();
            let key = result.text_at("object/key").unwrap_or_default();
            if let Some(fault) = result.get("fault") {
                let text = fault
                    .text_at("localizedMessage")
                    .or_else(|| fault.type_name())
                    .unwrap_or("fault");
                return Err(Error::Unexpected(format!(
                    "PBM could not say the policy of {kind} {key}: {text}"
                )));
            }
            let ids: Vec<String> = result
                .all("profileId")
                .filter_map(|p| p.text_at("uniqueId"))
                .map(str::to_owned)
                .collect();
            match kind {
                "virtualMachine" => out.home = ids,
                "virtualDiskId" => {
                    let device = key
                        .rsplit_once(':')
                        .and_then(|(_, k)| k.parse::<i32>().ok())
                        .ok_or_else(|| {
                            Error::Unexpected(format!("PBM answered for a disk named `{key}`"))
                        })?;
                    out.disks.push((device, ids));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A `VirtualMachineDefinedProfileSpec` naming the policy `profile_id`, as the element `local`
/// (`vmProfile` in a `VirtualMachineConfigSpec`, `profile` in a `VirtualDeviceConfigSpec`).
pub fn profile_spec(local: &str, profile_id: &str) -> Element {
    Element::vim(local)
        .typed("VirtualMachineDefinedProfileSpec")
        .text_child("profileId", profile_id)
}

/// `VirtualMachineConfigSpec` fields that come after `vmProfile` in the schema: the profile is
/// inserted before the first of them, so the spec keeps schema order.
const AFTER_VM_PROFILE: &[&str] = &[
    "messageBusTunnelEnabled",
    "crypto",
    "migrateEncryption",
    "sgxInfo",
    "ftEncryptionMode",
    "guestMonitoringModeInfo",
    "sevEnabled",
    "virtualNuma",
    "motherboardLayout",
    "pmemFailoverEnabled",
    "vmxStatsCollectionEnabled",
    "vmOpNotificationToAppEnabled",
    "vmOpNotificationTimeout",
    "deviceSwap",
    "simultaneousThreads",
    "pmem",
    "deviceGroups",
    "fixedPassthruHotPlugEnabled",
];

/// Puts storage policies into a `VirtualMachineConfigSpec`: `home` as its `vmProfile`, and for
/// each `(device key in the spec, profile id)` of `disks` a `profile` in the `deviceChange`
/// whose device has that key (right after `device`, as the schema orders it).
///
/// # Errors
///
/// [`Error::InvalidInput`] when a disk key has no `deviceChange` in the spec.
pub fn apply_profiles(
    spec: &mut Element,
    home: Option<&str>,
    disks: &[(i32, String)],
) -> Result<()> {
    if let Some(id) = home {
        spec.remove_all("vmProfile");
        let at = spec
            .children
            .iter()
            .position(|c| AFTER_VM_PROFILE.contains(&c.local()))
            .unwrap_or(spec.children.len());
        spec.children.insert(at, profile_spec("vmProfile", id));
    }
    for (key, id) in disks {
        let change = spec
            .children
            .iter_mut()
            .filter(|c| c.local() == "deviceChange")
            .find(|c| c.parse_at::<i32>("device/key") == Some(*key))
            .ok_or_else(|| Error::InvalidInput(format!("the spec has no device with key {key}")))?;
        change.remove_all("profile");
        let at = change
            .children
            .iter()
            .position(|c| c.local() == "device")
            .map_or(change.children.len(), |i| i + 1);
        change.children.insert(at, profile_spec("profile", id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_go_where_the_schema_wants_them() {
        let mut spec = Element::vim("config")
            .child(Element::vim_text("name", "x"))
            .child(
                Element::vim("deviceChange")
                    .text_child("operation", "add")
                    .text_child("fileOperation", "create")
                    .child(Element::vim("device").text_child("key", "-101"))
                    .child(Element::vim("backing")),
            )
            .child(Element::vim_text("messageBusTunnelEnabled", "false"));
        apply_profiles(&mut spec, Some("home-id"), &[(-101, "disk-id".into())]).unwrap();
        let names: Vec<&str> = spec.children.iter().map(Element::local).collect();
        assert_eq!(
            names,
            [
                "name",
                "deviceChange",
                "vmProfile",
                "messageBusTunnelEnabled"
            ]
        );
        let change = spec.get("deviceChange").unwrap();
        let names: Vec<&str> = change.children.iter().map(Element::local).collect();
        assert_eq!(
            names,
            ["operation", "fileOperation", "device", "profile", "backing"]
        );
        assert_eq!(change.text_at("profile/profileId"), Some("disk-id"));
        assert!(apply_profiles(&mut spec, None, &[(-7, "x".into())]).is_err());
    }

    #[test]
    fn profile_spec_is_a_defined_profile() {
        let e = profile_spec("profile", "abc");
        assert_eq!(e.type_name(), Some("VirtualMachineDefinedProfileSpec"));
        assert_eq!(e.text_at("profileId"), Some("abc"));
        assert_eq!(e.local(), "profile");
    }
}
