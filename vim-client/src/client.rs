//! The connection to one vCenter or ESXi: TLS, the session cookie, SOAP calls and re-login.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::Url;

use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::moref::MoRef;
use crate::secret::Secret;
use crate::service_content::ServiceContent;
use crate::soap;
use crate::sts::{self, SamlToken};
use crate::tls::{self, Presented, Thumbprints, Tls};
use crate::xml::{Element, NS_PBM, NS_VIM25, NS_VSLM};

/// The name of vCenter's session cookie.
pub const SESSION_COOKIE: &str = "vmware_soap_session";

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://vcenter.example.com` (the `/sdk` path is added when missing).
    pub url: String,
    /// Certificate verification.
    pub tls: Tls,
    /// Timeout for connecting and for each SOAP call; file transfers use it as a read timeout.
    pub timeout: Duration,
    /// How long operations that run a task (snapshot, reconfigure, power, create...) wait for it.
    pub task_timeout: Duration,
    /// Accept a plain `http://` URL. Off by default: the login sends the password, and every
    /// call the session cookie, in clear text. Only for test servers on a trusted network
    /// (safekeeping's `[vcenter] insecure = true`). Independent of [`Tls::Insecure`], which
    /// only skips certificate checks on `https://`.
    pub allow_http: bool,
    /// The largest SOAP (and vAPI) response read, in bytes (default
    /// [`crate::DEFAULT_MAX_RESPONSE_BYTES`], 128 MiB). Checked against Content-Length before
    /// reading and while streaming; over it the call fails with [`Error::TooLarge`].
    pub max_response_bytes: u64,
    /// The largest datastore file read or downloaded, in bytes (default
    /// [`crate::DEFAULT_MAX_FILE_BYTES`], 16 MiB: `.vmx`, `.nvram` and descriptors are far
    /// smaller, a flat disk named by a hostile `.vmx` is not). Checked like
    /// [`ClientOptions::max_response_bytes`].
    pub max_file_bytes: u64,
    /// The Security Token Service for [`Client::login_sso`] (default `/sts/STSService` on the
    /// same server; vCenter also answers at `/sts/STSService/DOMAIN`, and an external PSC
    /// elsewhere). The same TLS policy applies; plain `http://` only with
    /// [`ClientOptions::allow_http`].
    pub sts_url: Option<String>,
}

impl ClientOptions {
    /// Options for `url` with a 60 s call timeout and a one hour task timeout; `http://` URLs
    /// are refused unless [`ClientOptions::allow_http`] is set.
    pub fn new(url: impl Into<String>, tls: Tls) -> Self {
        ClientOptions {
            url: url.into(),
            tls,
            timeout: Duration::from_secs(60),
            task_timeout: Duration::from_secs(3600),
            allow_http: false,
            max_response_bytes: crate::bounded::DEFAULT_MAX_RESPONSE_BYTES,
            max_file_bytes: crate::bounded::DEFAULT_MAX_FILE_BYTES,
            sts_url: None,
        }
    }
}

/// Refuses a plain `http://` server URL unless the caller opted in with `allow_http`: the
/// vCenter password (SOAP login, VDDK connections to the same server) would travel in clear.
/// Use it for every connection made from the same configured URL, not only this client's.
///
/// # Errors
///
/// [`Error::PlainHttp`] for an `http://` URL without `allow_http`; [`Error::InvalidInput`]
/// when the URL does not parse or is neither `https://` nor `http://`.
pub fn check_url_security(url: &str, allow_http: bool) -> Result<()> {
    let parsed =
        Url::parse(url).map_err(|e| Error::InvalidInput(format!("server URL `{url}`: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http => {
            tracing::warn!(%url, "plain HTTP allowed: the password travels in clear text");
            Ok(())
        }
        "http" => Err(Error::PlainHttp {
            url: url.to_owned(),
        }),
        _ => Err(Error::InvalidInput(format!(
            "server URL `{url}` must start with https://"
        ))),
    }
}

struct Credentials {
    user: String,
    password: Secret,
    /// Logged in through the STS and `LoginByToken` ([`Client::login_sso`]): a re-login asks
    /// the STS for a new token instead of calling `Login`.
    sso: bool,
}

#[derive(Default)]
struct Session {
    cookie: Option<String>,
    credentials: Option<Credentials>,
    user_session: Option<UserSession>,
}

/// The logged-in session as the server describes it (`UserSession`), for VDDK's
/// session-cookie connect parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The session key.
    pub key: String,
    /// The user name the server knows the session by.
    pub user_name: String,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    sdk_url: Url,
    vslm_url: Url,
    pbm_url: Url,
    soap_action: String,
    timeout: Duration,
    task_timeout: Duration,
    service_content: ServiceContent,
    session: Mutex<Session>,
    presented: Arc<Presented>,
    tls: Tls,
    max_response_bytes: u64,
    max_file_bytes: u64,
    sts_url: Url,
}

