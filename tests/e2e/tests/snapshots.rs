//! Snapshot ownership and the order of a target's lock and its snapshot, end to end.
//!
//! A backup paused right after taking its snapshot (the fake VDDK's `fake.hold_open` gate, in a
//! VDDK configuration of its own) keeps that snapshot while a backup of the same VM into another
//! repository runs, and both restore to the VM's content; hand-made snapshots named like ours
//! survive every backup. Two backups of one VM into one repository run one after the other: the
//! second waits for the target lock, which the first holds until its snapshot is gone, and both
//! succeed. A first class disk's backup deletes only the snapshot this repository's ended run
//! left, and leaves another repository's, a newer release's and hand-made ones.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use safekeeping_e2e::{binary, Lab, Run};
use vim_client::{Client, ClientOptions, MoRef, Provisioning, Secret, SnapshotTree, Tls};

/// A snapshot named exactly like ours, taken by hand with a description of its own.
const HAND_MADE: &str = "safekeeping-20240101T120000Z";
/// Named like ours with the previous release's exact description, but taken just now: it may
/// belong to a backup of that release still running, so it stays.
const PREVIOUS_RELEASE: &str = "safekeeping-20240101T130000Z";
const PREVIOUS_RELEASE_DESCRIPTION: &str =
    "safekeeping backup in progress; removed when the backup ends";

/// A logged-in VIM client for the lab (pinned certificate).
async fn client(lab: &Lab) -> Client {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let s = |k: &str| json[k].as_str().unwrap().to_string();
    let options = ClientOptions::new(s("url"), Tls::PinnedSha256(s("thumbprint_sha256")));
    let c = Client::connect(&options).await.unwrap();
    let password = std::fs::read_to_string(s("password_file")).unwrap();
    c.login(&s("user"), &Secret::new(password)).await.unwrap();
    c
}

/// Every snapshot of `vm`, with names and descriptions.
async fn snapshots(c: &Client, vm: &MoRef) -> Vec<SnapshotTree> {
    let info = c.vm_info(vm).await.unwrap();
    info.snapshots.all().into_iter().cloned().collect()
}

fn names(snaps: &[SnapshotTree]) -> Vec<String> {
    let mut n: Vec<String> = snaps.iter().map(|s| s.name.clone()).collect();
    n.sort();
    n
}

