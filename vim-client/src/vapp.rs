//! vApps (`VirtualApp`): create, describe, create child VMs, change the configuration, power
//! on and off in start order, destroy; and the spec that rebuilds a vApp from a saved
//! `VAppConfigInfo`.
//!
//! A restore recreates a vApp in two steps, because `entityConfig` may only name children
//! that exist:
//!
//! 1. [`Client::create_vapp`] with [`VAppRestoreSpec::create_spec`] (products, properties,
//!    IP assignment, EULAs, OVF sections, annotation; no entities);
//! 2. [`Client::create_child_vm`] for every VM, collecting old moref → new moref;
//! 3. [`Client::update_vapp_config`] with [`VAppRestoreSpec::entity_spec`] built by
//!    [`vapp_config_spec_from_info`] with that map (start order, delays, actions).

use std::collections::HashMap;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::inventory::{InventoryKind, Named};
use crate::moref::MoRef;
use crate::xml::Element;

/// One `VAppEntityConfigInfo`: how a child starts and stops with its vApp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VAppEntity {
    /// The child (a `VirtualMachine` or `VirtualApp`).
    pub key: Option<MoRef>,
    /// The child's tag (a name used in OVF).
    pub tag: Option<String>,
    /// Start group; lower groups start first, entities of one group together.
    pub start_order: Option<i32>,
    /// Seconds to wait after starting this entity before the next group.
    pub start_delay: Option<i32>,
    /// Wait for VMware Tools heartbeat instead of the whole delay.
    pub waiting_for_guest: Option<bool>,
    /// `powerOn` or `none`.
    pub start_action: Option<String>,
    /// Seconds to wait after stopping this entity.
    pub stop_delay: Option<i32>,
    /// `none`, `powerOff`, `guestShutdown` or `suspend`.
    pub stop_action: Option<String>,
    /// Whether destroying the vApp destroys this entity.
    pub destroy_with_parent: Option<bool>,
}

impl VAppEntity {
    /// Reads a `VAppEntityConfigInfo` element.
    pub fn from_element(e: &Element) -> VAppEntity {
        let text = |p: &str| e.text_at(p).map(|t| t.trim().to_owned());
        VAppEntity {
            key: e.get("key").and_then(|k| MoRef::from_element(k).ok()),
            tag: text("tag"),
            start_order: e.parse_at("startOrder"),
            start_delay: e.parse_at("startDelay"),
            waiting_for_guest: e.bool_at("waitingForGuest"),
            start_action: text("startAction"),
            stop_delay: e.parse_at("stopDelay"),
            stop_action: text("stopAction"),
            destroy_with_parent: e.bool_at("destroyWithParent"),
        }
    }
}

/// A vApp as [`Client::vapp_info`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VAppInfo {
    /// The vApp.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
    /// The parent resource pool (or vApp).
    pub parent: Option<MoRef>,
    /// The VM folder it is shown in (`parentFolder`).
    pub parent_folder: Option<MoRef>,
    /// Child VMs (`vm`), in the server's order.
    pub vms: Vec<MoRef>,
    /// Child vApps and resource pools (`resourcePool`).
    pub child_pools: Vec<MoRef>,
    /// The entity settings in start order (by `startOrder`; ties keep the server's order).
    pub start_order: Vec<VAppEntity>,
    /// The whole `VAppConfigInfo` (`vAppConfig`), for saving and [`vapp_config_spec_from_info`].
    pub vapp_config: Option<Element>,
    /// The resource allocation (`config`, a `ResourceConfigSpec`).
    pub resource_config: Option<Element>,
}

/// The two specs that rebuild a vApp; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VAppRestoreSpec {
    /// A `VAppConfigSpec` (element `configSpec`) for [`Client::create_vapp`]: everything but
    /// the entities.
    pub create_spec: Element,
    /// A `VAppConfigSpec` (element `spec`) holding only the remapped `entityConfig`, for
    /// [`Client::update_vapp_config`] once the children exist.
    pub entity_spec: Element,
    /// Entities of the saved vApp whose morefs were not in the map (left out of
    /// `entity_spec`), e.g. VMs the user chose not to restore.
    pub unmapped: Vec<MoRef>,
}

