//! XML text to [`Element`] tree, with every name and `xsi:type` resolved by namespace URI.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName as RawName, ResolveResult};
use quick_xml::NsReader;

use super::element::{Attribute, Element, QName};
use super::NS_XSI;
use crate::error::Error;

/// Deepest element nesting accepted. Real VIM responses nest about 15 levels; the limit keeps
/// the recursive code over trees (drop, clone, the writer, the typed views) far from the end
/// of a 2 MiB thread stack whatever a server sends.
pub const MAX_DEPTH: usize = 512;

/// Parses a whole document and returns its root element.
///
/// # Errors
///
/// [`Error::Xml`] when the document is not well-formed, uses an undeclared prefix, has no
/// root element, or nests elements deeper than `MAX_DEPTH`.
pub fn parse(input: &[u8]) -> Result<Element, Error> {
    let mut reader = NsReader::from_reader(input);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| Error::Xml(format!("at byte {position}: {e}")))?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::Xml(format!(
                        "elements nested deeper than {MAX_DEPTH} levels at byte {position}"
                    )));
                }
                let element = open(&reader, &start)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = open(&reader, &start)?;
                close(element, &mut stack, &mut root)?;
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| Error::Xml(format!("unbalanced end tag at byte {position}")))?;
                close(element, &mut stack, &mut root)?;
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| Error::Xml(format!("bad text at byte {position}: {e}")))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                } else if !text.trim().is_empty() {
                    return Err(Error::Xml(format!(
                        "text outside the root at byte {position}"
                    )));
                }
            }
            Event::CData(data) => {
                let data = std::str::from_utf8(&data).map_err(|e| {
                    Error::Xml(format!("CDATA is not UTF-8 at byte {position}: {e}"))
                })?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(data);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(Error::Xml(format!(
            "document ends inside <{}>",
            stack.last().map(|e| e.name.local.as_str()).unwrap_or("")
        )));
    }
    root.ok_or_else(|| Error::Xml("document has no root element".into()))
}

fn close(
    mut element: Element,
    stack: &mut [Element],
    root: &mut Option<Element>,
) -> Result<(), Error> {
    if !element.children.is_empty() && element.text.trim().is_empty() {
        element.text.clear();
    }
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(Error::Xml("more than one root element".into())),
    }
    Ok(())
}

fn namespace(resolved: ResolveResult<'_>, what: &str) -> Result<String, Error> {
    match resolved {
        // The URI is the attribute value as written: unescape it like any other value.
        ResolveResult::Bound(ns) => {
            let raw = String::from_utf8_lossy(ns.as_ref());
            quick_xml::escape::unescape(&raw)
                .map(|uri| uri.into_owned())
                .map_err(|e| Error::Xml(format!("bad namespace URI {raw:?} in {what}: {e}")))
        }
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => Err(Error::Xml(format!(
            "undeclared namespace prefix `{}` in {what}",
            String::from_utf8_lossy(&prefix)
        ))),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::Xml(format!("name is not UTF-8: {e}")))
}

fn open(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, Error> {
    let local = utf8(start.local_name().as_ref())?;
    let (resolved, _) = reader.resolve_element(start.name());
    let mut element = Element::new_in(&namespace(resolved, &local)?, &local);
    for attr in start.attributes() {
        let attr = attr.map_err(|e| Error::Xml(format!("bad attribute in <{local}>: {e}")))?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let value = attr
            .unescape_value()
            .map_err(|e| Error::Xml(format!("bad attribute value in <{local}>: {e}")))?
            .into_owned();
        let (attr_ns, attr_local) = reader.resolve_attribute(attr.key);
        let name = QName {
            ns: namespace(attr_ns, &local)?,
            local: utf8(attr_local.as_ref())?,
        };
        if name.ns == NS_XSI && name.local == "type" {
            // A QName value: its prefix (or the default namespace) resolves in this scope.
            let (type_ns, type_local) = reader.resolve_element(RawName(value.trim().as_bytes()));
            element.xsi_type = Some(QName {
                ns: namespace(type_ns, &format!("xsi:type of <{local}>"))?,
                local: utf8(type_local.as_ref())?,
            });
        } else {
            element.attributes.push(Attribute { name, value });
        }
    }
    element.attributes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(element)
}
