//! The repository on S3: against a real SeaweedFS cluster on loopback (see `s3_cluster`).
//!
//! `SAFEKEEPING_TEST_S3_CONFIG=DIR/s3.json` uses a cluster `safekeeping-lab s3 up --dir DIR`
//! started; otherwise the tests start their own when `weed` is installed.
#![cfg(feature = "s3")]

mod common;
mod s3_cluster;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use repository_format::*;

const BUCKET: &str = "safekeeping-tests";

fn opts() -> InitOptions {
    InitOptions {
        chunk_size: CS,
        compression_level: 1,
        ..Default::default()
    }
}

fn enc_opts() -> InitOptions {
    InitOptions {
        encryption: Encryption::Aes256Gcm,
        kdf: KdfParams::insecure_for_tests(),
        ..opts()
    }
}

macro_rules! cluster_or_skip {
    () => {
        match s3_cluster::cluster() {
            Some(c) => c,
            None => return,
        }
    };
}

fn s3(loc: &S3Location) -> RepositoryLocation {
    RepositoryLocation::S3(loc.clone())
}

fn round_trip(encrypted: bool) {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, if encrypted { "enc" } else { "plain" });
    let pass = Passphrase::from(PASSPHRASE);
    let (o, p) = if encrypted {
        (enc_opts(), Some(&pass))
    } else {
        (opts(), None)
    };
    let repo = Repository::init_location(&s3(&loc), &o, p).unwrap();
    assert_eq!(repo.is_encrypted(), encrypted);
    let data = disk_bytes(CS as usize * 24 + 1000, 3);
    let (g1, s1) = backup(&repo, "web", &data, None);
    assert!(s1.new_chunks > 0);

    // Reopen through a fresh connection: everything comes from the bucket.
    let repo = Repository::open_location(&s3(&loc), p).unwrap();
    assert_eq!(restore(&repo, "web", g1), data);
    let mut changed = data.clone();
    changed[CS as usize * 5..CS as usize * 5 + 100].fill(0xAB);
    changed[CS as usize * 20 + 7] ^= 1;
    let areas = [
        Area::new(CS as u64 * 5, 100),
        Area::new(CS as u64 * 20 + 7, 1),
    ];
    let (g2, s2) = backup(&repo, "web", &changed, Some((g1, &areas)));
    assert_eq!(s2.chunks_read, 2);
    assert_eq!(restore(&repo, "web", g2), changed);
    assert_eq!(restore(&repo, "web", g1), data);
    let key = repo.target_key(&identity("web")).unwrap();
    assert_eq!(
        repo.read_metadata(&key, g2, "vm.vmx").unwrap(),
        b"displayName = \"x\""
    );
    let gens = repo.generations(&key).unwrap();
    assert_eq!(gens.iter().map(|g| g.id).collect::<Vec<_>>(), vec![g1, g2]);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.generations, 2);

    // Encrypted: no plain name in the bucket, and a wrong passphrase is refused.
    let objects = s3_cluster::backend(&loc).list("").unwrap();
    assert!(objects.iter().any(|o| o.key == "config"));
    if encrypted {
        assert!(objects.iter().all(|o| !o.key.contains("uuid-web")));
        assert!(objects.iter().any(|o| o.key.starts_with("keys/")));
        assert!(matches!(
            Repository::open_location(&s3(&loc), Some(&Passphrase::from("wrong"))),
            Err(Error::WrongPassphrase { .. })
        ));
    } else {
        assert!(objects
            .iter()
            .any(|o| o.key.starts_with("targets/vm-uuid-web/gen-000002/manifest")));
    }
    // No marker of a running writer is left behind, and init on a used prefix is refused.
    assert!(objects.iter().all(|o| !o.key.ends_with("incomplete.json")));
    assert!(matches!(
        Repository::init_location(&s3(&loc), &opts(), None),
        Err(Error::NotEmpty { .. })
    ));
}

#[test]
fn round_trip_plain() {
    round_trip(false);
}

