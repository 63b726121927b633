//! S3 object lock against a real SeaweedFS cluster (see `s3_cluster`): a repository
//! initialised with `object_lock_days` writes its objects with a COMPLIANCE retention the
//! store records, keeps writing with it when opened again, and prune, gc and delete leave
//! locked objects alone and say so; a plain DELETE by someone holding the credentials only
//! hides an object behind a delete marker, and the locked version stays readable.
#![cfg(feature = "s3")]

mod common;
#[allow(dead_code)]
mod s3_cluster;

use std::time::Duration;

use common::*;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::signer::{Method, Signer};
use object_store::{ClientOptions, GetOptions, ObjectStore, ObjectStoreExt};
use repository_format::*;

fn keys(c: &s3_cluster::Cluster) -> (String, String) {
    let text = std::fs::read_to_string(&c.credentials_file).unwrap();
    let (mut section, mut id, mut secret) = (false, String::new(), String::new());
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line == format!("[{}]", c.profile);
        } else if let (true, Some((k, v))) = (section, line.split_once('=')) {
            match k.trim() {
                "aws_access_key_id" => id = v.trim().into(),
                "aws_secret_access_key" => secret = v.trim().into(),
                _ => {}
            }
        }
    }
    (id, secret)
}

/// A raw client of `bucket` (what anyone holding the credentials has), with extra signed
/// headers on every request.
fn raw(c: &s3_cluster::Cluster, bucket: &str, headers: &[(&'static str, &str)]) -> AmazonS3 {
    let (id, secret) = keys(c);
    let mut h = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, v.parse().unwrap());
    }
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&c.region)
        .with_access_key_id(id)
        .with_secret_access_key(secret)
        .with_endpoint(&c.endpoint)
        .with_virtual_hosted_style_request(false)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_default_headers(h),
        )
        .build()
        .unwrap()
}

/// Creates `bucket` with object lock enabled, as an admin would before `repo init
/// --object-lock-days` (a CreateBucket: object_store's PUT on the bucket's own URL with the
/// signed `x-amz-bucket-object-lock-enabled` header; its complaint about the answer having
/// no ETag is expected).
fn create_lock_bucket(rt: &tokio::runtime::Runtime, c: &s3_cluster::Cluster, bucket: &str) {
    let s = raw(c, bucket, &[("x-amz-bucket-object-lock-enabled", "true")]);
    let _ = rt.block_on(s.put(&ObjPath::from(""), bytes::Bytes::new().into()));
}

/// The object lock headers the store reports for `key` of the repository under `prefix`.
fn retention(
    rt: &tokio::runtime::Runtime,
    c: &s3_cluster::Cluster,
    bucket: &str,
    key: &str,
) -> (Option<String>, Option<time::OffsetDateTime>) {
    let s = raw(c, bucket, &[]);
    rt.block_on(async {
        let url = s
            .signed_url(Method::HEAD, &ObjPath::from(key), Duration::from_secs(60))
            .await
            .unwrap();
        let r = reqwest::Client::new()
            .head(url.as_str())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "HEAD {key}: {}", r.status());
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
        let until = h("x-amz-object-lock-retain-until-date").map(|d| {
            time::OffsetDateTime::parse(&d, &time::format_description::well_known::Rfc3339).unwrap()
        });
        (h("x-amz-object-lock-mode"), until)
    })
}

