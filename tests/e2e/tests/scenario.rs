//! The scenario end to end: a VM with two disks and two NICs, a full and a CBT
//! incremental backup (proving from the fake VDDK's statistics that only the changed areas, and
//! the content-defined chunks around them, were read), every generation restored by create and by import with a network mapping and
//! compared by digest, `check --read-data`, prune to one generation and restore again, export.

use safekeeping_e2e::{sha256_file, Lab};

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;

/// Read ranges (in bytes) of every disk the backup process closed, by snapshot disk path.
fn read_ranges(stats: &[serde_json::Value]) -> Vec<(String, Vec<(u64, u64)>)> {
    stats
        .iter()
        .filter(|e| e["event"] == "close" && e["read_only"] == true)
        .map(|e| {
            let path = e["path"].as_str().unwrap_or_default().to_string();
            let ranges = e["read_ranges"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            (
                                r[0].as_u64().unwrap() * SECTOR,
                                r[1].as_u64().unwrap() * SECTOR,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (path, ranges)
        })
        .collect()
}

#[test]
fn full_incremental_restore_prune_export() {
    let lab = Lab::up();
    lab.create_vm("demo", &["64M", "32M"], &["VM Network", "DC0_DVPG0"]);
    lab.guest_write("demo", 0, "0", "8M", Some(1));
    lab.guest_write("demo", 1, "4M", "4M", Some(2));
    lab.sk(&["repo", "init"]).ok();

    // Full backup.
    let gen1 = lab.digests("demo", 2);
    let r = lab.sk(&["--json", "backup", "vm:demo"]).ok();
    let j = r.json();
    assert_eq!(j["exit_code"], 0);
    let t = &j["targets"][0];
    assert_eq!(t["target"], "vm:demo");
    assert_eq!(t["generation"], 1);
    assert_eq!(t["mode"], "full");
    assert_eq!(t["status"], "succeeded");
    assert!(t["error"].is_null());
    // Only allocated areas are read, even for a full backup.
    assert_eq!(t["bytes_read"], 12 * MIB);
    assert_eq!(t["disks"].as_array().unwrap().len(), 2);
    assert!(
        lab.snapshots("demo").is_empty(),
        "snapshot removed after backup"
    );

    // More writes: over old data, into new areas, and zeros over data.
    lab.guest_write("demo", 0, "2M", "1M", Some(3));
    lab.guest_write("demo", 0, "40M", "3M", Some(4));
    lab.guest_write("demo", 1, "5M", "1M", None);
    let gen2 = lab.digests("demo", 2);
    assert_ne!(gen1, gen2);
    let stats_before = lab.vddk_stats().len();
    let j = lab.sk(&["--json", "backup", "vm:demo"]).ok().json();
    let t = &j["targets"][0];
    assert_eq!(t["generation"], 2);
    assert_eq!(t["mode"], "incremental");
    assert_eq!(t["disks"][0]["mode"], "incremental");
    assert_eq!(t["disks"][1]["mode"], "incremental");

    // The fake VDDK saw reads of the changed areas and of the content-defined chunks around
    // them, nothing else. Each changed area is read from the start of the old chunk holding the
    // block before it (at most one 2 MiB chunk earlier; exactly at the area after a hole) and on
    // past its end until the new cuts meet the old ones (measured: well under a chunk; at most
    // 4 MiB beyond the change per area in all), or until a zero block ends the last chunk: a
    // chunk still open at the end of the data is read on a short step into the hole (256 KiB
    // today; a step of up to 1 MiB passes).
    let stats = lab.vddk_stats();
    let reads = read_ranges(&stats[stats_before..]);
    assert_eq!(reads.len(), 2, "one close per disk: {reads:?}");
    let disk0 = reads
        .iter()
        .find(|(p, _)| !p.contains("demo_1"))
        .expect("disk 0 read");
    let disk1 = reads
        .iter()
        .find(|(p, _)| p.contains("demo_1"))
        .expect("disk 1 read");
    // One read range around a change at `change` inside the data written at `written`.
    let around = |range: (u64, u64), change: (u64, u64), written: (u64, u64)| {
        let (start, end) = (range.0, range.0 + range.1);
        start % 4096 == 0
            && (change.0.saturating_sub(2 * MIB).max(written.0)..=change.0).contains(&start)
            && (change.1..=written.1 + MIB).contains(&end)
            && range.1 <= change.1 - change.0 + 4 * MIB
    };
    // Disk 0: 1 MiB rewritten at 2 MiB inside the 8 MiB written at 0; 3 MiB of new data at
    // 40 MiB between holes, read from its start (no old chunk before it).
    assert_eq!(disk0.1.len(), 2, "{disk0:?}");
    assert!(
        around(disk0.1[0], (2 * MIB, 3 * MIB), (0, 8 * MIB)),
        "{disk0:?}"
    );
    assert!(
        around(disk0.1[1], (40 * MIB, 43 * MIB), (40 * MIB, 43 * MIB)),
        "{disk0:?}"
    );
    assert_eq!(disk0.1[1].0, 40 * MIB, "{disk0:?}");
    // Disk 1: zeros over 5-6 MiB of the data at 4-8 MiB.
    assert_eq!(disk1.1.len(), 1, "{disk1:?}");
    assert!(
        around(disk1.1[0], (5 * MIB, 6 * MIB), (4 * MIB, 8 * MIB)),
        "{disk1:?}"
    );
    eprintln!(
        "incremental read ranges: disk 0 {:?}, disk 1 {:?}",
        disk0.1, disk1.1
    );
    // What the backup reports read is what the fake VDDK served.
    let served: u64 = reads.iter().flat_map(|(_, r)| r).map(|r| r.1).sum();
    assert_eq!(t["bytes_read"], served, "{j}");

    // Every generation, by create and by import, with a network mapping.
    for (generation, digests) in [(1, &gen1), (2, &gen2)] {
        for mode in ["create", "import"] {
            let name = format!("demo-g{generation}-{mode}");
            let g = generation.to_string();
            let j = lab
                .sk(&[
                    "--json",
                    "restore",
                    "vm:demo",
                    "--generation",
                    &g,
                    "--mode",
                    mode,
                    "--name",
                    &name,
                    "--network",
                    "VM Network=Lab Network 2",
                ])
                .ok()
                .json();
            assert_eq!(j["name"], name.as_str());
            assert_eq!(j["generation"], generation);
            assert_eq!(&lab.digests(&name, 2), digests, "{name}");
            let info = lab.vm_info(&name).expect("restored VM exists");
            let nics = info["nics"].as_array().expect("nics");
            assert_eq!(nics.len(), 2);
            assert_eq!(
                nics[0]["network"], "Lab Network 2",
                "{name}: first NIC mapped"
            );
            assert_eq!(nics[1]["network"], "DC0_DVPG0", "{name}: second NIC kept");
            assert_ne!(
                info["uuid"],
                lab.vm_info("demo").unwrap()["uuid"],
                "new identity"
            );
        }
    }

    let j = lab.sk(&["--json", "check", "--read-data"]).ok().json();
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
    assert!(j["chunks_verified"].as_u64().unwrap() > 0);

    // Export compares with the digest of the same content.
    let out = lab.dir().join("demo-disk0.img");
    let o = out.to_string_lossy().into_owned();
    lab.sk(&[
        "export",
        "vm:demo",
        "--disk",
        "0",
        "--generation",
        "2",
        "--output",
        &o,
    ])
    .ok();
    assert_eq!(sha256_file(&out), gen2[0]);
    let exported = std::fs::metadata(&out).unwrap();
    assert_eq!(exported.len(), 64 * MIB);

    // Prune to one generation, collect garbage, and restore what is left.
    lab.sk(&["prune", "--keep-last", "1"]).ok();
    let j = lab.sk(&["--json", "list", "vm:demo"]).ok().json();
    let gens = j["targets"][0]["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0]["id"], 2);
    lab.sk(&["gc"]).ok();
    lab.sk(&["check", "--read-data"]).ok();
    lab.sk(&["restore", "vm:demo", "--name", "demo-after-prune"])
        .ok();
    assert_eq!(lab.digests("demo-after-prune", 2), gen2);
    let r = lab.sk(&["restore", "vm:demo", "--generation", "1", "--name", "gone"]);
    assert_eq!(r.code, 1, "a pruned generation is gone: {}", r.stderr);
    assert!(r.stderr.contains("generation 1"), "{}", r.stderr);
    let j = lab.sk(&["--json", "repo", "reindex"]).ok().json();
    assert_eq!(j["generations"], 1);

    // Damage one chunk: check finds it, and a restore refuses to write bad data.
    let chunk = first_file(&lab.dir().join("repo/chunks")).expect("a chunk file");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&chunk, bytes).unwrap();
    let r = lab.sk(&["--json", "check", "--read-data"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(!r.json()["problems"].as_array().unwrap().is_empty());
    let r = lab.sk(&["restore", "vm:demo", "--name", "from-damaged"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        lab.vm_info("from-damaged").is_none(),
        "the partial VM was destroyed"
    );
}

fn first_file(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_file() {
            return Some(p);
        }
        if let Some(f) = first_file(&p) {
            return Some(f);
        }
    }
    None
}
