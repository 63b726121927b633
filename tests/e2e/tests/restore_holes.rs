//! A restore writes only data: inside a stored (non-zero) 1 MiB chunk, the 64 KiB blocks that
//! are all zero are left unwritten, because the new thin disk already reads zeros there. The
//! restored disk must still hold exactly the source's bytes, and the fake VDDK's counters show
//! that only the data blocks were written (and that a chunk without holes went out whole).
//! Content-defined chunks (format 4) hold no all-zero 4 KiB block at all; the same disk
//! restored from them must also write its data and nothing else.

use safekeeping_e2e::Lab;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SECTOR: u64 = 512;

/// Backs up the disk described below into a repository of this `chunking`, restores it, and
/// checks that exactly its data was written; returns the restored disk's close statistics.
fn restore_writes_only_data(chunking: &str) -> serde_json::Value {
    let lab = Lab::up();
    lab.sk(&["repo", "init", "--chunking", chunking]).ok();
    lab.create_vm("holes", &["8M"], &[]);
    // Chunk 0: data with a 128 KiB zero hole at 256 KiB; chunk 1: data with a 64 KiB hole at
    // 1 MiB + 64 KiB; chunk 2: only its last 64 KiB; chunk 3: data throughout; the rest never
    // written.
    lab.guest_write("holes", 0, "0", "2M", Some(11));
    lab.guest_write("holes", 0, &(256 * KIB).to_string(), "128K", None);
    lab.guest_write("holes", 0, &(MIB + 64 * KIB).to_string(), "64K", None);
    lab.guest_write(
        "holes",
        0,
        &(3 * MIB - 64 * KIB).to_string(),
        "64K",
        Some(12),
    );
    lab.guest_write("holes", 0, &(3 * MIB).to_string(), "1M", Some(13));
    let source = lab.digest("holes", 0);

    lab.sk(&["backup", "vm:holes"]).ok();
    let before = lab.vddk_stats().len();
    let out = lab
        .sk(&["--json", "restore", "vm:holes", "--name", "holes-r"])
        .ok()
        .json();

    assert_eq!(
        lab.digest("holes-r", 0),
        source,
        "the restored disk is the source's"
    );
    let data = (MIB - 128 * KIB) + (MIB - 64 * KIB) + 64 * KIB + MIB;
    assert_eq!(
        out["disks"][0]["bytes_written"], data,
        "only the data blocks count as written: {out}"
    );
    let stats = lab.vddk_stats();
    let closes: Vec<&serde_json::Value> = stats[before..]
        .iter()
        .filter(|e| e["event"] == "close" && e["read_only"] == false)
        .collect();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(
        closes[0]["sectors_written"].as_u64().unwrap(),
        data / SECTOR,
        "the zero blocks inside stored chunks were written: {closes:?}"
    );
    // And the restored thin disk did not allocate the holes.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(lab.flat_file("holes-r"))
        .unwrap()
        .blocks()
        * SECTOR;
    // (The file system may add a block of its own for the extent tree; the smallest hole is
    // 64 KiB, and the holes 192 KiB together.)
    assert!(
        allocated < data + 64 * KIB,
        "restored disk allocates {allocated} bytes for {data} bytes of data"
    );
    closes[0].clone()
}

/// Fixed 1 MiB chunks (format 3) store the zero blocks inside a chunk with it: the restore
/// must skip them itself, 64 KiB at a time.
#[test]
fn zero_blocks_inside_stored_chunks_are_not_written() {
    let close = restore_writes_only_data("fixed");
    // One write per run of data, whichever chunks it spans (runs below 4 MiB are gathered):
    // 0-256K, 384K-1M+64K (chunk 0's end and chunk 1's start), 1M+128K-2M, and 3M-64K-4M
    // (chunk 2's last block and chunk 3).
    assert_eq!(close["write_calls"].as_u64().unwrap(), 4, "{close:?}");
}

/// Content-defined chunks (format 4, the default) never hold an all-zero 4 KiB block: the
/// same disk restores to the same bytes, writing its data and nothing else, and each run of
/// data is one write however the seeded hash cut it into chunks.
#[test]
fn content_defined_chunks_restore_only_the_data() {
    let close = restore_writes_only_data("content-defined");
    assert_eq!(close["write_calls"].as_u64().unwrap(), 4, "{close:?}");
}

/// A disk holding the same data at several places (a guest's copied files): the restore reads
/// each distinct chunk once and writes it everywhere the disk holds it, holes left out in
/// every copy. The restored disk is the source's, with only its data written.
#[test]
fn duplicated_chunks_are_written_at_every_offset() {
    let lab = Lab::up();
    lab.sk(&["repo", "init", "--chunking", "fixed"]).ok();
    lab.create_vm("dups", &["16M"], &[]);
    // Chunks 0-1 (with a 64 KiB hole at 256 KiB) again at 4-5 MiB and chunk 0 at 8 MiB, each
    // with the same hole; different data at 12 MiB.
    for at in [0, 4 * MIB, 8 * MIB] {
        let len = if at == 8 * MIB { "1M" } else { "2M" };
        lab.guest_write("dups", 0, &at.to_string(), len, Some(21));
        lab.guest_write("dups", 0, &(at + 256 * KIB).to_string(), "64K", None);
    }
    lab.guest_write("dups", 0, &(12 * MIB).to_string(), "1M", Some(22));
    let source = lab.digest("dups", 0);

    lab.sk(&["backup", "vm:dups"]).ok();
    let before = lab.vddk_stats().len();
    let out = lab
        .sk(&["--json", "restore", "vm:dups", "--name", "dups-r"])
        .ok()
        .json();
    assert_eq!(lab.digest("dups-r", 0), source, "{out}");
    let data = 2 * (2 * MIB - 64 * KIB) + (MIB - 64 * KIB) + MIB;
    assert_eq!(out["disks"][0]["bytes_written"], data, "{out}");
    let stats = lab.vddk_stats();
    let close = stats[before..]
        .iter()
        .find(|e| e["event"] == "close" && e["read_only"] == false)
        .expect("the restored disk's close");
    assert_eq!(
        close["sectors_written"].as_u64().unwrap(),
        data / SECTOR,
        "{close:?}"
    );
    // An export to a file reads each distinct chunk once as well, and holds the same disk.
    let image = lab.dir().join("dups-disk0.img");
    let out = lab
        .sk(&[
            "--json",
            "export",
            "vm:dups",
            "--disk",
            "0",
            "--output",
            image.to_str().unwrap(),
        ])
        .ok()
        .json();
    assert_eq!(safekeeping_e2e::sha256_file(&image), source, "{out}");
    assert_eq!(out["bytes_written"], 2 * 2 * MIB + 2 * MIB, "{out}");
}