/// Builds the specs that recreate a vApp from a saved `VAppConfigInfo`, with child morefs
/// remapped (old child → new child).
///
/// Arrays become `add` operations (`product`, `property`, `ovfSection`), the rest is copied
/// in schema order; `instanceUuid` is left out so the new vApp gets its own.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `info` is not a `VAppConfigInfo`-shaped element (an entity
/// without a key).
pub fn vapp_config_spec_from_info(
    info: &Element,
    remap: &HashMap<MoRef, MoRef>,
) -> Result<VAppRestoreSpec> {
    let mut create = Element::vim("configSpec").typed("VAppConfigSpec");
    let array_add = |spec_name: &str, spec_type: &str, item: &Element| {
        Element::vim(spec_name)
            .typed(spec_type)
            .text_child("operation", "add")
            .child(strip_type(item.renamed("info")))
    };
    for p in info.all("product") {
        create.push(array_add("product", "VAppProductSpec", p));
    }
    for p in info.all("property") {
        create.push(array_add("property", "VAppPropertySpec", p));
    }
    if let Some(ip) = info.get("ipAssignment") {
        create.push(ip.clone());
    }
    for e in info.all("eula") {
        create.push(e.clone());
    }
    for s in info.all("ovfSection") {
        create.push(array_add("ovfSection", "VAppOvfSectionSpec", s));
    }
    for t in info.all("ovfEnvironmentTransport") {
        create.push(t.clone());
    }
    for name in ["installBootRequired", "installBootStopDelay"] {
        if let Some(e) = info.get(name) {
            create.push(e.clone());
        }
    }
    for name in ["annotation", "managedBy"] {
        if let Some(e) = info.get(name) {
            create.push(e.clone());
        }
    }

    let mut entity_spec = Element::vim("spec").typed("VAppConfigSpec");
    let mut unmapped = Vec::new();
    for e in info.all("entityConfig") {
        let key = e
            .get("key")
            .ok_or_else(|| Error::InvalidInput("vApp entityConfig without a key".into()))
            .and_then(MoRef::from_element)?;
        match remap.get(&key) {
            Some(new) => {
                let mut entity = strip_type(e.clone());
                entity.remove_all("key");
                entity.children.insert(0, new.to_element("key"));
                entity_spec.push(entity);
            }
            None => unmapped.push(key),
        }
    }
    Ok(VAppRestoreSpec {
        create_spec: create,
        entity_spec,
        unmapped,
    })
}

/// [`vapp_config_spec_from_info`] for a vApp configuration that may not have been saved: without
/// one, the new vApp gets no products, properties or entity settings.
///
/// # Errors
/// See [`vapp_config_spec_from_info`].
pub fn vapp_config_spec_from_saved(
    saved: Option<&Element>,
    remap: &HashMap<MoRef, MoRef>,
) -> Result<VAppRestoreSpec> {
    match saved {
        Some(info) => vapp_config_spec_from_info(info, remap),
        None => {
            vapp_config_spec_from_info(&Element::vim("vAppConfig").typed("VAppConfigInfo"), remap)
        }
    }
}

/// The `ResourceConfigSpec` (element `resSpec`) for a new vApp from a saved resource
/// allocation (`ResourceConfigSpec` as `vAppConfig` reports it): the old entity, change version
/// and modification time are dropped, since they name the original vApp; without a saved one,
/// [`default_resource_config_spec`].
pub fn resource_config_spec_from_saved(saved: Option<&Element>) -> Element {
    match saved {
        Some(r) => {
            let mut spec = r.renamed("resSpec");
            spec.remove_all("entity");
            spec.remove_all("changeVersion");
            spec.remove_all("lastModified");
            spec.typed("ResourceConfigSpec")
        }
        None => default_resource_config_spec(),
    }
}

/// Drops an `xsi:type` naming the element's static type (an `info` inside a spec needs none).
fn strip_type(mut e: Element) -> Element {
    e.xsi_type = None;
    e
}

/// A `ResourceConfigSpec` (element `resSpec`) with vCenter's defaults: normal shares,
/// no reservation, no limit, expandable reservations; what the UI uses for a new vApp.
pub fn default_resource_config_spec() -> Element {
    let allocation = |name: &str| {
        Element::vim(name)
            .text_child("reservation", "0")
            .text_child("expandableReservation", "true")
            .text_child("limit", "-1")
            .child(
                Element::vim("shares")
                    .text_child("shares", "0")
                    .text_child("level", "normal"),
            )
    };
    Element::vim("resSpec")
        .typed("ResourceConfigSpec")
        .child(allocation("cpuAllocation"))
        .child(allocation("memoryAllocation"))
}

