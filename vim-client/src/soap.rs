//! SOAP 1.1 envelopes: wrapping a request body and unwrapping a response or fault.

use crate::error::{Error, Result};
use crate::fault;
use crate::xml::{self, Element, NS_SOAPENV};

/// Wraps `body` (the method element) in an envelope, with optional header elements.
pub fn envelope(body: Element, header: Vec<Element>) -> String {
    let mut env = Element::new_in(NS_SOAPENV, "Envelope");
    if !header.is_empty() {
        let mut h = Element::new_in(NS_SOAPENV, "Header");
        h.children = header;
        env.push(h);
    }
    env.push(Element::new_in(NS_SOAPENV, "Body").child(body));
    xml::write_document(&env)
}

/// Reads a response envelope and returns the body's method response element
/// (`LoginResponse`, ...).
///
/// # Errors
///
/// [`Error::Fault`] for a SOAP fault, [`Error::Xml`] for malformed XML and
/// [`Error::Unexpected`] when the document is not a SOAP envelope.
pub fn parse_response(bytes: &[u8]) -> Result<Element> {
    let root = xml::parse(bytes)?;
    response_of(root)
}

/// Unwraps an already parsed envelope; see [`parse_response`].
///
/// # Errors
///
/// As [`parse_response`].
pub fn response_of(root: Element) -> Result<Element> {
    if root.name.ns != NS_SOAPENV || root.name.local != "Envelope" {
        return Err(Error::Unexpected(format!(
            "expected a SOAP envelope, got <{}>",
            root.name
        )));
    }
    let body = root
        .children
        .into_iter()
        .find(|c| c.name.ns == NS_SOAPENV && c.name.local == "Body")
        .ok_or_else(|| Error::Unexpected("SOAP envelope has no Body".into()))?;
    let first = body
        .children
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unexpected("SOAP Body is empty".into()))?;
    if first.name.ns == NS_SOAPENV && first.name.local == "Fault" {
        return Err(fault::from_soap_fault(&first));
    }
    Ok(first)
}

/// The `returnval` children of a method response.
pub fn returnvals(response: &Element) -> impl Iterator<Item = &Element> {
    response.all("returnval")
}
