//! Loading, initialising and connecting through the fake VDDK: credentials, thumbprints,
//! cookies, transports, first class disks, PrepareForAccess, logging and secrets.

mod common;

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use common::*;
use vddk::{codes, ConnectOptions, ConnectParams, Credentials, Error, OpenFlags, Vddk};

/// Everything `tracing` printed in this process.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogSink;
impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

fn lab() -> &'static (Lab, Vddk) {
    static LAB: OnceLock<(Lab, Vddk)> = OnceLock::new();
    LAB.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| LogSink)
            .init();
        let lab = Lab::new(
            "connect",
            "fake.cookie_accept = true\nfake.fcd.fcd-0001 = [ds1] fcd/fcd.vmdk\n\
             fake.fcd_snapshot.fcd-0001.ss-3 = [ds1] fcd/fcd.vmdk\n",
        );
        let vddk = Vddk::load(&lab.libdir).expect("load fake VDDK");
        assert_eq!(vddk.version().major, 8);
        assert!(vddk.library_path().ends_with("lib64/libvixDiskLib.so.8"));
        vddk.init(Some(&lab.config)).expect("init");
        (lab, vddk)
    })
}

fn options(transports: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        read_only: true,
        snapshot_moref: Some("snapshot-7".into()),
        transports: transports.map(str::to_string),
    }
}

#[test]
fn good_credentials_open_and_are_recorded() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("web01/web01.vmdk", 2048, 0, &[]);
    let conn = vddk.connect(&good_params(), &options(None)).unwrap();
    assert_eq!(conn.transport_mode(), None);
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(disk.transport_mode().as_deref(), Some("nbdssl"));
    assert_eq!(conn.transport_mode().as_deref(), Some("nbdssl"));
    drop(disk);
    let connects: Vec<_> = lab
        .stats_lines()
        .into_iter()
        .filter(|v| v["event"] == "connect" && v["vmx_spec"] == "moref=vm-42")
        .collect();
    let c = connects.last().expect("connect line");
    assert_eq!(c["snapshot"], "snapshot-7");
    assert_eq!(c["server"], SERVER);
    assert_eq!(c["read_only"], true);
    assert!(!lab.events("open", &path).is_empty());
}

#[test]
fn wrong_password_fails_at_open_with_vix_e_fail() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("pw/pw.vmdk", 128, 0, &[]);
    let params = ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: "not-the-password".into(),
        });
    // Like the real library, ConnectEx succeeds and Open is where login fails.
    let conn = vddk.connect(&params, &options(None)).unwrap();
    let err = conn.open(&path, OpenFlags::READ_ONLY).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FAIL));
    assert!(err.to_string().contains("VixDiskLib_Open failed"), "{err}");
    let wrong_user = ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: "root".into(),
            password: PASSWORD.into(),
        });
    let conn = vddk.connect(&wrong_user, &options(None)).unwrap();
    assert_eq!(
        conn.open(&path, OpenFlags::READ_ONLY)
            .unwrap_err()
            .vix_code(),
        Some(codes::VIX_E_FAIL)
    );
}

