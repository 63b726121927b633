//! The `ServiceContent` returned by `RetrieveServiceContent`: where the managers live.

use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// The product the server reports (`AboutInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// Full product name and build.
    pub full_name: String,
    /// `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    /// The API version, for example `8.0.2.0`.
    pub api_version: String,
    /// The vCenter instance uuid (empty on ESXi).
    pub instance_uuid: String,
}

/// The service content: references to the singleton managers.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    /// The root folder of the inventory.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager (absent on very old servers).
    pub view_manager: Option<MoRef>,
    /// The session manager.
    pub session_manager: Option<MoRef>,
    /// The search index.
    pub search_index: Option<MoRef>,
    /// The file manager.
    pub file_manager: Option<MoRef>,
    /// The virtual disk manager.
    pub virtual_disk_manager: Option<MoRef>,
    /// The first class disk manager (`VcenterVStorageObjectManager` on vCenter).
    pub vstorage_object_manager: Option<MoRef>,
    /// The authorization manager (roles, permissions, privilege checks).
    pub authorization_manager: Option<MoRef>,
    /// Product information.
    pub about: About,
    /// The whole `ServiceContent`, including what is not modelled.
    pub raw: Element,
}

impl ServiceContent {
    /// Reads the typed view of a `ServiceContent` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when `rootFolder` or `propertyCollector` is missing.
    pub fn from_element(e: &Element) -> Result<ServiceContent> {
        let required = |name: &str| -> Result<MoRef> {
            e.get(name)
                .ok_or_else(|| Error::Unexpected(format!("ServiceContent lacks {name}")))
                .and_then(MoRef::from_element)
        };
        let optional = |name: &str| e.get(name).and_then(|c| MoRef::from_element(c).ok());
        let about = e.get("about").map(|a| About {
            full_name: a.text_at("fullName").unwrap_or_default().to_owned(),
            api_type: a.text_at("apiType").unwrap_or_default().to_owned(),
            api_version: a.text_at("apiVersion").unwrap_or_default().to_owned(),
            instance_uuid: a.text_at("instanceUuid").unwrap_or_default().to_owned(),
        });
        Ok(ServiceContent {
            root_folder: required("rootFolder")?,
            property_collector: required("propertyCollector")?,
            view_manager: optional("viewManager"),
            session_manager: optional("sessionManager"),
            search_index: optional("searchIndex"),
            file_manager: optional("fileManager"),
            virtual_disk_manager: optional("virtualDiskManager"),
            vstorage_object_manager: optional("vStorageObjectManager"),
            authorization_manager: optional("authorizationManager"),
            about: about.unwrap_or_default(),
            raw: e.clone(),
        })
    }
}
