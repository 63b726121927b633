//! A target's disks are read at the same time, within one limit on open VDDK connections for
//! the whole run (`--max-connections`, `[defaults] max_vddk_connections`). The fake VDDK's
//! statistics (connect and disconnect lines, appended in the order they happen) show both: the
//! disks of one VM overlap, and the run never holds more connections than allowed. Every disk
//! restores to its own content, in the VM's device order, and a restore writes its disks at
//! the same time too. When one disk fails, the target's
//! other disks stop early, the target reports the real failure, and nothing is committed.

use std::collections::HashMap;

use safekeeping_e2e::Lab;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// The most connections open at once: in the whole run, and per VM (by the `moref=` in the
/// connection's vmx spec).
fn overlaps(stats: &[serde_json::Value]) -> (i64, HashMap<String, i64>) {
    let (mut open, mut max) = (0i64, 0i64);
    let mut per_vm: HashMap<String, (i64, i64)> = HashMap::new();
    for e in stats {
        let delta = match e["event"].as_str() {
            Some("connect") => 1,
            Some("disconnect") => -1,
            _ => continue,
        };
        let spec = e["vmx_spec"].as_str().unwrap_or_default();
        let vm = spec
            .split("moref=")
            .nth(1)
            .unwrap_or(spec)
            .split(['&', ';'])
            .next()
            .unwrap_or_default()
            .to_string();
        open += delta;
        max = max.max(open);
        let slot = per_vm.entry(vm).or_default();
        slot.0 += delta;
        slot.1 = slot.1.max(slot.0);
    }
    (max, per_vm.into_iter().map(|(k, (_, m))| (k, m)).collect())
}

#[test]
fn disks_of_a_target_overlap_within_the_connection_limit() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    // Each read takes a while, so disks that run concurrently visibly overlap.
    lab.vddk_conf_append("fake.read_latency_ms = 150");
    lab.create_vm("m1", &["8M", "8M", "8M", "8M"], &[]);
    lab.create_vm("m2", &["8M", "8M", "8M"], &[]);
    for (vm, disks) in [("m1", 4), ("m2", 3)] {
        for d in 0..disks {
            // Different content per disk: a disk restored in another's place would show.
            lab.guest_write(vm, d, "0", "4M", Some(10 * d as u64 + vm.len() as u64 + 1));
        }
    }
    let m1 = lab.digests("m1", 4);
    let m2 = lab.digests("m2", 3);

    let r = lab
        .sk(&[
            "--json",
            "backup",
            "vm:m1",
            "vm:m2",
            "--parallel",
            "2",
            "--max-connections",
            "3",
        ])
        .ok();
    let j = r.json();
    for (t, disks) in j["targets"].as_array().unwrap().iter().zip([4, 3]) {
        assert_eq!(t["status"], "succeeded", "{j}");
        let listed = t["disks"].as_array().unwrap();
        assert_eq!(listed.len(), disks, "{j}");
        for (i, d) in listed.iter().enumerate() {
            assert_eq!(d["index"], i, "disks are reported in device order: {j}");
            assert_eq!(d["bytes_read"], 4 * MIB, "{j}");
        }
    }
    let stats = lab.vddk_stats();
    let (max, per_vm) = overlaps(&stats);
    eprintln!("at most {max} VDDK connections at once; per VM {per_vm:?}");
    assert!(max <= 3, "the limit of 3 connections was exceeded: {max}");
    assert_eq!(max, 3, "seven disks never filled three connections");
    assert_eq!(per_vm.len(), 2, "{per_vm:?}");
    // The VM first in line takes all three connections for its own disks at once.
    assert_eq!(per_vm.values().max(), Some(&3), "{per_vm:?}");
    assert!(
        per_vm.values().all(|&m| m >= 2),
        "a VM's disks were not read concurrently: {per_vm:?}"
    );

    // The manifest keeps the device order, and every disk restores to its own content.
    let show = lab.sk(&["--json", "show", "vm:m1"]).ok().json();
    let keys: Vec<i64> = show["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_i64().unwrap())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "{show}");
    // Restore writes the disks at the same time too (writes slowed so that they overlap).
    lab.vddk_conf_append("fake.write_latency_ms = 100");
    // m2 with --max-connections 1: one disk after another.
    for (vm, digests, limit, expected) in [("m1", &m1, "8", 2..=4), ("m2", &m2, "1", 1..=1)] {
        let name = format!("{vm}-back");
        let before = lab.vddk_stats().len();
        let target = format!("vm:{vm}");
        lab.sk(&[
            "restore",
            &target,
            "--name",
            &name,
            "--max-connections",
            limit,
        ])
        .ok();
        let (max, _) = overlaps(&lab.vddk_stats()[before..]);
        assert!(
            expected.contains(&max),
            "{name}: {max} connections at once while writing, expected {expected:?}"
        );
        assert_eq!(&lab.digests(&name, digests.len()), digests, "{name}");
    }
    lab.vddk_conf_remove("fake.write_latency_ms");

    // The configuration's limit applies when the flag is absent: one connection at a time.
    let one = lab.config_variant(
        "one-connection.toml",
        "max_vddk_connections = 8",
        "max_vddk_connections = 1",
    );
    let before = lab.vddk_stats().len();
    lab.sk_with(&["backup", "vm:m1", "--full"], &one, &[]).ok();
    let (max, _) = overlaps(&lab.vddk_stats()[before..]);
    assert_eq!(max, 1, "max_vddk_connections = 1 was not honoured");
}

