//! Canned SOAP answers from a local HTTP server: the VSLM endpoint (which the lab does not
//! serve), task timeouts and HTTP-level errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vim_client::xml::{self, Element, NS_SOAPENV, NS_VSLM};
use vim_client::*;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    soap_action: String,
    cookie: Option<String>,
    method: String,
    body: Element,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn envelope(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"#
    )
}

/// The canned answer to a method, by its local name; `polls` counts VslmQueryInfo calls.
fn answer(request: &Element, polls: usize) -> (u16, Vec<(&'static str, String)>, String) {
    let ok = |s: &str| (200, Vec::new(), envelope(s));
    let vm = |id: u32| {
        format!(
            r#"<objects><obj type="VirtualMachine">vm-{id}</obj><propSet><name>name</name><val xsi:type="xsd:string">vm{id}</val></propSet></objects>"#
        )
    };
    let page = |name: &str, ids: &[u32], token: Option<&str>| {
        let objects: String = ids.iter().map(|i| vm(*i)).collect();
        let token = token
            .map(|t| format!("<token>{t}</token>"))
            .unwrap_or_default();
        ok(&format!(
            r#"<{name}Response xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema"><returnval>{token}{objects}</returnval></{name}Response>"#
        ))
    };
    let method = request.local();
    let is_vm_query = request.text_at("specSet/propSet/type") == Some("VirtualMachine");
    match method {
        "RetrievePropertiesEx" if is_vm_query => page("RetrievePropertiesEx", &[1, 2], Some("t1")),
        "ContinueRetrievePropertiesEx" if request.text_at("token") == Some("t1") => {
            page("ContinueRetrievePropertiesEx", &[3], Some("t2"))
        }
        "ContinueRetrievePropertiesEx" => page("ContinueRetrievePropertiesEx", &[4], None),
        "CreateContainerView" => ok(
            r#"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">session[1]view</returnval></CreateContainerViewResponse>"#,
        ),
        "DestroyView" => ok(r#"<DestroyViewResponse xmlns="urn:vim25"></DestroyViewResponse>"#),
        "RetrieveServiceContent" => ok(
            r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><viewManager type="ViewManager">ViewManager</viewManager><about><fullName>mock</fullName><apiType>VirtualCenter</apiType><apiVersion>8.0.2.0</apiVersion></about><sessionManager type="SessionManager">SessionManager</sessionManager></returnval></RetrieveServiceContentResponse>"#,
        ),
        "Login" => (
            200,
            vec![(
                "Set-Cookie",
                "vmware_soap_session=\"52abc\"; Path=/; HttpOnly; Secure;".into(),
            )],
            envelope(
                r#"<LoginResponse xmlns="urn:vim25"><returnval><key>k</key><userName>u</userName></returnval></LoginResponse>"#,
            ),
        ),
        "RetrieveContent" => ok(
            r#"<RetrieveContentResponse xmlns="urn:vslm"><returnval><aboutInfo><name>VSLM</name></aboutInfo><sessionManager type="VslmSessionManager">SessionManager</sessionManager><vStorageObjectManager type="VslmVStorageObjectManager">VStorageObjectManager</vStorageObjectManager></returnval></RetrieveContentResponse>"#,
        ),
        "VslmCreateSnapshot_Task" => ok(
            r#"<VslmCreateSnapshot_TaskResponse xmlns="urn:vslm"><returnval type="VslmTask">task-7</returnval></VslmCreateSnapshot_TaskResponse>"#,
        ),
        "VslmDeleteSnapshot_Task" => ok(
            r#"<VslmDeleteSnapshot_TaskResponse xmlns="urn:vslm"><returnval type="VslmTask">task-8</returnval></VslmDeleteSnapshot_TaskResponse>"#,
        ),
        "VslmQueryInfo" if polls < 2 => ok(
            r#"<VslmQueryInfoResponse xmlns="urn:vslm"><returnval><key>task-7</key><task type="VslmTask">task-7</task><state>running</state></returnval></VslmQueryInfoResponse>"#,
        ),
        "VslmQueryInfo" => ok(
            r#"<VslmQueryInfoResponse xmlns="urn:vslm" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><returnval><key>task-7</key><task type="VslmTask">task-7</task><state>success</state><result xsi:type="ID"><id>snap-1</id></result></returnval></VslmQueryInfoResponse>"#,
        ),
        // A server whose answer skips 64 KiB: the gap must not count as unchanged.
        "VslmQueryChangedDiskAreas" if request.text_at("id/id") == Some("disk-gap") => ok(
            r#"<VslmQueryChangedDiskAreasResponse xmlns="urn:vslm"><returnval><startOffset>65536</startOffset><length>983040</length><changedArea><start>131072</start><length>65536</length></changedArea></returnval></VslmQueryChangedDiskAreasResponse>"#,
        ),
        "VslmQueryChangedDiskAreas" => ok(
            r#"<VslmQueryChangedDiskAreasResponse xmlns="urn:vslm"><returnval><startOffset>0</startOffset><length>1048576</length><changedArea><start>65536</start><length>65536</length></changedArea></returnval></VslmQueryChangedDiskAreasResponse>"#,
        ),
        "VslmRetrieveSnapshotInfo" => (
            500,
            Vec::new(),
            envelope(
                r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The object or item referred to could not be found.</faultstring><detail><NotFoundFault xmlns="urn:vslm" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="NotFound"></NotFoundFault></detail></soapenv:Fault>"#,
            ),
        ),
        "RetrievePropertiesEx" => ok(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><returnval><objects><obj type="Task">task-1</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>task-1</key><descriptionId>VirtualMachine.createSnapshot</descriptionId><state>running</state></val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        ),
        "Broken" => (502, Vec::new(), "<html>bad gateway</html>".into()),
        "Huge" => ok(&format!(
            r#"<HugeResponse xmlns="urn:vim25"><returnval>{}</returnval></HugeResponse>"#,
            "x".repeat(64 * 1024)
        )),
        _ => (500, Vec::new(), "not soap".into()),
    }
}

async fn serve(listener: TcpListener, log: Log) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let mut chunk = [0u8; 4096];
                let n = match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let len: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() < end + 4 + len {
                    continue;
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                if path.starts_with("/folder/") {
                    // The first datastore file request finds the session expired.
                    let (status, text) = {
                        let mut l = log.lock().unwrap();
                        let earlier = l.iter().filter(|s| s.path.starts_with("/folder/")).count();
                        l.push(Seen {
                            path: path.clone(),
                            soap_action: String::new(),
                            cookie: header("cookie"),
                            method: head.split_whitespace().next().unwrap_or("").to_owned(),
                            body: Element::vim("file").attr("len", body.len().to_string()),
                        });
                        match earlier {
                            0 => (401, String::new()),
                            _ => (200, "file-bytes".to_owned()),
                        }
                    };
                    if status == 200 && path.contains("announced-flat.vmdk") {
                        // Announces a whole disk; the client must give up on the header alone.
                        let head = "HTTP/1.1 200 X\r\nContent-Length: 10737418240\r\n\r\n";
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&[0u8; 4096]).await;
                        return;
                    }
                    if status == 200 && path.contains("chunked-flat.vmdk") {
                        // No Content-Length: 1000 chunks of 1000 bytes, unless the client hangs
                        // up first.
                        let head = "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n";
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("3e8\r\n{}\r\n", "d".repeat(1000));
                        for _ in 0..1000 {
                            if sock.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        let _ = sock.write_all(b"0\r\n\r\n").await;
                        continue;
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                let envelope = xml::parse(&body).expect("client sent well-formed XML");
                let method = envelope
                    .children
                    .iter()
                    .find(|c| c.name.ns == NS_SOAPENV && c.local() == "Body")
                    .and_then(|b| b.children.first())
                    .cloned()
                    .expect("a body");
                let polls = {
                    let mut l = log.lock().unwrap();
                    let polls = l.iter().filter(|s| s.method == "VslmQueryInfo").count();
                    l.push(Seen {
                        path,
                        soap_action: header("soapaction").unwrap_or_default(),
                        cookie: header("cookie"),
                        method: method.local().to_owned(),
                        body: envelope,
                    });
                    polls
                };
                let (status, headers, text) = answer(&method, polls);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n",
                    text.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&text);
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn start() -> (Client, Log) {
    start_with(|_| {}).await
}

async fn start_with(adjust: impl FnOnce(&mut ClientOptions)) -> (Client, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    tokio::spawn(serve(listener, log.clone()));
    let mut options = ClientOptions::new(format!("http://127.0.0.1:{port}"), Tls::Insecure);
    options.allow_http = true;
    options.task_timeout = Duration::from_millis(700);
    options.timeout = Duration::from_secs(5);
    adjust(&mut options);
    let client = Client::connect(&options).await.unwrap();
    client.login("u", &Secret::new("p")).await.unwrap();
    (client, log)
}

fn body_of(seen: &Seen) -> &Element {
    seen.body
        .children
        .iter()
        .find(|c| c.local() == "Body")
        .and_then(|b| b.children.first())
        .unwrap()
}

#[tokio::test]
async fn vslm_calls_carry_the_session_and_namespace_and_poll_tasks() {
    let (client, log) = start().await;
    assert_eq!(client.session_cookie().as_deref(), Some("\"52abc\""));
    assert_eq!(
        client.session_cookie_header().as_deref(),
        Some("vmware_soap_session=\"52abc\"")
    );
    let us = client.user_session().unwrap();
    assert_eq!((us.key.as_str(), us.user_name.as_str()), ("k", "u"));
    let vslm = client.vslm().await.unwrap();
    let snap = vslm.create_snapshot("disk-1", "nightly").await.unwrap();
    assert_eq!(snap, "snap-1");
    let areas = vslm
        .changed_disk_areas("disk-1", "snap-1", 1 << 20, "*")
        .await
        .unwrap();
    assert_eq!(
        areas,
        vec![DiskArea {
            start: 65536,
            length: 65536
        }]
    );
    let err = vslm.snapshots("disk-1").await.unwrap_err();
    assert_eq!(err.fault_kind(), Some(&FaultKind::NotFound), "{err}");

    let log = log.lock().unwrap().clone();
    let vslm_calls: Vec<_> = log.iter().filter(|s| s.path == "/vslm/sdk").collect();
    assert!(vslm_calls.len() >= 6, "{vslm_calls:?}");
    for s in &vslm_calls {
        assert_eq!(s.soap_action, "urn:vslm/");
        assert_eq!(s.cookie.as_deref(), Some("vmware_soap_session=\"52abc\""));
        let header = s
            .body
            .children
            .iter()
            .find(|c| c.local() == "Header")
            .unwrap();
        assert_eq!(header.text_at("vcSessionCookie"), Some("52abc"));
        let method = body_of(s);
        assert_eq!(method.name.ns, NS_VSLM, "{}", method.local());
        for c in &method.children {
            assert_eq!(c.name.ns, NS_VSLM, "{} in {}", c.local(), method.local());
        }
    }
    let create = vslm_calls
        .iter()
        .map(|s| body_of(s))
        .find(|b| b.local() == "VslmCreateSnapshot_Task")
        .unwrap();
    assert_eq!(create.text_at("_this"), Some("VStorageObjectManager"));
    assert_eq!(create.text_at("id/id"), Some("disk-1"));
    assert_eq!(create.text_at("description"), Some("nightly"));
    let polls = vslm_calls
        .iter()
        .filter(|s| body_of(s).local() == "VslmQueryInfo")
        .count();
    assert_eq!(polls, 3, "polled until success");
    let vim_calls: Vec<_> = log.iter().filter(|s| s.path == "/sdk").collect();
    // Once the server has told its API version, VIM calls are made in that version.
    assert_eq!(body_of(vim_calls[0]).local(), "RetrieveServiceContent");
    assert!(vim_calls[1..]
        .iter()
        .all(|s| s.soap_action == "urn:vim25/8.0.2.0"));
    let login = vim_calls
        .iter()
        .map(|s| body_of(s))
        .find(|b| b.local() == "Login")
        .unwrap();
    assert_eq!(login.text_at("password"), Some("p"));
}

#[tokio::test]
async fn task_wait_times_out() {
    let (client, _log) = start().await;
    let started = std::time::Instant::now();
    let err = client
        .wait_for_task(&MoRef::new("Task", "task-1"), Duration::from_millis(600))
        .await
        .unwrap_err();
    match &err {
        Error::Timeout { what, after } => {
            assert!(what.contains("VirtualMachine.createSnapshot"), "{what}");
            assert_eq!(*after, Duration::from_millis(600));
        }
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn non_soap_errors_are_http_errors() {
    let (client, _log) = start().await;
    let err = client.call(Element::vim("Broken")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Http { status: 502, body, .. } if body.contains("bad gateway")),
        "{err}"
    );
    let err = client.call(Element::vim("Unknown")).await.unwrap_err();
    assert!(matches!(&err, Error::Http { status: 500, .. }), "{err}");
}

#[tokio::test]
async fn plain_http_is_refused_before_anything_is_sent_unless_allowed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::default();
    tokio::spawn(serve(listener, log.clone()));
    let url = format!("http://127.0.0.1:{port}");
    // Tls::Insecure (no certificate checks) does not imply plain HTTP.
    let err = Client::connect(&ClientOptions::new(url.clone(), Tls::Insecure))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PlainHttp { url: u } if *u == url),
        "{err}"
    );
    assert!(err.to_string().contains("password"), "{err}");
    assert!(log.lock().unwrap().is_empty(), "nothing reached the server");
    let mut options = ClientOptions::new(url, Tls::Insecure);
    options.allow_http = true;
    Client::connect(&options).await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = Client::connect(&ClientOptions::new(
        format!("https://127.0.0.1:{port}"),
        Tls::Insecure,
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Transport { url, .. } if url.contains(&port.to_string())),
        "{err}"
    );
}

#[tokio::test]
async fn property_retrieval_follows_continuation_tokens() {
    let (client, log) = start().await;
    let vms = client.list_vms().await.unwrap();
    let names: Vec<_> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec!["vm1", "vm2", "vm3", "vm4"]);
    let log = log.lock().unwrap();
    let methods: Vec<_> = log.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        &methods[2..],
        &[
            "CreateContainerView",
            "RetrievePropertiesEx",
            "ContinueRetrievePropertiesEx",
            "ContinueRetrievePropertiesEx",
            "DestroyView"
        ]
    );
    let tokens: Vec<_> = log
        .iter()
        .filter(|s| s.method == "ContinueRetrievePropertiesEx")
        .map(|s| body_of(s).text_at("token").unwrap().to_owned())
        .collect();
    assert_eq!(tokens, vec!["t1", "t2"]);
}