impl Client {
    /// Creates a vApp named `name` in resource pool (or vApp) `pool`, shown in VM folder
    /// `folder` (the datacenter's VM folder when `None`). `config_spec` is a `VAppConfigSpec`
    /// and `resource_spec` a `ResourceConfigSpec` (see [`default_resource_config_spec`]);
    /// their element names do not matter.
    ///
    /// # Errors
    ///
    /// `DuplicateName`, `InvalidName`, `InvalidArgument` and other faults.
    pub async fn create_vapp(
        &self,
        name: &str,
        pool: &MoRef,
        folder: Option<&MoRef>,
        config_spec: &Element,
        resource_spec: &Element,
    ) -> Result<MoRef> {
        let body = Element::vim("CreateVApp")
            .child(pool.to_element("_this"))
            .text_child("name", name)
            .child(resource_spec.renamed("resSpec"))
            .child(config_spec.renamed("configSpec"))
            .opt_child(folder.map(|f| f.to_element("vmFolder")));
        let response = self.call(body).await?;
        response
            .get("returnval")
            .ok_or_else(|| Error::Unexpected("CreateVApp returned nothing".into()))
            .and_then(MoRef::from_element)
    }

    /// Reads a vApp: name, parent, children, entity settings in start order, the raw
    /// `vAppConfig` and resource configuration.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound` for an unknown vApp.
    pub async fn vapp_info(&self, vapp: &MoRef) -> Result<VAppInfo> {
        let props = self
            .object_properties(
                vapp,
                &[
                    "name",
                    "parent",
                    "parentFolder",
                    "vm",
                    "resourcePool",
                    "vAppConfig",
                    "config",
                ],
            )
            .await?;
        let vapp_config = props.get("vAppConfig").cloned();
        let mut start_order: Vec<VAppEntity> = vapp_config
            .as_ref()
            .map(|c| {
                c.all("entityConfig")
                    .map(VAppEntity::from_element)
                    .collect()
            })
            .unwrap_or_default();
        start_order.sort_by_key(|e| e.start_order.unwrap_or(i32::MAX));
        Ok(VAppInfo {
            moref: vapp.clone(),
            name: props.text("name").unwrap_or_default().to_owned(),
            parent: props.moref("parent"),
            parent_folder: props.moref("parentFolder"),
            vms: props.morefs("vm"),
            child_pools: props.morefs("resourcePool"),
            start_order,
            vapp_config,
            resource_config: props.get("config").cloned(),
        })
    }

    /// Creates a VM inside a vApp (`CreateChildVM_Task`) from a `VirtualMachineConfigSpec`,
    /// on `host` if given; returns the new VM. vCenter adds an `entityConfig` entry for it.
    ///
    /// # Errors
    ///
    /// Task faults, as for [`Client::create_vm`].
    pub async fn create_child_vm(
        &self,
        vapp: &MoRef,
        spec: &Element,
        host: Option<&MoRef>,
    ) -> Result<MoRef> {
        let body = Element::vim("CreateChildVM_Task")
            .child(vapp.to_element("_this"))
            .child(spec.renamed("config"))
            .opt_child(host.map(|h| h.to_element("host")));
        let result = self.run_task(body, self.task_timeout()).await?;
        result
            .as_ref()
            .ok_or_else(|| Error::Unexpected("CreateChildVM_Task returned no VM".into()))
            .and_then(MoRef::from_element)
    }

    /// Changes a vApp's configuration (`UpdateVAppConfig`) with a `VAppConfigSpec`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` (an entity that is not a child, a bad array key), other faults.
    pub async fn update_vapp_config(&self, vapp: &MoRef, spec: &Element) -> Result<()> {
        let body = Element::vim("UpdateVAppConfig")
            .child(vapp.to_element("_this"))
            .child(spec.renamed("spec"));
        self.call(body).await.map(|_| ())
    }

