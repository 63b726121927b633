//! The element tree and its builders and accessors.

use super::NS_VIM25;

/// A namespace-qualified name: the namespace URI (empty for none) and the local name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QName {
    /// Namespace URI, or the empty string for no namespace.
    pub ns: String,
    /// Local part of the name.
    pub local: String,
}

impl QName {
    /// A name in namespace `ns`.
    pub fn new(ns: &str, local: &str) -> Self {
        QName {
            ns: ns.to_owned(),
            local: local.to_owned(),
        }
    }

    /// A name in the VIM namespace.
    pub fn vim(local: &str) -> Self {
        QName::new(NS_VIM25, local)
    }
}

impl std::fmt::Display for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ns.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{{{}}}{}", self.ns, self.local)
        }
    }
}

/// An attribute other than a namespace declaration or `xsi:type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute's qualified name (unprefixed attributes have no namespace).
    pub name: QName,
    /// The attribute's unescaped value.
    pub value: String,
}

/// One XML element with its resolved name, `xsi:type`, attributes, children and text.
///
/// Whitespace-only text between child elements is dropped; all other text is kept unescaped.
/// Attributes are kept sorted by name so that equality is XML-aware (attribute order and
/// namespace prefixes do not matter, everything else does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The element's qualified name.
    pub name: QName,
    /// The `xsi:type` of the element, resolved to a namespace.
    pub xsi_type: Option<QName>,
    /// The other attributes, sorted by name.
    pub attributes: Vec<Attribute>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Character content.
    pub text: String,
}

impl Element {
    /// An empty element in namespace `ns`.
    pub fn new_in(ns: &str, local: &str) -> Self {
        Element {
            name: QName::new(ns, local),
            xsi_type: None,
            attributes: Vec::new(),
            children: Vec::new(),
            text: String::new(),
        }
    }

    /// An empty element in the VIM namespace.
    pub fn vim(local: &str) -> Self {
        Element::new_in(NS_VIM25, local)
    }

    /// A VIM element holding `text`.
    pub fn vim_text(local: &str, text: impl Into<String>) -> Self {
        let mut e = Element::vim(local);
        e.text = text.into();
        e
    }

    /// Sets the `xsi:type` to a VIM type.
    #[must_use]
    pub fn typed(mut self, vim_type: &str) -> Self {
        self.xsi_type = Some(QName::vim(vim_type));
        self
    }

    /// Sets the `xsi:type` to an XML Schema type such as `string` or `int`.
    #[must_use]
    pub fn xsd_typed(mut self, xsd_type: &str) -> Self {
        self.xsi_type = Some(QName::new(super::NS_XSD, xsd_type));
        self
    }

    /// Adds or replaces an unqualified attribute.
    #[must_use]
    pub fn attr(mut self, local: &str, value: impl Into<String>) -> Self {
        self.set_attr(local, value);
        self
    }

    /// Adds or replaces an unqualified attribute in place.
    pub fn set_attr(&mut self, local: &str, value: impl Into<String>) {
        let name = QName::new("", local);
        let value = value.into();
        match self.attributes.binary_search_by(|a| a.name.cmp(&name)) {
            Ok(i) => self.attributes[i].value = value,
            Err(i) => self.attributes.insert(i, Attribute { name, value }),
        }
    }

    /// Appends a child.
    #[must_use]
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Appends a child if there is one.
    #[must_use]
    pub fn opt_child(mut self, child: Option<Element>) -> Self {
        if let Some(c) = child {
            self.children.push(c);
        }
        self
    }

    /// Appends a VIM child element holding `text`.
    #[must_use]
    pub fn text_child(self, local: &str, text: impl Into<String>) -> Self {
        self.child(Element::vim_text(local, text))
    }

    /// Appends a child in place.
    pub fn push(&mut self, child: Element) {
        self.children.push(child);
    }

    /// The local name of the element.
    pub fn local(&self) -> &str {
        &self.name.local
    }

    /// The local name of `xsi:type`, if set.
    pub fn type_name(&self) -> Option<&str> {
        self.xsi_type.as_ref().map(|t| t.local.as_str())
    }

    /// The value of an unqualified attribute.
    pub fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.name.ns.is_empty() && a.name.local == local)
            .map(|a| a.value.as_str())
    }

    /// The first child with this local name.
    pub fn get(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name.local == local)
    }

    /// The first child with this local name, mutably.
    pub fn get_mut(&mut self, local: &str) -> Option<&mut Element> {
        self.children.iter_mut().find(|c| c.name.local == local)
    }

    /// Follows a `/`-separated path of local names through first children.
    pub fn path(&self, path: &str) -> Option<&Element> {
        path.split('/').try_fold(self, |e, step| e.get(step))
    }

    /// All children with this local name.
    pub fn all<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name.local == local)
    }

    /// The text of the element at `path`.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.path(path).map(|e| e.text.as_str())
    }

    /// The element at `path` parsed as a number or boolean (`None` when absent or malformed).
    pub fn parse_at<T: std::str::FromStr>(&self, path: &str) -> Option<T> {
        self.text_at(path).and_then(|t| t.trim().parse().ok())
    }

    /// The element at `path` read as an `xsd:boolean`.
    pub fn bool_at(&self, path: &str) -> Option<bool> {
        match self.text_at(path)?.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        }
    }

    /// Removes every child with this local name, returning how many were removed.
    pub fn remove_all(&mut self, local: &str) -> usize {
        let before = self.children.len();
        self.children.retain(|c| c.name.local != local);
        before - self.children.len()
    }

    /// Sets the text of the first child named `local`, appending the child if missing.
    pub fn set_child_text(&mut self, local: &str, text: impl Into<String>) {
        let text = text.into();
        match self.get_mut(local) {
            Some(c) => c.text = text,
            None => {
                let ns = self.name.ns.clone();
                let mut c = Element::new_in(&ns, local);
                c.text = text;
                self.children.push(c);
            }
        }
    }

    /// Moves this element and all descendants (and their `xsi:type`s) from namespace `from`
    /// to namespace `to`.
    pub fn renamespace(&mut self, from: &str, to: &str) {
        if self.name.ns == from {
            self.name.ns = to.to_owned();
        }
        if let Some(t) = &mut self.xsi_type {
            if t.ns == from {
                t.ns = to.to_owned();
            }
        }
        for c in &mut self.children {
            c.renamespace(from, to);
        }
    }

    /// A copy of this element under another local name (same namespace, type and content).
    #[must_use]
    pub fn renamed(&self, local: &str) -> Element {
        let mut e = self.clone();
        e.name.local = local.to_owned();
        e
    }
}
