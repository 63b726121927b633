//! vSphere tags through the vAPI REST endpoint (`/rest/com/vmware/cis/...`): log in with
//! the same credentials and TLS settings as the SOAP client, list categories and tags, find
//! a tag by name, list the objects a tag is attached to, log out.
//!
//! VMs and vApps come back as `VirtualMachine`/`VirtualApp` morefs. First class disks are
//! tagged through VIM instead (`AttachTagToVStorageObject`; see
//! [`Client::fcd_attached_to_tag`]); servers that also report them through vAPI (govmomi's
//! simulator does, with type `fcd`) give [`TaggedObject`]s whose
//! [`TaggedObject::first_class_disk_id`] is set.

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::moref::MoRef;
use crate::secret::Secret;

/// The vAPI session header.
const SESSION_HEADER: &str = "vmware-api-session-id";

/// A tag category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCategory {
    /// `urn:vmomi:InventoryServiceCategory:...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// `SINGLE` or `MULTIPLE`.
    pub cardinality: String,
    /// Object types its tags may be attached to (empty: any).
    pub associable_types: Vec<String>,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// `urn:vmomi:InventoryServiceTag:...`.
    pub id: String,
    /// Its name (unique within its category).
    pub name: String,
    /// The category's id.
    pub category_id: String,
    /// Its description.
    pub description: String,
}

/// An object a tag is attached to, as vAPI names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaggedObject {
    /// The object type (`VirtualMachine`, `VirtualApp`, `Datastore`, ... or `fcd`).
    pub kind: String,
    /// The object id (a moref value, or a first class disk id).
    pub id: String,
}

impl TaggedObject {
    /// The object as a managed object reference (not for first class disks).
    pub fn moref(&self) -> Option<MoRef> {
        (!self.is_first_class_disk()).then(|| MoRef::new(&self.kind, &self.id))
    }

    /// Whether this is a first class disk (type `fcd` or `VStorageObject`).
    pub fn is_first_class_disk(&self) -> bool {
        matches!(self.kind.as_str(), "fcd" | "VStorageObject")
    }

    /// The first class disk id, when it is one.
    pub fn first_class_disk_id(&self) -> Option<&str> {
        self.is_first_class_disk().then_some(self.id.as_str())
    }
}

/// A logged-in vAPI session. Call [`Tagging::logout`] when done.
#[derive(Debug)]
pub struct Tagging {
    client: Client,
    base: Url,
    session: Secret,
}

impl Client {
    /// Logs in to the vAPI endpoint with the credentials of the last [`Client::login`] (HTTP
    /// basic authentication on `POST /rest/com/vmware/cis/session`), over the same TLS
    /// settings (pin, CA file).
    ///
    /// # Errors
    ///
    /// [`Error::NotLoggedIn`] without a password login, a fault of kind
    /// [`FaultKind::InvalidLogin`] for HTTP 401, [`Error::Http`] for servers without vAPI.
    pub async fn tagging(&self) -> Result<Tagging> {
        let (user, password) = self.stored_credentials().ok_or(Error::NotLoggedIn)?;
        self.tagging_as(&user, &password).await
    }

    /// Logs in to the vAPI endpoint as `user`; see [`Client::tagging`].
    ///
    /// # Errors
    ///
    /// As [`Client::tagging`].
    pub async fn tagging_as(&self, user: &str, password: &Secret) -> Result<Tagging> {
        let base = self
            .base_url()
            .join("rest/")
            .map_err(|e| Error::InvalidInput(format!("vAPI URL: {e}")))?;
        let url = base
            .join("com/vmware/cis/session")
            .map_err(|e| Error::InvalidInput(format!("vAPI URL: {e}")))?;
        let mut response = self
            .http()
            .post(url.clone())
            .timeout(self.call_timeout())
            .basic_auth(user, Some(password.expose()))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.map_transport(&url, e))?;
        let status = response.status();
        let bytes = crate::bounded::read_body(
            &mut response,
            self.max_response_bytes(),
            &|| format!("the vAPI login response from {url}"),
            &|e| self.map_transport(&url, e),
        )
        .await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Fault {
                kind: FaultKind::InvalidLogin,
                fault_string: format!("vAPI login as {user} refused"),
                detail_xml: None,
            });
        }
        let value = decode(&url, status, &bytes)?;
        let session = value
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Unexpected("vAPI login returned no session id".into()))?;
        tracing::info!(user, url = %base, "vAPI session opened");
        Ok(Tagging {
            client: self.clone(),
            base,
            session: Secret::new(session),
        })
    }
}

