//! Virtual machines: properties, reconfiguration, power, create, register, rename, destroy.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::snapshot::SnapshotInfo;
use crate::vm_config::VmConfig;
use crate::xml::Element;

/// A VM's power state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    /// Running.
    PoweredOn,
    /// Off.
    PoweredOff,
    /// Suspended.
    Suspended,
    /// Something else the server reported.
    Unknown(String),
}

impl PowerState {
    fn parse(s: &str) -> PowerState {
        match s.trim() {
            "poweredOn" => PowerState::PoweredOn,
            "poweredOff" => PowerState::PoweredOff,
            "suspended" => PowerState::Suspended,
            other => PowerState::Unknown(other.to_owned()),
        }
    }
}

/// What a backup needs to know about a VM, read in one property collector call.
#[derive(Debug, Clone)]
pub struct VmInfo {
    /// The VM.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
    /// Its configuration (absent while the VM is being created).
    pub config: Option<VmConfig>,
    /// `runtime.powerState`.
    pub power_state: PowerState,
    /// `runtime.host`.
    pub host: Option<MoRef>,
    /// The resource pool.
    pub resource_pool: Option<MoRef>,
    /// The parent folder.
    pub parent: Option<MoRef>,
    /// The datastores it uses.
    pub datastores: Vec<MoRef>,
    /// The networks it uses.
    pub networks: Vec<MoRef>,
    /// Its snapshots.
    pub snapshots: SnapshotInfo,
}

/// One VM in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmListEntry {
    /// The VM.
    pub moref: MoRef,
    /// Its name.
    pub name: String,
    /// BIOS uuid.
    pub uuid: Option<String>,
    /// Instance uuid.
    pub instance_uuid: Option<String>,
    /// Power state.
    pub power_state: Option<PowerState>,
    /// Whether it is a template.
    pub template: bool,
}

const VM_INFO_PATHS: &[&str] = &[
    "name",
    "config",
    "runtime.powerState",
    "runtime.host",
    "resourcePool",
    "parent",
    "datastore",
    "network",
    "snapshot",
];

