//! Shared helpers for the lab's integration tests: a lab in a temporary directory, a
//! tiny SOAP client written here (no dependency on vim-client), and an independent
//! implementation of the guest data generator.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A lab started with `safekeeping-lab up` on a temporary directory; `down` on drop.
pub struct Lab {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub down_done: bool,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_safekeeping-lab")
}

impl Lab {
    pub fn up() -> Lab {
        let tmp = tempfile::Builder::new()
            .prefix("sk-lab-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("lab");
        let out = Command::new(bin())
            .args(["up", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Lab {
            dir,
            _tmp: tmp,
            down_done: false,
        }
    }

    /// Runs a subcommand with `--dir`, returning (success, stdout, stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a subcommand that must succeed; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_run(args);
        assert!(ok, "safekeeping-lab {args:?} failed: {stderr}");
        stdout
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("lab.json")).unwrap()).unwrap()
    }

    pub fn datastore(&self, name: &str) -> PathBuf {
        PathBuf::from(self.json()["datastores"][name].as_str().unwrap())
    }

    pub fn vm_info(&self, vm: &str) -> serde_json::Value {
        serde_json::from_str(&self.run(&["vm-info", "--vm", vm])).unwrap()
    }

    pub fn digest(&self, vm: &str, disk: usize) -> String {
        self.run(&["disk-digest", "--vm", vm, "--disk", &disk.to_string()])
            .trim()
            .to_string()
    }

    pub fn digest_path(&self, ds_path: &str) -> String {
        self.run(&["disk-digest", "--path", ds_path])
            .trim()
            .to_string()
    }

    pub fn write(&self, vm: &str, disk: usize, offset: u64, len: u64, seed: u64) {
        self.run(&[
            "guest-write",
            "--vm",
            vm,
            "--disk",
            &disk.to_string(),
            "--offset",
            &offset.to_string(),
            "--len",
            &len.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
    }

    pub fn soap(&self) -> Soap {
        Soap::login(self)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("vcsim.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- vcsim.log (last lines, newest first)\n{}",
                tail.join("\n")
            );
        }
        if !self.down_done {
            let _ = Command::new(bin())
                .args(["down", "--dir"])
                .arg(&self.dir)
                .output();
        }
    }
}

/// The guest data generator, written again from its description in docs/lab.md:
/// byte i of a write is byte i of SHA-256(le64(seed) || le64(0)) || SHA-256(.. le64(1)) || ...
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut k = 0u64;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(k.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        k += 1;
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A minimal SOAP session against the lab's /sdk.
pub struct Soap {
    url: String,
    http: reqwest::blocking::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(self) -> String {
        assert_eq!(self.status, 200, "SOAP call failed: {}", self.body);
        self.body
    }
}

impl Soap {
    pub fn client(lab: &Lab) -> Soap {
        let info = lab.json();
        let pem = std::fs::read(lab.dir.join("lab-cert.pem")).unwrap();
        let http = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .cookie_store(true)
            .build()
            .unwrap();
        Soap {
            url: info["url"].as_str().unwrap().to_string(),
            http,
        }
    }

    pub fn login(lab: &Lab) -> Soap {
        let s = Soap::client(lab);
        let user = lab.json()["user"].as_str().unwrap().to_string();
        let password = std::fs::read_to_string(lab.dir.join("password")).unwrap();
        s.login_as(&user, &password).ok();
        s
    }

    pub fn login_as(&self, user: &str, password: &str) -> Reply {
        self.call(&format!(
            "<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">SessionManager</_this>\
             <userName>{}</userName><password>{}</password></Login>",
            xml_escape(user),
            xml_escape(password)
        ))
    }

    pub fn call(&self, body: &str) -> Reply {
        self.call_at(&self.url.clone(), body)
    }

    /// A SOAP call to the VSLM endpoint (`/vslm/sdk`) with the same session.
    pub fn vslm(&self, body: &str) -> Reply {
        self.call_at(&self.url.replace("/sdk", "/vslm/sdk"), body)
    }

    fn call_at(&self, url: &str, body: &str) -> Reply {
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\
             <soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        );
        let res = self
            .http
            .post(url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/7.0")
            .body(envelope)
            .send()
            .unwrap();
        Reply {
            status: res.status().as_u16(),
            body: res.text().unwrap(),
        }
    }

    /// Calls a *_Task method and waits for its result; returns the task's info XML.
    pub fn task(&self, body: &str) -> String {
        let reply = self.call(body).ok();
        let task = between(&reply, "<returnval type=\"Task\">", "<").expect("task moref");
        for _ in 0..200 {
            let info = self.property("Task", &task, "info");
            if info.contains("<state>success</state>") || info.contains("<state>error</state>") {
                return info;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("task {task} did not finish");
    }

    /// RetrievePropertiesEx of one property of one object; returns the reply body.
    pub fn property(&self, kind: &str, moref: &str, path: &str) -> String {
        self.call(&format!(
            "<RetrievePropertiesEx xmlns=\"urn:vim25\"><_this type=\"PropertyCollector\">propertyCollector</_this>\
             <specSet><propSet><type>{kind}</type><pathSet>{path}</pathSet></propSet>\
             <objectSet><obj type=\"{kind}\">{moref}</obj></objectSet></specSet><options/></RetrievePropertiesEx>"
        ))
        .ok()
    }
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The text between the first `start` and the next `end` after it.
pub fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(s[i..j].to_string())
}

/// Every text between `start` and `end`, in order.
pub fn all_between(s: &str, start: &str, end: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(start) {
        let after = &rest[i + start.len()..];
        let Some(j) = after.find(end) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + end.len()..];
    }
    out
}

/// Local path of a datastore path in this lab.
pub fn local(lab: &Lab, ds_path: &str) -> PathBuf {
    let rest = ds_path.strip_prefix('[').unwrap();
    let (ds, file) = rest.split_once(']').unwrap();
    lab.datastore(ds).join(file.trim())
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

impl Soap {
    /// GET with the session cookie.
    pub fn get(&self, url: &str) -> Reply {
        let res = self.http.get(url).send().unwrap();
        Reply {
            status: res.status().as_u16(),
            body: res.text().unwrap(),
        }
    }

    /// PUT with the session cookie; returns the status.
    pub fn put(&self, url: &str, body: &str) -> u16 {
        self.http
            .put(url)
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Builds the fake VDDK in its own target directory (as vddk's tests do: a cdylib's
/// file name carries no hash, so `target/debug/libvixDiskLib.so` may be another build's)
/// and lays it out as `<root>/lib64/libvixDiskLib.so.8`.
pub fn fresh_fake(root: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target = profile.parent().unwrap().join("fake-vddk");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "fake-vixdisklib", "--target-dir"])
        .arg(&target);
    let release = profile.ends_with("release");
    if release {
        cmd.arg("--release");
    }
    assert!(cmd.status().unwrap().success(), "building the fake VDDK");
    let lib = target
        .join(if release { "release" } else { "debug" })
        .join("libvixDiskLib.so");
    let lib64 = root.join("lib64");
    std::fs::create_dir_all(&lib64).unwrap();
    std::fs::copy(lib, lib64.join("libvixDiskLib.so.8")).unwrap();
    root.to_path_buf()
}