#[test]
fn wrong_thumbprint_fails_at_open() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("tp/tp.vmdk", 128, 0, &[]);
    let params = ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint("00:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD")
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let conn = vddk.connect(&params, &options(None)).unwrap();
    let err = conn.open(&path, OpenFlags::READ_ONLY).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FAIL));
    // Lower-case hex is the same thumbprint.
    let lower = ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint(THUMBPRINT.to_lowercase())
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let conn = vddk.connect(&lower, &options(None)).unwrap();
    conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    // A malformed thumbprint never reaches VDDK.
    let bad = good_params().thumbprint("AA:BB");
    assert!(matches!(
        vddk.connect(&bad, &options(None)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn session_cookie_login_is_accepted() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("cookie/c.vmdk", 128, 0, &[]);
    let params = ConnectParams::vm("vm-42")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::SessionCookie {
            cookie: "vmware_soap_session=\"52a1\"".into(),
            user: Some(USER.into()),
            key: None,
        });
    let conn = vddk.connect(&params, &options(None)).unwrap();
    conn.open(&path, OpenFlags::READ_ONLY).unwrap();
}

#[test]
fn transport_list_is_honoured() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("tr/tr.vmdk", 128, 0, &[]);
    let conn = vddk
        .connect(&good_params(), &options(Some("nbd:nbdssl")))
        .unwrap();
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(disk.transport_mode().as_deref(), Some("nbd"));
    // The fake has no hotadd: asking only for it fails at Open, as VDDK does.
    let conn = vddk
        .connect(&good_params(), &options(Some("hotadd")))
        .unwrap();
    let err = conn.open(&path, OpenFlags::READ_ONLY).unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FILE_ACCESS_ERROR));
    assert!(matches!(
        vddk.connect(&good_params(), &options(Some("nbd:warp"))),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        vddk.list_transport_modes().unwrap(),
        ["file", "san", "hotadd", "nbdssl", "nbd"]
    );
}

#[test]
fn first_class_disk_connects_by_id() {
    let (lab, vddk) = lab();
    lab.make_disk("fcd/fcd.vmdk", 4096, 0, &[]);
    let params = ConnectParams::first_class_disk("fcd-0001", "datastore-11", Some("ss-3".into()))
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let conn = vddk.connect(&params, &options(None)).unwrap();
    let disk = conn.open("fcd-0001", OpenFlags::READ_ONLY).unwrap();
    assert_eq!(disk.info().capacity_sectors, 4096);
    let line = lab
        .stats_lines()
        .into_iter()
        .rfind(|v| v["event"] == "connect" && v["fcd_id"] == "fcd-0001")
        .expect("connect line for the FCD");
    assert_eq!(line["fcd_datastore"], "datastore-11");
    assert_eq!(line["fcd_snapshot"], "ss-3");
    assert!(line["vmx_spec"].is_null());
}

#[test]
fn prepare_for_access_guard_ends_access() {
    let (lab, vddk) = lab();
    let params = ConnectParams::vm("vm-77")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let guard = vddk.prepare_for_access(&params, "safekeeping").unwrap();
    let count = |e: &str| {
        lab.stats_lines()
            .iter()
            .filter(|v| v["event"] == e && v["vmx_spec"] == "moref=vm-77")
            .count()
    };
    assert_eq!(count("prepare_for_access"), 1);
    assert_eq!(count("end_access"), 0);
    guard.end().unwrap();
    assert_eq!(count("end_access"), 1);
    {
        let _g = vddk.prepare_for_access(&params, "safekeeping").unwrap();
    }
    assert_eq!(count("end_access"), 2);
    let bad = ConnectParams::vm("vm-77")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: "nope".into(),
        });
    let err = vddk.prepare_for_access(&bad, "safekeeping").unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FAIL));
}

#[test]
fn init_is_once_per_process() {
    let (lab, vddk) = lab();
    vddk.init(Some(&lab.config)).unwrap();
    assert!(matches!(
        vddk.init(None),
        Err(Error::AlreadyInitialised { .. })
    ));
    // A second handle on the same library cannot initialise it again.
    let other = Vddk::load(&lab.libdir).unwrap();
    assert!(matches!(
        other.init(Some(&lab.config)),
        Err(Error::AlreadyInitialised { .. })
    ));
    assert!(matches!(
        other.connect(&good_params(), &options(None)),
        Err(Error::NotInitialised)
    ));
}

