//! The S3 backend: the `object_store` crate's Amazon S3 client (SigV4 signing, retries with
//! backoff, conditional `PUT If-None-Match: *`), run on a tokio runtime this backend owns.
//!
//! Why an owned runtime: the repository's API is synchronous and is called from tokio's
//! `spawn_blocking` threads, where `Runtime::block_on` of another runtime panics ("Cannot start
//! a runtime from within a runtime"). Each call is spawned on the owned runtime's handle and its
//! result comes back through a std channel, so the caller's thread never enters a runtime.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};

use super::location::{ResolvedCredentials, S3Location};
use super::{check_key, too_large, Backend, DirListing, ObjectInfo};

/// A repository under a prefix of an S3-compatible bucket.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    location: S3Location,
    /// `prefix/` (or empty): prepended to every key.
    key_prefix: String,
    /// An HTTP client with the same TLS settings, for the one request object_store has no call
    /// for (CreateBucket, sent to a URL object_store's signer presigns).
    http: reqwest::Client,
    /// With object lock: the client that writes retained objects.
    locked: Option<std::sync::Mutex<LockedClient>>,
    /// The client options (TLS, timeouts) every client of this backend is made with.
    client_options: ClientOptions,
}

/// A client whose every request carries (signed) `x-amz-object-lock-mode: COMPLIANCE` and
/// `x-amz-object-lock-retain-until-date` headers. object_store takes extra headers only per
/// client, so the date is fixed when the client is made; it is made again after an hour,
/// and the date is "made + days + 1 hour", so every object is retained at least the
/// configured days from its write and at most an hour more.
struct LockedClient {
    store: Arc<AmazonS3>,
    made: std::time::Instant,
}

/// How long a [`LockedClient`] (and its retention date) is used.
const LOCKED_CLIENT_LIFETIME: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The location's Debug redacts credentials; the client's is not shown at all.
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; shutting it down in the
        // background never does (the last handle may well be dropped in a tokio task).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Maps an object_store error to an `io::Error` whose kind callers branch on; the original
