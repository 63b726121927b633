//! Any disk size end to end: a VM with a 16 TiB thin disk (64 MiB short of it: ext4 with
//! 4 KiB blocks caps a file at 2^32 blocks, so the lab's flat extent cannot be exactly
//! 16 TiB, and the lab's snapshot delta extent holds the disk's size of data followed by its
//! 32 MiB allocation bitmap in one file) and 64 MiB written at scattered offsets (one of them unaligned) backs up full,
//! then incremental, and restores as a new VM. The safekeeping process stays under 256 MiB
//! peak RSS (GNU time's maximum resident set size, i.e. wait4's rusage) in all three, every
//! index file is far under the budget of 16 MiB per GiB written, the full backup reads only the
//! written areas, the incremental only the change and the chunks around it, and the restored disk holds the same bytes: every written region is
//! equal, and the restored flat file allocates no more than the stored chunks (so everything
//! else is a hole, reading as zeros as on the source). The lab's whole-disk digest is not
//! used: it would hash 16 TiB of zeros.

use std::path::{Path, PathBuf};
use std::process::Command;

use safekeeping_e2e::{binary, files_under, guest_bytes, Lab};

const MIB: u64 = 1 << 20;
/// 16 TiB less 64 MiB, in MiB (see the module comment).
const CAPACITY_MIB: u64 = (16 << 20) - 64;
/// The peak RSS every safekeeping run must stay under.
const RSS_LIMIT_KIB: u64 = 256 << 10;

/// Runs `safekeeping --config LAB ARGS` under GNU time and returns its stdout and peak RSS
/// in KiB (the child's `ru_maxrss` from wait4).
fn sk_measured(lab: &Lab, args: &[&str]) -> (String, u64) {
    let rss_file = lab.dir().join("rss.txt");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(binary("safekeeping"))
        .arg("--config")
        .arg(lab.config())
        .args(args)
        .env_remove("SAFEKEEPING_PASSWORD")
        .env_remove("SAFEKEEPING_CONFIG")
        .output()
        .expect("run safekeeping under /usr/bin/time");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "safekeeping {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(&rss_file).expect("time's output");
    let kib = rss
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {rss:?}"));
    (stdout, kib)
}

fn read_region(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Bytes the file system allocated for `path`.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_16_tib_disk_with_little_written_backs_up_and_restores_in_bounded_memory() {
    let lab = Lab::up();
    lab.sk(&["repo", "init"]).ok();
    let capacity = format!("{CAPACITY_MIB}M");
    lab.create_vm("big", &[&capacity], &[]);
    let flat = lab.flat_file("big");
    assert_eq!(
        std::fs::metadata(&flat).unwrap().len(),
        CAPACITY_MIB * MIB,
        "the lab made the whole thin disk"
    );
    assert!(allocated(&flat) < MIB, "a new thin disk is a sparse file");

    // 64 MiB at four places: the start, an unaligned offset in the middle, 8 TiB, the end.
    let regions: Vec<(u64, u64, u64)> = vec![
        (0, 16 * MIB, 1),
        ((3 << 40) + 12_345, 16 * MIB, 2),
        (8 << 40, 16 * MIB, 3),
        ((CAPACITY_MIB - 16) * MIB, 16 * MIB, 4),
    ];
    for &(offset, len, seed) in &regions {
        lab.guest_write("big", 0, &offset.to_string(), &len.to_string(), Some(seed));
    }

    let (out, full_rss) = sk_measured(&lab, &["--json", "backup", "vm:big"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["targets"][0]["mode"], "full", "{j}");
    // The written areas and nothing else of the 16 TiB were read: content-defined chunks (the
    // default) cut each allocated area on its own, so no chunk rounding is read. The areas come
    // in whole 64 KiB grains of the lab's thin disk, so the unaligned region counts 16 MiB and
    // 64 KiB (its first and last grain are partly written).
    assert_eq!(j["targets"][0]["bytes_read"], 64 * MIB + 64 * 1024, "{j}");
    assert!(
        full_rss <= RSS_LIMIT_KIB,
        "full backup peak RSS {full_rss} KiB"
    );

    // 1 MiB more, overwriting part of a region: the incremental reads the change, from the start
    // of the old chunk before it (at most one 2 MiB chunk earlier) and on until the new cuts
    // meet the old ones (measured: well under a chunk), nowhere else of the disk or region.
    let change = ((8 << 40) + 5 * MIB, MIB, 5);
    lab.guest_write("big", 0, &change.0.to_string(), "1M", Some(change.2));
    let (out, incr_rss) = sk_measured(&lab, &["--json", "backup", "vm:big"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["targets"][0]["mode"], "incremental", "{j}");
    let read = j["targets"][0]["bytes_read"].as_u64().unwrap();
    assert!((MIB..=MIB + 4 * MIB).contains(&read), "{j}");
    eprintln!("incremental read {read} bytes for a 1 MiB change");
    assert!(
        incr_rss <= RSS_LIMIT_KIB,
        "incremental peak RSS {incr_rss} KiB"
    );

    // The indexes: 16 MiB per GiB written is the budget; the hundred-odd chunks of 64 MiB need
    // a few KiB.
    let indexes: Vec<PathBuf> = files_under(lab.dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "fidx"))
        .collect();
    assert_eq!(indexes.len(), 2, "{indexes:?}");
    let budget = (16 << 20) * 65 * MIB / (1 << 30);
    for i in &indexes {
        let len = std::fs::metadata(i).unwrap().len();
        assert!(len <= budget, "{} is {len} bytes", i.display());
        assert!(len < 64 << 10, "{} is {len} bytes", i.display());
    }

    let (_, restore_rss) = sk_measured(&lab, &["restore", "vm:big", "--name", "big-r"]);
    assert!(
        restore_rss <= RSS_LIMIT_KIB,
        "restore peak RSS {restore_rss} KiB"
    );
    let restored = lab.flat_file("big-r");
    assert_eq!(
        std::fs::metadata(&restored).unwrap().len(),
        CAPACITY_MIB * MIB
    );
    for &(offset, len, seed) in &regions {
        let source = read_region(&flat, offset, len);
        assert_eq!(
            read_region(&restored, offset, len),
            source,
            "region at {offset}"
        );
        if seed != 3 {
            assert!(
                source == guest_bytes(seed, len as usize),
                "region at {offset}"
            );
        }
    }
    assert_eq!(
        read_region(&restored, change.0, MIB),
        guest_bytes(change.2, MIB as usize)
    );
    // The chunks' data is written, nothing else: 64 MiB and the 4 KiB block the unaligned
    // region adds (all-zero 4 KiB blocks belong to no chunk). The slack is the file system's.
    let stored = 64 * MIB + 4096;
    let restored_alloc = allocated(&restored);
    assert!(
        restored_alloc <= stored + MIB,
        "the restored disk allocates {restored_alloc} bytes for {stored} bytes of chunks"
    );
    eprintln!(
        "peak RSS: full {full_rss} KiB, incremental {incr_rss} KiB, restore {restore_rss} KiB; \
         indexes {:?} bytes",
        indexes
            .iter()
            .map(|i| std::fs::metadata(i).unwrap().len())
            .collect::<Vec<_>>()
    );
}
