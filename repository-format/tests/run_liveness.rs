//! What a backup asks the locks before it removes a snapshot another run took: which runs hold
//! a live record of the repository lock (`Repository::live_runs`), and a target lock that a
//! backup keeps past its commit (`TargetLock::share`).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use repository_format::*;

/// A claim of the repository lock by a run on another machine, last renewed `age` ago.
fn foreign_claim(root: &std::path::Path, run: &str, age: Duration) {
    let dir = root.join("locks").join("repository");
    std::fs::create_dir_all(&dir).unwrap();
    let holder = LockHolder {
        pid: 4_000_000,
        host: "other-host.example".into(),
        command: "safekeeping backup vm:web01".into(),
        since: time::OffsetDateTime::now_utc(),
        mode: LockMode::Shared,
        stale: None,
        run_id: run.into(),
        machine: "another-machine".into(),
        ttl_seconds: 60,
        pin: None,
    };
    let path = dir.join(format!("{run}.claim"));
    std::fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn live(repo: &Repository) -> Vec<String> {
    let mut runs: Vec<String> = repo
        .live_runs()
        .unwrap()
        .into_iter()
        .map(|h| h.run_id)
        .collect();
    runs.sort();
    runs
}

#[test]
fn live_runs_are_the_holders_of_the_repository_lock_that_are_not_stale() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    assert!(live(&repo).is_empty());
    let a = repo.lock_shared(Duration::ZERO).unwrap();
    let b = repo.lock_shared(Duration::ZERO).unwrap();
    assert_ne!(a.run_id(), b.run_id());
    assert_eq!(a.run_id().len(), 32, "{}", a.run_id());
    let mut both = vec![a.run_id().to_string(), b.run_id().to_string()];
    both.sort();
    assert_eq!(live(&repo), both);
    // A run that ended is gone at once.
    let b_run = b.run_id().to_string();
    drop(b);
    assert_eq!(live(&repo), vec![a.run_id().to_string()]);
    assert!(!live(&repo).contains(&b_run));

    // A run on another machine counts while it renews its record, not after its ttl.
    let renewing = "11111111111111111111111111111111";
    let silent = "22222222222222222222222222222222";
    foreign_claim(repo.root(), renewing, Duration::from_secs(5));
    foreign_claim(repo.root(), silent, Duration::from_secs(600));
    let runs = live(&repo);
    assert!(runs.contains(&renewing.to_string()), "{runs:?}");
    assert!(!runs.contains(&silent.to_string()), "{runs:?}");
    assert!(runs.contains(&a.run_id().to_string()), "{runs:?}");
}

#[test]
fn a_shared_target_lock_is_held_until_the_last_share_goes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let key = repo.target_key(&identity("web01")).unwrap();
    let first = repo.lock_target(&key, Duration::ZERO).unwrap();
    let writer_share = first.share();
    assert_eq!(writer_share.key(), &key);
    // The writer commits (its share goes); the backup still holds the lock.
    drop(writer_share);
    assert!(matches!(
        repo.lock_target(&key, Duration::ZERO),
        Err(Error::Locked { .. })
    ));
    // Its snapshot removed, the backup lets go, and the next backup gets the lock.
    drop(first);
    repo.lock_target(&key, Duration::ZERO).unwrap();
}
