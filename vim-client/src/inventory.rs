//! Finding inventory objects: by name (with the list of candidates when unknown), by uuid,
//! by inventory path, by moref; parents and inventory paths.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// An inventory object and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The object.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
}

/// Which uuid of a VM to search by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UuidKind {
    /// The BIOS uuid (`config.uuid`, SMBIOS).
    Bios,
    /// The vCenter instance uuid (`config.instanceUuid`).
    Instance,
}

/// Inventory object types that can be looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryKind {
    /// `Datacenter`.
    Datacenter,
    /// `Folder`.
    Folder,
    /// `ResourcePool`.
    ResourcePool,
    /// `ComputeResource` (clusters included).
    ComputeResource,
    /// `HostSystem`.
    Host,
    /// `Datastore`.
    Datastore,
    /// `Network` (port groups, DV port groups and opaque networks included).
    Network,
    /// `VirtualMachine`.
    VirtualMachine,
    /// `VirtualApp` (vApp).
    VirtualApp,
}

impl InventoryKind {
    /// The VIM type name.
    pub fn type_name(self) -> &'static str {
        match self {
            InventoryKind::Datacenter => "Datacenter",
            InventoryKind::Folder => "Folder",
            InventoryKind::ResourcePool => "ResourcePool",
            InventoryKind::ComputeResource => "ComputeResource",
            InventoryKind::Host => "HostSystem",
            InventoryKind::Datastore => "Datastore",
            InventoryKind::Network => "Network",
            InventoryKind::VirtualMachine => "VirtualMachine",
            InventoryKind::VirtualApp => "VirtualApp",
        }
    }

    /// A human name for messages.
    pub fn human(self) -> &'static str {
        match self {
            InventoryKind::Datacenter => "datacenter",
            InventoryKind::Folder => "folder",
            InventoryKind::ResourcePool => "resource pool",
            InventoryKind::ComputeResource => "compute resource",
            InventoryKind::Host => "host",
            InventoryKind::Datastore => "datastore",
            InventoryKind::Network => "network",
            InventoryKind::VirtualMachine => "virtual machine",
            InventoryKind::VirtualApp => "vApp",
        }
    }
}