/// error stays as the inner error (and is what the message shows).
fn map_err(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl S3Backend {
    /// Connects to the bucket of `location` (nothing is sent until the first call).
    ///
    /// # Errors
    /// `InvalidInput` for a bad location or missing credentials; the error names the
    /// repository but never holds a secret.
    pub fn connect(location: &S3Location) -> io::Result<S3Backend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safekeeping-s3")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let creds = location.resolve_credentials()?;
        let mut client = ClientOptions::new()
            .with_allow_http(location.allow_http)
            .with_connect_timeout(Duration::from_secs(10))
            // Generous: a 16 MiB chunk over a slow link; retries start over within this.
            .with_timeout(Duration::from_secs(300));
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60));
        if let Some(ca) = &location.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| io::Error::new(e.kind(), format!("CA file {}: {e}", ca.display())))?;
            let cert = object_store::Certificate::from_pem(&pem).map_err(|e| {
                io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("CA file {}: {e}", ca.display()),
                )
            })?;
            client = client.with_root_certificate(cert);
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                io::Error::new(
                    ErrorKind::InvalidInput,
                    format!("CA file {}: {e}", ca.display()),
                )
            })?;
            http = http.add_root_certificate(cert);
        }
        if let Some(ep) = &location.endpoint {
            if ep.starts_with("http://") && !location.allow_http {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "endpoint {ep} is plain http: set allow_http = true to send data and \
                         signatures unencrypted (only sensible on loopback or a trusted link)"
                    ),
                ));
            }
        }
        let store = build_store(location, &creds, client.clone(), false)?;
        drop(creds);
        let http = http
            .build()
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let prefix = location.prefix.trim_matches('/');
        Ok(S3Backend {
            store: Arc::new(store),
            runtime: Some(runtime),
            handle,
            location: location.clone(),
            key_prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            http,
            locked: match location.object_lock_days {
                Some(days) => Some(std::sync::Mutex::new(LockedClient {
                    store: Arc::new(locked_store(location, client.clone(), days)?),
                    made: std::time::Instant::now(),
                })),
                None => None,
            },
            client_options: client,
        })
    }

    /// The client to write `key` with: the object-lock one for retained objects.
    fn writer_for(&self, key: &str) -> io::Result<Arc<AmazonS3>> {
        let (Some(locked), Some(days)) = (&self.locked, self.location.object_lock_days) else {
            return Ok(self.store.clone());
        };
        if !super::is_retained(key) {
            return Ok(self.store.clone());
        }
        let mut l = locked
            .lock()
            .map_err(|_| io::Error::other("object lock client poisoned"))?;
        if l.made.elapsed() > LOCKED_CLIENT_LIFETIME {
            l.store = Arc::new(locked_store(
                &self.location,
                self.client_options.clone(),
                days,
            )?);
            l.made = std::time::Instant::now();
        }
        Ok(l.store.clone())
    }

    /// Refuses to delete `key` while the object lock retains it.
    fn check_unlocked(&self, key: &str) -> io::Result<()> {
        if self.location.object_lock_days.is_none() || !super::is_retained(key) {
            return Ok(());
        }
        if let Some(info) = self.head(key)? {
            if let Some(until) = self.locked_until(&info) {
                return Err(io::Error::new(
                    ErrorKind::PermissionDenied,
                    format!(
                        "{}/{key} is under object lock until {} and cannot be deleted before",
                        self.location.display().trim_end_matches('/'),
                        time::OffsetDateTime::from(until)
                            .replace_nanosecond(0)
                            .unwrap_or(time::OffsetDateTime::from(until))
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The location this backend was made from (credentials redacted in its Debug output).
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Runs `fut` on the owned runtime and waits for it on this thread without entering a
    /// runtime (safe from `spawn_blocking` threads and from plain threads alike).
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = io::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the S3 client's runtime stopped before answering"))?
    }

    fn obj_path(&self, key: &str) -> io::Result<ObjPath> {
        check_key(key)?;
        Ok(ObjPath::from(format!("{}{key}", self.key_prefix)))
    }

    fn prefix_path(&self, prefix: &str) -> Option<ObjPath> {
        let full = format!("{}{}", self.key_prefix, prefix.trim_end_matches('/'));
        let full = full.trim_end_matches('/');
        (!full.is_empty()).then(|| ObjPath::from(full))
    }

    /// The repository key of an object location, or `None` if it is outside the prefix.
    fn key_of(&self, location: &ObjPath) -> Option<String> {
        location
            .as_ref()
            .strip_prefix(&self.key_prefix)
            .map(str::to_string)
    }

    fn info(&self, meta: &object_store::ObjectMeta) -> Option<ObjectInfo> {
        Some(ObjectInfo {
            key: self.key_of(&meta.location)?,
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        })
    }

    /// Creates the bucket if it does not exist (`init` calls this). object_store has no call
    /// for it, so the request goes to a URL presigned by object_store's own signer.
    ///
    /// # Errors
    /// The store's error, naming the bucket.
    pub fn ensure_bucket(&self) -> io::Result<()> {
        let bucket_err = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "bucket {} at {}: {e}",
                    self.location.bucket,
                    self.location.endpoint_name()
                ),
            )
        };
        let status = self.bucket_request(object_store::signer::Method::HEAD);
        match status.map_err(bucket_err)? {
            (200, _) => return Ok(()),
            (404, _) if self.location.object_lock_days.is_some() => {
                // object_store's presigned requests carry no extra headers, so the bucket
                // cannot be created with object lock enabled from here; a bucket without it
                // would refuse every retained write.
                return Err(io::Error::new(
                    ErrorKind::NotFound,
                    "the bucket does not exist: with object lock, create it with object lock \
                     enabled first (aws s3api create-bucket --object-lock-enabled-for-bucket, \
                     mc mb --with-lock, or your store's equivalent)",
                ));
            }
            (404, _) => {}
            (code, body) => {
                return Err(bucket_err(status_error(code, &body)));
            }
        }
        tracing::info!(bucket = %self.location.bucket, "creating the bucket");
        match self
            .bucket_request(object_store::signer::Method::PUT)
            .map_err(bucket_err)?
        {
            // 409: BucketAlreadyOwnedByYou, or created meanwhile.
            (200..=299 | 409, _) => Ok(()),
            (code, body) => Err(bucket_err(status_error(code, &body))),
        }
    }

    /// Sends `method` to the bucket's own URL (HeadBucket, CreateBucket), presigned by
    /// object_store's signer with this backend's credentials; returns status and body.
    fn bucket_request(&self, method: object_store::signer::Method) -> io::Result<(u16, String)> {
        let store = self.store.clone();
        let http = self.http.clone();
        self.run(async move {
            use object_store::signer::Signer;
            let url = store
                .signed_url(method.clone(), &ObjPath::from(""), Duration::from_secs(300))
                .await
                .map_err(map_err)?;
            let resp = http
                .request(method, url.as_str())
                .send()
                .await
                .map_err(io::Error::other)?;
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Ok((status, body))
        })
    }
}

/// An object_store S3 client for `location` with these client options (and, with
/// `checksum`, a SHA-256 checksum header on every upload).
fn build_store(
    location: &S3Location,
    creds: &ResolvedCredentials,
    client: ClientOptions,
    checksum: bool,
) -> io::Result<AmazonS3> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: location.max_retries,
        retry_timeout: location.retry_timeout,
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&location.bucket)
        .with_region(&location.region)
        .with_access_key_id(creds.access_key_id.as_str())
        .with_secret_access_key(creds.secret_access_key.as_str())
        .with_client_options(client)
        .with_retry(retry);
    if checksum {
        builder = builder.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
    }
    if let Some(token) = &creds.session_token {
        builder = builder.with_token(token.as_str());
    }
    builder = match &location.endpoint {
        // Custom endpoints (SeaweedFS, Garage, Ceph RGW, MinIO) address buckets by path.
        Some(ep) => builder
            .with_endpoint(ep)
            .with_virtual_hosted_style_request(false),
        None => builder.with_virtual_hosted_style_request(true),
    };
    builder.build().map_err(|e| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("repository {}: {e}", location.display()),
        )
    })
}