#[test]
fn round_trip_encrypted() {
    round_trip(true);
}

#[test]
fn init_creates_a_missing_bucket_and_open_of_an_empty_prefix_says_so() {
    let c = cluster_or_skip!();
    let bucket = format!(
        "sk-new-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let loc = c.location(&bucket, "x");
    match Repository::open_location(&s3(&loc), None) {
        Err(Error::Config { path, reason }) => {
            assert!(path.to_string_lossy().starts_with("s3://"), "{path:?}");
            assert!(reason.contains("not a safekeeping repository"), "{reason}");
        }
        Err(e) => {
            // A missing bucket may answer NoSuchBucket: the error still names the place.
            assert!(e.to_string().contains(&bucket), "{e}");
        }
        Ok(_) => panic!("opened a repository that does not exist"),
    }
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let data = disk_bytes(CS as usize * 3, 9);
    let (g, _) = backup(&repo, "a", &data, None);
    assert_eq!(restore(&repo, "a", g), data);
}

#[test]
fn commit_is_a_conditional_create() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "commit");
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let b = s3_cluster::backend(&loc);
    b.create_new("probe/x", b"first").unwrap();
    let e = b.create_new("probe/x", b"second").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(b.get("probe/x", 100).unwrap(), b"first");

    // Another writer (one that ignored the target lock) committed the same generation first:
    // ours fails and theirs stays.
    let data = disk_bytes(CS as usize * 2, 1);
    let (_lock, key, w) = begin_full(&repo, "t");
    w.ingest_disk(
        DiskDescriptor::new(2000, data.len() as u64),
        None,
        &[Area::new(0, data.len() as u64)],
        &mut MemorySource::new(data.clone()),
        &|_| {},
    )
    .unwrap();
    let mkey = format!("targets/{key}/gen-000001/manifest");
    b.create_new(&mkey, b"their manifest").unwrap();
    let err = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("commit"), "{err}");
    assert_eq!(b.get(&mkey, 100).unwrap(), b"their manifest");
}

#[test]
fn two_writers_race_for_the_exclusive_lock_and_one_wins() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "race");
    Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    // Separate handles (separate connections), as two hosts would have.
    let inside = AtomicUsize::new(0);
    let max_inside = AtomicUsize::new(0);
    let wins = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (loc, inside, max_inside, wins) = (&loc, &inside, &max_inside, &wins);
            s.spawn(move || {
                let repo = Repository::open_location(&s3(loc), None).unwrap();
                for _ in 0..3 {
                    let x = repo.lock_exclusive(Duration::from_secs(120)).unwrap();
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(n, Ordering::SeqCst);
                    wins.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(x);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 9);
    assert_eq!(max_inside.into_inner(), 1, "two exclusive holders at once");

    // Exclusive excludes shared, naming the holder; a zero-wait second exclusive fails.
    let a = Repository::open_location(&s3(&loc), None).unwrap();
    let b = Repository::open_location(&s3(&loc), None).unwrap();
    let x = a.lock_exclusive(Duration::ZERO).unwrap();
    match b.lock_shared(Duration::from_millis(500)) {
        Err(Error::Locked { lock, holders }) => {
            assert!(lock.to_string_lossy().starts_with("s3://"), "{lock:?}");
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].mode, LockMode::Exclusive);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(x);
    let _s1 = a.lock_shared(Duration::ZERO).unwrap();
    let _s2 = b.lock_shared(Duration::ZERO).unwrap();
}

#[test]
fn a_lock_whose_heartbeat_stops_expires() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "stale");
    let mut repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    repo.set_lock_ttl(Duration::from_secs(2));
    // A holder on another machine that stopped renewing (its claim, no heartbeat).
    let holder = LockHolder {
        pid: 1234,
        host: "gone.example".into(),
        command: "safekeeping backup".into(),
        since: time::OffsetDateTime::now_utc(),
        mode: LockMode::Exclusive,
        stale: None,
        run_id: "00112233445566778899aabbccddeeff".into(),
        machine: "elsewhere".into(),
        ttl_seconds: 2,
        pin: None,
    };
    let b = s3_cluster::backend(&loc);
    b.create_new(
        "locks/repository/00112233445566778899aabbccddeeff.claim",
        &serde_json::to_vec(&holder).unwrap(),
    )
    .unwrap();
    let err = repo.lock_shared(Duration::ZERO).unwrap_err().to_string();
    assert!(err.contains("gone.example"), "{err}");
    std::thread::sleep(Duration::from_secs(4));
    let l = repo.lock_shared(Duration::ZERO).unwrap();
    assert_eq!(l.stale_records().len(), 1);
    assert!(l.stale_records()[0]
        .stale
        .as_deref()
        .unwrap()
        .contains("no heartbeat"));
    // A live holder renews: with a 2 s ttl, it is still held after 5 s.
    drop(l);
    let held = repo.lock_exclusive(Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let other = Repository::open_location(&s3(&loc), None).unwrap();
    assert!(matches!(
        other.lock_shared(Duration::ZERO),
        Err(Error::Locked { .. })
    ));
    drop(held);
    other.lock_shared(Duration::ZERO).unwrap();
}

