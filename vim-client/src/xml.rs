//! A lossless, namespace-aware XML element tree: the source of truth for every SOAP message.
//!
//! VIM data objects are polymorphic (`xsi:type`) and the type system is far larger than what a
//! backup tool models, so responses are kept as [`Element`] trees and typed views read from them.
//! Names and `xsi:type` values are resolved to namespace URIs when parsing, never compared by
//! prefix: vcsim writes `XMLSchema-instance:type="vim25:VirtualDisk"` where vCenter writes
//! `xsi:type="VirtualDisk"`, and both parse to the same tree.

mod element;
mod parse;
mod write;

pub use element::{Attribute, Element, QName};
pub use parse::parse;
pub use write::{to_string, write_document};

/// The VIM namespace (`urn:vim25`).
pub const NS_VIM25: &str = "urn:vim25";
/// The VSLM namespace (`urn:vslm`).
pub const NS_VSLM: &str = "urn:vslm";
/// The storage policy (SPBM) namespace (`urn:pbm`).
pub const NS_PBM: &str = "urn:pbm";
/// The SOAP 1.1 envelope namespace.
pub const NS_SOAPENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The XML Schema instance namespace (home of `xsi:type`).
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The XML Schema namespace (`xsd:string`, `xsd:int`, ...).
pub const NS_XSD: &str = "http://www.w3.org/2001/XMLSchema";
