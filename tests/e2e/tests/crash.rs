//! Crash survival: `safekeeping backup` killed with SIGKILL at each step (before the snapshot,
//! mid-read, between a disk's index and the manifest, after the commit), and the simulator
//! itself stopped mid-backup. After each: `check --read-data` is clean, every committed
//! generation restores to the digest the VM had when it was taken, and the next backup
//! succeeds and removes the leftover `safekeeping-*` snapshot.
//!
//! Each kill point is found by polling something the running process writes (its `--log-file`,
//! the fake VDDK's statistics, the repository folder), never by sleeping.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safekeeping_e2e::{binary, Lab};

/// Polls `cond` every 20 ms until it holds; panics after 60 s with `what`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `safekeeping backup vm:VM` in the background, logging at debug level to `log`.
fn spawn_backup(lab: &Lab, vm: &str, log: &Path) -> Child {
    Command::new(binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .arg("--log-file")
        .arg(log)
        .args(["-v", "backup", &format!("vm:{vm}")])
        .env_remove("SAFEKEEPING_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn safekeeping")
}

fn log_has(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(text))
}

/// Committed generation numbers of `vm`.
fn generations(lab: &Lab, vm: &str) -> Vec<u64> {
    let j = lab.sk(&["--json", "list", &format!("vm:{vm}")]).json();
    j["targets"][0]["generations"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Every `gen-*` folder under the repository's targets.
fn generation_dirs(lab: &Lab) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(lab.dir().join("repo/targets")) else {
        return out;
    };
    for t in targets.flatten() {
        if let Ok(gens) = std::fs::read_dir(t.path()) {
            out.extend(gens.flatten().map(|g| g.path()));
        }
    }
    out
}

/// True once a generation folder without a manifest holds a disk index.
fn uncommitted_index_written(lab: &Lab) -> bool {
    generation_dirs(lab).iter().any(|g| {
        !g.join("manifest").exists()
            && std::fs::read_dir(g).is_ok_and(|es| {
                es.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".fidx"))
            })
    })
}

/// The fake VDDK has opened a disk for this process.
fn read_started(lab: &Lab, pid: u32) -> bool {
    lab.vddk_stats()
        .iter()
        .any(|e| e["event"] == "open" && e["pid"] == pid)
}

fn check_clean(lab: &Lab) {
    let j = lab.sk(&["--json", "check", "--read-data"]).ok().json();
    assert_eq!(j["problems"].as_array().map_or(1, Vec::len), 0, "{j}");
}

#[derive(Debug, Clone, Copy)]
enum KillPoint {
    BeforeSnapshot,
    MidRead,
    IndexWrittenBeforeManifest,
    AfterCommit,
}

