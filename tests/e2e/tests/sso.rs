//! SSO token login: with `[vcenter] auth = "sso"` safekeeping gets a SAML bearer token from
//! the lab's STS (`/sts/STSService`, WS-Trust Issue with the user and password) and logs in
//! with `LoginByToken`; a backup and a restore then run on that session, VDDK included (the
//! fake VDDK accepts only a session cookie the lab issued, never a password: its
//! `fake.sessions_file`). A wrong password is refused by the STS itself, with a clear error that
//! does not contain the password, and nothing is left behind.

use safekeeping_e2e::Lab;

fn sso_config(lab: &Lab, name: &str) -> std::path::PathBuf {
    lab.config_variant(name, "[vcenter]\n", "[vcenter]\nauth = \"sso\"\n")
}

fn lab_log(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir().join("vcsim.log")).unwrap_or_default()
}

#[test]
fn sso_login_backs_up_and_restores_and_a_wrong_password_is_refused_by_the_sts() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("ssovm", &["16M"], &["VM Network"]);
    lab.guest_write("ssovm", 0, "0", "2M", Some(7));
    let config = sso_config(&lab, "sso.toml");

    let r = lab.sk_with(&["backup", "vm:ssovm"], &config, &[]).ok();
    let out = r.all_output();
    assert!(out.contains("logged in with an SSO token"), "{out}");
    assert!(lab.snapshots("ssovm").is_empty());
    let sessions = std::fs::read_to_string(lab.dir().join("lab-state/sessions"))
        .expect("the lab records the sessions it issued");
    assert!(!sessions.trim().is_empty());

    let r = lab
        .sk_with(
            &["restore", "vm:ssovm", "--name", "ssovm-back"],
            &config,
            &[],
        )
        .ok();
    assert!(
        r.all_output().contains("logged in with an SSO token"),
        "{}",
        r.all_output()
    );
    assert_eq!(lab.digest("ssovm-back", 0), lab.digest("ssovm", 0));

    // A wrong password: the STS refuses it, the message says so and names the user only.
    let wrong = "not-the-Password-42";
    let wrong_file = lab.dir().join("wrong-password");
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let password_line = text
        .lines()
        .find(|l| l.starts_with("password_file"))
        .expect("password_file line")
        .to_string();
    let bad = lab.config_variant(
        "sso-wrong.toml",
        &password_line,
        &format!(
            "password_file = {:?}\nauth = \"sso\"",
            wrong_file.display().to_string()
        ),
    );
    let before = lab_log(&lab).matches("STS refused user").count();
    let r = lab.sk_with(&["backup", "vm:ssovm"], &bad, &[]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    let out = r.all_output();
    assert!(out.contains("single sign-on"), "{out}");
    assert!(out.contains("refused the login of user"), "{out}");
    assert!(!out.contains(wrong), "the password is never printed: {out}");
    assert_eq!(
        lab_log(&lab).matches("STS refused user").count(),
        before + 1,
        "the STS, not Login, refused it"
    );
    assert!(lab.snapshots("ssovm").is_empty());
}

#[test]
fn vddk_gets_the_session_not_the_password() {
    // A password login too: VDDK connects with the session cookie. With a sessions file that
    // lists no session of this vCenter, the fake VDDK refuses the connection: so the backup
    // that succeeds below did hand VDDK a live session, not a password.
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("cookievm", &["8M"], &[]);
    lab.guest_write("cookievm", 0, "0", "1M", Some(3));
    let conf = lab.dir().join("vddk/vddk.conf");
    let original = std::fs::read_to_string(&conf).unwrap();
    assert!(original.contains("fake.sessions_file"), "{original}");
    let decoy = lab.dir().join("no-sessions");
    std::fs::write(&decoy, "52000000-0000-0000-0000-000000000000\n").unwrap();
    lab.vddk_conf_remove("fake.sessions_file");
    lab.vddk_conf_append(&format!("fake.sessions_file = {}", decoy.display()));
    let r = lab.sk(&["backup", "vm:cookievm"]);
    assert_ne!(r.code, 0, "{}", r.all_output());
    assert!(
        r.all_output().contains("names no live vCenter session"),
        "{}",
        r.all_output()
    );
    assert!(lab.snapshots("cookievm").is_empty(), "no snapshot left");
    std::fs::write(&conf, original).unwrap();
    lab.sk(&["backup", "vm:cookievm"]).ok();
}
