//! Random trees survive write → parse unchanged, whatever their names, namespaces and text.

use proptest::prelude::*;
use vim_client::xml::{self, Attribute, Element, QName};

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("urn:vim25".to_owned()),
        Just("urn:vslm".to_owned()),
        Just("http://www.w3.org/2001/XMLSchema".to_owned()),
        "urn:[a-z]{1,6}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.-]{0,8}"
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9 ]{1,10}",
        // markup characters, quotes, tabs, newlines, carriage returns and non-ASCII text
        "[<>&\"' \t\r\na-z\u{e9}\u{4e2d}\u{1f600}]{1,12}",
    ]
}

fn attribute() -> impl Strategy<Value = Attribute> {
    (
        prop_oneof![Just(String::new()), Just("urn:extra".to_owned())],
        name(),
        text(),
    )
        .prop_map(|(ns, local, value)| Attribute {
            name: QName { ns, local },
            value,
        })
}

fn leaf() -> impl Strategy<Value = Element> {
    (
        namespace(),
        name(),
        proptest::option::of((namespace(), name())),
        proptest::collection::vec(attribute(), 0..3),
        text(),
    )
        .prop_map(|(ns, local, ty, attrs, text)| {
            let mut e = Element::new_in(&ns, &local);
            // An unqualified xsi:type only exists where no default namespace applies.
            e.xsi_type = ty.map(|(tns, tl)| QName {
                ns: if tns.is_empty() {
                    "urn:vim25".into()
                } else {
                    tns
                },
                local: tl,
            });
            for a in attrs {
                if a.name.local == "xmlns" || e.attributes.iter().any(|b| b.name == a.name) {
                    continue;
                }
                e.attributes.push(a);
            }
            e.attributes.sort_by(|a, b| a.name.cmp(&b.name));
            e.text = text;
            e
        })
}

fn tree() -> impl Strategy<Value = Element> {
    leaf().prop_recursive(4, 40, 5, |inner| {
        (leaf(), proptest::collection::vec(inner, 1..5)).prop_map(|(mut e, children)| {
            // Whitespace-only text beside child elements is formatting and is not kept.
            if e.text.trim().is_empty() {
                e.text.clear();
            }
            e.children = children;
            e
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn written_trees_parse_back_equal(root in tree()) {
        let written = xml::write_document(&root);
        let parsed = xml::parse(written.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{written}")))?;
        prop_assert_eq!(parsed, root, "{}", written);
    }
}