impl Client {
    /// Every object of `kind` with its name, sorted by name.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn list_named(&self, kind: InventoryKind) -> Result<Vec<Named>> {
        let root = self.service_content().root_folder.clone();
        let mut out: Vec<Named> = self
            .container_objects(&root, kind.type_name(), &["name"])
            .await?
            .into_iter()
            .map(|o| Named {
                name: o.text("name").unwrap_or_default().to_owned(),
                moref: o.obj,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.moref.cmp(&b.moref)));
        Ok(out)
    }

    /// The one object of `kind` named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownObject`] listing the known names, [`Error::Ambiguous`] when several
    /// objects have the name.
    pub async fn find_by_name(&self, kind: InventoryKind, name: &str) -> Result<MoRef> {
        let all = self.list_named(kind).await?;
        let matches: Vec<_> = all.iter().filter(|n| n.name == name).collect();
        match matches.as_slice() {
            [one] => Ok(one.moref.clone()),
            [] => {
                let mut known: Vec<String> = all.into_iter().map(|n| n.name).collect();
                known.dedup();
                Err(Error::UnknownObject {
                    what: kind.human(),
                    name: name.to_owned(),
                    known,
                })
            }
            many => Err(Error::Ambiguous {
                what: kind.human(),
                name: name.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// The VM named `name`; see [`Client::find_by_name`].
    ///
    /// # Errors
    ///
    /// As [`Client::find_by_name`].
    pub async fn find_vm_by_name(&self, name: &str) -> Result<MoRef> {
        self.find_by_name(InventoryKind::VirtualMachine, name).await
    }

    /// The VM with this BIOS or instance uuid (`SearchIndex.FindByUuid`).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownObject`] when no VM has it.
    pub async fn find_vm_by_uuid(&self, uuid: &str, kind: UuidKind) -> Result<MoRef> {
        let search_index = self.search_index()?;
        let body = Element::vim("FindByUuid")
            .child(search_index.to_element("_this"))
            .text_child("uuid", uuid)
            .text_child("vmSearch", "true")
            .text_child("instanceUuid", (kind == UuidKind::Instance).to_string());
        let response = self.call(body).await?;
        match response.get("returnval") {
            Some(r) => MoRef::from_element(r),
            None => Err(Error::UnknownObject {
                what: match kind {
                    UuidKind::Bios => "virtual machine with BIOS uuid",
                    UuidKind::Instance => "virtual machine with instance uuid",
                },
                name: uuid.to_owned(),
                known: Vec::new(),
            }),
        }
    }

    /// The object at an inventory path such as `DC0/vm/web01` (`SearchIndex.FindByInventoryPath`).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownObject`] when nothing is there.
    pub async fn find_by_inventory_path(&self, path: &str) -> Result<MoRef> {
        let search_index = self.search_index()?;
        let body = Element::vim("FindByInventoryPath")
            .child(search_index.to_element("_this"))
            .text_child("inventoryPath", path.trim_start_matches('/'));
        let response = self.call(body).await?;
        match response.get("returnval") {
            Some(r) => MoRef::from_element(r),
            None => Err(Error::UnknownObject {
                what: "inventory path",
                name: path.to_owned(),
                known: Vec::new(),
            }),
        }
    }

    /// The VM with moref id `id` (`vm-42` or `VirtualMachine:vm-42`), checked to exist.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound` when it does not exist, [`Error::InvalidInput`] for a reference
    /// to another type.
    pub async fn vm_by_moref(&self, id: &str) -> Result<MoRef> {
        let moref = if id.contains(':') {
            id.parse::<MoRef>()?
        } else {
            MoRef::new("VirtualMachine", id)
        };
        if moref.kind != "VirtualMachine" {
            return Err(Error::InvalidInput(format!(
                "{moref} is not a VirtualMachine"
            )));
        }
        self.object_properties(&moref, &["name"]).await?;
        Ok(moref)
    }

    /// The name of any managed entity.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound`.
    pub async fn name_of(&self, obj: &MoRef) -> Result<String> {
        let p = self.object_properties(obj, &["name"]).await?;
        Ok(p.text("name").unwrap_or_default().to_owned())
    }

    /// The chain of `(object, name)` from the object up to (not including) the root folder.
    async fn ancestry(&self, obj: &MoRef) -> Result<Vec<Named>> {
        let root = self.service_content().root_folder.clone();
        let mut chain = Vec::new();
        let mut current = obj.clone();
        for _ in 0..64 {
            if current == root {
                return Ok(chain);
            }
            let p = self
                .object_properties(&current, &["name", "parent"])
                .await?;
            chain.push(Named {
                moref: current.clone(),
                name: p.text("name").unwrap_or_default().to_owned(),
            });
            match p.moref("parent") {
                Some(parent) => current = parent,
                None => return Ok(chain),
            }
        }
        Err(Error::Unexpected(format!("{obj} is nested too deep")))
    }

    /// The datacenter that contains `obj`.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when the object is not inside a datacenter.
    pub async fn datacenter_of(&self, obj: &MoRef) -> Result<MoRef> {
        self.ancestry(obj)
            .await?
            .into_iter()
            .find(|n| n.moref.kind == "Datacenter")
            .map(|n| n.moref)
            .ok_or_else(|| Error::Unexpected(format!("{obj} is not inside a datacenter")))
    }

    /// The inventory path of `obj` (`DC0/vm/web01`), usable with
    /// [`Client::find_by_inventory_path`] and as `dcPath` for a datacenter.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound`.
    pub async fn inventory_path(&self, obj: &MoRef) -> Result<String> {
        let chain = self.ancestry(obj).await?;
        Ok(chain
            .iter()
            .rev()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join("/"))
    }

    fn search_index(&self) -> Result<MoRef> {
        self.service_content()
            .search_index
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no SearchIndex".into()))
    }
}