#[test]
fn a_chunk_missing_from_the_store_is_stored_again_by_the_next_backup() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "heal");
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let data = disk_bytes(CS as usize * 8, 5);
    let (g1, _) = backup(&repo, "h", &data, None);
    let key = repo.target_key(&identity("h")).unwrap();
    let idx = repo.fixed_index(&key, g1, 2000).unwrap();
    let (_, lost) = idx.stored_chunks().next().unwrap();
    let b = s3_cluster::backend(&loc);
    b.delete(&ChunkStore::key(&lost)).unwrap();
    let r = repo.check(&CheckOptions::default()).unwrap();
    assert!(!r.ok());
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::MissingChunk));
    // An incremental with no changed areas reads the lost chunk again (at every offset that
    // uses it) and stores it.
    let uses = idx.stored_chunks().filter(|(_, d)| *d == lost).count() as u64;
    let (g2, s2) = backup(&repo, "h", &data, Some((g1, &[])));
    assert_eq!(s2.chunks_read, uses);
    assert!(b.head(&ChunkStore::key(&lost)).unwrap().is_some());
    assert_eq!(restore(&repo, "h", g1), data);
    assert_eq!(restore(&repo, "h", g2), data);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
}

#[test]
fn gc_beside_a_running_writer_deletes_nothing_in_use() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "gc");
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let keep = disk_bytes(CS as usize * 6, 11);
    let gone = disk_bytes(CS as usize * 6, 12);
    let (gk, _) = backup(&repo, "keep", &keep, None);
    let (gg, _) = backup(&repo, "gone", &gone, None);
    let b = s3_cluster::backend(&loc);
    let before = b.list("chunks/").unwrap().len();
    {
        let x = repo.lock_exclusive(Duration::ZERO).unwrap();
        repo.delete_generation(&x, &repo.target_key(&identity("gone")).unwrap(), gg)
            .unwrap();
    }
    // Let the deleted generation's chunks age past the grace period (cutoff = start of the
    // oldest running writer − grace, by the store's clock).
    std::thread::sleep(Duration::from_secs(3));
    // A writer is running (it holds its target lock; its chunks are not referenced by any
    // committed generation yet). It let go of the shared lock, as a broken lock would.
    let running = disk_bytes(CS as usize * 4, 13);
    let (shared, _key, w) = begin_full(&repo, "running");
    w.ingest_disk(
        DiskDescriptor::new(2000, running.len() as u64),
        None,
        &[Area::new(0, running.len() as u64)],
        &mut MemorySource::new(running.clone()),
        &|_| {},
    )
    .unwrap();
    drop(shared);
    std::thread::sleep(Duration::from_secs(2));
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let r = repo
        .gc(
            &x,
            &GcOptions {
                dry_run: false,
                grace: Duration::from_secs(1),
            },
        )
        .unwrap();
    drop(x);
    assert_eq!(r.incomplete_in_progress.len(), 1, "{r:#?}");
    assert!(r.incomplete_removed.is_empty());
    assert!(r.chunks_removed > 0, "{r:#?}");
    assert!(b.list("chunks/").unwrap().len() < before + 4);
    // The writer commits after gc: everything it uses is there.
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    assert_eq!(restore(&repo, "running", g), running);
    assert_eq!(restore(&repo, "keep", gk), keep);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
}