/// Unwraps a vAPI `{"value": ...}` answer, or turns an error answer into [`Error::Http`].
fn decode(url: &Url, status: StatusCode, bytes: &[u8]) -> Result<Value> {
    if !status.is_success() {
        return Err(Error::Http {
            status: status.as_u16(),
            url: url.to_string(),
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Unexpected(format!("{url}: not JSON: {e}")))?;
    Ok(v.get("value").cloned().unwrap_or(Value::Null))
}

fn string(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Tagging {
    async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::InvalidInput(format!("vAPI path {path}: {e}")))?;
        let session = HeaderValue::from_str(self.session.expose())
            .map_err(|e| Error::Unexpected(format!("vAPI session id is not a header: {e}")))?;
        let mut request = self
            .client
            .http()
            .request(method, url.clone())
            .timeout(self.client.call_timeout())
            .header(SESSION_HEADER, session)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.client.map_transport(&url, e))?;
        let status = response.status();
        let bytes = crate::bounded::read_body(
            &mut response,
            self.client.max_response_bytes(),
            &|| format!("the vAPI response from {url}"),
            &|e| self.client.map_transport(&url, e),
        )
        .await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Fault {
                kind: FaultKind::NotAuthenticated,
                fault_string: "the vAPI session is not valid".into(),
                detail_xml: None,
            });
        }
        decode(&url, status, &bytes)
    }

    /// The ids of every tag category.
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn category_ids(&self) -> Result<Vec<String>> {
        Ok(strings(
            &self
                .request(Method::GET, "com/vmware/cis/tagging/category", None)
                .await?,
        ))
    }

    /// One category.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] 404 for an unknown id.
    pub async fn category(&self, id: &str) -> Result<TagCategory> {
        let v = self
            .request(
                Method::GET,
                &format!("com/vmware/cis/tagging/category/id:{id}"),
                None,
            )
            .await?;
        Ok(TagCategory {
            id: string(&v, "id"),
            name: string(&v, "name"),
            description: string(&v, "description"),
            cardinality: string(&v, "cardinality"),
            associable_types: strings(v.get("associable_types").unwrap_or(&Value::Null)),
        })
    }

    /// Every category, sorted by name.
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn categories(&self) -> Result<Vec<TagCategory>> {
        let mut out = Vec::new();
        for id in self.category_ids().await? {
            out.push(self.category(&id).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The ids of every tag.
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn tag_ids(&self) -> Result<Vec<String>> {
        Ok(strings(
            &self
                .request(Method::GET, "com/vmware/cis/tagging/tag", None)
                .await?,
        ))
    }

    /// One tag.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] 404 for an unknown id.
    pub async fn tag(&self, id: &str) -> Result<Tag> {
        let v = self
            .request(
                Method::GET,
                &format!("com/vmware/cis/tagging/tag/id:{id}"),
                None,
            )
            .await?;
        Ok(Tag {
            id: string(&v, "id"),
            name: string(&v, "name"),
            category_id: string(&v, "category_id"),
            description: string(&v, "description"),
        })
    }

    /// Every tag, sorted by name.
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn tags(&self) -> Result<Vec<Tag>> {
        let mut out = Vec::new();
        for id in self.tag_ids().await? {
            out.push(self.tag(&id).await?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The tag named `name`, in the category named `category` when given (tag names are only
    /// unique within a category).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownObject`] listing the tags that exist (as `category/tag`),
    /// [`Error::Ambiguous`] when several categories have a tag of that name.
    pub async fn find_tag(&self, category: Option<&str>, name: &str) -> Result<Tag> {
        let categories = self.categories().await?;
        let category_name = |id: &str| {
            categories
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
                .unwrap_or_default()
        };
        let tags = self.tags().await?;
        let matches: Vec<&Tag> = tags
            .iter()
            .filter(|t| t.name == name)
            .filter(|t| category.is_none_or(|c| category_name(&t.category_id) == c))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownObject {
                what: "tag",
                name: match category {
                    Some(c) => format!("{c}/{name}"),
                    None => name.to_owned(),
                },
                known: tags
                    .iter()
                    .map(|t| format!("{}/{}", category_name(&t.category_id), t.name))
                    .collect(),
            }),
            many => Err(Error::Ambiguous {
                what: "tag",
                name: name.to_owned(),
                count: many.len(),
            }),
        }
    }

    /// The objects `tag_id` is attached to, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] 404 for an unknown tag.
    pub async fn attached_objects(&self, tag_id: &str) -> Result<Vec<TaggedObject>> {
        let v = self
            .request(
                Method::POST,
                &format!(
                    "com/vmware/cis/tagging/tag-association/id:{tag_id}?~action=list-attached-objects"
                ),
                Some(json!({})),
            )
            .await?;
        let mut out: Vec<TaggedObject> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| TaggedObject {
                        kind: string(o, "type"),
                        id: string(o, "id"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// The ids of the tags attached to `object` (a VM, vApp, ...).
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn attached_tags(&self, object: &MoRef) -> Result<Vec<String>> {
        let v = self
            .request(
                Method::POST,
                "com/vmware/cis/tagging/tag-association?~action=list-attached-tags",
                Some(json!({"object_id": {"type": object.kind, "id": object.value}})),
            )
            .await?;
        Ok(strings(&v))
    }

    /// Ends the vAPI session.
    ///
    /// # Errors
    ///
    /// HTTP and transport errors.
    pub async fn logout(self) -> Result<()> {
        self.request(Method::DELETE, "com/vmware/cis/session", None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_value_wrappers_and_errors() {
        let url = Url::parse("https://vc/rest/com/vmware/cis/tagging/tag").unwrap();
        let v = decode(&url, StatusCode::OK, br#"{"value":["a","b"]}"#).unwrap();
        assert_eq!(strings(&v), ["a", "b"]);
        assert_eq!(decode(&url, StatusCode::OK, b"").unwrap(), Value::Null);
        let err = decode(
            &url,
            StatusCode::NOT_FOUND,
            br#"{"type":"com.vmware.vapi.std.errors.not_found"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Http { status: 404, body, .. } if body.contains("not_found")),
            "{err}"
        );
        let err = decode(&url, StatusCode::OK, b"<html>").unwrap_err();
        assert!(matches!(err, Error::Unexpected(_)), "{err}");
    }

    #[test]
    fn tagged_objects_tell_disks_from_morefs() {
        let vm = TaggedObject {
            kind: "VirtualMachine".into(),
            id: "vm-7".into(),
        };
        assert_eq!(vm.moref(), Some(MoRef::new("VirtualMachine", "vm-7")));
        assert_eq!(vm.first_class_disk_id(), None);
        let disk = TaggedObject {
            kind: "fcd".into(),
            id: "6599-01".into(),
        };
        assert_eq!(disk.moref(), None);
        assert_eq!(disk.first_class_disk_id(), Some("6599-01"));
    }
}
