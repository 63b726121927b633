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

/// The `job` checks of a doctor report, by job name.
fn job_check<'a>(json: &'a serde_json::Value, job: &str) -> &'a serde_json::Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "job" && c["job"]["name"] == job)
        .unwrap_or_else(|| panic!("no job check for `{job}` in {json:#}"))
}

#[test]
fn doctor_resolves_each_jobs_targets_and_fails_a_selection_that_finds_nothing() {
    let lab = Lab::up();
    let uuid = lab.dir().join("product_uuid");
    std::fs::write(&uuid, "4215A0E0-1234-5678-9ABC-DEF012345678\n").unwrap();
    lab.create_vm("web", &["8M"], &["VM Network"]);
    lab.create_vm("db", &["8M"], &["VM Network"]);
    for vm in ["vm:web", "vm:db"] {
        lab.lab(&[
            "tag",
            "--category",
            "backup",
            "--tag",
            "nightly",
            "--attach",
            vm,
        ])
        .ok();
    }
    lab.sk(&["repo", "init"]).ok();
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let with_jobs = |name: &str, jobs: &str| {
        let p = lab.dir().join(name);
        std::fs::write(&p, format!("{base}\n{jobs}\n")).unwrap();
        p
    };

    let good = with_jobs(
        "good-jobs.toml",
        "[jobs.nightly]\ntargets = [\"vm:web\", \"tag:backup/nightly\"]\nexclude = [\"vm:db\"]\nkeep_last = 3\n",
    );
    let j = doctor(&lab, &good, &uuid).ok().json();
    let c = job_check(&j, "nightly");
    assert_eq!(c["status"], "ok", "{j:#}");
    let sel = c["job"]["selections"].as_array().unwrap();
    assert_eq!(sel[0]["selection"], "vm:web");
    assert_eq!(sel[0]["found"], 1);
    assert_eq!(sel[1]["selection"], "tag:backup/nightly");
    assert_eq!(sel[1]["found"], 2, "{c:#}");
    assert_eq!(
        c["job"]["targets"], 1,
        "db is excluded, web counted once: {c:#}"
    );

    // A VM that does not exist (a typo, a rename) and an `all` beside it: the job fails,
    // naming the selection that finds nothing with the fix; the other job stays ok.
    let bad = with_jobs(
        "bad-jobs.toml",
        "[jobs.nightly]\ntargets = [\"vm:web\"]\n\n[jobs.typo]\ntargets = [\"vm:wbe\"]\nall = [\"vm\"]\n",
    );
    let r = doctor(&lab, &bad, &uuid).expect_code(1);
    let j = r.json();
    assert_eq!(failed_checks(&j), ["job"], "{j:#}");
    assert_eq!(job_check(&j, "nightly")["status"], "ok");
    let c = job_check(&j, "typo");
    assert_eq!(c["status"], "failed");
    assert_eq!(c["job"]["selections"][0]["found"], 0);
    assert_eq!(c["job"]["selections"][1]["selection"], "all = vm");
    assert_eq!(c["job"]["selections"][1]["found"], 2, "{c:#}");
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.contains("vm:wbe") && fix.contains("[jobs.typo]"),
        "{fix}"
    );
    // The text form names it too.
    let text = lab
        .sk_with(
            &["doctor"],
            &bad,
            &[("SAFEKEEPING_PRODUCT_UUID_FILE", uuid.to_str().unwrap())],
        )
        .expect_code(1);
    assert!(
        text.stdout.contains("typo: vm:wbe finds 0"),
        "{}",
        text.stdout
    );
}
