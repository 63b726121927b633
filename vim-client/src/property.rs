//! The property collector: `RetrievePropertiesEx` with continuation, and container views.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::fault;
use crate::moref::MoRef;
use crate::xml::Element;

/// The properties of one managed object, as returned by the property collector.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Property path and value (`val` element, holding the value's `xsi:type`).
    pub props: Vec<(String, Element)>,
    /// Properties the server could not read, with the fault it gave.
    pub missing: Vec<MissingProperty>,
}

/// A property the server could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingProperty {
    /// The property path.
    pub path: String,
    /// The fault kind.
    pub kind: crate::FaultKind,
    /// The fault message.
    pub message: String,
}

impl ObjectContent {
    /// The value of the property at `path`, if returned.
    pub fn get(&self, path: &str) -> Option<&Element> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// The text value of the property at `path` (for strings, numbers, booleans, enums).
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|v| v.text.as_str())
    }

    /// The property at `path` as a managed object reference.
    pub fn moref(&self, path: &str) -> Option<MoRef> {
        self.get(path).and_then(|v| MoRef::from_element(v).ok())
    }

    /// The property at `path` as a list of references (`ArrayOfManagedObjectReference`).
    pub fn morefs(&self, path: &str) -> Vec<MoRef> {
        self.get(path)
            .map(|v| {
                v.children
                    .iter()
                    .filter_map(|c| MoRef::from_element(c).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads an `ObjectContent` element.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when `obj` is missing.
    pub fn from_element(e: &Element) -> Result<ObjectContent> {
        let obj = e
            .get("obj")
            .ok_or_else(|| Error::Unexpected("ObjectContent without obj".into()))
            .and_then(MoRef::from_element)?;
        let props = e
            .all("propSet")
            .filter_map(|p| Some((p.text_at("name")?.to_owned(), p.get("val")?.clone())))
            .collect();
        let missing = e
            .all("missingSet")
            .map(|m| {
                let path = m.text_at("path").unwrap_or_default().to_owned();
                match m.get("fault").map(fault::from_localized_method_fault) {
                    Some(Error::Fault {
                        kind, fault_string, ..
                    }) => MissingProperty {
                        path,
                        kind,
                        message: fault_string,
                    },
                    _ => MissingProperty {
                        path,
                        kind: crate::FaultKind::Other("MissingProperty".into()),
                        message: String::new(),
                    },
                }
            })
            .collect();
        Ok(ObjectContent {
            obj,
            props,
            missing,
        })
    }
}

/// Builds a `PropertySpec` for `kind` with `paths` (all properties when `paths` is empty).
pub fn property_spec(kind: &str, paths: &[&str]) -> Element {
    let mut spec = Element::vim("propSet").text_child("type", kind);
    if paths.is_empty() {
        spec = spec.text_child("all", "true");
    }
    for p in paths {
        spec = spec.text_child("pathSet", *p);
    }
    spec
}

/// Builds an `ObjectSpec` for one object, with optional traversal specs.
pub fn object_spec(obj: &MoRef, skip: bool, select_set: Vec<Element>) -> Element {
    let mut spec = Element::vim("objectSet")
        .child(obj.to_element("obj"))
        .text_child("skip", skip.to_string());
    spec.children.extend(select_set);
    spec
}

/// A `TraversalSpec` from a `ContainerView` into its `view` property.
pub fn container_view_traversal() -> Element {
    Element::vim("selectSet")
        .typed("TraversalSpec")
        .text_child("name", "traverseEntities")
        .text_child("type", "ContainerView")
        .text_child("path", "view")
        .text_child("skip", "false")
}

impl Client {
    /// Runs `RetrievePropertiesEx` with one filter spec (`propSet`s and `objectSet`s as
    /// children) and follows `ContinueRetrievePropertiesEx` tokens until all objects are read.
    ///
    /// # Errors
    ///
    /// Faults (for example `ManagedObjectNotFound` for an unknown object) and transport errors.
    pub async fn retrieve_properties(&self, filter: Vec<Element>) -> Result<Vec<ObjectContent>> {
        let out = self.retrieve_properties_once(filter.clone()).await?;
        // Some servers (vcsim) report an expired session per property instead of as a fault.
        let expired = out.iter().any(|o| {
            o.props.is_empty()
                && !o.missing.is_empty()
                && o.missing
                    .iter()
                    .all(|m| m.kind == crate::FaultKind::NotAuthenticated)
        });
        if expired && self.relogin().await? {
            return self.retrieve_properties_once(filter).await;
        }
        Ok(out)
    }

    async fn retrieve_properties_once(&self, filter: Vec<Element>) -> Result<Vec<ObjectContent>> {
        let collector = self.service_content().property_collector.clone();
        let mut spec_set = Element::vim("specSet");
        // The schema wants all propSets before all objectSets.
        let (props, objects): (Vec<_>, Vec<_>) =
            filter.into_iter().partition(|e| e.local() == "propSet");
        spec_set.children.extend(props);
        spec_set.children.extend(objects);
        let body = Element::vim("RetrievePropertiesEx")
            .child(collector.to_element("_this"))
            .child(spec_set)
            .child(Element::vim("options").text_child("maxObjects", "500"));
        let mut response = self.call(body).await?;
        let mut out = Vec::new();
        while let Some(result) = response.get("returnval") {
            for o in result.all("objects") {
                out.push(ObjectContent::from_element(o)?);
            }
            let Some(token) = result.text_at("token").map(str::to_owned) else {
                break;
            };
            let body = Element::vim("ContinueRetrievePropertiesEx")
                .child(collector.to_element("_this"))
                .text_child("token", token);
            response = self.call(body).await?;
        }
        Ok(out)
    }

    /// Reads `paths` of one object (all properties when `paths` is empty).
    ///
    /// # Errors
    ///
    /// A `ManagedObjectNotFound` fault when the object does not exist.
    pub async fn object_properties(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent> {
        let filter = vec![
            property_spec(&obj.kind, paths),
            object_spec(obj, false, Vec::new()),
        ];
        self.retrieve_properties(filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Fault {
                kind: crate::FaultKind::ManagedObjectNotFound,
                fault_string: format!("{obj} does not exist"),
                detail_xml: None,
            })
    }

    /// Reads `paths` of several objects of one type in one call (`RetrievePropertiesEx` with
    /// one `objectSet` per object), instead of one round trip each. Nothing to read: no call.
    ///
    /// # Errors
    ///
    /// A `ManagedObjectNotFound` fault when one of the objects does not exist, other faults
    /// and transport errors.
    pub async fn objects_properties(
        &self,
        objs: &[MoRef],
        paths: &[&str],
    ) -> Result<Vec<ObjectContent>> {
        let Some(first) = objs.first() else {
            return Ok(Vec::new());
        };
        let mut filter = vec![property_spec(&first.kind, paths)];
        filter.extend(objs.iter().map(|o| object_spec(o, false, Vec::new())));
        self.retrieve_properties(filter).await
    }

    /// Reads `paths` of every object of type `kind` below `container` (recursively), through a
    /// temporary `ContainerView`.
    ///
    /// # Errors
    ///
    /// Faults and transport errors.
    pub async fn container_objects(
        &self,
        container: &MoRef,
        kind: &str,
        paths: &[&str],
    ) -> Result<Vec<ObjectContent>> {
        let view_manager = self
            .service_content()
            .view_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no ViewManager".into()))?;
        let body = Element::vim("CreateContainerView")
            .child(view_manager.to_element("_this"))
            .child(container.to_element("container"))
            .text_child("type", kind)
            .text_child("recursive", "true");
        let view = self.call(body).await?;
        let view = view
            .get("returnval")
            .ok_or_else(|| Error::Unexpected("CreateContainerView returned nothing".into()))
            .and_then(MoRef::from_element)?;
        let filter = vec![
            property_spec(kind, paths),
            object_spec(&view, true, vec![container_view_traversal()]),
        ];
        let result = self.retrieve_properties(filter).await;
        let destroy = Element::vim("DestroyView").child(view.to_element("_this"));
        if let Err(e) = self.call(destroy).await {
            tracing::warn!(%view, error = %e, "cannot destroy container view");
        }
        result
    }
}
