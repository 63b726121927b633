//! Starts a private lab (`safekeeping-lab up`) for one test and stops it when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vim_client::{Client, ClientOptions, MoRef, Secret, Tls};

/// A running lab in a temporary directory.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub info: serde_json::Value,
}

/// The `safekeeping-lab` binary built by `cargo build -p safekeeping-lab` (CI builds the whole
/// workspace before testing). It sits beside this test's `deps` directory, unless
/// `SAFEKEEPING_LAB_BIN` names another one.
fn lab_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SAFEKEEPING_LAB_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps");
    let bin = profile_dir.join("safekeeping-lab");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p safekeeping-lab` first",
        bin.display()
    );
    bin
}

impl Lab {
    /// Starts a lab; panics with the lab's output and log if it cannot start.
    pub fn up() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let lab_dir = dir.path().join("lab");
        let out = Command::new(lab_binary())
            .args(["up", "--dir"])
            .arg(&lab_dir)
            .output()
            .expect("run safekeeping-lab up");
        if !out.status.success() {
            let log = std::fs::read_to_string(lab_dir.join("vcsim.log")).unwrap_or_default();
            panic!(
                "safekeeping-lab up failed ({}):\n{}\n{}\nlog:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lab_dir.join("lab.json")).expect("lab.json"))
                .expect("lab.json is JSON");
        Lab { dir, info }
    }

    pub fn lab_dir(&self) -> PathBuf {
        self.dir.path().join("lab")
    }

    pub fn str(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("lab.json has no {key}"))
            .to_owned()
    }

    pub fn url(&self) -> String {
        self.str("url")
    }

    pub fn user(&self) -> String {
        self.str("user")
    }

    pub fn password(&self) -> Secret {
        Secret::from_file(Path::new(&self.str("password_file"))).expect("password file")
    }

    pub fn options(&self, tls: Tls) -> ClientOptions {
        let mut o = ClientOptions::new(self.url(), tls);
        o.timeout = Duration::from_secs(30);
        o.task_timeout = Duration::from_secs(120);
        o
    }

    pub fn pinned(&self) -> Tls {
        Tls::PinnedSha256(self.str("thumbprint_sha256"))
    }

    /// A logged-in client with the pinned certificate.
    pub async fn client(&self) -> Client {
        let c = Client::connect(&self.options(self.pinned()))
            .await
            .expect("connect to the lab");
        c.login(&self.user(), &self.password())
            .await
            .expect("login");
        c
    }

    /// Runs a `safekeeping-lab` subcommand against this lab and returns its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(lab_binary());
        cmd.arg(args[0])
            .arg("--dir")
            .arg(self.lab_dir())
            .args(&args[1..]);
        let out = cmd.output().expect("run safekeeping-lab");
        assert!(
            out.status.success(),
            "safekeeping-lab {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// Creates a powered-on VM and returns its reference.
    pub fn create_vm(&self, name: &str, extra: &[&str]) -> MoRef {
        let mut args = vec!["create-vm", "--name", name];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let value = out.lines().last().unwrap_or_default().trim();
        let value = value.rsplit(':').next().unwrap_or(value);
        MoRef::new("VirtualMachine", value)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_binary())
            .args(["down", "--dir"])
            .arg(self.lab_dir())
            .output();
    }
}