#[test]
fn a_failing_disk_stops_its_siblings_and_nothing_is_committed() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    // Sectors from 32 MiB on exist only on the last, larger disk: only its reads fail, and its
    // first read is the failing one. The others have 8 MiB each to read, slowly.
    let fail_at = 32 * MIB / SECTOR;
    lab.vddk_conf_append(&format!(
        "fake.fail_read_sectors = {fail_at}-{}\nfake.read_latency_ms = 300",
        fail_at + 64
    ));
    lab.create_vm("f1", &["8M", "8M", "64M"], &[]);
    lab.guest_write("f1", 0, "0", "8M", Some(1));
    lab.guest_write("f1", 1, "0", "8M", Some(2));
    lab.guest_write("f1", 2, "32M", "1M", Some(3));

    let r = lab.sk(&["--json", "backup", "vm:f1", "--max-connections", "4"]);
    // Every target failed: exit status 1 (3 is for a run where some succeeded).
    assert_eq!(r.code, 1, "{}", r.all_output());
    let t = &r.json()["targets"][0];
    assert_eq!(t["status"], "failed", "{t}");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("VDDK") && !error.contains("interrupted"),
        "the real failure is reported, not the siblings' interruption: {error}"
    );
    // The siblings stopped early instead of reading their 8 MiB to the end.
    let stats = lab.vddk_stats();
    let closes: Vec<&serde_json::Value> = stats
        .iter()
        .filter(|e| e["event"] == "close" && e["read_only"] == true)
        .collect();
    assert_eq!(closes.len(), 3, "{closes:?}");
    // Once stopped, a disk asks nothing more of VDDK: at most its read-ahead (4 chunks) is
    // read, half of what each sibling had to read.
    let full = 8 * MIB / SECTOR;
    let short = closes
        .iter()
        .filter(|e| e["sectors_read"].as_u64().unwrap() <= full / 2)
        .count();
    assert_eq!(
        short, 3,
        "every disk stopped before its end (the failing one at once): {closes:?}"
    );
    assert!(lab.snapshots("f1").is_empty(), "snapshot left behind");
    let list = lab.sk(&["--json", "list"]).ok().json();
    assert!(
        list["targets"].as_array().unwrap().is_empty(),
        "nothing committed: {list}"
    );
    let check = lab.sk(&["--json", "check"]).ok().json();
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

#[test]
fn a_failing_disk_write_stops_the_restore_and_leaves_no_vm() {
    // 64 KiB at 32 MiB: one chunk under fixed and content-defined chunking alike (less than
    // the 128 KiB minimum, zeros around it), so the failing write is the failing disk's only
    // one.
    failing_disk_write_stops_the_others("64K");
}

/// The same with 1 MiB on the failing disk: content-defined chunks cut it into 2-3 chunks
/// whose writes are in flight together; the failure must stop the other disks at once, not
/// after the failing disk's other writes complete (a write latency later).
#[test]
fn a_failing_disk_write_stops_the_others_while_its_own_writes_are_in_flight() {
    failing_disk_write_stops_the_others("1M");
}