#[test]
fn vddk_log_lines_reach_tracing_formatted_and_secrets_never_leak() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("log/log.vmdk", 2048, 0, &[]);
    let conn = vddk.connect(&good_params(), &options(None)).unwrap();
    drop(conn.open(&path, OpenFlags::READ_ONLY).unwrap());
    // A rejected login is reported through VDDK's warning callback.
    let wrong = ConnectParams::vm("vm-log")
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: "wrong-for-log".into(),
        });
    let bad = vddk.connect(&wrong, &options(None)).unwrap();
    assert!(bad.open(&path, OpenFlags::READ_ONLY).is_err());
    let text = logs();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains("Cannot open [ds1] log/log.vmdk")
            && l.contains("incorrect user name or password")),
        "{text}"
    );
    assert!(!text.contains("wrong-for-log"));
    // Formatted by vsnprintf from "%s ... (%llu sectors) using transport %s".
    assert!(
        text.contains("Opened '[ds1] log/log.vmdk' (2048 sectors) using transport nbdssl."),
        "{text}"
    );
    assert!(
        text.contains("fake VixDiskLib initialised for API version 8.0"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD));
    let stats = std::fs::read_to_string(&lab.stats).unwrap();
    assert!(!stats.contains(PASSWORD));
    assert!(!format!("{:?}", good_params()).contains(PASSWORD));
}

#[test]
fn remote_connections_need_credentials() {
    let (_, vddk) = lab();
    let params = ConnectParams::vm("vm-1").server(SERVER);
    assert!(matches!(
        vddk.connect(&params, &options(None)),
        Err(Error::InvalidArgument(_))
    ));
}

fn vm_params(moref: &str, password: &str) -> ConnectParams {
    ConnectParams::vm(moref)
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: password.into(),
        })
}

/// Stats events (in order) whose `vmx_spec` is `moref=<moref>`.
fn events_of(lab: &Lab, moref: &str) -> Vec<serde_json::Value> {
    let spec = format!("moref={moref}");
    lab.stats_lines()
        .into_iter()
        .filter(|v| v["vmx_spec"] == spec.as_str())
        .collect()
}

/// VDDK 6.7+ keeps its own state in the internal fields of the struct AllocateConnectParams
/// returns; the fake refuses ConnectEx, PrepareForAccess and EndAccess when they were
/// overwritten, and Open on a connection whose parameters were freed before Disconnect.
#[test]
fn connect_params_keep_vddk_state_and_live_until_disconnect() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("state/state.vmdk", 256, 0, &[]);
    let conn = vddk
        .connect(&vm_params("vm-state", PASSWORD), &options(None))
        .unwrap();
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    assert_eq!(disk.info().capacity_sectors, 256);
    let serial = events_of(lab, "vm-state")[0]["params"].clone();
    assert!(
        serial.is_u64(),
        "the connect params came from AllocateConnectParams"
    );
    let freed = |lab: &Lab| -> Vec<serde_json::Value> {
        lab.events("free_connect_params", "")
            .into_iter()
            .filter(|v| v["params"] == serial)
            .collect()
    };
    // Still in use by the connection: not freed yet.
    assert!(freed(lab).is_empty());
    drop(disk);
    drop(conn);
    let mine: Vec<_> = events_of(lab, "vm-state")
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(mine, ["connect", "disconnect"]);
    // Freed once, after Disconnect, with VDDK's state intact.
    let f = freed(lab);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["intact"], true, "{}", f[0]);
    assert_eq!(f[0]["connections"], 0, "{}", f[0]);
    // What vddk wrote (server, thumbprint, user, password, vmxSpec) was put back first.
    assert_eq!(f[0]["strings_left"], 0, "{}", f[0]);
    // No struct in this process came back damaged.
    assert!(lab
        .events("free_connect_params", "")
        .iter()
        .all(|v| v["intact"] == true));
}