#[test]
fn wrong_credentials_give_a_clear_error_naming_the_repository() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "creds");
    Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let mut bad = loc.clone();
    bad.credentials = S3Credentials::from_keys("AKIAWRONGWRONGWRONG", "not-the-secret", None);
    let err = Repository::open_location(&s3(&bad), None).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&loc.display()), "{msg}");
    assert!(!msg.contains("not-the-secret"), "{msg}");
    match &err {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{msg}")
        }
        e => panic!("expected an I/O error, got {e:?}"),
    }
    // Credentials that may read but not write: reading works, a write fails at once (a 403 is
    // not retried) with an error naming the object.
    let mut ro = loc.clone();
    ro.credentials = S3Credentials::File {
        path: c.credentials_file.clone(),
        profile: Some(c.readonly_profile.clone()),
    };
    let reader = Repository::open_location(&s3(&ro), None).unwrap();
    assert!(reader.targets().unwrap().is_empty());
    let t = std::time::Instant::now();
    let err = reader.lock_shared(Duration::ZERO).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(
        msg.contains(&loc.display()) && msg.contains("locks"),
        "{msg}"
    );
    match &err {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{msg}")
        }
        e => panic!("expected an I/O error, got {e:?}"),
    }
    // Missing credentials file: named, before anything is sent.
    let mut missing = loc.clone();
    missing.credentials = S3Credentials::File {
        path: "/nonexistent/credentials".into(),
        profile: None,
    };
    let msg = Repository::open_location(&s3(&missing), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/credentials"), "{msg}");
    // Plain http without allow_http is refused.
    let mut plain = loc.clone();
    plain.allow_http = false;
    let msg = Repository::open_location(&s3(&plain), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("allow_http"), "{msg}");
}

#[test]
fn works_from_tokio_spawn_blocking_and_drops_inside_a_runtime() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "tokio");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = disk_bytes(CS as usize * 5, 21);
    let expected = data.clone();
    rt.block_on(async move {
        let repo = tokio::task::spawn_blocking(move || {
            let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
            let (g, _) = backup(&repo, "tk", &data, None);
            assert_eq!(restore(&repo, "tk", g), data);
            repo
        })
        .await
        .unwrap();
        // The last handle (and so the backend's runtime) is dropped in an async task.
        let gens = tokio::task::spawn_blocking({
            let repo = repo.clone();
            move || {
                repo.generations(&repo.target_key(&identity("tk")).unwrap())
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert_eq!(gens.len(), 1);
        drop(repo);
    });
    drop(expected);
}

#[test]
fn backup_progress_is_reported_with_parallel_uploads() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "progress");
    let mut repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    repo.set_upload_concurrency(8);
    let data = disk_bytes(CS as usize * 40, 31);
    let (_lock, key, w) = begin_full(&repo, "p");
    let seen = AtomicUsize::new(0);
    let stats = w
        .ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            None,
            &[Area::new(0, data.len() as u64)],
            &mut MemorySource::new(data.clone()),
            &|n| {
                seen.fetch_add(n as usize, Ordering::SeqCst);
            },
        )
        .unwrap();
    assert_eq!(seen.into_inner(), data.len());
    assert_eq!(stats.logical_bytes, data.len() as u64);
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    let mut out = vec![0u8; data.len()];
    r.read_at(0, &mut out).unwrap();
    assert_eq!(out, data);
}