/// The object-lock client: object_store signs default headers like its own, so the
/// retention headers are part of the SigV4 signature. AWS wants a checksum of the body with a
/// retention (Content-MD5 or `x-amz-checksum-*`): SHA-256.
fn locked_store(location: &S3Location, client: ClientOptions, days: u32) -> io::Result<AmazonS3> {
    let now = time::OffsetDateTime::now_utc();
    let until = now.replace_nanosecond(0).unwrap_or(now)
        + time::Duration::days(i64::from(days))
        + LOCKED_CLIENT_LIFETIME;
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(io::Error::other)?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-amz-object-lock-mode",
        reqwest::header::HeaderValue::from_static("COMPLIANCE"),
    );
    headers.insert(
        "x-amz-object-lock-retain-until-date",
        reqwest::header::HeaderValue::from_str(&until).map_err(io::Error::other)?,
    );
    let creds = location.resolve_credentials()?;
    build_store(location, &creds, client.with_default_headers(headers), true)
}

/// An error for an unexpected HTTP status of a bucket request.
fn status_error(code: u16, body: &str) -> io::Error {
    let kind = match code {
        401 | 403 => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    io::Error::new(
        kind,
        format!(
            "the server answered {code}: {}",
            body.chars().take(300).collect::<String>()
        ),
    )
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.location.display()
    }

    fn object_lock(&self) -> Option<Duration> {
        self.lock_duration()
    }

    fn delete_if_older(&self, key: &str, cutoff: SystemTime) -> io::Result<Option<u64>> {
        match self.head(key)? {
            Some(i) if i.modified < cutoff && self.locked_until(&i).is_none() => {
                self.delete(key)?;
                Ok(Some(i.size))
            }
            _ => Ok(None),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        let mut kept = 0usize;
        for o in self.list(prefix)? {
            if self.locked_until(&o).is_some() {
                kept += 1;
                continue;
            }
            self.delete(&o.key)?;
        }
        if kept > 0 {
            tracing::info!(
                prefix,
                kept,
                "objects under object lock left in place until their retention ends"
            );
        }
        Ok(())
    }

    fn display_path(&self, key: &str) -> PathBuf {
        let base = self.location.display();
        if key.is_empty() {
            PathBuf::from(base)
        } else {
            PathBuf::from(format!("{}/{key}", base.trim_end_matches('/')))
        }
    }

    fn create_new(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let path = self.obj_path(key)?;
        let store = self.writer_for(key)?;
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let p = path.clone();
        let result = self.run(async move {
            store
                .put_opts(&p, payload, opts)
                .await
                .map(|_| ())
                .map_err(map_err)
        });
        match result {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // A create whose answer was lost and retried meets its own object: the same
                // bytes mean the create succeeded (every conditional object holds something
                // unique to its writer: a run id, a start time, a random nonce).
                match self.get(key, data.len() as u64) {
                    Ok(existing) if existing == data => Ok(()),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let path = self.obj_path(key)?;
        let store = self.writer_for(key)?;
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        self.run(async move { store.put(&path, payload).await.map(|_| ()).map_err(map_err) })
    }

    fn get(&self, key: &str, limit: u64) -> io::Result<Vec<u8>> {
        let path = self.obj_path(key)?;
        let store = self.store.clone();
        self.run(async move {
            let r = store
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(map_err)?;
            if r.meta.size > limit {
                // Dropping the result closes the body unread.
                return Err(too_large(r.meta.size, limit));
            }
            let bytes = r.bytes().await.map_err(map_err)?;
            if bytes.len() as u64 > limit {
                return Err(too_large(bytes.len() as u64, limit));
            }
            Ok(bytes.to_vec())
        })
    }

    fn head(&self, key: &str) -> io::Result<Option<ObjectInfo>> {
        let path = self.obj_path(key)?;
        let store = self.store.clone();
        let meta = self.run(async move {
            match store.head(&path).await {
                Ok(m) => Ok(Some(m)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(map_err(e)),
            }
        })?;
        Ok(meta.and_then(|m| self.info(&m)))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        if !prefix.is_empty() {
            check_key(prefix.trim_end_matches('/'))?;
        }
        let p = self.prefix_path(prefix);
        let store = self.store.clone();
        let metas = self.run(async move {
            store
                .list(p.as_ref())
                .try_collect::<Vec<_>>()
                .await
                .map_err(map_err)
        })?;
        let mut out: Vec<ObjectInfo> = metas.iter().filter_map(|m| self.info(m)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_dir(&self, prefix: &str) -> io::Result<DirListing> {
        if !prefix.is_empty() {
            check_key(prefix.trim_end_matches('/'))?;
        }
        let p = self.prefix_path(prefix);
        let store = self.store.clone();
        let r =
            self.run(async move { store.list_with_delimiter(p.as_ref()).await.map_err(map_err) })?;
        let mut out = DirListing {
            dirs: r
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect(),
            objects: r.objects.iter().filter_map(|m| self.info(m)).collect(),
        };
        out.dirs.sort();
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        // A plain DELETE of a locked object would succeed (a delete marker hides the retained
        // version), so the repository would lose sight of it: refused here instead.
        self.check_unlocked(key)?;
        let path = self.obj_path(key)?;
        let store = self.store.clone();
        self.run(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(map_err(e)),
            }
        })
    }
}

impl S3Backend {
    fn lock_duration(&self) -> Option<Duration> {
        self.location
            .object_lock_days
            .map(|d| Duration::from_secs(u64::from(d) * 86_400))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<S3Backend>();
    is::<ResolvedCredentials>();
}
