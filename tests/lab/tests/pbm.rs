//! The lab's storage policy service (SPBM at `/pbm/sdk`) as pyVmomi's own PBM bindings see it:
//! govmomi's simulated policies by name, the policies `set-policy` associated with a VM home
//! and a disk answered by `PbmQueryAssociatedProfiles`, and a call with a bogus
//! `vcSessionCookie` refused with `NotAuthenticated` (the header alone authenticates).
mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyvmomi/pbm_policies.py");

#[test]
fn pyvmomi_reads_policies_and_associations() {
    let lab = Lab::up();
    lab.run(&["create-vm", "--name", "p1", "--disk", "1M"]);
    lab.run(&[
        "set-policy",
        "--vm",
        "p1",
        "--policy",
        "VVol No Requirements Policy",
    ]);
    lab.run(&[
        "set-policy",
        "--vm",
        "p1",
        "--disk",
        "0",
        "--policy",
        "vSAN Default Storage Policy",
    ]);
    let (ok, _, err) = lab.try_run(&["set-policy", "--vm", "p1", "--policy", "Gold"]);
    assert!(!ok && err.contains("vSAN Default Storage Policy"), "{err}");

    let python = Command::new(bin())
        .args(["which", "python"])
        .output()
        .unwrap();
    assert!(python.status.success(), "the lab's Python venv is missing");
    let out = Command::new(String::from_utf8_lossy(&python.stdout).trim())
        .arg(SCRIPT)
        .arg(lab.dir.join("lab.json"))
        .arg("p1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyVmomi PBM failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let policies = r["policies"].as_array().unwrap();
    assert!(policies.len() >= 2, "{r}");
    assert!(
        policies.contains(&"vSAN Default Storage Policy".into()),
        "{r}"
    );
    assert_eq!(
        r["associated"]["virtualMachine"],
        serde_json::json!(["VVol No Requirements Policy"]),
        "{r}"
    );
    assert_eq!(
        r["associated"]["virtualDiskId"],
        serde_json::json!(["vSAN Default Storage Policy"]),
        "{r}"
    );
    assert_eq!(r["bogus_session"], "NotAuthenticated", "{r}");
}