#[test]
fn chunk_cache_is_rebuilt_from_a_listing_and_a_chunk_it_wrongly_claims_is_stored_again() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "cache");
    let cache_dir = loc.cache_dir.clone().unwrap();
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let data = disk_bytes(CS as usize * 10, 41);
    let (g1, _) = backup(&repo, "c", &data, None);
    let b = s3_cluster::backend(&loc);
    let stored = b.list("chunks/").unwrap().len() as u64;
    assert!(stored > 0);
    assert_eq!(repo.cached_chunk_count(), Some(stored));
    drop(repo);

    // The cache is lost: the next handle rebuilds it from a listing of the store.
    std::fs::remove_dir_all(&cache_dir).unwrap();
    let repo = Repository::open_location(&s3(&loc), None).unwrap();
    assert_eq!(repo.cached_chunk_count(), Some(stored));

    // A chunk vanishes behind the cache's back (not through gc, so the epoch stays).
    let key = repo.target_key(&identity("c")).unwrap();
    let idx = repo.fixed_index(&key, g1, 2000).unwrap();
    let (_, lost) = idx.stored_chunks().next().unwrap();
    b.delete(&ChunkStore::key(&lost)).unwrap();

    // A backup of the same data trusts the cache for the dedup check; the commit's
    // verification finds the chunk missing and refuses to commit.
    let (_lock, _key, w) = begin_full(&repo, "c");
    let st = w
        .ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            None,
            &[Area::new(0, data.len() as u64)],
            &mut MemorySource::new(data.clone()),
            &|_| {},
        )
        .unwrap();
    assert_eq!(st.new_chunks, 0, "the cache vouched for every chunk");
    let err = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing from the store"), "{err}");
    drop(_lock);

    // The next backup stores it again, and everything restores.
    let (g2, s2) = backup(&repo, "c", &data, None);
    assert!(s2.new_chunks >= 1, "{s2:?}");
    assert!(b.head(&ChunkStore::key(&lost)).unwrap().is_some());
    assert_eq!(restore(&repo, "c", g1), data);
    assert_eq!(restore(&repo, "c", g2), data);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);

    // gc that deletes chunks replaces the epoch: another host's cache is rebuilt.
    let other = Repository::open_location(
        &s3(&S3Location {
            cache_dir: Some(cache_dir.join("other-host")),
            ..loc.clone()
        }),
        None,
    )
    .unwrap();
    assert_eq!(other.cached_chunk_count(), Some(stored));
    // (One process at a time per cache folder: sled locks it.)
    drop(other);
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    repo.delete_generation(&x, &key, g1).unwrap();
    repo.delete_generation(&x, &key, g2).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let r = repo
        .gc(
            &x,
            &GcOptions {
                dry_run: false,
                grace: Duration::from_secs(1),
            },
        )
        .unwrap();
    drop(x);
    assert_eq!(r.chunks_removed, stored);
    let other = Repository::open_location(
        &s3(&S3Location {
            cache_dir: Some(cache_dir.join("other-host")),
            ..loc.clone()
        }),
        None,
    )
    .unwrap();
    assert_eq!(other.cached_chunk_count(), Some(0));
}

