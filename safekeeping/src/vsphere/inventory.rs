//! What a datacenter offers to place a VM on (folders, pools, hosts, datastores, networks),
//! read once per restore so every mapping can be checked before anything is created; and the
//! names of where a VM lives now, recorded at backup.

use vim_client::MoRef;

use crate::error::{Error, Result};
use crate::mapping::{pick, Candidate, MappingError, PlacementKind};
use crate::stored::vm::Placement;
use crate::vsphere::Vcenter;

/// A datacenter and its root folders.
#[derive(Debug, Clone)]
pub struct Datacenter {
    /// Reference.
    pub moref: MoRef,
    /// Name.
    pub name: String,
    /// Root VM folder.
    pub vm_folder: MoRef,
}

/// How a NIC is attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind {
    /// A standard portgroup (`Network`).
    Standard,
    /// A distributed portgroup.
    Distributed {
        /// The switch's uuid.
        switch_uuid: String,
        /// The portgroup key.
        portgroup_key: String,
    },
}

/// A network a NIC can be attached to.
#[derive(Debug, Clone)]
pub struct NetworkTarget {
    /// Name and reference.
    pub candidate: Candidate,
    /// Standard or distributed.
    pub kind: NetworkKind,
}

/// Everything a restore can place things on in one datacenter.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The datacenter.
    pub datacenter: Datacenter,
    /// VM folders, named by path below the datacenter (`vm`, `vm/prod`).
    pub folders: Vec<Candidate>,
    /// Resource pools.
    pub pools: Vec<Candidate>,
    /// Hosts.
    pub hosts: Vec<Candidate>,
    /// Datastores.
    pub datastores: Vec<Candidate>,
    /// Networks.
    pub networks: Vec<NetworkTarget>,
}

fn candidates(objects: &[vim_client::ObjectContent]) -> Vec<Candidate> {
    objects
        .iter()
        .map(|o| Candidate {
            name: o.text("name").unwrap_or_default().to_string(),
            moref: o.obj.value.clone(),
        })
        .collect()
}

/// Every datacenter.
///
/// # Errors
/// vCenter errors.
pub async fn datacenters(vc: &Vcenter) -> Result<Vec<Datacenter>> {
    let root = vc.client.service_content().root_folder.clone();
    let objects = vc
        .client
        .container_objects(&root, "Datacenter", &["name", "vmFolder"])
        .await?;
    objects
        .iter()
        .map(|o| {
            Ok(Datacenter {
                moref: o.obj.clone(),
                name: o.text("name").unwrap_or_default().to_string(),
                vm_folder: o.moref("vmFolder").ok_or_else(|| {
                    Error::Other(format!("datacenter {} has no vmFolder", o.obj.value))
                })?,
            })
        })
        .collect()
}

impl Inventory {
    /// Reads the inventory of datacenter `name`.
    ///
    /// # Errors
    /// [`MappingError::Unknown`] for an unknown datacenter, vCenter errors.
    pub async fn load(vc: &Vcenter, name: &str) -> Result<Inventory> {
        let dcs = datacenters(vc).await?;
        let dc_candidates: Vec<Candidate> = dcs
            .iter()
            .map(|d| Candidate {
                name: d.name.clone(),
                moref: d.moref.value.clone(),
            })
            .collect();
        let chosen = pick(PlacementKind::Datacenter, name, &dc_candidates)?
            .moref
            .clone();
        let datacenter = dcs
            .into_iter()
            .find(|d| d.moref.value == chosen)
            .ok_or_else(|| Error::Other("datacenter vanished".into()))?;
        let c = &vc.client;
        let dcref = &datacenter.moref;
        let folder_objs = c
            .container_objects(dcref, "Folder", &["name", "parent", "childType"])
            .await?;
        let folders = folder_paths(&datacenter, &folder_objs);
        let pools = candidates(
            &c.container_objects(dcref, "ResourcePool", &["name"])
                .await?,
        );
        let hosts = candidates(&c.container_objects(dcref, "HostSystem", &["name"]).await?);
        let datastores = candidates(&c.container_objects(dcref, "Datastore", &["name"]).await?);
        let mut networks = Vec::new();
        let dvpgs = c
            .container_objects(
                dcref,
                "DistributedVirtualPortgroup",
                &["name", "key", "config.distributedVirtualSwitch"],
            )
            .await?;
        for o in &dvpgs {
            let switch = o.moref("config.distributedVirtualSwitch");
            let switch_uuid = match switch {
                Some(s) => c
                    .object_properties(&s, &["uuid"])
                    .await?
                    .text("uuid")
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            };
            networks.push(NetworkTarget {
                candidate: Candidate {
                    name: o.text("name").unwrap_or_default().to_string(),
                    moref: o.obj.value.clone(),
                },
                kind: NetworkKind::Distributed {
                    switch_uuid,
                    portgroup_key: o.text("key").unwrap_or(&o.obj.value).to_string(),
                },
            });
        }
        for o in &c.container_objects(dcref, "Network", &["name"]).await? {
            if o.obj.kind == "Network" {
                networks.push(NetworkTarget {
                    candidate: Candidate {
                        name: o.text("name").unwrap_or_default().to_string(),
                        moref: o.obj.value.clone(),
                    },
                    kind: NetworkKind::Standard,
                });
            }
        }
        Ok(Inventory {
            datacenter,
            folders,
            pools,
            hosts,
            datastores,
            networks,
        })
    }