fn failing_disk_write_stops_the_others(failing_len: &str) {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("w1", &["16M", "16M", "64M"], &[]);
    lab.guest_write("w1", 0, "0", "16M", Some(1));
    lab.guest_write("w1", 1, "0", "16M", Some(2));
    lab.guest_write("w1", 2, "32M", failing_len, Some(3));
    lab.sk(&["backup", "vm:w1"]).ok();
    // Writes from 32 MiB on fail: only the large disk's first chunk there, its first write. The
    // others have 16 MiB each to write, slowly: a second per write. (The disks are opened one
    // after another; on a loaded machine the last one may start writing a few hundred
    // milliseconds after the first, so the latency is well above that: "the others stopped
    // within their first writes" is then what is measured.)
    let fail_at = 32 * MIB / SECTOR;
    lab.vddk_conf_append(&format!(
        "fake.fail_write_sectors = {fail_at}-{}\nfake.write_latency_ms = 1000",
        fail_at + 64
    ));
    let before = lab.vddk_stats().len();
    let r = lab.sk(&["--json", "restore", "vm:w1", "--name", "w1-back"]);
    assert_eq!(r.code, 1, "{}", r.all_output());
    let out = r.all_output();
    assert!(
        out.contains("write") && out.contains("destroyed") && !out.contains("interrupted"),
        "the failed write is reported, and the partial VM destroyed: {out}"
    );
    assert!(lab.vm_info("w1-back").is_none(), "the partial VM is gone");
    // Every disk stopped early: at most its write-behind (4 writes, each one chunk of at most
    // 2 MiB) was written, far from the 16 MiB each of the first two holds. The failing disk
    // may finish the other chunks of its 1 MiB already in flight.
    let stats = lab.vddk_stats();
    let closes: Vec<&serde_json::Value> = stats[before..]
        .iter()
        .filter(|e| e["event"] == "close" && e["read_only"] == false)
        .collect();
    assert_eq!(closes.len(), 3, "{closes:?}");
    for c in &closes {
        assert!(
            c["write_calls"].as_u64().unwrap() <= 4
                && c["sectors_written"].as_u64().unwrap() <= 4 * 2 * MIB / SECTOR,
            "a disk went on writing after the failure: {closes:?}"
        );
    }
    if failing_len == "64K" {
        let failing = closes
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with("w1-back_2.vmdk"))
            .expect("the failing disk closed");
        assert_eq!(failing["sectors_written"], 0, "{closes:?}");
    }
    let check = lab.sk(&["--json", "check"]).ok().json();
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

/// A restore's disks take their chunks in flight from the restore's chunk memory
/// (`[performance] restore_memory_mib`), as a backup's do: under a limit that holds two disks'
/// worth, no more than two of a VM's four disks are written at once, whatever the connection
/// limit; under one that holds less than one disk's, one at a time. Every disk still restores
/// to its own content.
#[test]
fn a_restore_writes_only_as_many_disks_as_its_chunk_memory_holds() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    lab.create_vm("wide", &["8M", "8M", "8M", "8M"], &[]);
    for d in 0..4 {
        lab.guest_write("wide", d, "0", "4M", Some(40 + d as u64));
    }
    let digests = lab.digests("wide", 4);
    lab.sk(&["backup", "vm:wide"]).ok();
    // Writes slowed, so that disks written at the same time visibly overlap.
    lab.vddk_conf_append("fake.write_latency_ms = 100");
    let text = std::fs::read_to_string(lab.config()).unwrap();
    // Disks restored side by side take about 30 MiB each (restore::disk::WriteShape): 16 MiB
    // holds less than one (which then runs alone), 64 MiB two; 1024 MiB shows that the four
    // disks do overlap when memory allows, so the bounds above are the budget's doing.
    for (mib, allowed) in [(16, 1..=1), (64, 1..=2), (1024, 3..=4)] {
        let config = lab.dir().join(format!("memory-{mib}.toml"));
        std::fs::write(
            &config,
            format!("{text}\n[performance]\nrestore_memory_mib = {mib}\n"),
        )
        .unwrap();
        let name = format!("wide-{mib}");
        let before = lab.vddk_stats().len();
        let out = lab
            .sk_with(
                &[
                    "--json",
                    "restore",
                    "vm:wide",
                    "--name",
                    &name,
                    "--max-connections",
                    "8",
                ],
                &config,
                &[],
            )
            .ok()
            .json();
        // The report says what the disks' shares came to, against the limit.
        let memory = &out["chunk_memory"];
        assert_eq!(memory["limit_bytes"], mib << 20, "{out}");
        let peak = memory["peak_bytes"].as_u64().unwrap();
        assert!(peak > 0, "{out}");
        if mib > 16 {
            assert!(peak <= mib << 20, "{out}");
        }
        let (max, _) = overlaps(&lab.vddk_stats()[before..]);
        assert!(
            allowed.contains(&max),
            "restore_memory_mib = {mib}: {max} disks written at once, expected {allowed:?}"
        );
        assert_eq!(lab.digests(&name, 4), digests, "{name}");
    }
    lab.vddk_conf_remove("fake.write_latency_ms");
}