#[test]
fn a_volume_server_killed_during_a_backup_loses_nothing() {
    let c = cluster_or_skip!();
    // Only a cluster these tests started may be damaged (never the lab's).
    let Some(dir) = c.dir.clone() else { return };
    let loc = c.location(BUCKET, "kill");
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let data = disk_bytes(CS as usize * 64, 61);
    let (_lock, key, w) = begin_full(&repo, "k");
    let pid: u32 = std::fs::read_to_string(dir.join("volume2.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let st = w
        .ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            None,
            &[Area::new(0, data.len() as u64)],
            &mut MemorySource::new(data.clone()),
            &|_| {
                // At the first progress report, SIGKILL one of the three volume servers (by its
                // pid): replication 001 keeps every object on two of them.
                if !killed.swap(true, Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    let ok = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok, "could not kill volume server {pid}");
                }
            },
        )
        .unwrap();
    assert!(st.new_chunks > 0);
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    let mut out = vec![0u8; data.len()];
    r.read_at(0, &mut out).unwrap();
    assert_eq!(out, data);
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

/// Throughput of a full backup and a restore over S3 (SeaweedFS on loopback) against a local
/// folder, at two upload concurrencies. Run by hand:
/// `cargo test -p repository-format --test s3 -- --ignored --nocapture measure`.
#[test]
#[ignore = "a measurement, not a check: run by hand (see the doc comment)"]
fn measure_backup_and_restore_throughput() {
    let c = cluster_or_skip!();
    let size = CS as usize * 2048; // 128 MiB of mixed data
    let data = disk_bytes(size, 77);
    let mb = size as f64 / (1 << 20) as f64;
    let run = |repo: &Repository, label: &str| {
        let t = std::time::Instant::now();
        let (g, _) = backup(repo, "m", &data, None);
        let b = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        assert_eq!(restore(repo, "m", g), data);
        let r = t.elapsed().as_secs_f64();
        eprintln!(
            "{label}: backup {:.0} MiB/s ({b:.1} s), restore {:.0} MiB/s ({r:.1} s)",
            mb / b,
            mb / r
        );
    };
    let dir = tempfile::tempdir().unwrap();
    // The default chunk size (1 MiB), not the tests' 64 KiB.
    let o = InitOptions {
        chunk_size: 1 << 20,
        ..opts()
    };
    let local = Repository::init(dir.path().join("r"), &o).unwrap();
    run(&local, "local folder");
    for n in [4, 16] {
        let loc = c.location(BUCKET, "measure");
        let mut repo = Repository::init_location(&s3(&loc), &o, None).unwrap();
        repo.set_upload_concurrency(n);
        run(&repo, &format!("S3, {n} uploads in flight"));
    }
}

#[test]
fn copy_between_a_folder_and_a_bucket_sends_only_missing_chunks_and_resumes() {
    let c = cluster_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let local = Repository::init(dir.path().join("src"), &opts()).unwrap();
    let data = disk_bytes(CS as usize * 12, 51);
    let mut changed = data.clone();
    changed[100] ^= 0xFF;
    let (g1, _) = backup(&local, "v", &data, None);
    let (g2, _) = backup(&local, "v", &changed, Some((g1, &[Area::new(0, 101)])));
    let key = local.target_key(&identity("v")).unwrap();

    // Same key material (both unencrypted): blobs travel as they are.
    let loc = c.location(BUCKET, "copy");
    let remote = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let copy = |from: &Repository, to: &Repository, targets: Vec<TargetKey>| {
        let a = from.lock_shared(Duration::ZERO).unwrap();
        let b = to.lock_shared(Duration::ZERO).unwrap();
        from.copy_to(
            &a,
            to,
            &b,
            &CopyOptions {
                targets,
                only_succeeded: false,
            },
        )
        .unwrap()
    };
    // The first copy sends every chunk once...
    let r1 = copy(&local, &remote, vec![key.clone()]);
    assert_eq!(r1.copied.len(), 2);
    let distinct_g1: HashSet<_> = local
        .fixed_index(&key, g1, 2000)
        .unwrap()
        .stored_chunks()
        .map(|(_, d)| d)
        .chain(
            local
                .fixed_index(&key, g2, 2000)
                .unwrap()
                .stored_chunks()
                .map(|(_, d)| d),
        )
        .collect();
    assert_eq!(r1.chunks_sent as usize, distinct_g1.len());
    // ...and run again: nothing travels twice.
    let r2 = copy(&local, &remote, vec![]);
    assert!(r2.copied.is_empty(), "{r2:?}");
    assert_eq!(r2.already_there, 2);
    assert_eq!(r2.chunks_sent, 0);
    let rkey = remote.target_key(&identity("v")).unwrap();
    let gens = remote.generations(&rkey).unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(restore(&remote, "v", gens[0].id), data);
    assert_eq!(restore(&remote, "v", gens[1].id), changed);
    assert_eq!(
        remote.read_metadata(&rkey, gens[1].id, "vm.vmx").unwrap(),
        b"displayName = \"x\""
    );
    let r = remote.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);

    // Different keys (bucket → encrypted folder): chunks are re-encoded under the new keys.
    let enc = encrypted_repo(&dir.path().join("enc"));
    let r3 = copy(&remote, &enc, vec![]);
    assert_eq!(r3.copied.len(), 2);
    let ekey = enc.target_key(&identity("v")).unwrap();
    assert_ne!(ekey, rkey);
    let egens = enc.generations(&ekey).unwrap();
    assert_eq!(restore(&enc, "v", egens[1].id), changed);
    let r = enc.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    let m = enc.manifest(&ekey, egens[0].id).unwrap();
    assert_eq!(
        m.extra["copied_from"]["repository_id"].as_str().unwrap(),
        remote.config().repository_id.to_string()
    );

    // A damaged source chunk stops its generation before anything of it is committed.
    let dir2 = tempfile::tempdir().unwrap();
    let src = Repository::init(dir2.path().join("s"), &opts()).unwrap();
    let (sg, _) = backup(&src, "d", &data, None);
    let skey = src.target_key(&identity("d")).unwrap();
    let (_, first) = src
        .fixed_index(&skey, sg, 2000)
        .unwrap()
        .stored_chunks()
        .next()
        .unwrap();
    std::fs::write(src.chunk_store().path(&first), b"garbage").unwrap();
    let dest =
        Repository::init_location(&s3(&c.location(BUCKET, "copy-bad")), &opts(), None).unwrap();
    let a = src.lock_shared(Duration::ZERO).unwrap();
    let b = dest.lock_shared(Duration::ZERO).unwrap();
    let err = src
        .copy_to(&a, &dest, &b, &CopyOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Chunk(_)), "{err}");
    assert!(dest
        .generations(&dest.target_key(&identity("d")).unwrap())
        .map(|g| g.is_empty())
        .unwrap_or(true));
}

