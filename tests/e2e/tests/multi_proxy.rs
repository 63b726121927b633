//! Several backup proxies, one repository in object storage: separate `safekeeping`
//! processes, each with its own configuration file and its own cache folder (what two proxy
//! hosts have), write into the same bucket of the lab's SeaweedFS cluster at the same time.
//!
//! - two proxies back up different VMs (with shared data, so their chunks meet) while a third
//!   runs `gc` and `prune` of an unrelated target; afterwards `check --read-data` is clean and
//!   every generation restores byte for byte, from either proxy;
//! - two proxies back up the same VM: with a short lock wait the second fails naming the
//!   holder, with a long one it waits for the first's target lock and then makes its own
//!   generation (the backup holds that lock until its snapshot is removed);
//!   never a corrupt or half-committed generation, never a snapshot left;
//! - a holder killed with SIGKILL leaves lock records that the next run judges stale (the
//!   holder's pid is gone on this machine) and goes on; the killed run committed nothing.
//!
//! The lock records a host name and machine identity with no override, so the "hosts" here are
//! processes with different pids on one machine; records of another machine expire after the
//! lock ttl instead (repository-format/tests/s3.rs `a_lock_whose_heartbeat_stops_expires`
//! covers that, the CLI has no ttl setting yet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use safekeeping_e2e::{wait_run, Lab};

/// A proxy's configuration: the S3 repository with this proxy's own cache folder.
fn proxy_config(lab: &Lab, name: &str) -> PathBuf {
    let cache = lab.dir().join(format!("{name}-cache"));
    lab.s3_config(
        &format!("{name}.toml"),
        "lab",
        &format!("cache_dir = \"{}\"", cache.display()),
    )
}

/// `config` with another lock wait (the lab writes `lock_wait_seconds = 60`).
fn with_lock_wait(config: &Path, name: &str, seconds: u64) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("lock_wait_seconds = 60"), "{text}");
    let p = config.with_file_name(name);
    std::fs::write(
        &p,
        text.replace(
            "lock_wait_seconds = 60",
            &format!("lock_wait_seconds = {seconds}"),
        ),
    )
    .unwrap();
    p
}

/// `check --read-data` through `config` finds no problem.
fn check_clean(lab: &Lab, config: &Path) -> serde_json::Value {
    let r = lab.sk_with(&["--json", "check", "--read-data"], config, &[]);
    let j = r.json();
    assert_eq!(r.code, 0, "{j}\n{}", r.stderr);
    assert_eq!(j["problems"].as_array().map_or(1, Vec::len), 0, "{j}");
    j
}

