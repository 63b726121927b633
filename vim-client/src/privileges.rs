//! Privilege checks: does the logged-in user hold a list of privileges on an entity
//! (`AuthorizationManager.HasPrivilegeOnEntities`, vSphere 6.5 and later)?
//!
//! `safekeeping doctor` asks before the first night's backup instead of failing at 2 a.m. with
//! `NoPermission` half-way through a snapshot.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// Whether one privilege is granted on one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeCheck {
    /// The privilege id, for example `VirtualMachine.State.CreateSnapshot`.
    pub privilege: String,
    /// Whether the session's user holds it on the entity.
    pub granted: bool,
}

impl Client {
    /// Checks `privileges` for the logged-in session on `entity`; one answer per privilege,
    /// in the order asked. A privilege the server does not report is counted as not granted:
    /// a check that cannot prove a grant must not pass.
    ///
    /// # Errors
    ///
    /// Not logged in, a server without an authorization manager, SOAP faults.
    pub async fn check_privileges(
        &self,
        entity: &MoRef,
        privileges: &[&str],
    ) -> Result<Vec<PrivilegeCheck>> {
        let manager = self
            .service_content()
            .authorization_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no AuthorizationManager".into()))?;
        let session = self
            .user_session()
            .ok_or_else(|| Error::Unexpected("privilege check before login".into()))?;
        let mut body = Element::vim("HasPrivilegeOnEntities")
            .child(manager.to_element("_this"))
            .child(entity.to_element("entity"))
            .text_child("sessionId", session.key);
        for p in privileges {
            body = body.text_child("privId", *p);
        }
        let response = self.call(body).await?;
        Ok(read_checks(&response, entity, privileges))
    }
}

/// The answers for `entity` in a `HasPrivilegeOnEntitiesResponse`, in the order asked.
fn read_checks(response: &Element, entity: &MoRef, privileges: &[&str]) -> Vec<PrivilegeCheck> {
    let granted: Vec<(String, bool)> = response
        .all("returnval")
        .filter(|r| {
            r.get("entity")
                .and_then(|e| MoRef::from_element(e).ok())
                .is_some_and(|m| &m == entity)
        })
        .flat_map(|r| r.all("privAvailability"))
        .map(|a| {
            (
                a.text_at("privId").unwrap_or_default().to_owned(),
                a.bool_at("isGranted").unwrap_or(false),
            )
        })
        .collect();
    privileges
        .iter()
        .map(|p| PrivilegeCheck {
            privilege: (*p).to_owned(),
            granted: granted.iter().any(|(id, g)| id == p && *g),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(xml: &str) -> Element {
        crate::xml::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn reads_grants_per_privilege_and_counts_missing_ones_as_denied() {
        let r = response(
            r#"<HasPrivilegeOnEntitiesResponse xmlns="urn:vim25"><returnval><entity type="Folder">group-d1</entity><privAvailability><privId>Datastore.Browse</privId><isGranted>true</isGranted></privAvailability><privAvailability><privId>VirtualMachine.State.CreateSnapshot</privId><isGranted>false</isGranted></privAvailability></returnval><returnval><entity type="Folder">group-v3</entity><privAvailability><privId>Network.Assign</privId><isGranted>true</isGranted></privAvailability></returnval></HasPrivilegeOnEntitiesResponse>"#,
        );
        let root = MoRef::new("Folder", "group-d1");
        let checks = read_checks(
            &r,
            &root,
            &[
                "VirtualMachine.State.CreateSnapshot",
                "Datastore.Browse",
                "Network.Assign",
            ],
        );
        let got: Vec<(&str, bool)> = checks
            .iter()
            .map(|c| (c.privilege.as_str(), c.granted))
            .collect();
        assert_eq!(
            got,
            [
                ("VirtualMachine.State.CreateSnapshot", false),
                ("Datastore.Browse", true),
                // Granted on another entity only: not on the one asked about.
                ("Network.Assign", false),
            ]
        );
    }
}