    /// Powers a vApp on (children in start order) and waits.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn power_on_vapp(&self, vapp: &MoRef) -> Result<()> {
        let body = Element::vim("PowerOnVApp_Task").child(vapp.to_element("_this"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Powers a vApp off (children in reverse start order; `force` skips guest shutdown) and
    /// waits.
    ///
    /// # Errors
    ///
    /// Task faults.
    pub async fn power_off_vapp(&self, vapp: &MoRef, force: bool) -> Result<()> {
        let body = Element::vim("PowerOffVApp_Task")
            .child(vapp.to_element("_this"))
            .text_child("force", force.to_string());
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// The vApp named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownObject`] listing the vApps that exist, [`Error::Ambiguous`].
    pub async fn find_vapp_by_name(&self, name: &str) -> Result<MoRef> {
        self.find_by_name(InventoryKind::VirtualApp, name).await
    }

    /// Every vApp with its name, sorted by name.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn list_vapps(&self) -> Result<Vec<Named>> {
        self.list_named(InventoryKind::VirtualApp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_resources_lose_the_old_entity() {
        let saved = crate::xml::parse(
            br#"<config xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ResourceConfigSpec"><entity type="VirtualApp">resgroup-v38</entity><changeVersion>7</changeVersion><cpuAllocation><reservation>100</reservation></cpuAllocation></config>"#,
        )
        .unwrap();
        let spec = resource_config_spec_from_saved(Some(&saved));
        assert!(spec.get("entity").is_none());
        assert!(spec.get("changeVersion").is_none());
        assert_eq!(spec.text_at("cpuAllocation/reservation"), Some("100"));
        let default = resource_config_spec_from_saved(None);
        assert_eq!(
            default.text_at("memoryAllocation/shares/level"),
            Some("normal")
        );
    }

    #[test]
    fn a_vapp_without_saved_configuration_gets_empty_specs() {
        let spec = vapp_config_spec_from_saved(None, &HashMap::new()).unwrap();
        assert!(spec.create_spec.children.is_empty());
        assert!(spec.entity_spec.all("entityConfig").next().is_none());
        assert!(spec.unmapped.is_empty());
    }

    use crate::xml::parse;

    const INFO: &str = r#"<vAppConfig xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="VAppConfigInfo">
      <product><key>0</key><name>shop</name><vendor>ACME</vendor></product>
      <property><key>1</key><id>port</id><type>int</type><value>8443</value></property>
      <ipAssignment><ipAllocationPolicy>fixedPolicy</ipAllocationPolicy></ipAssignment>
      <installBootRequired>false</installBootRequired>
      <installBootStopDelay>0</installBootStopDelay>
      <entityConfig><key type="VirtualMachine">vm-1</key><tag>db</tag><startOrder>1</startOrder><startDelay>30</startDelay><startAction>powerOn</startAction></entityConfig>
      <entityConfig><key type="VirtualMachine">vm-2</key><startOrder>2</startOrder></entityConfig>
      <entityConfig><key type="VirtualMachine">vm-3</key><startOrder>3</startOrder></entityConfig>
      <annotation>the shop</annotation>
      <instanceUuid>4b5c</instanceUuid>
    </vAppConfig>"#;

    #[test]
    fn restore_spec_remaps_entities_and_drops_the_instance_uuid() {
        let info = parse(INFO.as_bytes()).unwrap();
        let remap = HashMap::from([
            (
                MoRef::new("VirtualMachine", "vm-1"),
                MoRef::new("VirtualMachine", "vm-71"),
            ),
            (
                MoRef::new("VirtualMachine", "vm-2"),
                MoRef::new("VirtualMachine", "vm-72"),
            ),
        ]);
        let spec = vapp_config_spec_from_info(&info, &remap).unwrap();
        let c = &spec.create_spec;
        let order: Vec<&str> = c.children.iter().map(Element::local).collect();
        assert_eq!(
            order,
            [
                "product",
                "property",
                "ipAssignment",
                "installBootRequired",
                "installBootStopDelay",
                "annotation"
            ]
        );
        assert_eq!(c.text_at("product/operation"), Some("add"));
        assert_eq!(c.text_at("product/info/vendor"), Some("ACME"));
        assert_eq!(c.text_at("property/info/value"), Some("8443"));
        assert!(c.get("instanceUuid").is_none());
        assert!(c.get("entityConfig").is_none());

        let entities: Vec<VAppEntity> = spec
            .entity_spec
            .all("entityConfig")
            .map(VAppEntity::from_element)
            .collect();
        assert_eq!(entities.len(), 2);
        assert_eq!(entities[0].key, Some(MoRef::new("VirtualMachine", "vm-71")));
        assert_eq!(entities[0].tag.as_deref(), Some("db"));
        assert_eq!(entities[0].start_delay, Some(30));
        assert_eq!(entities[0].start_action.as_deref(), Some("powerOn"));
        assert_eq!(
            spec.entity_spec
                .all("entityConfig")
                .next()
                .unwrap()
                .children[0]
                .local(),
            "key",
            "key stays the first field"
        );
        assert_eq!(entities[1].key, Some(MoRef::new("VirtualMachine", "vm-72")));
        assert_eq!(spec.unmapped, [MoRef::new("VirtualMachine", "vm-3")]);
    }

    #[test]
    fn entity_without_key_is_refused() {
        let info = parse(
            br#"<c xmlns="urn:vim25"><entityConfig><startOrder>1</startOrder></entityConfig></c>"#,
        )
        .unwrap();
        let err = vapp_config_spec_from_info(&info, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("without a key"), "{err}");
    }
}