#[test]
fn two_proxies_back_up_different_vms_while_a_third_runs_gc_and_prune() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let proxy1 = proxy_config(&lab, "proxy-1");
    let proxy2 = proxy_config(&lab, "proxy-2");
    let admin = proxy_config(&lab, "admin");
    lab.create_vm("a", &["16M"], &["VM Network"]);
    lab.create_vm("b", &["16M"], &["VM Network"]);
    lab.create_vm("c", &["8M"], &["VM Network"]);
    lab.guest_write("a", 0, "0", "3M", Some(1));
    lab.guest_write("b", 0, "0", "3M", Some(2));
    lab.guest_write("c", 0, "0", "2M", Some(3));
    lab.sk_with(&["repo", "init"], &proxy1, &[]).ok();

    // The unrelated target the admin prunes: two generations, of which it keeps the last.
    lab.sk_with(&["backup", "vm:c"], &admin, &[]).ok();
    lab.guest_write("c", 0, "4M", "1M", Some(4));
    let c_kept = lab.digests("c", 1);
    lab.sk_with(&["backup", "vm:c"], &admin, &[]).ok();

    // Slow reads, so the two backups overlap and the admin's exclusive runs meet them.
    lab.vddk_conf_append("fake.read_latency_ms = 40");
    let mut expected: Vec<(&str, u64, Vec<String>)> = Vec::new();
    for round in 0..3u64 {
        let off = format!("{}M", 4 + round);
        lab.guest_write("a", 0, &off, "1M", Some(10 + round));
        lab.guest_write("b", 0, &off, "1M", Some(20 + round));
        // The same data on both VMs: both proxies store (or find) the same chunks at once.
        lab.guest_write("a", 0, "10M", "2M", Some(90 + round));
        lab.guest_write("b", 0, "10M", "2M", Some(90 + round));
        let (da, db) = (lab.digests("a", 1), lab.digests("b", 1));
        let backup_a = lab.sk_spawn_with(&["--json", "backup", "vm:a"], &proxy1);
        let backup_b = lab.sk_spawn_with(&["--json", "backup", "vm:b"], &proxy2);
        // Round 0 starts gc while the backups run, round 1 before they start (they wait for
        // it), round 2 prunes first; the order of lock requests differs each time.
        if round == 0 {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let admin_runs: Vec<_> = match round {
            0 | 1 => vec![lab.sk_spawn_with(&["--json", "gc"], &admin)],
            _ => vec![
                lab.sk_spawn_with(&["--json", "prune", "vm:c", "--keep-last", "1"], &admin),
                lab.sk_spawn_with(&["--json", "gc"], &admin),
            ],
        };
        for (vm, run, digests) in [
            ("a", wait_run("backup vm:a (proxy 1)", backup_a), da),
            ("b", wait_run("backup vm:b (proxy 2)", backup_b), db),
        ] {
            let j = run.ok().json();
            assert!(j["targets"][0]["error"].is_null(), "{j}");
            let g = j["targets"][0]["generation"].as_u64().unwrap();
            expected.push((vm, g, digests));
        }
        for run in admin_runs {
            wait_run("admin", run).ok();
        }
        assert!(lab.snapshots("a").is_empty() && lab.snapshots("b").is_empty());
    }
    lab.vddk_conf_remove("fake.read_latency_ms");

    let j = check_clean(&lab, &admin);
    assert_eq!(j["generations"], 7, "3 of a, 3 of b, 1 of c: {j}");
    assert_eq!(lab.generations_with(&admin, "a"), vec![1, 2, 3]);
    assert_eq!(lab.generations_with(&admin, "b"), vec![1, 2, 3]);
    assert_eq!(lab.generations_with(&admin, "c"), vec![2]);
    // Every generation restores byte for byte, through the other proxy than the one that
    // wrote it (its cache knows nothing of them).
    for (vm, g, digests) in &expected {
        let reader = if *vm == "a" { &proxy2 } else { &proxy1 };
        assert_eq!(
            &lab.restored_digests(reader, vm, *g, 1),
            digests,
            "{vm} generation {g}"
        );
    }
    assert_eq!(lab.restored_digests(&proxy1, "c", 2, 1), c_kept);
}

/// A lab and S3 cluster with VM `x` (24 MiB of data on a 32 MiB disk), an S3 repository,
/// two proxy configurations, and a backup of `x` by proxy 1 that is reading slowly (700 ms per
/// read) when this returns; its digests.
fn proxy_1_backing_up_x(lab: &Lab) -> (PathBuf, PathBuf, std::process::Child, Vec<String>) {
    let proxy1 = proxy_config(lab, "proxy-1");
    let proxy2 = proxy_config(lab, "proxy-2");
    lab.create_vm("x", &["32M"], &["VM Network"]);
    lab.guest_write("x", 0, "0", "24M", Some(5));
    let digests = lab.digests("x", 1);
    lab.sk_with(&["repo", "init"], &proxy1, &[]).ok();
    lab.vddk_conf_append("fake.read_latency_ms = 700");
    let first = lab.sk_spawn_with(&["--json", "backup", "vm:x"], &proxy1);
    assert!(
        lab.wait_for_snapshot("x", Duration::from_secs(60)),
        "proxy 1 took its snapshot"
    );
    (proxy1, proxy2, first, digests)
}

