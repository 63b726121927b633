//! Which vCenter a backup came from, as its generation records it: the configured name, the
//! URL and the vCenter's instance uuid (`ServiceContent.about.instanceUuid`), kept in the
//! target identity's extra fields so that generations written before several vCenters were
//! supported still read (they have the URL only).

/// Which vCenter a session (and so a backup) belongs to, as a generation records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcenterOrigin {
    /// `[vcenters.NAME]`'s name; `None` for the default `[vcenter]`.
    pub name: Option<String>,
    /// The configured URL.
    pub url: String,
    /// `ServiceContent.about.instanceUuid`, lower case (empty when the server has none, as
    /// ESXi).
    pub instance_uuid: String,
}

/// Keys under which a target's identity records its vCenter (`extra` of the manifest's
/// target; `vcenter` already held the URL before several vCenters were supported).
pub const VCENTER_URL_KEY: &str = "vcenter";
/// The vCenter's instance uuid in a target's identity.
pub const VCENTER_UUID_KEY: &str = "vcenter_uuid";
/// The vCenter's configured name (`[vcenters.NAME]`) in a target's identity; absent for the
/// default `[vcenter]`.
pub const VCENTER_NAME_KEY: &str = "vcenter_name";

impl VcenterOrigin {
    /// Records this vCenter in a target's identity, and scopes the target's key to it when it
    /// is not the default `[vcenter]`: two vCenters can both have a `vm-42` (and VMs with
    /// equal uuids, after a clone across vCenters), which must not share one history or lock.
    /// The default vCenter's targets keep the keys they always had.
    pub fn stamp(&self, identity: &mut repository_format::TargetIdentity) {
        identity
            .extra
            .insert(VCENTER_URL_KEY.into(), self.url.clone().into());
        if !self.instance_uuid.is_empty() {
            identity
                .extra
                .insert(VCENTER_UUID_KEY.into(), self.instance_uuid.clone().into());
        }
        if let Some(name) = &self.name {
            identity
                .extra
                .insert(VCENTER_NAME_KEY.into(), name.clone().into());
            let scope = if self.instance_uuid.is_empty() {
                name.clone()
            } else {
                self.instance_uuid.clone()
            };
            identity.scope = Some(scope);
        }
    }

    /// The vCenter a generation's target came from, as recorded (`None` for generations
    /// written before vCenters were recorded).
    pub fn recorded(identity: &repository_format::TargetIdentity) -> Option<VcenterOrigin> {
        let get = |k: &str| {
            identity
                .extra
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let url = get(VCENTER_URL_KEY)?;
        Some(VcenterOrigin {
            name: get(VCENTER_NAME_KEY),
            url,
            instance_uuid: get(VCENTER_UUID_KEY).unwrap_or_default(),
        })
    }

    /// `[vcenter]` or `[vcenters.NAME]`, with the URL.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("[vcenters.{n}] ({})", self.url),
            None => format!("[vcenter] ({})", self.url),
        }
    }
}