#[test]
fn an_object_locked_repository_keeps_what_the_lock_retains() {
    let Some(c) = s3_cluster::cluster() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = format!(
        "sk-lock-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    create_lock_bucket(&rt, &c, &bucket);
    let mut loc = c.location(&bucket, "repo");
    loc.object_lock_days = Some(1);
    let opts = InitOptions {
        chunk_size: CS,
        ..Default::default()
    };
    let repo =
        Repository::init_location(&RepositoryLocation::S3(loc.clone()), &opts, None).unwrap();
    assert_eq!(repo.object_lock_days(), Some(1));
    let data = disk_bytes(CS as usize * 6, 81);
    let mut newer = data.clone();
    newer[0] ^= 1;
    let (g1, _) = backup(&repo, "l", &data, None);
    let (g2, _) = backup(&repo, "l", &newer, Some((g1, &[Area::new(0, 1)])));
    let key = repo.target_key(&identity("l")).unwrap();
    let (_, chunk) = repo
        .fixed_index(&key, g1, 2000)
        .unwrap()
        .stored_chunks()
        .next()
        .unwrap();

    // The store recorded a COMPLIANCE retention of a day (and at most the margin more) on the
    // config, the manifests and the chunks.
    let now = time::OffsetDateTime::now_utc();
    let p = loc.prefix.clone();
    let manifest = format!("{p}/targets/{key}/{}/manifest", g1.folder_name());
    for k in [
        format!("{p}/config"),
        manifest.clone(),
        format!("{p}/{}", ChunkStore::key(&chunk)),
    ] {
        let (mode, until) = retention(&rt, &c, &bucket, &k);
        assert_eq!(mode.as_deref(), Some("COMPLIANCE"), "{k}");
        let until = until.unwrap();
        assert!(
            until > now + time::Duration::hours(23) && until < now + time::Duration::hours(27),
            "{k}: retained until {until}"
        );
    }
    let chunk_key = format!("{p}/{}", ChunkStore::key(&chunk));
    let (_, first_until) = retention(&rt, &c, &bucket, &chunk_key);
    drop(repo);
    // (A later handle's retention date is later: its client is made later.)
    std::thread::sleep(Duration::from_secs(2));

    // Opened again without saying so, it still writes with the lock (from its config), and
    // lock records carry none (they are deleted all the time).
    let mut plain = loc.clone();
    plain.object_lock_days = None;
    let repo = Repository::open_location(&RepositoryLocation::S3(plain), None).unwrap();
    assert_eq!(repo.object_lock_days(), Some(1));
    assert!(repo.backend().object_lock().is_some());
    {
        let _held = repo.lock_shared(Duration::ZERO).unwrap();
        let claim = repo
            .backend()
            .list("locks/")
            .unwrap()
            .into_iter()
            .find(|o| o.key.ends_with(".claim"))
            .unwrap();
        let (mode, _) = retention(&rt, &c, &bucket, &format!("{p}/{}", claim.key));
        assert_eq!(mode, None, "{}", claim.key);
    }

    // Refreshing the lock: nothing is due within the hour (a dry run says so); with a horizon
    // beyond every retention, every object the generations use is written again, verified,
    // and its store retention moves later.
    {
        let shared = repo.lock_shared(Duration::ZERO).unwrap();
        let r = repo
            .refresh_object_lock(&shared, Duration::from_secs(3600), true)
            .unwrap();
        assert_eq!(r.objects_rewritten, 0, "{r:?}");
        assert!(r.objects_kept > 0, "{r:?}");
        let r = repo
            .refresh_object_lock(&shared, Duration::from_secs(3 * 86_400), false)
            .unwrap();
        let distinct: std::collections::HashSet<_> = [g1, g2]
            .iter()
            .flat_map(|g| {
                repo.fixed_index(&key, *g, 2000)
                    .unwrap()
                    .stored_chunks()
                    .map(|(_, d)| d)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(r.chunks_rewritten, distinct.len() as u64, "{r:?}");
        // The config, the two manifests and indexes too.
        assert!(r.objects_rewritten >= r.chunks_rewritten + 5, "{r:?}");
        let (mode, until) = retention(&rt, &c, &bucket, &chunk_key);
        assert_eq!(mode.as_deref(), Some("COMPLIANCE"));
        assert!(
            until.unwrap() > first_until.unwrap(),
            "{until:?} {first_until:?}"
        );
    }
    assert_eq!(restore(&repo, "l", g1), data);

    // prune keeps the generation the policy would drop, saying why; deleting it is refused.
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let policy = RetentionPolicy {
        keep_last: 1,
        ..Default::default()
    };
    let r = repo
        .prune(&x, &policy, None, time::OffsetDateTime::now_utc(), false)
        .unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    let d1 = r.targets[0]
        .generations
        .iter()
        .find(|d| d.id == g1)
        .unwrap();
    assert!(d1.keep);
    assert!(
        d1.reasons
            .iter()
            .any(|r| r.starts_with("object lock until")),
        "{d1:?}"
    );
    let err = repo
        .delete_generation(&x, &key, g1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("object lock"), "{err}");
    drop(x);

    // gc keeps unreferenced chunks the lock retains (those of a backup that never committed).
    {
        let (_l, _k, w) = begin_full(&repo, "l");
        let other = disk_bytes(CS as usize * 3, 82);
        w.ingest_disk(
            DiskDescriptor::new(2000, other.len() as u64),
            None,
            &[Area::new(0, other.len() as u64)],
            &mut MemorySource::new(other),
            &|_| {},
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let gc = repo
        .gc(
            &x,
            &GcOptions {
                dry_run: false,
                grace: Duration::from_secs(1),
            },
        )
        .unwrap();
    drop(x);
    assert_eq!(gc.chunks_removed, 0, "{gc:?}");
    assert!(gc.chunks_kept_locked >= 2, "{gc:?}");
    assert_eq!(restore(&repo, "l", g1), data);
    assert_eq!(restore(&repo, "l", g2), newer);

    // Someone with the credentials deletes a manifest with a plain DELETE: the store hides it
    // behind a delete marker, but the locked version is still there, readable by its id.
    let s = raw(&c, &bucket, &[]);
    let path = ObjPath::from(manifest.as_str());
    rt.block_on(async {
        let meta = s.head(&path).await.unwrap();
        let before = s.get(&path).await.unwrap().bytes().await.unwrap();
        let version = meta.version.clone().expect("a versioned bucket");
        s.delete(&path).await.unwrap();
        assert!(matches!(
            s.get(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        let kept = s
            .get_opts(
                &path,
                GetOptions {
                    version: Some(version),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(kept, before);
    });
}

#[test]
fn object_lock_needs_a_bucket_with_object_lock_enabled() {
    let Some(c) = s3_cluster::cluster() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = InitOptions {
        chunk_size: CS,
        ..Default::default()
    };
    // A bucket without object lock refuses the retained writes: a clear error.
    let plain = format!(
        "sk-plain-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let _ = rt.block_on(raw(&c, &plain, &[]).put(&ObjPath::from(""), bytes::Bytes::new().into()));
    let mut loc = c.location(&plain, "repo");
    loc.object_lock_days = Some(3);
    let err = Repository::init_location(&RepositoryLocation::S3(loc), &opts, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs object lock enabled"), "{err}");
    // A missing bucket is not created without object lock.
    let mut loc = c.location("sk-missing-lock-bucket", "repo");
    loc.object_lock_days = Some(3);
    let err = Repository::init_location(&RepositoryLocation::S3(loc), &opts, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("create it with object lock enabled"), "{err}");
}