#[test]
fn a_second_proxy_on_the_same_vm_fails_clearly_when_its_lock_wait_runs_out() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let (_proxy1, proxy2, mut first, digests) = proxy_1_backing_up_x(&lab);
    let first_pid = first.id();
    let impatient = with_lock_wait(&proxy2, "proxy-2-impatient.toml", 1);

    // Proxy 2 with a one-second lock wait: a clear failure naming the holder, nothing more.
    let r = lab.sk_with(&["--json", "backup", "vm:x"], &impatient, &[]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let err = r.json()["targets"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("locked by another safekeeping process"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {first_pid}")), "{err}");
    assert!(first.try_wait().unwrap().is_none(), "proxy 1 still runs");
    assert_eq!(lab.snapshots("x").len(), 1, "only proxy 1's snapshot");

    let first = wait_run("backup vm:x (proxy 1)", first).ok().json();
    lab.vddk_conf_remove("fake.read_latency_ms");
    assert_eq!(first["targets"][0]["generation"], 1, "{first}");
    assert!(lab.snapshots("x").is_empty());
    check_clean(&lab, &proxy2);
    assert_eq!(lab.generations_with(&proxy2, "x"), vec![1]);
    assert_eq!(lab.restored_digests(&proxy2, "x", 1, 1), digests);
}

#[test]
fn a_second_proxy_on_the_same_vm_waits_for_the_first_and_backs_up_after_it() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let (proxy1, proxy2, first, digests) = proxy_1_backing_up_x(&lab);

    // Proxy 2 with the normal wait: it waits for proxy 1's target lock, then backs up.
    let second = lab.sk_spawn_with(&["--json", "backup", "vm:x"], &proxy2);
    let first = wait_run("backup vm:x (proxy 1)", first).ok().json();
    let second = wait_run("backup vm:x (proxy 2)", second);
    lab.vddk_conf_remove("fake.read_latency_ms");
    let second = second.ok().json();
    assert_eq!(first["targets"][0]["generation"], 1, "{first}");
    assert_eq!(first["targets"][0]["mode"], "full", "{first}");
    assert_eq!(second["targets"][0]["generation"], 2, "{second}");
    assert_eq!(second["targets"][0]["mode"], "incremental", "{second}");
    assert!(lab.snapshots("x").is_empty());

    check_clean(&lab, &proxy1);
    assert_eq!(lab.generations_with(&proxy1, "x"), vec![1, 2]);
    for g in [1, 2] {
        assert_eq!(
            lab.restored_digests(&proxy1, "x", g, 1),
            digests,
            "generation {g}"
        );
    }
}

#[test]
fn a_holder_killed_with_sigkill_leaves_stale_locks_and_the_next_run_proceeds() {
    let lab = Lab::up();
    let _cluster = lab.s3_up();
    let proxy1 = proxy_config(&lab, "proxy-1");
    let proxy2 = proxy_config(&lab, "proxy-2");
    // One second of patience: a lock record of the killed run that were judged live would
    // fail these runs instead of making them wait it out.
    let impatient = with_lock_wait(&proxy2, "proxy-2-impatient.toml", 1);
    lab.create_vm("k", &["32M"], &["VM Network"]);
    lab.guest_write("k", 0, "0", "20M", Some(6));
    let digests = lab.digests("k", 1);
    lab.sk_with(&["repo", "init"], &proxy1, &[]).ok();

    lab.vddk_conf_append("fake.read_latency_ms = 500");
    let mut killed = lab.sk_spawn_with(&["--json", "backup", "vm:k"], &proxy1);
    assert!(lab.wait_for_snapshot("k", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        killed.try_wait().unwrap().is_none(),
        "proxy 1 was still backing up"
    );
    killed.kill().unwrap(); // SIGKILL: no clean-up of any kind.
    killed.wait().unwrap();
    lab.vddk_conf_remove("fake.read_latency_ms");
    assert_eq!(lab.snapshots("k").len(), 1, "SIGKILL left the snapshot");
    assert!(
        lab.generations_with(&proxy2, "k").is_empty(),
        "nothing committed"
    );

    // The exclusive lock is free at once: the killed run's shared claim names a pid that is
    // gone on this machine.
    let r = lab.sk_with(&["gc"], &impatient, &[]).ok();
    assert!(r.stderr.contains("stale lock record"), "{}", r.stderr);
    // So is the target lock; the backup removes the leftover snapshot and starts afresh.
    let r = lab
        .sk_with(&["--json", "backup", "vm:k"], &impatient, &[])
        .ok();
    let j = r.json();
    assert_eq!(j["targets"][0]["generation"], 1, "{j}");
    assert_eq!(j["targets"][0]["mode"], "full", "{j}");
    assert!(r.stderr.contains("stale lock record"), "{}", r.stderr);
    assert!(lab.snapshots("k").is_empty());

    check_clean(&lab, &proxy1);
    assert_eq!(lab.restored_digests(&proxy1, "k", 1, 1), digests);
}
