//! Locks between threads and between processes.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use repository_format::*;

#[test]
fn exclusive_excludes_shared_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let s1 = repo.lock_shared(Duration::ZERO).unwrap();
    let s2 = repo.lock_shared(Duration::ZERO).unwrap();
    let t = Instant::now();
    let err = repo.lock_exclusive(Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    match &err {
        Error::Locked { holders, .. } => {
            assert_eq!(holders.len(), 2);
            assert!(holders
                .iter()
                .all(|h| h.pid == std::process::id() && h.mode == LockMode::Shared));
            assert!(holders.iter().all(|h| h.stale.is_none()));
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())) && msg.contains("since"),
        "{msg}"
    );
    drop(s1);
    drop(s2);
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    assert!(x.stale_records().is_empty());
    // Waiting works: a thread releases the exclusive lock after a moment.
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(x);
        });
        let t = Instant::now();
        let sh = repo.lock_shared(Duration::from_secs(10)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(sh.mode(), LockMode::Shared);
    });
}

#[test]
fn one_backup_per_target() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let k1 = repo.target_key(&identity("a")).unwrap();
    let k2 = repo.target_key(&identity("b")).unwrap();
    let l1 = repo.lock_target(&k1, Duration::ZERO).unwrap();
    let _l2 = repo.lock_target(&k2, Duration::ZERO).unwrap();
    assert!(matches!(
        repo.lock_target(&k1, Duration::from_millis(50)),
        Err(Error::Locked { .. })
    ));
    // The writer keeps the target lock until commit.
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let w = repo
        .begin_generation(&lock, l1, identity("a"), BackupMode::Full, None)
        .unwrap();
    assert!(repo.lock_target(&k1, Duration::from_millis(50)).is_err());
    w.commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    assert!(repo.lock_target(&k1, Duration::ZERO).is_ok());
    // A lock for another target is refused.
    let wrong = repo.lock_target(&k2, Duration::from_millis(50));
    assert!(wrong.is_err());
    let l3 = repo
        .lock_target(&repo.target_key(&identity("c")).unwrap(), Duration::ZERO)
        .unwrap();
    assert!(matches!(
        repo.begin_generation(&lock, l3, identity("d"), BackupMode::Full, None),
        Err(Error::LockRequired { .. })
    ));
}

/// Child side of `lock_held_by_another_process`: takes the exclusive lock and waits.
#[test]
fn lock_child_helper() {
    let Ok(root) = std::env::var("SAFEKEEPING_TEST_LOCK_CHILD") else {
        return;
    };
    let root = PathBuf::from(root);
    let repo = reopen(&root.join("repo"));
    let _x = repo.lock_exclusive(Duration::from_secs(5)).unwrap();
    std::fs::write(root.join("locked"), b"1").unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lock_held_by_another_process_and_its_crash() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SAFEKEEPING_TEST_LOCK_CHILD", dir.path())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.path().join("locked").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "child never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    match repo.lock_shared(Duration::from_millis(200)) {
        Err(Error::Locked { holders, .. }) => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].pid, child.id());
            assert_eq!(holders[0].mode, LockMode::Exclusive);
            assert!(holders[0].command.contains("lock_child_helper"));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // The child dies without releasing: the OS lock goes, the record stays and is reported stale.
    child.kill().unwrap();
    child.wait().unwrap();
    let l = repo.lock_shared(Duration::from_secs(5)).unwrap();
    assert_eq!(l.stale_records().len(), 1);
    assert_eq!(l.stale_records()[0].pid, child.id());
    assert!(l.stale_records()[0]
        .stale
        .as_deref()
        .unwrap()
        .contains("not running"));
    drop(l);
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    assert!(
        x.stale_records().is_empty(),
        "the stale record was removed once reported"
    );
}

fn write_claim(root: &std::path::Path, run: &str, h: &LockHolder) {
    let dir = root.join("locks").join("repository");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{run}.claim")),
        serde_json::to_vec(h).unwrap(),
    )
    .unwrap();
}

fn foreign_holder(host: &str, since: time::OffsetDateTime, ttl: u64) -> LockHolder {
    LockHolder {
        pid: 4_000_000,
        host: host.into(),
        command: "safekeeping gc".into(),
        since,
        mode: LockMode::Exclusive,
        stale: None,
        run_id: "0123456789abcdef0123456789abcdef".into(),
        machine: "another-machine".into(),
        ttl_seconds: ttl,
        pin: None,
    }
}

#[test]
fn lock_from_another_live_host_blocks_until_its_heartbeat_stops() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let run = "0123456789abcdef0123456789abcdef";
    // Taken 25 hours ago but still renewing: a long backup is not abandoned.
    let h = foreign_holder(
        "other-host.example",
        time::OffsetDateTime::now_utc() - time::Duration::hours(25),
        2,
    );
    write_claim(repo.root(), run, &h);
    let err = repo
        .lock_shared(Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other-host.example") && err.contains("safekeeping gc"),
        "{err}"
    );
    // Its heartbeat stops: after its ttl (2 s, by the store's clock) it is stale.
    std::thread::sleep(Duration::from_millis(2500));
    let l = repo.lock_shared(Duration::ZERO).unwrap();
    assert_eq!(l.stale_records().len(), 1);
    assert!(l.stale_records()[0]
        .stale
        .as_deref()
        .unwrap()
        .contains("no heartbeat"));
    assert!(!repo
        .root()
        .join("locks/repository")
        .join(format!("{run}.claim"))
        .exists());
}

#[test]
fn same_host_name_on_another_machine_is_not_judged_by_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let me = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    // Same host name, a pid that does not run here, but another machine: the record is live
    // (the old rule deleted it, and both hosts then held the lock).
    let h = foreign_holder(&me, time::OffsetDateTime::now_utc(), 300);
    write_claim(repo.root(), "fedcba9876543210fedcba9876543210", &h);
    assert!(matches!(
        repo.lock_exclusive(Duration::from_millis(200)),
        Err(Error::Locked { .. })
    ));
}

#[test]
fn racing_exclusive_lockers_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let inside = std::sync::atomic::AtomicUsize::new(0);
    let entered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            let (repo, inside, entered) = (repo.clone(), &inside, &entered);
            s.spawn(move || {
                for _ in 0..8 {
                    let _x = repo.lock_exclusive(Duration::from_secs(60)).unwrap();
                    let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(n, 0, "two exclusive holders at once");
                    entered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(entered.into_inner(), 48);
}
