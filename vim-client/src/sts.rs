//! vCenter single sign-on: a SAML bearer token from the Security Token Service and the
//! WS-Security header that presents it to `SessionManager.LoginByToken`.
//!
//! The STS (`/sts/STSService` on vCenter) speaks WS-Trust 1.3: an `Issue` request
//! authenticated by a WS-Security `UsernameToken` (the user and password, over the verified TLS
//! connection) returns a signed `saml2:Assertion`. A bearer token needs no proof of possession:
//! whoever holds it may log in until it expires, so the token is kept like a password (in a
//! [`Secret`], never logged).
//!
//! The assertion is carried to `LoginByToken` byte for byte as the STS sent it: its XML
//! signature covers the canonical form of those bytes (namespace prefixes included), so parsing
//! and writing it again could invalidate it.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::xml::{self, Element, NS_SOAPENV};

/// WS-Security 1.0 (`wsse`).
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility (`wsu`: timestamps).
pub const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// WS-Trust 1.3 (`wst`).
pub const NS_WST: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
/// SAML 2.0 assertions.
pub const NS_SAML2: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// The SOAPAction of a WS-Trust `Issue` request.
pub const ISSUE_ACTION: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue";
/// The STS path on a vCenter (beside `/sdk`).
pub const STS_PATH: &str = "sts/STSService";

/// How long a requested token lives: enough for the login, and for VDDK and the run to use
/// the session it opens (the session outlives the token).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// A SAML bearer token issued by the STS.
#[derive(Clone)]
pub struct SamlToken {
    /// The `saml2:Assertion` element exactly as the STS sent it.
    assertion: Secret,
    /// The user the token speaks for (`Subject/NameID`).
    subject: String,
}

impl std::fmt::Debug for SamlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlToken")
            .field("subject", &self.subject)
            .field("assertion", &"<redacted>")
            .finish()
    }
}

impl SamlToken {
    /// The user the token was issued for (`Subject/NameID`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The assertion as the STS sent it, for the one place that presents it.
    pub(crate) fn assertion(&self) -> &str {
        self.assertion.expose()
    }
}

/// A UTC time as WS-Security wants it: `2026-12-04T13:40:00.000Z`.
fn utc(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn timestamp(local: &str, now: time::OffsetDateTime, lifetime: Duration) -> Element {
    let mut created = Element::new_in(NS_WSU, "Created");
    created.text = utc(now);
    let mut expires = Element::new_in(NS_WSU, "Expires");
    expires.text = utc(now + lifetime);
    let ns = if local == "Timestamp" { NS_WSU } else { NS_WST };
    Element::new_in(ns, local).child(created).child(expires)
}

fn wst(local: &str, text: &str) -> Element {
    let mut e = Element::new_in(NS_WST, local);
    e.text = text.to_owned();
    e
}

/// The WS-Trust `Issue` request for a bearer token, authenticated by `user` and `password`
/// (the password appears in this text only: send it over TLS, never log it).
pub(crate) fn issue_request(
    user: &str,
    password: &Secret,
    now: time::OffsetDateTime,
    lifetime: Duration,
) -> String {
    let mut username = Element::new_in(NS_WSSE, "Username");
    username.text = user.to_owned();
    let mut pass = Element::new_in(NS_WSSE, "Password");
    pass.text = password.expose().to_owned();
    let security = Element::new_in(NS_WSSE, "Security")
        .child(timestamp("Timestamp", now, Duration::from_secs(5 * 60)))
        .child(
            Element::new_in(NS_WSSE, "UsernameToken")
                .child(username)
                .child(pass),
        );
    let body = Element::new_in(NS_WST, "RequestSecurityToken")
        .child(wst("TokenType", "urn:oasis:names:tc:SAML:2.0:assertion"))
        .child(wst(
            "RequestType",
            "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue",
        ))
        .child(timestamp("Lifetime", now, lifetime))
        .child(
            Element::new_in(NS_WST, "Renewing")
                .attr("Allow", "false")
                .attr("OK", "false"),
        )
        .child(wst("Delegatable", "false"))
        .child(wst(
            "KeyType",
            "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Bearer",
        ))
        .child(wst(
            "SignatureAlgorithm",
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        ));
    crate::soap::envelope(body, vec![security])
}

/// Whether a fault from the STS means the user or password was refused. vCenter's STS
/// answers `wst:FailedAuthentication` (WS-Trust) or `wsse:FailedAuthentication`
/// (WS-Security); both name the code the same way.
pub(crate) fn is_refusal(err: &Error) -> bool {
    matches!(err, Error::Fault { kind, .. } if kind.to_string().ends_with("FailedAuthentication"))
}

/// Reads the STS's answer to `Issue`: the token, or the fault.
///
/// # Errors
/// [`Error::Fault`] for a SOAP fault, [`Error::Xml`] or [`Error::Unexpected`] when the answer
/// carries no assertion.
pub(crate) fn parse_issue_response(bytes: &[u8]) -> Result<SamlToken> {
    let response = crate::soap::parse_response(bytes)?;
    let assertion = find(&response, NS_SAML2, "Assertion").ok_or_else(|| {
        Error::Unexpected(format!(
            "the STS answered <{}> without a SAML assertion",
            response.name
        ))
    })?;
    let subject = assertion
        .text_at("Subject/NameID")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let raw = raw_element(bytes, "Assertion")?;
    Ok(SamlToken {
        assertion: Secret::new(raw),
        subject,
    })
}

/// The first element named `ns`:`local` at or below `e`.
fn find<'a>(e: &'a Element, ns: &str, local: &str) -> Option<&'a Element> {
    if e.name.ns == ns && e.name.local == local {
        return Some(e);
    }
    e.children.iter().find_map(|c| find(c, ns, local))
}

