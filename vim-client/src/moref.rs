//! Managed object references.

use crate::error::{Error, Result};
use crate::xml::Element;

/// A managed object reference: the object's type and its server-side id (`VirtualMachine:vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// The managed object type (`VirtualMachine`, `Datastore`, ...).
    pub kind: String,
    /// The id (`vm-42`).
    pub value: String,
}

impl MoRef {
    /// A reference to the object of type `kind` with id `value`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Reads a reference from an element holding `type="..."` and the id as text.
    ///
    /// # Errors
    ///
    /// [`Error::Unexpected`] when the `type` attribute is missing.
    pub fn from_element(e: &Element) -> Result<MoRef> {
        let kind = e.attribute("type").ok_or_else(|| {
            Error::Unexpected(format!("<{}> is not a managed object reference", e.local()))
        })?;
        Ok(MoRef::new(kind, e.text.trim()))
    }

    /// The reference as a VIM element named `local` (for a request argument).
    pub fn to_element(&self, local: &str) -> Element {
        Element::vim_text(local, self.value.clone()).attr("type", self.kind.clone())
    }

    /// The reference as an element named `local` with `xsi:type="ManagedObjectReference"`, as
    /// used inside `anyType` values.
    pub fn to_typed_element(&self, local: &str) -> Element {
        self.to_element(local).typed("ManagedObjectReference")
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl std::str::FromStr for MoRef {
    type Err = Error;

    /// Parses `Type:id`, for example `VirtualMachine:vm-42`.
    fn from_str(s: &str) -> Result<MoRef> {
        match s.split_once(':') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => Ok(MoRef::new(kind, value)),
            _ => Err(Error::InvalidInput(format!(
                "`{s}` is not a managed object reference (expected Type:id, e.g. VirtualMachine:vm-42)"
            ))),
        }
    }
}