/// A configuration whose fake VDDK holds every disk open while `gate` exists: a copy of the
/// lab's `vddk.conf` with `fake.hold_open`, so that other runs are not held.
fn held_config(lab: &Lab, gate: &Path) -> PathBuf {
    let conf = lab.dir().join("vddk/vddk.conf");
    let held = lab.dir().join("vddk/vddk-held.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("fake.hold_open = {}\n", gate.display()));
    std::fs::write(&held, text).unwrap();
    lab.config_variant("held.toml", "vddk/vddk.conf\"", "vddk/vddk-held.conf\"")
}

/// `safekeeping --config CONFIG ARGS` in the background; stderr lines arrive on the receiver
/// as they are written (and all of them once it ended).
fn spawn(config: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(binary("safekeeping"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("SAFEKEEPING_PASSWORD")
        .env_remove("SAFEKEEPING_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn safekeeping");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits for a background run to end and collects what it printed.
fn finish(child: Child, lines: &mpsc::Receiver<String>, what: &str) -> Run {
    let out = child.wait_with_output().expect("wait for safekeeping");
    let mut stderr: Vec<String> = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(5)) {
        stderr.push(l);
    }
    Run {
        command: what.to_string(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: stderr.join("\n"),
    }
}

/// Waits (bounded, so a broken run fails the test instead of hanging it) until `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn held_marker(gate: &Path) -> PathBuf {
    let mut m = gate.as_os_str().to_owned();
    m.push(".held");
    PathBuf::from(m)
}

fn succeeded(run: &Run) -> u64 {
    let j = run.json();
    let t = &j["targets"][0];
    assert_eq!(t["status"], "succeeded", "{}\n{j}", run.stderr);
    t["generation"].as_u64().unwrap()
}

/// `repo init` with `config`, returning the new repository's id.
fn init(lab: &Lab, config: &Path) -> String {
    let r = lab.sk_with(&["--json", "repo", "init"], config, &[]).ok();
    r.json()["repository_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no repository_id: {}", r.stdout))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_backup_keeps_its_snapshot_while_another_repository_backs_the_vm_up() {
    let lab = Lab::up();
    let id_a = init(&lab, &lab.config());
    let other = lab.config_variant("other-repo.toml", "/repo\"", "/repo-other\"");
    let id_other = init(&lab, &other);
    assert_ne!(id_a, id_other);

    lab.create_vm("web01", &["16M"], &[]);
    lab.guest_write("web01", 0, "0", "3M", Some(41));
    lab.guest_write("web01", 0, "9M", "1M", Some(42));
    let digest = lab.digest("web01", 0);
    let c = client(&lab).await;
    let vm = c.find_vm_by_name("web01").await.unwrap();
    c.create_snapshot(&vm, HAND_MADE, "before patching, by hand", false, false)
        .await
        .unwrap();
    c.create_snapshot(
        &vm,
        PREVIOUS_RELEASE,
        PREVIOUS_RELEASE_DESCRIPTION,
        false,
        false,
    )
    .await
    .unwrap();
    let hand_made = vec![HAND_MADE.to_string(), PREVIOUS_RELEASE.to_string()];

    // The first backup (repository A) stops right after its snapshot, opening the disk.
    let gate = lab.dir().join("hold-open");
    std::fs::write(&gate, b"").unwrap();
    let held = held_config(&lab, &gate);
    let (first, first_log) = spawn(&held, &["--json", "backup", "vm:web01"]);
    wait_for("the first backup to open its snapshot's disk", || {
        held_marker(&gate).exists()
    });
    let during = snapshots(&c, &vm).await;
    let ours: Vec<&SnapshotTree> = during
        .iter()
        .filter(|s| !hand_made.contains(&s.name))
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", names(&during));
    let first_snapshot = ours[0].name.clone();
    let d = &ours[0].description;
    assert!(
        d.starts_with(PREVIOUS_RELEASE_DESCRIPTION)
            && d.contains(" [safekeeping v2 run=")
            && d.contains(&format!(" repository={id_a} host=")),
        "the snapshot does not record its owner: {d:?}"
    );

    // Meanwhile a backup of the same VM into another repository runs from start to end.
    let second = lab.sk_with(&["--json", "backup", "vm:web01"], &other, &[]);
    assert_eq!(succeeded(&second), 1);
    let after_second = names(&snapshots(&c, &vm).await);
    assert!(
        after_second.contains(&first_snapshot),
        "the backup into the other repository removed the paused run's snapshot: {after_second:?}\n{}",
        second.stderr
    );
    for h in &hand_made {
        assert!(
            after_second.contains(h),
            "{h} was removed: {after_second:?}"
        );
    }
    assert_eq!(after_second.len(), 3, "{after_second:?}");
    // The young snapshot of the previous release is left, with a warning that says why.
    assert!(
        second.stderr.contains(PREVIOUS_RELEASE)
            && second.stderr.contains("taken by the previous release"),
        "{}",
        second.stderr
    );

    // The first backup goes on and completes from its own snapshot.
    std::fs::remove_file(&gate).unwrap();
    let first = finish(first, &first_log, "backup vm:web01 (held)");
    assert_eq!(succeeded(&first), 1, "{}", first.stderr);
    assert_eq!(names(&snapshots(&c, &vm).await), hand_made);

    // Both repositories hold the VM as it was.
    lab.sk(&["restore", "vm:web01", "--name", "from-a"]).ok();
    assert_eq!(lab.digest("from-a", 0), digest);
    lab.sk_with(
        &["restore", "vm:web01", "--name", "from-other"],
        &other,
        &[],
    )
    .ok();
    assert_eq!(lab.digest("from-other", 0), digest);

    // Every later backup leaves the hand-made snapshots alone too.
    for config in [lab.config(), other.clone()] {
        let r = lab.sk_with(&["--json", "backup", "vm:web01"], &config, &[]);
        assert_eq!(succeeded(&r), 2);
        assert_eq!(names(&snapshots(&c, &vm).await), hand_made, "{}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backups_of_one_vm_into_one_repository_run_one_after_the_other() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("db01", &["16M"], &[]);
    lab.guest_write("db01", 0, "1M", "2M", Some(7));
    let digest = lab.digest("db01", 0);
    let c = client(&lab).await;
    let vm = c.find_vm_by_name("db01").await.unwrap();

    let gate = lab.dir().join("hold-open");
    std::fs::write(&gate, b"").unwrap();
    let held = held_config(&lab, &gate);
    let (first, first_log) = spawn(&held, &["--json", "backup", "vm:db01"]);
    wait_for("the first backup to open its snapshot's disk", || {
        held_marker(&gate).exists()
    });
    assert_eq!(snapshots(&c, &vm).await.len(), 1);

    // The second backup starts while the first holds the target lock, and gets as far as
    // the lock (the previous release read the VM's snapshots before it, here).
    let (second, second_log) = spawn(&lab.config(), &["--json", "backup", "vm:db01"]);
    let (first_pid, second_pid) = (first.id(), second.id());
    let mut seen = Vec::new();
    wait_for("the second backup to start on the VM", || {
        while let Ok(l) = second_log.try_recv() {
            seen.push(l);
        }
        seen.iter().any(|l| l.contains("starting backup"))
    });
    // Reading the VM and asking for the lock take milliseconds; give them ample time.
    std::thread::sleep(Duration::from_secs(2));

    std::fs::remove_file(&gate).unwrap();
    let first = finish(first, &first_log, "backup vm:db01 (held)");
    let second = finish(second, &second_log, "backup vm:db01");
    assert_eq!(succeeded(&first), 1, "{}", first.stderr);
    assert_eq!(
        succeeded(&second),
        2,
        "the second backup did not wait for the first:\n{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("leftover"),
        "the second backup saw the first one's snapshot: {}",
        second.stderr
    );
    assert!(snapshots(&c, &vm).await.is_empty());

    // One after the other: the second run's disk session (PrepareForAccess to EndAccess) began
    // after the first run's had ended. (VDDK start-up calls of both runs interleave.)
    let stats = lab.vddk_stats();
    let of = |pid: u32| -> Vec<usize> {
        stats
            .iter()
            .enumerate()
            .filter(|(_, e)| e["pid"].as_u64() == Some(u64::from(pid)))
            .filter(|(_, e)| {
                matches!(
                    e["event"].as_str(),
                    Some(
                        "prepare_for_access"
                            | "connect"
                            | "open"
                            | "close"
                            | "disconnect"
                            | "end_access"
                    )
                )
            })
            .map(|(i, _)| i)
            .collect()
    };
    let (a, b) = (of(first_pid), of(second_pid));
    assert!(!a.is_empty() && !b.is_empty(), "{stats:?}");
    assert!(
        a.last() < b.first(),
        "the two backups read the VM at the same time: {stats:?}"
    );

    lab.sk(&["restore", "vm:db01", "--name", "db01-back"]).ok();
    assert_eq!(lab.digest("db01-back", 0), digest);
    lab.sk(&[
        "restore",
        "vm:db01",
        "--generation",
        "1",
        "--name",
        "db01-g1",
    ])
    .ok();
    assert_eq!(lab.digest("db01-g1", 0), digest);
}

/// The description a run of this release writes (see `vsphere/snapshot_owner.rs`).
fn owned(run: &str, repository: &str) -> String {
    format!("{PREVIOUS_RELEASE_DESCRIPTION} [safekeeping v2 run={run} repository={repository} host=backup01]")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_class_disk_backup_deletes_only_this_repositorys_ended_snapshots() {
    let lab = Lab::up();
    let id_a = init(&lab, &lab.config());
    let other = lab.config_variant("other-repo.toml", "/repo\"", "/repo-other\"");
    let id_other = init(&lab, &other);
    let c = client(&lab).await;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("lab.json")).unwrap()).unwrap();
    let ds = MoRef::new(
        "Datastore",
        json["datastore_morefs"]["datastore1"].as_str().unwrap(),
    );
    let disk = c
        .fcd_create("data7", &ds, 8, None, Provisioning::Thin)
        .await
        .unwrap();
    let path = disk.file_path.clone().unwrap();
    lab.lab(&[
        "guest-write",
        "--path",
        &path,
        "--offset",
        "0",
        "--len",
        "1048576",
        "--seed",
        "5",
    ])
    .ok();
    // A run of repository A that ended (no lock record: its run id was never live) left one.
    let ended = "0123456789abcdef0123456789abcdef";
    let kept = [
        // A run of the other repository, ended or not: that repository's business.
        owned(ended, &id_other),
        // A newer release's record.
        owned(ended, &id_a).replace(" v2 ", " v3 "),
        // Hand-made, and the previous release's description on a snapshot taken just now.
        "before resizing, by hand".to_string(),
        PREVIOUS_RELEASE_DESCRIPTION.to_string(),
    ];
    let leftover = c
        .fcd_create_snapshot(&disk.id, &ds, &owned(ended, &id_a))
        .await
        .unwrap();
    let mut kept_ids = Vec::new();
    for d in &kept {
        kept_ids.push(c.fcd_create_snapshot(&disk.id, &ds, d).await.unwrap());
    }
    let of_other_repository = kept_ids[0].clone();
    kept_ids.sort();

    let target = format!("ivd:{}", disk.id);
    let r = lab.sk(&["--json", "backup", &target]);
    assert_eq!(succeeded(&r), 1);
    assert!(
        r.stderr.contains(&leftover) && r.stderr.contains("left by an earlier run"),
        "{}",
        r.stderr
    );
    let mut left: Vec<String> = c
        .fcd_snapshots(&disk.id, &ds)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    left.sort();
    assert_eq!(left, kept_ids, "{}", r.stderr);

    // The other repository's backup deletes the snapshot its own ended run left, and no other.
    let r = lab.sk_with(&["--json", "backup", &target], &other, &[]);
    assert_eq!(succeeded(&r), 1);
    let mut left: Vec<String> = c
        .fcd_snapshots(&disk.id, &ds)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    left.sort();
    kept_ids.retain(|id| id != &of_other_repository);
    assert_eq!(left, kept_ids, "{}", r.stderr);
}