#[test]
fn sigkill_at_every_step_loses_nothing() {
    let lab = Lab::up();
    lab.create_vm("crash", &["24M", "16M"], &["VM Network"]);
    lab.guest_write("crash", 0, "0", "4M", Some(1));
    lab.guest_write("crash", 1, "0", "4M", Some(2));
    lab.sk(&["repo", "init"]).ok();
    lab.sk(&["backup", "vm:crash"]).ok();
    // (generation, digests at the time it was taken)
    let mut expected: Vec<(u64, Vec<String>)> = vec![(1, lab.digests("crash", 2))];
    // The `incomplete.json` a killed writer left, for the kill between manifest and marker.
    let mut marker: Option<Vec<u8>> = None;

    let points = [
        KillPoint::BeforeSnapshot,
        KillPoint::MidRead,
        KillPoint::IndexWrittenBeforeManifest,
        KillPoint::AfterCommit,
    ];
    for (i, point) in points.into_iter().enumerate() {
        let seed = 10 + i as u64;
        // New data on both disks, so every run has something to read on each. The disks are
        // read at the same time; the second has four times as much to read, so the first's
        // index is written well before the manifest.
        lab.guest_write("crash", 0, &format!("{}M", 5 + i), "2M", Some(seed));
        lab.guest_write("crash", 1, &format!("{}M", 5 + i), "8M", Some(seed + 100));
        let digests = lab.digests("crash", 2);
        let before = generations(&lab, "crash");
        lab.vddk_conf_append("fake.read_latency_ms = 150");
        let log = lab.dir().join(format!("kill-{i}.log"));
        let mut child = spawn_backup(&lab, "crash", &log);
        let pid = child.id();
        match point {
            KillPoint::BeforeSnapshot => {
                wait_until("starting backup", || log_has(&log, "starting backup"))
            }
            KillPoint::MidRead => wait_until("first read", || read_started(&lab, pid)),
            KillPoint::IndexWrittenBeforeManifest => {
                wait_until("an index before the manifest", || {
                    uncommitted_index_written(&lab)
                })
            }
            KillPoint::AfterCommit => wait_until("generation committed", || {
                log_has(&log, "generation committed")
            }),
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!status.success(), "{point:?}: the run was killed");
        lab.vddk_conf_remove("fake.read_latency_ms");
        if matches!(point, KillPoint::IndexWrittenBeforeManifest) {
            let dir = generation_dirs(&lab)
                .into_iter()
                .find(|g| !g.join("manifest").exists())
                .expect("the killed run's generation folder");
            marker = Some(std::fs::read(dir.join("incomplete.json")).expect("its marker"));
        }

        let after = generations(&lab, "crash");
        match point {
            KillPoint::AfterCommit => {
                assert_eq!(after.len(), before.len() + 1, "{point:?}: committed");
                expected.push((*after.last().unwrap(), digests.clone()));
            }
            _ => assert_eq!(after, before, "{point:?}: nothing committed"),
        }
        // Just after "starting backup" the snapshot may or may not have been taken, and after
        // the commit its removal races with the kill; mid-read the killed run had its snapshot
        // and could not remove it.
        let left = lab.snapshots("crash").len();
        match point {
            KillPoint::BeforeSnapshot | KillPoint::AfterCommit => assert!(left <= 1, "{point:?}"),
            _ => assert_eq!(left, 1, "{point:?}: the killed run left its snapshot"),
        }
        check_clean(&lab);

        let r = lab.sk(&["--json", "backup", "vm:crash"]).ok();
        if left == 1 {
            assert!(r.stderr.contains("left by an earlier"), "{}", r.stderr);
        }
        assert!(
            lab.snapshots("crash").is_empty(),
            "{point:?}: leftover snapshot removed"
        );
        let g = r.json()["targets"][0]["generation"].as_u64().unwrap();
        expected.push((g, digests));
        check_clean(&lab);
    }

    // A kill between writing the manifest and removing the marker (too narrow to hit by
    // polling) leaves both in the folder: the generation is committed and gc must keep it.
    let last = format!("gen-{:06}", expected.last().unwrap().0);
    let last_dir = generation_dirs(&lab)
        .into_iter()
        .find(|g| g.ends_with(&last))
        .expect("last generation folder");
    std::fs::write(last_dir.join("incomplete.json"), marker.expect("marker")).unwrap();
    check_clean(&lab);

    // No incomplete folder survives a gc, and every generation restores to its digests.
    lab.sk(&["gc"]).ok();
    let j = lab.sk(&["--json", "check"]).ok().json();
    assert_eq!(
        j["incomplete_generations"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(
        generations(&lab, "crash"),
        expected.iter().map(|(g, _)| *g).collect::<Vec<_>>()
    );
    for (g, digests) in &expected {
        let name = format!("crash-g{g}");
        lab.sk(&[
            "restore",
            "vm:crash",
            "--generation",
            &g.to_string(),
            "--name",
            &name,
        ])
        .ok();
        assert_eq!(&lab.digests(&name, 2), digests, "generation {g}");
    }
}

#[test]
fn simulator_stopped_mid_backup_then_restarted() {
    let lab = Lab::up();
    lab.create_vm("sim", &["16M"], &["VM Network"]);
    lab.guest_write("sim", 0, "0", "4M", Some(3));
    lab.sk(&["repo", "init"]).ok();
    lab.vddk_conf_append("fake.read_latency_ms = 150");
    let log = lab.dir().join("sim.log");
    let child = spawn_backup(&lab, "sim", &log);
    let pid = child.id();
    wait_until("first read", || read_started(&lab, pid));
    let vcsim = std::fs::read_to_string(lab.dir().join("vcsim.pid")).unwrap();
    let st = Command::new("kill")
        .args(["-KILL", vcsim.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    // The disk is read from the snapshot's frozen files, which outlive the simulator, so the
    // generation is complete and is committed; the run then cannot remove its snapshot, and
    // says exactly that (in its log) and exits 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was committed, but could not remove snapshot")
            && stderr.contains("cannot reach"),
        "{stderr}"
    );
    assert_eq!(generations(&lab, "sim"), vec![1]);
    check_clean(&lab);

    // Restart: a new, empty vCenter over the same repository.
    let dir = lab.dir().to_string_lossy().into_owned();
    lab.lab(&["down", "--keep-repo"]).ok();
    lab.lab(&["up", "--dir", &dir]).ok();
    lab.create_vm("sim-again", &["16M"], &["VM Network"]);
    lab.guest_write("sim-again", 0, "0", "4M", Some(3));
    let r = lab.sk(&["--json", "backup", "vm:sim-again"]).ok();
    assert_eq!(r.json()["targets"][0]["generation"], 1);
    assert!(lab.snapshots("sim-again").is_empty());
    check_clean(&lab);
    // The generation committed while the simulator died holds the right data.
    let digest = lab.digests("sim-again", 1);
    lab.sk(&["restore", "vm:sim", "--name", "sim-restored"])
        .ok();
    assert_eq!(lab.digests("sim-restored", 1), digest);
}

#[test]
fn sigterm_mid_read_cleans_up_after_itself() {
    let lab = Lab::up();
    lab.create_vm("term", &["16M"], &["VM Network"]);
    lab.guest_write("term", 0, "0", "6M", Some(5));
    lab.sk(&["repo", "init"]).ok();
    lab.vddk_conf_append("fake.read_latency_ms = 400");
    let log = lab.dir().join("term.log");
    let mut child = spawn_backup(&lab, "term", &log);
    let pid = child.id();
    wait_until("first read", || read_started(&lab, pid));
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{logged}");
    // The process removed its own snapshot and its generation folder.
    assert!(logged.contains("snapshot removed"), "{logged}");
    assert!(lab.snapshots("term").is_empty());
    assert!(generations(&lab, "term").is_empty());
    assert!(
        generation_dirs(&lab).is_empty(),
        "{:?}",
        generation_dirs(&lab)
    );
    check_clean(&lab);
    lab.vddk_conf_remove("fake.read_latency_ms");
    let digest = lab.digests("term", 1);
    lab.sk(&["backup", "vm:term"]).ok();
    lab.sk(&["restore", "vm:term", "--name", "term-restored"])
        .ok();
    assert_eq!(lab.digests("term-restored", 1), digest);
}
