//! [`Element`] tree to XML text.
//!
//! The writer declares a default namespace where an element's namespace changes (as SOAP
//! toolkits do: `<Login xmlns="urn:vim25">`), uses the well-known prefixes `soapenv`, `xsi` and
//! `xsd`, and invents `nsN` prefixes for anything else, so any tree is written faithfully.

use std::fmt::Write as _;

use super::element::{Element, QName};
use super::{NS_SOAPENV, NS_XSD, NS_XSI};

/// Writes `root` as a complete document with an XML declaration.
pub fn write_document(root: &Element) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    write_root(root, &mut out);
    out
}

/// Writes `root` as a fragment (no XML declaration).
pub fn to_string(root: &Element) -> String {
    let mut out = String::new();
    write_root(root, &mut out);
    out
}

fn write_root(root: &Element, out: &mut String) {
    let scope = Scope {
        default_ns: String::new(),
        prefixes: vec![
            ("soapenv".into(), NS_SOAPENV.into()),
            ("xsi".into(), NS_XSI.into()),
            ("xsd".into(), NS_XSD.into()),
        ],
        next: 0,
    };
    let declare_well_known = true;
    write_element(root, scope, declare_well_known, out);
}

#[derive(Clone)]
struct Scope {
    default_ns: String,
    prefixes: Vec<(String, String)>,
    next: usize,
}

impl Scope {
    fn prefix_of(&self, ns: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .rev()
            .find(|(_, uri)| uri == ns)
            .map(|(p, _)| p.as_str())
    }

    /// A prefix for `ns`, declaring a new one on the current element if needed.
    fn ensure_prefix(&mut self, ns: &str, decls: &mut String) -> String {
        if let Some(p) = self.prefix_of(ns) {
            return p.to_owned();
        }
        loop {
            let candidate = format!("ns{}", self.next);
            self.next += 1;
            if !self.prefixes.iter().any(|(p, _)| *p == candidate) {
                let _ = write!(decls, " xmlns:{candidate}=\"{}\"", escape(ns));
                self.prefixes.push((candidate.clone(), ns.to_owned()));
                return candidate;
            }
        }
    }
}

fn write_element(e: &Element, mut scope: Scope, declare_well_known: bool, out: &mut String) {
    let mut decls = String::new();
    if declare_well_known {
        for (p, uri) in &scope.prefixes {
            let _ = write!(decls, " xmlns:{p}=\"{uri}\"");
        }
    }
    let tag = element_name(&e.name, &mut scope, &mut decls);
    let mut attrs = String::new();
    if let Some(t) = &e.xsi_type {
        let value = qname_value(t, &mut scope, &mut decls);
        let xsi = scope.ensure_prefix(NS_XSI, &mut decls);
        let _ = write!(attrs, " {xsi}:type=\"{}\"", escape(&value));
    }
    for a in &e.attributes {
        let name = if a.name.ns.is_empty() {
            a.name.local.clone()
        } else {
            let p = scope.ensure_prefix(&a.name.ns, &mut decls);
            format!("{p}:{}", a.name.local)
        };
        let _ = write!(attrs, " {name}=\"{}\"", escape(&a.value));
    }
    let _ = write!(out, "<{tag}{decls}{attrs}");
    if e.children.is_empty() && e.text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    out.push_str(&escape_text(&e.text));
    for c in &e.children {
        write_element(c, scope.clone(), false, out);
    }
    let _ = write!(out, "</{tag}>");
}

fn element_name(name: &QName, scope: &mut Scope, decls: &mut String) -> String {
    if name.ns == scope.default_ns {
        return name.local.clone();
    }
    if let Some(p) = scope.prefix_of(&name.ns) {
        if !name.ns.is_empty() {
            return format!("{p}:{}", name.local);
        }
    }
    // Switch the default namespace here (xmlns="" undeclares it for unqualified names).
    let _ = write!(decls, " xmlns=\"{}\"", escape(&name.ns));
    scope.default_ns = name.ns.clone();
    name.local.clone()
}

fn qname_value(t: &QName, scope: &mut Scope, decls: &mut String) -> String {
    if t.ns == scope.default_ns || t.ns.is_empty() {
        // An unqualified type name under a default namespace cannot be written (QName values
        // have no `xmlns=""`); SOAP never produces one, so it is written unprefixed.
        t.local.clone()
    } else {
        let p = scope.ensure_prefix(&t.ns, decls);
        format!("{p}:{}", t.local)
    }
}

/// Escapes character data; `\r` becomes a character reference so that parsers' line-end
/// normalisation cannot change it.
fn escape_text(s: &str) -> std::borrow::Cow<'_, str> {
    escape_with(s, |c| matches!(c, '&' | '<' | '>' | '\r'))
}

/// Escapes an attribute value; whitespace other than spaces becomes character references so
/// that attribute-value normalisation cannot change it.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    escape_with(s, |c| {
        matches!(c, '&' | '<' | '>' | '"' | '\'' | '\t' | '\n' | '\r')
    })
}

fn escape_with(s: &str, special: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(&special) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if special(c) => out.push_str("&quot;"),
            '\'' if special(c) => out.push_str("&apos;"),
            c if special(c) => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
