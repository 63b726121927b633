//! The scenario end to end: a VM with two disks and two NICs, a full and a CBT
//! incremental backup (proving from the fake VDDK's statistics that only the changed areas were
//! read), every generation restored by create and by import with a network mapping and
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
    // Content-defined chunks (the default): each changed area is read from the old cut before
    // it (at most a largest chunk, 2 MiB, earlier) on until the new cuts meet the old ones,
    // at the latest at the next all-zero block (the end of the data the area is in), plus at
    // most one 1 MiB read extent.
    let bytes_read = t["bytes_read"].as_u64().unwrap();
    assert!(
        (5 * MIB..=5 * MIB + 8 * MIB).contains(&bytes_read),
        "{bytes_read} bytes read: {t}"
    );

    // The fake VDDK saw reads around the changed areas and nothing else.
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
    // Every changed area (offset, length, end of the data around it) is read whole, and
    // every read lies between 2 MiB before an area and 1 MiB past the data it is in.
    let check = |reads: &[(u64, u64)], areas: &[(u64, u64, u64)]| {
        for &(at, len, _) in areas {
            let mut covered = at;
            for &(o, l) in reads {
                if o <= covered && covered < o + l {
                    covered = o + l;
                }
            }
            assert!(covered >= at + len, "{at}+{len} not read whole: {reads:?}");
        }
        for &(o, l) in reads {
            assert!(
                areas
                    .iter()
                    .any(|&(at, _, data_end)| o + 2 * MIB >= at && o + l <= data_end + MIB),
                "read {o}+{l} is near no changed area: {reads:?}"
            );
        }
    };
    check(
        &disk0.1,
        &[(2 * MIB, MIB, 8 * MIB), (40 * MIB, 3 * MIB, 43 * MIB)],
    );
    check(&disk1.1, &[(5 * MIB, MIB, 8 * MIB)]);

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