#[test]
fn repair_quarantines_a_damaged_chunk_in_the_bucket_and_the_next_backup_heals_it() {
    let c = cluster_or_skip!();
    let loc = c.location(BUCKET, "repair");
    let repo = Repository::init_location(&s3(&loc), &opts(), None).unwrap();
    let data = disk_bytes(CS as usize * 6, 71);
    let (g1, _) = backup(&repo, "r", &data, None);
    let key = repo.target_key(&identity("r")).unwrap();
    let (_, bad) = repo
        .fixed_index(&key, g1, 2000)
        .unwrap()
        .stored_chunks()
        .next()
        .unwrap();
    let b = s3_cluster::backend(&loc);
    let ckey = ChunkStore::key(&bad);
    let mut blob = b.get(&ckey, 1 << 20).unwrap();
    let n = blob.len();
    blob[n - 1] ^= 0x55; // bit rot in the payload
    b.put(&ckey, &blob).unwrap();
    let epoch_before = b.get("cache-epoch", 100).unwrap();

    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let r = repo.check_and_repair(&x).unwrap();
    drop(x);
    assert_eq!(r.quarantined.len(), 1, "{r:#?}");
    let q = &r.quarantined[0];
    assert!(q
        .quarantine_path
        .to_string_lossy()
        .starts_with(&format!("{}/quarantine/", loc.display())));
    assert!(b.head(&ckey).unwrap().is_none());
    let qkey = format!("quarantine/{}/{}", &bad.to_hex()[..4], bad.to_hex());
    assert_eq!(b.get(&qkey, 1 << 20).unwrap(), blob, "kept as it was");
    // The chunk cache epoch changed: no host's cache still vouches for the moved chunk.
    assert_ne!(b.get("cache-epoch", 100).unwrap(), epoch_before);

    // The next backup of the same data stores a good copy; everything is whole again.
    let (g2, s2) = backup(&repo, "r", &data, None);
    assert!(s2.new_chunks >= 1);
    assert_eq!(restore(&repo, "r", g1), data);
    assert_eq!(restore(&repo, "r", g2), data);
    let r = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
    assert_eq!(r.quarantine_files, 1);
}