#[tokio::test]
async fn datastore_files_log_in_again_on_401() {
    let (client, log) = start().await;
    let file = DatastorePath::new("ds1", "vm/a b.vmx");
    let bytes = client.read_datastore_file("DC0", &file).await.unwrap();
    assert_eq!(bytes, b"file-bytes");
    client
        .write_datastore_file("DC0", &file, b"12345".to_vec())
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let logins = log.iter().filter(|s| s.method == "Login").count();
    assert_eq!(logins, 2, "one login, one re-login after the 401");
    let files: Vec<_> = log
        .iter()
        .filter(|s| s.path.starts_with("/folder/"))
        .collect();
    assert_eq!(files.len(), 3);
    assert_eq!(files[0].path, "/folder/vm/a%20b.vmx?dcPath=DC0&dsName=ds1");
    assert!(files
        .iter()
        .all(|f| f.cookie.as_deref() == Some("vmware_soap_session=\"52abc\"")));
    assert_eq!(files[2].method, "PUT");
    assert_eq!(files[2].body.attribute("len"), Some("5"));
}

#[tokio::test]
async fn datastore_files_over_the_limit_are_refused_before_or_while_reading() {
    let (client, _log) = start_with(|o| o.max_file_bytes = 64 * 1024).await;
    assert_eq!(client.max_file_bytes(), 64 * 1024);
    // The first file request meets the mock's 401 and logs in again; small files still read.
    let small = DatastorePath::new("ds1", "vm/vm.vmx");
    assert_eq!(
        client.read_datastore_file("DC0", &small).await.unwrap(),
        b"file-bytes"
    );
    // A `.vmx` whose nvram names a flat disk: refused from its Content-Length.
    let announced = DatastorePath::new("ds1", "vm/announced-flat.vmdk");
    let started = std::time::Instant::now();
    let err = client
        .read_datastore_file("DC0", &announced)
        .await
        .unwrap_err();
    match &err {
        Error::TooLarge {
            what,
            limit,
            announced,
        } => {
            assert!(what.contains("[ds1] vm/announced-flat.vmdk"), "{what}");
            assert_eq!(*limit, 64 * 1024);
            assert_eq!(*announced, Some(10_737_418_240));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    assert!(err.to_string().contains("65536 bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // No Content-Length: the stream is cut at the limit (the server would send 1 MB).
    let chunked = DatastorePath::new("ds1", "vm/chunked-flat.vmdk");
    let err = client
        .read_datastore_file("DC0", &chunked)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::TooLarge {
                announced: None,
                limit: 65536,
                ..
            }
        ),
        "{err}"
    );
    // Downloads to a file obey the same limit and leave nothing behind.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("nvram");
    let err = client
        .download_datastore_file("DC0", &chunked, &dest)
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::TooLarge { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // An explicit, larger limit reads the whole stream.
    let all = client
        .read_datastore_file_limited("DC0", &chunked, 2_000_000)
        .await
        .unwrap();
    assert_eq!(all.len(), 1_000_000);
}

#[tokio::test]
async fn soap_responses_over_the_limit_are_refused() {
    let (client, _log) = start_with(|o| o.max_response_bytes = 16 * 1024).await;
    let err = client.call(Element::vim("Huge")).await.unwrap_err();
    match &err {
        Error::TooLarge {
            what,
            limit,
            announced,
        } => {
            assert!(what.contains("Huge"), "{what}");
            assert_eq!(*limit, 16 * 1024);
            assert!(announced.is_some_and(|n| n > 64 * 1024));
        }
        other => panic!("expected TooLarge, got {other}"),
    }
    // The default limit reads it.
    let (client, _log) = start().await;
    client.call(Element::vim("Huge")).await.unwrap();
}

#[tokio::test]
async fn changed_areas_with_a_gap_are_refused_not_read_as_unchanged() {
    let (client, _log) = start().await;
    let vslm = client.vslm().await.unwrap();
    let err = vslm
        .changed_disk_areas("disk-gap", "snap-1", 1 << 20, "52 aa/3")
        .await
        .unwrap_err();
    match &err {
        Error::ChangedAreas(e) => {
            assert_eq!(e.problem, ChangedAreasProblem::Gap);
            assert_eq!((e.asked, e.reply_start), (0, 65536));
        }
        other => panic!("expected ChangedAreas, got {other}"),
    }
    // Not a fault: the caller must not mistake it for a refused change id.
    assert!(err.fault_kind().is_none());
}