#[test]
fn connect_with_access_prepares_before_connect_and_ends_after_disconnect() {
    let (lab, vddk) = lab();
    let path = lab.make_disk("access/access.vmdk", 256, 0, &[]);
    let conn = vddk
        .connect_with_access(
            &vm_params("vm-access", PASSWORD),
            &options(None),
            vddk::ACCESS_IDENTITY,
        )
        .unwrap();
    let disk = conn.open(&path, OpenFlags::READ_ONLY).unwrap();
    let names = |lab: &Lab| -> Vec<String> {
        events_of(lab, "vm-access")
            .iter()
            .map(|v| v["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(lab), ["prepare_for_access", "connect"]);
    // The connection outlives a dropped handle while its disk is open.
    drop(conn);
    assert_eq!(names(lab), ["prepare_for_access", "connect"]);
    drop(disk);
    assert_eq!(
        names(lab),
        ["prepare_for_access", "connect", "disconnect", "end_access"]
    );
    for v in events_of(lab, "vm-access")
        .iter()
        .filter(|v| v["event"] == "prepare_for_access" || v["event"] == "end_access")
    {
        assert_eq!(v["identity"], "safekeeping");
    }

    // Rejected credentials fail at PrepareForAccess and never connect.
    let err = vddk
        .connect_with_access(
            &vm_params("vm-access-bad", "wrong"),
            &options(None),
            vddk::ACCESS_IDENTITY,
        )
        .unwrap_err();
    assert_eq!(err.vix_code(), Some(codes::VIX_E_FAIL), "{err}");
    assert!(events_of(lab, "vm-access-bad").is_empty());

    // First class disks have no VM to prepare: connected as by `connect`.
    let fcd = ConnectParams::first_class_disk("fcd-0001", "datastore-11", Some("ss-3".into()))
        .server(SERVER)
        .thumbprint(THUMBPRINT)
        .credentials(Credentials::UserPassword {
            user: USER.into(),
            password: PASSWORD.into(),
        });
    let conn = vddk
        .connect_with_access(&fcd, &options(None), vddk::ACCESS_IDENTITY)
        .unwrap();
    drop(conn);
    assert!(!lab
        .stats_lines()
        .iter()
        .any(|v| v["event"] == "prepare_for_access" && v["vmx_spec"].is_null()));
}

/// VMware's EndAccess is not counted: the first one re-enables storage migration of the VM.
/// Connections to one VM at once (several disks) share one PrepareForAccess, and EndAccess
/// runs once, after the last of them; a later session prepares again.
#[test]
fn concurrent_connections_to_one_vm_share_one_prepared_access() {
    let (lab, vddk) = lab();
    let a = lab.make_disk("shared/a.vmdk", 128, 0, &[]);
    let b = lab.make_disk("shared/b.vmdk", 128, 0, &[]);
    let params = vm_params("vm-shared", PASSWORD);
    let names = |lab: &Lab| -> Vec<String> {
        events_of(lab, "vm-shared")
            .iter()
            .map(|v| v["event"].as_str().unwrap().to_string())
            .collect()
    };
    let (first, second) = std::thread::scope(|s| {
        let one = s.spawn(|| {
            let c = vddk
                .connect_with_access(&params, &options(None), vddk::ACCESS_IDENTITY)
                .unwrap();
            let d = c.open(&a, OpenFlags::READ_ONLY).unwrap();
            (c, d)
        });
        let two = s.spawn(|| {
            let c = vddk
                .connect_with_access(&params, &options(None), vddk::ACCESS_IDENTITY)
                .unwrap();
            let d = c.open(&b, OpenFlags::READ_ONLY).unwrap();
            (c, d)
        });
        (one.join().unwrap(), two.join().unwrap())
    });
    assert_eq!(
        names(lab),
        ["prepare_for_access", "connect", "connect"],
        "one PrepareForAccess for both"
    );
    drop(first);
    // The other connection still reads: access must not have ended.
    assert!(!names(lab).contains(&"end_access".to_string()));
    drop(second);
    assert_eq!(
        names(lab),
        [
            "prepare_for_access",
            "connect",
            "connect",
            "disconnect",
            "disconnect",
            "end_access"
        ]
    );
    // A new session prepares again.
    let c = vddk
        .connect_with_access(&params, &options(None), vddk::ACCESS_IDENTITY)
        .unwrap();
    drop(c);
    let n = names(lab);
    assert_eq!(
        &n[n.len() - 4..],
        ["prepare_for_access", "connect", "disconnect", "end_access"]
    );
}