impl Client {
    /// Reads name, config, power state, host, pool, folder, datastores, networks and snapshots.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound` when the VM does not exist.
    pub async fn vm_info(&self, vm: &MoRef) -> Result<VmInfo> {
        let p = self.object_properties(vm, VM_INFO_PATHS).await?;
        Ok(VmInfo {
            moref: vm.clone(),
            name: p.text("name").unwrap_or_default().to_owned(),
            config: p.get("config").map(VmConfig::from_element).transpose()?,
            power_state: PowerState::parse(p.text("runtime.powerState").unwrap_or("unknown")),
            host: p.moref("runtime.host"),
            resource_pool: p.moref("resourcePool"),
            parent: p.moref("parent"),
            datastores: p.morefs("datastore"),
            networks: p.morefs("network"),
            snapshots: p
                .get("snapshot")
                .map(SnapshotInfo::from_element)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The VM's current configuration.
    ///
    /// # Errors
    ///
    /// `ManagedObjectNotFound`, or [`Error::Unexpected`] when the VM has no config yet.
    pub async fn vm_config(&self, vm: &MoRef) -> Result<VmConfig> {
        let p = self.object_properties(vm, &["config"]).await?;
        let config = p
            .get("config")
            .ok_or_else(|| Error::Unexpected(format!("{vm} has no config")))?;
        VmConfig::from_element(config)
    }

    /// Every VM (and template) in the inventory, through a container view.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn list_vms(&self) -> Result<Vec<VmListEntry>> {
        let root = self.service_content().root_folder.clone();
        let objects = self
            .container_objects(
                &root,
                "VirtualMachine",
                &[
                    "name",
                    "config.uuid",
                    "config.instanceUuid",
                    "config.template",
                    "runtime.powerState",
                ],
            )
            .await?;
        let mut vms: Vec<_> = objects
            .into_iter()
            .map(|o| VmListEntry {
                name: o.text("name").unwrap_or_default().to_owned(),
                uuid: o.text("config.uuid").map(str::to_owned),
                instance_uuid: o.text("config.instanceUuid").map(str::to_owned),
                power_state: o.text("runtime.powerState").map(PowerState::parse),
                template: o.text("config.template") == Some("true"),
                moref: o.obj,
            })
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }

    /// Applies a `VirtualMachineConfigSpec` (an element of any name; sent as `spec`) and waits.
    ///
    /// # Errors
    ///
    /// Task faults (`InvalidArgument`, `InvalidPowerState`, ...), timeouts.
    pub async fn reconfigure_vm(&self, vm: &MoRef, spec: &Element) -> Result<()> {
        let body = Element::vim("ReconfigVM_Task")
            .child(vm.to_element("_this"))
            .child(spec.renamed("spec"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Turns changed block tracking on or off (`changeTrackingEnabled`). CBT takes effect at
    /// the next power on or snapshot (stun/unstun) of a running VM.
    ///
    /// # Errors
    ///
    /// As [`Client::reconfigure_vm`].
    pub async fn enable_change_tracking(&self, vm: &MoRef, enabled: bool) -> Result<()> {
        let spec = Element::vim("spec")
            .typed("VirtualMachineConfigSpec")
            .text_child("changeTrackingEnabled", enabled.to_string());
        self.reconfigure_vm(vm, &spec).await
    }

    /// Powers the VM on and waits.
    ///
    /// # Errors
    ///
    /// `InvalidPowerState` when it is on already, other task faults.
    pub async fn power_on(&self, vm: &MoRef) -> Result<()> {
        let body = Element::vim("PowerOnVM_Task").child(vm.to_element("_this"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Powers the VM off (hard) and waits.
    ///
    /// # Errors
    ///
    /// `InvalidPowerState` when it is off already, other task faults.
    pub async fn power_off(&self, vm: &MoRef) -> Result<()> {
        let body = Element::vim("PowerOffVM_Task").child(vm.to_element("_this"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Destroys the VM and deletes its files, and waits.
    ///
    /// # Errors
    ///
    /// `InvalidPowerState` when it is on, other task faults.
    pub async fn destroy(&self, vm: &MoRef) -> Result<()> {
        let body = Element::vim("Destroy_Task").child(vm.to_element("_this"));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Renames the VM (`Rename_Task`) and waits. Only the inventory name changes: the VM's
    /// files keep their folder and names.
    ///
    /// # Errors
    ///
    /// `DuplicateName` (vCenter) or `InvalidArgument` (vcsim) when another object of its
    /// folder has that name, `InvalidName`, other task faults.
    pub async fn rename(&self, vm: &MoRef, new_name: &str) -> Result<()> {
        let body = Element::vim("Rename_Task")
            .child(vm.to_element("_this"))
            .text_child("newName", new_name);
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    /// Creates a VM from a `VirtualMachineConfigSpec` in `folder`, placed in `pool` (and on
    /// `host` if given); returns the new VM.
    ///
    /// # Errors
    ///
    /// Task faults (`DuplicateName`, `FileAlreadyExists`, `InvalidArgument`, ...).
    pub async fn create_vm(
        &self,
        folder: &MoRef,
        spec: &Element,
        pool: &MoRef,
        host: Option<&MoRef>,
    ) -> Result<MoRef> {
        let body = Element::vim("CreateVM_Task")
            .child(folder.to_element("_this"))
            .child(spec.renamed("config"))
            .child(pool.to_element("pool"))
            .opt_child(host.map(|h| h.to_element("host")));
        self.task_result_moref("CreateVM_Task", body).await
    }

    /// Registers an existing `.vmx` (`[ds] dir/name.vmx`) as a VM in `folder`; `name`
    /// overrides the name in the file.
    ///
    /// # Errors
    ///
    /// Task faults (`NotFound`/`FileNotFound` for a missing file, `AlreadyExists`, ...).
    pub async fn register_vm(
        &self,
        folder: &MoRef,
        path: &str,
        name: Option<&str>,
        pool: &MoRef,
        host: Option<&MoRef>,
    ) -> Result<MoRef> {
        let body = Element::vim("RegisterVM_Task")
            .child(folder.to_element("_this"))
            .text_child("path", path)
            .opt_child(name.map(|n| Element::vim_text("name", n)))
            .text_child("asTemplate", "false")
            .child(pool.to_element("pool"))
            .opt_child(host.map(|h| h.to_element("host")));
        self.task_result_moref("RegisterVM_Task", body).await
    }

    /// Removes the VM from the inventory, leaving its files (`UnregisterVM`).
    ///
    /// # Errors
    ///
    /// `InvalidPowerState` when it is on, other faults.
    pub async fn unregister_vm(&self, vm: &MoRef) -> Result<()> {
        let body = Element::vim("UnregisterVM").child(vm.to_element("_this"));
        self.call(body).await.map(|_| ())
    }

    async fn task_result_moref(&self, method: &str, body: Element) -> Result<MoRef> {
        let result = self.run_task(body, self.task_timeout()).await?;
        result
            .as_ref()
            .ok_or_else(|| Error::Unexpected(format!("{method} returned no object")))
            .and_then(MoRef::from_element)
    }
}
