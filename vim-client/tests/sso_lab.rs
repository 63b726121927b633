//! SSO login against the lab's STS (`/sts/STSService`, govmomi's STS simulator behind the
//! lab's password check) and vcsim's `LoginByToken`.

mod support;

use support::Lab;
use vim_client::xml::Element;
use vim_client::*;

#[tokio::test]
async fn sso_login_opens_a_session_and_logs_in_again_with_a_new_token() {
    let lab = Lab::up();
    let vm = lab.create_vm("ssovm", &["--disk", "8M"]);
    let c = Client::connect(&lab.options(lab.pinned())).await.unwrap();

    // The STS refuses a wrong password itself, and the error does not carry it.
    let wrong = "Wrong-Password-9";
    let err = c
        .login_sso(&lab.user(), &Secret::new(wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SsoRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused the login of user"), "{text}");
    assert!(text.contains("/sts/STSService"), "{text}");
    assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong));
    assert!(c.session_cookie().is_none());

    let token = c.issue_token(&lab.user(), &lab.password()).await.unwrap();
    assert!(!token.subject().is_empty());
    assert!(!format!("{token:?}").contains("Assertion"));

    c.login_sso(&lab.user(), &lab.password()).await.unwrap();
    let first = c.session_cookie().expect("a session cookie");
    let session = c
        .user_session()
        .expect("LoginByToken returns the user session");
    assert!(!session.key.is_empty());
    assert!(
        session.user_name.eq_ignore_ascii_case(token.subject()),
        "{session:?}"
    );
    // The session works.
    assert_eq!(c.find_vm_by_name("ssovm").await.unwrap(), vm);
    assert!(matches!(
        c.find_vm_by_name("no-such-vm").await,
        Err(Error::UnknownObject { .. })
    ));

    // Another session ends this one; the next call gets a new token and logs in again.
    let admin = lab.client().await;
    let manager = admin.service_content().session_manager.clone().unwrap();
    admin
        .call(
            Element::vim("TerminateSession")
                .child(manager.to_element("_this"))
                .text_child("sessionId", &session.key),
        )
        .await
        .unwrap();
    assert_eq!(c.find_vm_by_name("ssovm").await.unwrap(), vm);
    let second = c.session_cookie().unwrap();
    assert_ne!(first, second, "a new session after the re-login");
    c.logout().await.unwrap();
    admin.logout().await.unwrap();
}

#[tokio::test]
async fn the_sts_url_can_be_given_and_is_held_to_https() {
    let lab = Lab::up();
    let base = lab.url().trim_end_matches("/sdk").to_string();
    let mut options = lab.options(lab.pinned());
    options.sts_url = Some(format!("{base}/sts/STSService/vsphere.local"));
    let c = Client::connect(&options).await.unwrap();
    c.login_sso(&lab.user(), &lab.password()).await.unwrap();
    assert!(c.session_cookie().is_some());
    c.logout().await.unwrap();

    options.sts_url = Some(base.replace("https://", "http://") + "/sts/STSService");
    let err = Client::connect(&options).await.unwrap_err();
    assert!(matches!(err, Error::PlainHttp { .. }), "{err:?}");
}
