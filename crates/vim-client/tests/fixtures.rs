//! Every recorded response from real vCenter/ESXi servers parses, faults become typed faults,
//! typed views read the right values, and the tree survives a write/parse round trip.

use std::path::PathBuf;

use vim_client::xml::{self, Element};
use vim_client::{soap, Error, FaultKind, MoRef, ObjectContent, ServiceContent};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/vcenter-soap"
    ))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_responses() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir();
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".response.xml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// HTTP status per fixture from INDEX.tsv.
fn statuses() -> std::collections::HashMap<String, u16> {
    let index = String::from_utf8(fixture("INDEX.tsv")).unwrap();
    index
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<_> = l.split('\t').collect();
            Some((
                format!("{}.response.xml", cols.first()?),
                cols.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn every_response_parses_and_faults_are_typed() {
    let responses = all_responses();
    assert_eq!(responses.len(), 341, "expected the 341 recorded responses");
    let statuses = statuses();
    let mut faults = 0;
    for (name, bytes) in &responses {
        let status = statuses[name];
        match soap::parse_response(bytes) {
            Ok(body) => {
                assert_eq!(status, 200, "{name}: HTTP {status} but parsed as success");
                assert!(
                    body.local().ends_with("Response"),
                    "{name}: body <{}>",
                    body.local()
                );
            }
            Err(Error::Fault {
                kind, fault_string, ..
            }) => {
                faults += 1;
                assert_ne!(status, 200, "{name}: fault with HTTP 200");
                assert!(!fault_string.is_empty(), "{name}: empty fault string");
                assert!(
                    !matches!(kind, FaultKind::Other(ref k) if k.is_empty()),
                    "{name}"
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(faults >= 1, "the bad-password fixture is a fault");
}

#[test]
fn round_trip_is_lossless_on_every_response() {
    for (name, bytes) in all_responses() {
        let tree = xml::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = xml::write_document(&tree);
        let again = xml::parse(written.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: rewritten XML does not parse: {e}\n{written}"));
        assert_eq!(tree, again, "{name}: round trip changed the tree");
        assert!(count(&tree) >= 3, "{name}: suspiciously small tree");
    }
}

fn count(e: &Element) -> usize {
    1 + e.children.iter().map(count).sum::<usize>()
}

#[test]
fn bad_password_is_invalid_login() {
    let err = soap::parse_response(&fixture(
        "basic_connection_bad_password-01-Login.response.xml",
    ))
    .unwrap_err();
    match err {
        Error::Fault {
            kind,
            fault_string,
            detail_xml,
        } => {
            assert_eq!(kind, FaultKind::InvalidLogin);
            assert_eq!(
                fault_string,
                "Cannot complete login due to an incorrect user name or password."
            );
            assert!(detail_xml.unwrap().contains("InvalidLoginFault"));
        }
        other => panic!("expected a fault, got {other}"),
    }
}

#[test]
fn service_content_typed_view() {
    let body = soap::parse_response(&fixture(
        "basic_connection-00-RetrieveServiceContent.response.xml",
    ))
    .unwrap();
    let sc = ServiceContent::from_element(body.get("returnval").unwrap()).unwrap();
    assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
    assert_eq!(
        sc.property_collector,
        MoRef::new("PropertyCollector", "propertyCollector")
    );
    assert_eq!(
        sc.session_manager,
        Some(MoRef::new("SessionManager", "SessionManager"))
    );
    assert_eq!(sc.about.api_version, "8.0.2.0");
    assert_eq!(sc.about.api_type, "VirtualCenter");
}

#[test]
fn login_returns_user_session() {
    let body = soap::parse_response(&fixture("basic_connection-01-Login.response.xml")).unwrap();
    assert_eq!(body.local(), "LoginResponse");
    let session = body.get("returnval").unwrap();
    assert_eq!(session.type_name(), None);
    assert!(session.text_at("userName").is_some());
    assert!(session.text_at("key").is_some());
}

#[test]
fn xsi_type_resolves_by_namespace_not_prefix() {
    let vcsim = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><FooResponse xmlns="urn:vim25"><returnval xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" xmlns:vim25="urn:vim25" XMLSchema-instance:type="vim25:VirtualDisk"><key>2000</key></returnval></FooResponse></soapenv:Body></soapenv:Envelope>"#;
    let vcenter = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><FooResponse xmlns="urn:vim25"><returnval xsi:type="VirtualDisk"><key>2000</key></returnval></FooResponse></soapenv:Body></soapenv:Envelope>"#;
    let a = soap::parse_response(vcsim).unwrap();
    let b = soap::parse_response(vcenter).unwrap();
    assert_eq!(a, b);
    let t = a.get("returnval").unwrap().xsi_type.clone().unwrap();
    assert_eq!(
        (t.ns.as_str(), t.local.as_str()),
        ("urn:vim25", "VirtualDisk")
    );
}

#[test]
fn malformed_xml_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"<a>",
        b"<a></b>",
        b"<x:a/>",
        b"<a xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xsi:type='nope:T'/>",
        b"<a/><b/>",
    ] {
        assert!(
            xml::parse(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(matches!(
        soap::parse_response(b"<a/>"),
        Err(Error::Unexpected(_))
    ));
}

#[test]
fn object_contents_of_a_fetch() {
    let body =
        soap::parse_response(&fixture("basic_container_view-05-Fetch.response.xml")).unwrap();
    let refs: Vec<_> = body
        .get("returnval")
        .unwrap()
        .children
        .iter()
        .map(|c| MoRef::from_element(c).unwrap())
        .collect();
    assert_eq!(refs, vec![MoRef::new("Datacenter", "datacenter-3")]);
    let _ = ObjectContent::from_element; // typed reader covered by the config tests
}