/// A connection to vCenter (or ESXi). Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.sdk_url.as_str())
            .field("tls", &self.inner.tls)
            .finish_non_exhaustive()
    }
}

/// The endpoint a SOAP call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The VIM API at `/sdk`.
    Vim,
    /// The VSLM API at `/vslm/sdk`.
    Vslm,
    /// The storage policy (SPBM) API at `/pbm/sdk`.
    Pbm,
}

fn normalise_url(url: &str, allow_http: bool) -> Result<(Url, Url)> {
    check_url_security(url, allow_http)?;
    let parsed =
        Url::parse(url).map_err(|e| Error::InvalidInput(format!("server URL `{url}`: {e}")))?;
    if parsed.host_str().is_none() {
        return Err(Error::InvalidInput(format!(
            "server URL `{url}` has no host"
        )));
    }
    let mut base = parsed.clone();
    base.set_query(None);
    base.set_fragment(None);
    let path = base.path().trim_end_matches('/').to_owned();
    let path = path.strip_suffix("/sdk").unwrap_or(&path).to_owned();
    base.set_path(&format!("{path}/"));
    let sdk = base
        .join("sdk")
        .map_err(|e| Error::InvalidInput(format!("server URL `{url}`: {e}")))?;
    Ok((base, sdk))
}

impl Client {
    /// Connects and reads the service content (no login yet).
    ///
    /// # Errors
    ///
    /// [`Error::PlainHttp`] for an `http://` URL without [`ClientOptions::allow_http`] (nothing
    /// is sent), [`Error::CertificateMismatch`] when a pinned certificate differs (the error
    /// shows the presented fingerprint), [`Error::Tls`], [`Error::Transport`] or a fault.
    pub async fn connect(options: &ClientOptions) -> Result<Client> {
        let (base_url, sdk_url) = normalise_url(&options.url, options.allow_http)?;
        let vslm_url = base_url
            .join("vslm/sdk")
            .map_err(|e| Error::InvalidInput(format!("server URL: {e}")))?;
        let sts_url = match &options.sts_url {
            Some(u) => {
                check_url_security(u, options.allow_http)?;
                Url::parse(u).map_err(|e| Error::InvalidInput(format!("STS URL `{u}`: {e}")))?
            }
            None => base_url
                .join(sts::STS_PATH)
                .map_err(|e| Error::InvalidInput(format!("STS URL: {e}")))?,
        };
        let pbm_url = base_url
            .join("pbm/sdk")
            .map_err(|e| Error::InvalidInput(format!("server URL: {e}")))?;
        let presented = Arc::new(Presented::default());
        let config = tls::client_config(&options.tls, presented.clone())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .connect_timeout(options.timeout)
            .read_timeout(options.timeout)
            .build()
            .map_err(|e| Error::Tls(format!("cannot build HTTP client: {e}")))?;
        let placeholder = ServiceContent::from_element(
            &Element::vim("ServiceContent")
                .child(MoRef::new("Folder", "").to_element("rootFolder"))
                .child(MoRef::new("PropertyCollector", "").to_element("propertyCollector")),
        )?;
        let mut inner = Inner {
            http,
            base_url,
            sdk_url,
            vslm_url,
            pbm_url,
            soap_action: "urn:vim25/6.5".into(),
            timeout: options.timeout,
            task_timeout: options.task_timeout,
            service_content: placeholder,
            session: Mutex::new(Session::default()),
            presented,
            tls: options.tls.clone(),
            max_response_bytes: options.max_response_bytes,
            max_file_bytes: options.max_file_bytes,
            sts_url,
        };
        let body = Element::vim("RetrieveServiceContent")
            .child(MoRef::new("ServiceInstance", "ServiceInstance").to_element("_this"));
        let response = inner.post(Endpoint::Vim, body, Vec::new()).await?;
        let returnval = response
            .get("returnval")
            .ok_or_else(|| Error::Unexpected("RetrieveServiceContent returned nothing".into()))?;
        inner.service_content = ServiceContent::from_element(returnval)?;
        if !inner.service_content.about.api_version.is_empty() {
            inner.soap_action = format!("urn:vim25/{}", inner.service_content.about.api_version);
        }
        tracing::debug!(
            url = %inner.sdk_url,
            server = %inner.service_content.about.full_name,
            "connected"
        );
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// Logs in with a user name and password. The credentials stay in memory (redacted from
    /// `Debug`) for one transparent re-login when the session expires.
    ///
    /// # Errors
    ///
    /// A fault of kind [`FaultKind::InvalidLogin`] for a wrong user or password.
    pub async fn login(&self, user: &str, password: &Secret) -> Result<()> {
        self.login_inner(user, password).await?;
        let mut session = self.lock_session();
        session.credentials = Some(Credentials {
            user: user.to_owned(),
            password: password.clone(),
            sso: false,
        });
        Ok(())
    }

    /// Logs in through vCenter single sign-on: asks the STS (`/sts/STSService` beside `/sdk`,
    /// same TLS policy) for a SAML bearer token with the user and password, then calls
    /// `SessionManager.LoginByToken` with the token in the WS-Security header. The password
    /// goes to the STS only; it is kept in memory (redacted) for one re-login, like
    /// [`Client::login`].
    ///
    /// # Errors
    ///
    /// [`Error::SsoRefused`] when the STS refuses the user or password, a fault of kind
    /// [`FaultKind::InvalidLogin`] when vCenter refuses the token, transport and TLS errors.
    pub async fn login_sso(&self, user: &str, password: &Secret) -> Result<()> {
        self.login_sso_inner(user, password).await?;
        let mut session = self.lock_session();
        session.credentials = Some(Credentials {
            user: user.to_owned(),
            password: password.clone(),
            sso: true,
        });
        Ok(())
    }

    /// Asks the STS for a SAML bearer token for `user` (WS-Trust `Issue` with a WS-Security
    /// `UsernameToken`).
    ///
    /// # Errors
    ///
    /// [`Error::SsoRefused`] when the STS refuses the credentials (the message names the user,
    /// never the password), other faults, transport and TLS errors.
    pub async fn issue_token(&self, user: &str, password: &Secret) -> Result<SamlToken> {
        let url = self.sts_url()?;
        let text = sts::issue_request(
            user,
            password,
            time::OffsetDateTime::now_utc(),
            sts::TOKEN_LIFETIME,
        );
        let bytes = self
            .inner
            .post_envelope(&url, "Issue", sts::ISSUE_ACTION, text)
            .await?;
        let parsed = match sts::parse_issue_response(&bytes.body) {
            Ok(token) if bytes.status.is_success() => Ok(token),
            Err(fault @ Error::Fault { .. }) => Err(fault),
            _ if !bytes.status.is_success() => Err(bytes.http_error(&url)),
            other => other,
        };
        parsed.map_err(|e| {
            if sts::is_refusal(&e) {
                Error::SsoRefused {
                    user: user.to_owned(),
                    url: url.to_string(),
                    message: match &e {
                        Error::Fault { fault_string, .. } => fault_string.clone(),
                        _ => String::new(),
                    },
                }
            } else {
                e
            }
        })
    }

    /// The STS endpoint of this vCenter ([`ClientOptions::sts_url`]).
    fn sts_url(&self) -> Result<Url> {
        Ok(self.inner.sts_url.clone())
    }

    async fn login_sso_inner(&self, user: &str, password: &Secret) -> Result<()> {
        let token = self.issue_token(user, password).await?;
        let session_manager = self.session_manager()?;
        let body = Element::vim("LoginByToken").child(session_manager.to_element("_this"));
        let text = sts::envelope_with_token(&body, &token);
        let url = self.inner.sdk_url.clone();
        let answer = self
            .inner
            .post_envelope(&url, "LoginByToken", &self.inner.soap_action, text)
            .await?;
        let response = answer.response(&url)?;
        let user_session = response.get("returnval").map(|r| UserSession {
            key: r.text_at("key").unwrap_or_default().trim().to_owned(),
            user_name: r.text_at("userName").unwrap_or_default().trim().to_owned(),
        });
        self.lock_session().user_session = user_session;
        if self.session_cookie().is_none() {
            return Err(Error::Unexpected(format!(
                "LoginByToken succeeded but the server set no {SESSION_COOKIE} cookie"
            )));
        }
        tracing::info!(user, subject = token.subject(), server = %self.inner.sdk_url, "logged in with an SSO token");
        Ok(())
    }

    async fn login_inner(&self, user: &str, password: &Secret) -> Result<()> {
        let session_manager = self.session_manager()?;
        let body = Element::vim("Login")
            .child(session_manager.to_element("_this"))
            .text_child("userName", user)
            .text_child("password", password.expose());
        let response = self.inner.post(Endpoint::Vim, body, Vec::new()).await?;
        let user_session = response.get("returnval").map(|r| UserSession {
            key: r.text_at("key").unwrap_or_default().trim().to_owned(),
            user_name: r.text_at("userName").unwrap_or_default().trim().to_owned(),
        });
        self.lock_session().user_session = user_session;
        if self.session_cookie().is_none() {
            return Err(Error::Unexpected(format!(
                "login succeeded but the server set no {SESSION_COOKIE} cookie"
            )));
        }
        tracing::info!(user, server = %self.inner.sdk_url, "logged in");
        Ok(())
    }

    /// Logs out and forgets the session and credentials.
    ///
    /// # Errors
    ///
    /// A fault or transport error; the local session is forgotten either way.
    pub async fn logout(&self) -> Result<()> {
        let session_manager = self.session_manager()?;
        let body = Element::vim("Logout").child(session_manager.to_element("_this"));
        let result = self.inner.post(Endpoint::Vim, body, Vec::new()).await;
        let mut session = self.lock_session();
        session.cookie = None;
        session.credentials = None;
        session.user_session = None;
        result.map(|_| ())
    }

    fn session_manager(&self) -> Result<MoRef> {
        self.inner
            .service_content
            .session_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no SessionManager".into()))
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.inner
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of the `vmware_soap_session` cookie exactly as the server sent it (vCenter
    /// quotes it: `"52a0..."`), for VDDK's session-cookie connect parameters. See also
    /// [`Client::session_cookie_header`] and [`Client::user_session`].
    pub fn session_cookie(&self) -> Option<String> {
        self.lock_session().cookie.clone()
    }

    /// The whole cookie as an HTTP `Cookie` header value: `vmware_soap_session="..."`.
    pub fn session_cookie_header(&self) -> Option<String> {
        self.session_cookie()
            .map(|c| format!("{SESSION_COOKIE}={c}"))
    }

    /// The session key and user name from the last login.
    pub fn user_session(&self) -> Option<UserSession> {
        self.lock_session().user_session.clone()
    }

    /// Fingerprints of the certificate the server presented (`None` over plain HTTP).
    pub fn server_thumbprints(&self) -> Option<Thumbprints> {
        let seen = self.inner.presented.end_entity.lock().ok()?;
        seen.as_deref().map(Thumbprints::of_der)
    }

    /// The server's service content.
    pub fn service_content(&self) -> &ServiceContent {
        &self.inner.service_content
    }

    /// The base URL (`https://host/`), for `/folder` and other HTTP endpoints.
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The per-call timeout (from [`ClientOptions::timeout`]).
    pub fn call_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How long task-running operations wait (from [`ClientOptions::task_timeout`]).
    pub fn task_timeout(&self) -> Duration {
        self.inner.task_timeout
    }

    /// The response size limit (from [`ClientOptions::max_response_bytes`]).
    pub fn max_response_bytes(&self) -> u64 {
        self.inner.max_response_bytes
    }

    /// The datastore file size limit (from [`ClientOptions::max_file_bytes`]).
    pub fn max_file_bytes(&self) -> u64 {
        self.inner.max_file_bytes
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Calls a VIM method: `body` is the method element (`<CreateSnapshot_Task>` with `_this`
    /// and arguments). Returns the `...Response` element. On `NotAuthenticated` the client logs
    /// in again once with the stored credentials and repeats the call.
    ///
    /// # Errors
    ///
    /// Faults as [`Error::Fault`], transport and TLS errors.
    pub async fn call(&self, body: Element) -> Result<Element> {
        self.call_at(Endpoint::Vim, body).await
    }

    /// Calls a method on `endpoint`; see [`Client::call`]. VSLM bodies may be built in the VIM
    /// namespace: they are moved to `urn:vslm` here.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn call_at(&self, endpoint: Endpoint, mut body: Element) -> Result<Element> {
        match endpoint {
            Endpoint::Vslm => body.renamespace(NS_VIM25, NS_VSLM),
            Endpoint::Pbm => body.renamespace(NS_VIM25, NS_PBM),
            Endpoint::Vim => {}
        }
        let first = self
            .inner
            .post(endpoint, body.clone(), self.header(endpoint))
            .await;
        match first {
            Err(e) if e.is_fault(&FaultKind::NotAuthenticated) => {
                if !self.relogin().await? {
                    return Err(e);
                }
                self.inner.post(endpoint, body, self.header(endpoint)).await
            }
            other => other,
        }
    }

    /// The user and password of the last [`Client::login`], for services with their own
    /// session (vAPI tagging).
    pub(crate) fn stored_credentials(&self) -> Option<(String, Secret)> {
        self.lock_session()
            .credentials
            .as_ref()
            .map(|c| (c.user.clone(), c.password.clone()))
    }

    /// Logs in again with the stored credentials; `false` when there are none.
    pub(crate) async fn relogin(&self) -> Result<bool> {
        let creds = self
            .lock_session()
            .credentials
            .as_ref()
            .map(|c| (c.user.clone(), c.password.clone(), c.sso));
        let Some((user, password, sso)) = creds else {
            return Ok(false);
        };
        tracing::info!("session expired; logging in again");
        if sso {
            self.login_sso_inner(&user, &password).await?;
        } else {
            self.login_inner(&user, &password).await?;
        }
        Ok(true)
    }

    /// VSLM and PBM authenticate with the VIM session cookie carried in a `vcSessionCookie`
    /// header.
    fn header(&self, endpoint: Endpoint) -> Vec<Element> {
        match (endpoint, self.session_cookie()) {
            (Endpoint::Vslm | Endpoint::Pbm, Some(cookie)) => {
                let bare = cookie.trim_matches('"').to_owned();
                let mut header = Element::new_in("", "vcSessionCookie");
                header.text = bare;
                vec![header]
            }
            _ => Vec::new(),
        }
    }

    /// The `Cookie` header value for HTTP requests outside SOAP (datastore files).
    pub(crate) fn cookie_header(&self) -> Result<HeaderValue> {
        let cookie = self.session_cookie().ok_or(Error::NotLoggedIn)?;
        HeaderValue::from_str(&format!("{SESSION_COOKIE}={cookie}"))
            .map_err(|e| Error::Unexpected(format!("session cookie is not a valid header: {e}")))
    }

    pub(crate) fn map_transport(&self, url: &Url, err: reqwest::Error) -> Error {
        self.inner.map_transport(url, err)
    }
}

/// A raw answer: HTTP status and body, read within the response size limit.
struct Answer {
    status: reqwest::StatusCode,
    body: Vec<u8>,
}

impl Answer {
    /// The method response element, or the fault, or an HTTP error.
    fn response(&self, url: &Url) -> Result<Element> {
        match soap::parse_response(&self.body) {
            Ok(e) if self.status.is_success() => Ok(e),
            Err(fault @ Error::Fault { .. }) => Err(fault),
            Ok(_) | Err(_) if !self.status.is_success() => Err(self.http_error(url)),
            Err(e) => Err(e),
            Ok(e) => Ok(e),
        }
    }

    fn http_error(&self, url: &Url) -> Error {
        Error::Http {
            status: self.status.as_u16(),
            url: url.to_string(),
            body: String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned(),
        }
    }
}

impl Inner {
    async fn post(
        &self,
        endpoint: Endpoint,
        body: Element,
        header: Vec<Element>,
    ) -> Result<Element> {
        let url = match endpoint {
            Endpoint::Vim => &self.sdk_url,
            Endpoint::Vslm => &self.vslm_url,
            Endpoint::Pbm => &self.pbm_url,
        };
        let method = body.name.local.clone();
        let action = match endpoint {
            Endpoint::Vim => self.soap_action.clone(),
            // What govmomi sends; VSLM has no version negotiation of its own.
            Endpoint::Vslm => "urn:vslm/".to_owned(),
            // PBM follows the VIM version (what govmomi's service clients send).
            Endpoint::Pbm => self.soap_action.replacen("urn:vim25", "urn:pbm", 1),
        };
        let answer = self
            .post_envelope(url, &method, &action, soap::envelope(body, header))
            .await?;
        answer.response(url)
    }

    /// Posts a complete SOAP envelope to `url` with the session cookie, keeps a new session
    /// cookie the server sets, and reads the answer within the size limit.
    async fn post_envelope(
        &self,
        url: &Url,
        method: &str,
        action: &str,
        envelope: String,
    ) -> Result<Answer> {
        let mut request = self
            .http
            .post(url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", action)
            .body(envelope);
        let cookie = self
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cookie
            .clone();
        if let Some(cookie) = cookie {
            if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={cookie}")) {
                request = request.header(COOKIE, v);
            }
        }
        let started = std::time::Instant::now();
        let mut response = request
            .send()
            .await
            .map_err(|e| self.map_transport(url, e))?;
        for value in response.headers().get_all(SET_COOKIE) {
            if let Some(cookie) = value.to_str().ok().and_then(session_cookie_value) {
                self.session
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .cookie = Some(cookie);
            }
        }
        let status = response.status();
        let body = crate::bounded::read_body(
            &mut response,
            self.max_response_bytes,
            &|| format!("the {method} response from {url}"),
            &|e| self.map_transport(url, e),
        )
        .await?;
        tracing::debug!(
            %method,
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "SOAP call"
        );
        Ok(Answer { status, body })
    }

    fn map_transport(&self, url: &Url, err: reqwest::Error) -> Error {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let presented = self
            .presented
            .end_entity
            .lock()
            .ok()
            .and_then(|s| s.as_deref().map(Thumbprints::of_der));
        let mismatch = self
            .presented
            .pin_mismatch
            .lock()
            .map(|f| *f)
            .unwrap_or(false);
        if let (true, Some(p), Tls::PinnedSha256(pin)) = (mismatch, &presented, &self.tls) {
            let expected = tls::parse_sha256(pin)
                .map(|b| tls::colon_hex(&b))
                .unwrap_or_else(|_| pin.clone());
            return Error::CertificateMismatch {
                host,
                expected,
                presented_sha256: p.sha256.clone(),
            };
        }
        if message.contains("certificate") || message.contains("Certificate") {
            let shown = presented
                .map(|p| format!("; the server presented SHA-256 {}", p.sha256))
                .unwrap_or_default();
            return Error::Tls(format!("{host}: {message}{shown}"));
        }
        Error::Transport {
            url: url.to_string(),
            message,
        }
    }
}

/// Extracts the session cookie's value from one `Set-Cookie` header.
fn session_cookie_value(set_cookie: &str) -> Option<String> {
    let first = set_cookie.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    (name.trim() == SESSION_COOKIE && !value.is_empty()).then(|| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_urls() {
        let (base, sdk) = normalise_url("https://vc.example.com", false).unwrap();
        assert_eq!(base.as_str(), "https://vc.example.com/");
        assert_eq!(sdk.as_str(), "https://vc.example.com/sdk");
        let (base, sdk) = normalise_url("https://127.0.0.1:8989/sdk", false).unwrap();
        assert_eq!(base.as_str(), "https://127.0.0.1:8989/");
        assert_eq!(sdk.as_str(), "https://127.0.0.1:8989/sdk");
        assert!(normalise_url("ftp://x", true).is_err());
        assert!(normalise_url("not a url", true).is_err());
    }

    #[test]
    fn plain_http_needs_an_explicit_opt_in() {
        let err = normalise_url("http://vc.example.com/sdk", false).unwrap_err();
        assert!(matches!(&err, Error::PlainHttp { url } if url == "http://vc.example.com/sdk"));
        assert!(err.to_string().contains("password"), "{err}");
        assert!(err.to_string().contains("in clear"), "{err}");
        let (_, sdk) = normalise_url("http://vc.example.com", true).unwrap();
        assert_eq!(sdk.as_str(), "http://vc.example.com/sdk");
        assert!(check_url_security("https://vc.example.com", false).is_ok());
        assert!(matches!(
            check_url_security("HTTP://vc.example.com", false),
            Err(Error::PlainHttp { .. })
        ));
        assert!(check_url_security("http://vc.example.com", true).is_ok());
        assert!(matches!(
            check_url_security("ftp://vc.example.com", true),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn reads_session_cookie() {
        assert_eq!(
            session_cookie_value("vmware_soap_session=\"52a0\"; Path=/; HttpOnly; Secure;")
                .as_deref(),
            Some("\"52a0\"")
        );
        assert_eq!(session_cookie_value("other=1; Path=/"), None);
    }
}