/// The bytes of the first element whose local name is `local`, start tag to end tag, as they
/// are in `bytes`.
fn raw_element(bytes: &[u8], local: &str) -> Result<String> {
    let mut reader = Reader::from_reader(bytes);
    let mut start = None;
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| Error::Xml(format!("STS response: {e}")))?;
        match event {
            Event::Start(e) if start.is_none() && e.local_name().as_ref() == local.as_bytes() => {
                start = Some(before);
                depth = 1;
            }
            Event::Empty(e) if start.is_none() && e.local_name().as_ref() == local.as_bytes() => {
                return Err(Error::Unexpected("the STS sent an empty assertion".into()));
            }
            Event::Start(_) if start.is_some() => depth += 1,
            Event::End(_) if start.is_some() => {
                depth -= 1;
                if depth == 0 {
                    let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                    let from = start.unwrap_or_default();
                    let raw = bytes.get(from..end).ok_or_else(|| {
                        Error::Unexpected("the assertion's bounds are outside the answer".into())
                    })?;
                    return String::from_utf8(raw.to_vec())
                        .map_err(|_| Error::Xml("the SAML assertion is not UTF-8".into()));
                }
            }
            Event::Eof => {
                return Err(Error::Unexpected(
                    "the STS answer ends inside or before the assertion".into(),
                ))
            }
            _ => {}
        }
    }
}

/// A SOAP envelope for `body` whose WS-Security header carries `token` (and a timestamp),
/// as `LoginByToken` takes it.
pub(crate) fn envelope_with_token(body: &Element, token: &SamlToken) -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = xml::to_string(&timestamp("Timestamp", now, Duration::from_secs(5 * 60)));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <soapenv:Envelope xmlns:soapenv=\"{NS_SOAPENV}\">\
         <soapenv:Header><wsse:Security xmlns:wsse=\"{NS_WSSE}\">{stamp}{assertion}</wsse:Security></soapenv:Header>\
         <soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>",
        assertion = token.assertion(),
        body = xml::to_string(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>
<wst:RequestSecurityTokenResponseCollection xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512">
<wst:RequestSecurityTokenResponse><wst:RequestedSecurityToken>
<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="_1" Version="2.0"><saml2:Issuer>sso</saml2:Issuer><saml2:Subject><saml2:NameID Format="upn">backup@VSPHERE.LOCAL</saml2:NameID></saml2:Subject><saml2:Conditions NotBefore="x"/></saml2:Assertion>
</wst:RequestedSecurityToken></wst:RequestSecurityTokenResponse>
</wst:RequestSecurityTokenResponseCollection></S:Body></S:Envelope>"#;

    #[test]
    fn the_assertion_is_kept_byte_for_byte() {
        let token = parse_issue_response(ANSWER.as_bytes()).unwrap();
        assert_eq!(token.subject(), "backup@VSPHERE.LOCAL");
        let start = ANSWER.find("<saml2:Assertion").unwrap();
        let end = ANSWER.find("</saml2:Assertion>").unwrap() + "</saml2:Assertion>".len();
        assert_eq!(token.assertion(), &ANSWER[start..end]);
        assert!(!format!("{token:?}").contains("NameID"));
    }

    #[test]
    fn a_refusal_is_recognised_and_an_answer_without_token_is_an_error() {
        let fault = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault><faultcode xmlns:ns0="http://docs.oasis-open.org/ws-sx/ws-trust/200512">ns0:FailedAuthentication</faultcode><faultstring>Invalid credentials</faultstring></S:Fault></S:Body></S:Envelope>"#;
        let err = parse_issue_response(fault.as_bytes()).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        let empty = r#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><x/></S:Body></S:Envelope>"#;
        let err = parse_issue_response(empty.as_bytes()).unwrap_err();
        assert!(!is_refusal(&err));
        assert!(
            err.to_string().contains("without a SAML assertion"),
            "{err}"
        );
    }

    #[test]
    fn the_issue_request_carries_the_username_token_escaped() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let text = issue_request("a<b", &Secret::new("p&w"), now, TOKEN_LIFETIME);
        let tree = xml::parse(text.as_bytes()).unwrap();
        let header = tree.get("Header").unwrap().get("Security").unwrap();
        assert_eq!(header.name.ns, NS_WSSE);
        assert_eq!(header.text_at("UsernameToken/Username"), Some("a<b"));
        assert_eq!(header.text_at("UsernameToken/Password"), Some("p&w"));
        assert_eq!(
            header.text_at("Timestamp/Created"),
            Some("2027-01-15T08:00:00.000Z")
        );
        let rst = tree
            .get("Body")
            .unwrap()
            .get("RequestSecurityToken")
            .unwrap();
        assert_eq!(rst.name.ns, NS_WST);
        assert!(rst.text_at("KeyType").unwrap().ends_with("/Bearer"));
        assert_eq!(
            rst.text_at("Lifetime/Expires"),
            Some("2027-01-15T08:10:00.000Z")
        );
    }

    #[test]
    fn the_login_envelope_embeds_the_token_in_the_security_header() {
        let token = parse_issue_response(ANSWER.as_bytes()).unwrap();
        let body = Element::vim("LoginByToken");
        let text = envelope_with_token(&body, &token);
        assert!(text.contains(token.assertion()));
        let tree = xml::parse(text.as_bytes()).unwrap();
        let security = tree.get("Header").unwrap().get("Security").unwrap();
        assert_eq!(
            security.text_at("Assertion/Subject/NameID"),
            Some("backup@VSPHERE.LOCAL")
        );
        assert_eq!(
            tree.get("Body").unwrap().children[0].name.local,
            "LoginByToken"
        );
    }
}