    /// The folder named by `name`: a path below the datacenter (`vm/prod`), the same with the
    /// datacenter in front (`DC0/vm/prod`), a path without `vm/` (`prod`), or a moref.
    ///
    /// # Errors
    /// [`MappingError`] naming the candidates.
    pub fn folder(&self, name: &str) -> Result<MoRef, MappingError> {
        let trimmed = name.trim_matches('/');
        let without_dc = trimmed
            .strip_prefix(&format!("{}/", self.datacenter.name))
            .unwrap_or(trimmed);
        let attempts = [without_dc.to_string(), format!("vm/{without_dc}")];
        for a in &attempts {
            if let Ok(c) = pick(PlacementKind::Folder, a, &self.folders) {
                return Ok(MoRef::new("Folder", c.moref.clone()));
            }
        }
        pick(PlacementKind::Folder, name, &self.folders)
            .map(|c| MoRef::new("Folder", c.moref.clone()))
    }

    /// The resource pool named `name`.
    ///
    /// # Errors
    /// [`MappingError`] naming the candidates.
    pub fn pool(&self, name: &str) -> Result<MoRef, MappingError> {
        pick(PlacementKind::ResourcePool, name, &self.pools)
            .map(|c| MoRef::new("ResourcePool", c.moref.clone()))
    }

    /// The host named `name`.
    ///
    /// # Errors
    /// [`MappingError`] naming the candidates.
    pub fn host(&self, name: &str) -> Result<MoRef, MappingError> {
        pick(PlacementKind::Host, name, &self.hosts)
            .map(|c| MoRef::new("HostSystem", c.moref.clone()))
    }

    /// The datastore named `name`.
    ///
    /// # Errors
    /// [`MappingError`] naming the candidates.
    pub fn datastore(&self, name: &str) -> Result<&Candidate, MappingError> {
        pick(PlacementKind::Datastore, name, &self.datastores)
    }

    /// The network named `name`.
    ///
    /// # Errors
    /// [`MappingError`] naming the candidates.
    pub fn network(&self, name: &str) -> Result<&NetworkTarget, MappingError> {
        let cands: Vec<Candidate> = self.networks.iter().map(|n| n.candidate.clone()).collect();
        let chosen = pick(PlacementKind::Network, name, &cands)?;
        Ok(self
            .networks
            .iter()
            .find(|n| n.candidate.moref == chosen.moref)
            .expect("picked from this list"))
    }
}

/// Paths below the datacenter of its VM folders (`vm`, `vm/prod`, ...).
fn folder_paths(dc: &Datacenter, objs: &[vim_client::ObjectContent]) -> Vec<Candidate> {
    let by_id: std::collections::HashMap<&str, &vim_client::ObjectContent> =
        objs.iter().map(|o| (o.obj.value.as_str(), o)).collect();
    let mut out = Vec::new();
    for o in objs {
        let mut parts = vec![o.text("name").unwrap_or_default().to_string()];
        let mut cur = o.moref("parent");
        let mut under_vm_root = o.obj == dc.vm_folder;
        let mut guard = 0;
        while let Some(p) = cur {
            guard += 1;
            if guard > 64 || p == dc.moref {
                break;
            }
            if p == dc.vm_folder {
                under_vm_root = true;
            }
            match by_id.get(p.value.as_str()) {
                Some(parent) => {
                    parts.push(parent.text("name").unwrap_or_default().to_string());
                    cur = parent.moref("parent");
                }
                None => break,
            }
        }
        if under_vm_root {
            parts.reverse();
            out.push(Candidate {
                name: parts.join("/"),
                moref: o.obj.value.clone(),
            });
        }
    }
    out
}

/// Records where a VM lives now, by name.
///
/// # Errors
/// vCenter errors.
pub async fn placement_of(vc: &Vcenter, vm: &MoRef) -> Result<Placement> {
    let c = &vc.client;
    let o = c
        .object_properties(
            vm,
            &[
                "parent",
                "resourcePool",
                "runtime.host",
                "datastore",
                "network",
            ],
        )
        .await?;
    let name_of = |m: MoRef| async move {
        c.object_properties(&m, &["name", "parent"]).await.map(|o| {
            (
                o.text("name").unwrap_or_default().to_string(),
                o.moref("parent"),
                o.obj.kind.clone(),
            )
        })
    };
    let mut placement = Placement::default();
    // Folder path and datacenter: walk up from the VM's folder.
    let mut parts = Vec::new();
    let mut cur = o.moref("parent");
    let mut steps = 0;
    while let Some(m) = cur {
        steps += 1;
        if steps > 64 {
            break;
        }
        let (name, parent, kind) = name_of(m).await?;
        if kind == "Datacenter" {
            placement.datacenter = name;
            break;
        }
        parts.push(name);
        cur = parent;
    }
    parts.reverse();
    placement.folder = parts.join("/");
    if let Some(p) = o.moref("resourcePool") {
        placement.resource_pool = name_of(p).await?.0;
    }
    if let Some(h) = o.moref("runtime.host") {
        placement.host = name_of(h).await?.0;
    }
    for d in o.morefs("datastore") {
        placement.datastores.push(name_of(d).await?.0);
    }
    for n in o.morefs("network") {
        placement.networks.push(name_of(n).await?.0);
    }
    Ok(placement)
}
