//! Harness for guest disks: partition tables, content probing and file system opening over
//! arbitrary bytes (a backed-up disk is whatever the guest wrote).

use std::sync::Arc;

use guest_fs::{Disk, PartitionTable};

/// `guest_disk`: the input is a whole disk. Reading its partition table must return `Ok` or
/// `Err`, never panic; every partition it returns lies within the disk; opening each one and
/// listing its root must not panic either — not even inside `guest-fs`'s panic guard, which
/// is a last line of defence: a panic it caught is reported as a failure here.
pub fn guest_disk(data: &[u8]) {
    let size = data.len() as u64;
    let disk: Disk = Arc::new(data.to_vec());
    let Ok(table) = PartitionTable::read(&disk) else {
        return;
    };
    for p in &table.partitions {
        assert!(
            p.start.checked_add(p.size).is_some_and(|e| e <= size),
            "partition {p:?} within {size}"
        );
        let caught = |e: &guest_fs::Error| e.to_string().contains("stopped on inconsistent data");
        match guest_fs::open(&disk, p) {
            Ok(mut fs) => {
                if let Err(e) = fs.list("/") {
                    assert!(!caught(&e), "a file system reader panicked: {e}");
                }
            }
            Err(e) => assert!(!caught(&e), "a file system reader panicked: {e}"),
        }
    }
}
