//! What a restore needs to place a VM: datastore capacities and NIC backings for networks.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// A datastore's name, type and space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastoreSummary {
    /// The datastore.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
    /// `VMFS`, `NFS`, `vsan`, ...
    pub kind: String,
    /// Its URL (`ds:///vmfs/volumes/...`).
    pub url: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Free space in bytes.
    pub free_space: u64,
    /// Whether it is accessible.
    pub accessible: bool,
}

impl Client {
    /// Every datastore with its space, sorted by name.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn datastore_summaries(&self) -> Result<Vec<DatastoreSummary>> {
        let root = self.service_content().root_folder.clone();
        let objects = self
            .container_objects(&root, "Datastore", &["summary"])
            .await?;
        let mut out: Vec<_> = objects
            .into_iter()
            .filter_map(|o| {
                let s = o.get("summary")?;
                Some(DatastoreSummary {
                    name: s.text_at("name").unwrap_or_default().to_owned(),
                    kind: s.text_at("type").unwrap_or_default().to_owned(),
                    url: s.text_at("url").unwrap_or_default().to_owned(),
                    capacity: s.parse_at("capacity").unwrap_or(0),
                    free_space: s.parse_at("freeSpace").unwrap_or(0),
                    accessible: s.bool_at("accessible").unwrap_or(false),
                    moref: o.obj,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The NIC `backing` element that connects a NIC to `network`: a standard port group,
    /// a distributed port group (switch uuid and port group key) or an opaque network. Use it
    /// in [`crate::RestoreOptions::nic_backings`] or in a `deviceChange` edit.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound`, or [`Error::InvalidInput`] for an object that is not a network.
    pub async fn nic_backing_for_network(&self, network: &MoRef) -> Result<Element> {
        match network.kind.as_str() {
            "Network" => {
                let name = self.name_of(network).await?;
                Ok(Element::vim("backing")
                    .typed("VirtualEthernetCardNetworkBackingInfo")
                    .text_child("deviceName", name)
                    .child(network.to_element("network")))
            }
            "DistributedVirtualPortgroup" => {
                let p = self
                    .object_properties(network, &["key", "config.distributedVirtualSwitch"])
                    .await?;
                let key = p
                    .text("key")
                    .ok_or_else(|| Error::Unexpected(format!("{network} has no key")))?
                    .to_owned();
                let switch = p.moref("config.distributedVirtualSwitch").ok_or_else(|| {
                    Error::Unexpected(format!("{network} has no distributed switch"))
                })?;
                let s = self.object_properties(&switch, &["uuid"]).await?;
                let uuid = s
                    .text("uuid")
                    .ok_or_else(|| Error::Unexpected(format!("{switch} has no uuid")))?
                    .to_owned();
                Ok(Element::vim("backing")
                    .typed("VirtualEthernetCardDistributedVirtualPortBackingInfo")
                    .child(
                        Element::vim("port")
                            .text_child("switchUuid", uuid)
                            .text_child("portgroupKey", key),
                    ))
            }
            "OpaqueNetwork" => {
                let p = self
                    .object_properties(
                        network,
                        &["summary.opaqueNetworkId", "summary.opaqueNetworkType"],
                    )
                    .await?;
                Ok(Element::vim("backing")
                    .typed("VirtualEthernetCardOpaqueNetworkBackingInfo")
                    .text_child(
                        "opaqueNetworkId",
                        p.text("summary.opaqueNetworkId").unwrap_or_default(),
                    )
                    .text_child(
                        "opaqueNetworkType",
                        p.text("summary.opaqueNetworkType").unwrap_or_default(),
                    ))
            }
            other => Err(Error::InvalidInput(format!(
                "{network} is a {other}, not a network"
            ))),
        }
    }
}
