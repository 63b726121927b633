//! up/down, login, faults instead of dropped connections, datastore file transfer, go vet.
mod common;

use std::process::Command;

use common::*;

#[test]
fn up_writes_a_complete_config_and_down_removes_everything() {
    let mut lab = Lab::up();
    let j = lab.json();
    let toml = std::fs::read_to_string(lab.dir.join("safekeeping.toml")).unwrap();
    let url = j["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/sdk"),
        "{url}"
    );
    for needle in [
        format!("url = \"{url}\""),
        format!("password_file = \"{}\"", lab.dir.join("password").display()),
        format!(
            "thumbprint_sha256 = \"{}\"",
            j["thumbprint_sha256"].as_str().unwrap()
        ),
        format!("libdir = \"{}\"", lab.dir.join("vddk").display()),
        "transports = \"nbdssl:nbd\"".to_string(),
        format!("path = \"{}\"", lab.dir.join("repo").display()),
        "lock_wait_seconds = 60".to_string(),
    ] {
        assert!(toml.contains(&needle), "missing {needle} in\n{toml}");
    }
    let sha256 = j["thumbprint_sha256"].as_str().unwrap();
    assert_eq!(sha256.len(), 32 * 3 - 1);
    assert_eq!(sha256, sha256.to_uppercase());
    // The pinned fingerprint is the certificate's.
    let pem = std::fs::read_to_string(lab.dir.join("lab-cert.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(&b64);
    let fp = hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(&der));
    assert_eq!(sha256.replace(':', ""), fp);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.dir.join("password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let conf = std::fs::read_to_string(lab.dir.join("vddk/vddk.conf")).unwrap();
    assert!(
        conf.contains(&format!(
            "fake.datastore.datastore1 = {}",
            lab.datastore("datastore1").display()
        )),
        "{conf}"
    );
    assert!(
        conf.contains(&format!(
            "fake.thumbprint = {}",
            j["thumbprint_sha1"].as_str().unwrap()
        )),
        "{conf}"
    );
    assert!(lab.dir.join("vddk/lib64/libvixDiskLib.so.8").is_file());

    // A second `up` on the same directory refuses clearly.
    let out = Command::new(bin())
        .args(["up", "--dir"])
        .arg(&lab.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already up"));

    lab.run(&["create-vm", "--name", "gone", "--disk", "1M"]);
    let pid: u32 = std::fs::read_to_string(lab.dir.join("vcsim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    lab.run(&["down"]);
    lab.down_done = true;
    assert!(
        !lab.dir.exists(),
        "down leaves {:?}",
        std::fs::read_dir(&lab.dir).map(|d| d.count())
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.contains("lab-vcsim"))
                .unwrap_or(true)
    );
    let (ok, _, err) = lab.try_run(&["status"]);
    assert!(!ok && err.contains("no lab is up"), "{err}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn wrong_password_is_invalid_login_and_unknown_network_is_not_found() {
    let lab = Lab::up();
    let anon = Soap::client(&lab);
    let r = anon.login_as("administrator@vsphere.local", "wrong");
    assert_eq!(r.status, 500);
    assert!(r.body.contains("InvalidLogin"), "{}", r.body);
    let r = anon.login_as(
        "someone@else",
        &std::fs::read_to_string(lab.dir.join("password")).unwrap(),
    );
    assert!(r.body.contains("InvalidLogin"), "{}", r.body);

    let vm = lab
        .run(&["create-vm", "--name", "n", "--disk", "1M"])
        .trim()
        .to_string();
    let s = lab.soap();
    let r = s.call(&format!(
        "<ReconfigVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{vm}</_this><spec>\
         <deviceChange><operation>add</operation><device xsi:type=\"VirtualE1000\"><key>-1</key>\
         <backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>No Such Net</deviceName></backing>\
         </device></deviceChange></spec></ReconfigVM_Task>"
    ));
    assert_eq!(r.status, 500);
    assert!(r.body.contains("NotFoundFault"), "{}", r.body);
    // The connection and the session still work.
    assert!(
        s.property("VirtualMachine", &vm, "name")
            .contains("<val xsi:type=\"xsd:string\">n</val>")
            || s.property("VirtualMachine", &vm, "name")
                .contains(">n</val>")
    );
}

#[test]
fn datastore_files_download_and_upload_over_folder() {
    let lab = Lab::up();
    lab.run(&["create-vm", "--name", "f", "--disk", "1M"]);
    let s = lab.soap();
    let j = lab.json();
    let base = j["url"]
        .as_str()
        .unwrap()
        .trim_end_matches("/sdk")
        .to_string();
    let dc = j["datacenter"].as_str().unwrap();
    let anon = Soap::client(&lab).get(&format!(
        "{base}/folder/f/f.vmx?dcPath={dc}&dsName=datastore1"
    ));
    assert_eq!(anon.status, 401, "datastore files need a session");
    let vmx = s.get(&format!(
        "{base}/folder/f/f.vmx?dcPath={dc}&dsName=datastore1"
    ));
    assert_eq!(vmx.status, 200);
    assert!(vmx.body.contains("displayName = \"f\""), "{}", vmx.body);
    let put = s.put(
        &format!("{base}/folder/up/x.vmx?dcPath={dc}&dsName=datastore2"),
        "displayName = \"x\"\n",
    );
    assert!(put < 300, "PUT status {put}");
    let written = std::fs::read_to_string(lab.datastore("datastore2").join("up/x.vmx")).unwrap();
    assert_eq!(written, "displayName = \"x\"\n");
}

#[test]
fn go_sources_are_vet_clean() {
    let Ok(go) = Command::new("go").arg("version").output() else {
        panic!("the Go toolchain is required (bash scripts/setup.sh installs golang-go)");
    };
    assert!(go.status.success());
    // Share the cache `safekeeping-lab up` builds with (<target>/lab/gocache).
    let cache = std::path::Path::new(bin())
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lab/gocache");
    let out = Command::new("go")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/vcsim"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", &cache)
        .env("CGO_ENABLED", "0")
        .args(["vet", "."])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go vet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fmt = Command::new("gofmt")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/vcsim"))
        .args(["-l", "."])
        .output()
        .unwrap();
    assert!(
        fmt.status.success() && fmt.stdout.is_empty(),
        "gofmt: {}",
        String::from_utf8_lossy(&fmt.stdout)
    );
}

#[test]
fn up_after_a_crash_asks_for_down_first() {
    let mut lab = Lab::up();
    lab.run(&["create-vm", "--name", "c", "--disk", "1M"]);
    let pid = std::fs::read_to_string(lab.dir.join("vcsim.pid")).unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(bin())
        .args(["up", "--dir"])
        .arg(&lab.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("earlier lab") && err.contains("down"), "{err}");
    lab.run(&["down"]);
    let out = Command::new(bin())
        .args(["up", "--dir"])
        .arg(&lab.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.down_done = false;
    assert!(lab.run(&["status"]).contains("\"up\": true"));
}
