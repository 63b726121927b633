//! `safekeeping doctor`: passes on a lab where everything is in place, and for each missing
//! piece fails (exit 1) naming it with its fix: no repository yet, a privilege the vCenter
//! user lacks, a wrong password, VDDK not where the configuration says, an unreadable BIOS
//! uuid. `config check` is the same check.

use safekeeping_e2e::{Lab, Run};

fn doctor(lab: &Lab, config: &std::path::Path, uuid_file: &std::path::Path) -> Run {
    lab.sk_with(
        &["doctor", "--json"],
        config,
        &[("SAFEKEEPING_PRODUCT_UUID_FILE", uuid_file.to_str().unwrap())],
    )
}

fn check<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {json:#}"))
}

fn failed_checks(json: &serde_json::Value) -> Vec<String> {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn doctor_passes_when_ready_and_names_each_missing_piece_with_its_fix() {
    let lab = Lab::up();
    let uuid = lab.dir().join("product_uuid");
    std::fs::write(&uuid, "4215A0E0-1234-5678-9ABC-DEF012345678\n").unwrap();
    let config = lab.config();

    // Before `repo init`: only the repository fails, and the fix says how to create it.
    let r = doctor(&lab, &config, &uuid).expect_code(1);
    let j = r.json();
    assert_eq!(j["ready"], false);
    assert_eq!(failed_checks(&j), ["repository"], "{j:#}");
    assert!(check(&j, "repository")["fix"]
        .as_str()
        .unwrap()
        .contains("repo init"));

    lab.sk(&["repo", "init"]).ok();
    let r = doctor(&lab, &config, &uuid).ok();
    let j = r.json();
    assert_eq!(j["ready"], true, "{j:#}");
    for name in [
        "configuration",
        "repository",
        "vcenter",
        "privileges",
        "vddk",
    ] {
        assert_eq!(check(&j, name)["status"], "ok", "{name}: {j:#}");
    }
    assert!(check(&j, "vddk")["detail"]
        .as_str()
        .unwrap()
        .contains("VDDK"));
    assert!(check(&j, "machine uuid")["detail"]
        .as_str()
        .unwrap()
        .contains("4215A0E0"));
    // The text form says so too, and `config check` is the same check.
    let text = lab
        .sk_with(
            &["config", "check"],
            &config,
            &[("SAFEKEEPING_PRODUCT_UUID_FILE", uuid.to_str().unwrap())],
        )
        .ok();
    assert!(
        text.stdout.contains("ready for the first backup"),
        "{}",
        text.stdout
    );

    // A role without snapshot creation: the privilege is named, for backup.
    lab.lab(&[
        "knobs",
        "--deny-privileges",
        "VirtualMachine.State.CreateSnapshot,Network.Assign",
    ])
    .ok();
    let j = doctor(&lab, &config, &uuid).expect_code(1).json();
    assert_eq!(failed_checks(&j), ["privileges"], "{j:#}");
    let detail = check(&j, "privileges")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("for backup: VirtualMachine.State.CreateSnapshot")
            && detail.contains("for restore: Network.Assign"),
        "{detail}"
    );
    lab.lab(&["knobs", "--deny-privileges", ""]).ok();
    doctor(&lab, &config, &uuid).ok();

    // A wrong password: the login fails, and no privilege check is attempted on top.
    let wrong = lab.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let bad_login = lab.dir().join("bad-login.toml");
    let password_line = text
        .lines()
        .find(|l| l.starts_with("password_file"))
        .unwrap();
    std::fs::write(
        &bad_login,
        text.replace(
            password_line,
            &format!("password_file = {:?}", wrong.to_str().unwrap()),
        ),
    )
    .unwrap();
    let j = doctor(&lab, &bad_login, &uuid).expect_code(1).json();
    assert_eq!(failed_checks(&j), ["vcenter"], "{j:#}");
    assert!(check(&j, "vcenter")["detail"]
        .as_str()
        .unwrap()
        .contains("rejected the login"));
    assert!(j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "privileges"));

    // VDDK not where the configuration says.
    let libdir_line = text.lines().find(|l| l.starts_with("libdir")).unwrap();
    let no_vddk = lab.dir().join("no-vddk.toml");
    std::fs::write(
        &no_vddk,
        text.replace(libdir_line, "libdir = \"/nonexistent/vmware-vix-disklib\""),
    )
    .unwrap();
    let j = doctor(&lab, &no_vddk, &uuid).expect_code(1).json();
    assert_eq!(failed_checks(&j), ["vddk"], "{j:#}");
    assert!(check(&j, "vddk")["fix"]
        .as_str()
        .unwrap()
        .contains("libdir"));

    // A BIOS uuid file that cannot be read as this user (a folder in its place stands in for
    // root's 0400 file: the tests may run as root, who reads anything).
    let unreadable = lab.dir().join("uuid-dir");
    std::fs::create_dir(&unreadable).unwrap();
    let j = doctor(&lab, &config, &unreadable).expect_code(1).json();
    assert_eq!(failed_checks(&j), ["machine uuid"], "{j:#}");
    assert!(check(&j, "machine uuid")["fix"]
        .as_str()
        .unwrap()
        .contains("product_uuid_file"));
    // A machine without DMI at all (not a VM): a warning, not a failure.
    let j = doctor(&lab, &config, &lab.dir().join("absent")).ok().json();
    assert_eq!(check(&j, "machine uuid")["status"], "warning");

    // No configuration at all: one failed check, exit 1.
    let j = doctor(&lab, &lab.dir().join("missing.toml"), &uuid)
        .expect_code(1)
        .json();
    assert_eq!(failed_checks(&j), ["configuration"]);
}
