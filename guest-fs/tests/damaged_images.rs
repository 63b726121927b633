//! Real images with bytes flipped in their metadata: reading them returns errors or (wrong
//! but harmless) entries, and never panics out of guest-fs — the file system crates run
//! under its panic guard.

mod images;

use std::sync::Arc;

use guest_fs::{Disk, EntryKind, GuestFs, PartitionTable};
use images::*;

/// Walks everything reachable, reading every file; returns how many calls failed.
fn exercise(fs: &mut dyn GuestFs, dir: &str, depth: usize, failures: &mut usize) {
    let Ok(entries) = fs.list(dir) else {
        *failures += 1;
        return;
    };
    for e in entries.into_iter().take(64) {
        let p = format!("{}/{}", dir.trim_end_matches('/'), e.name);
        match e.kind {
            EntryKind::Dir if depth < 4 => exercise(fs, &p, depth + 1, failures),
            EntryKind::File if fs.read_file(&p, &mut std::io::sink()).is_err() => {
                *failures += 1;
            }
            _ => {}
        }
    }
}

#[test]
fn flipped_metadata_bytes_never_panic() {
    let w = workdir();
    let (src, src_fat) = (w.path().join("src"), w.path().join("src-fat"));
    source_tree(&src, true);
    source_tree(&src_fat, false);
    let mut originals = Vec::new();
    let ext = w.path().join("ext.img");
    ext4(&src, &ext, 16 * MIB);
    originals.push(std::fs::read(&ext).unwrap());
    let fat_img = w.path().join("fat.img");
    fat(&src_fat, &fat_img, 40 * MIB);
    originals.push(std::fs::read(&fat_img).unwrap());
    let ntfs_img = w.path().join("ntfs.img");
    if ntfs(&src, &ntfs_img, 16 * MIB) {
        originals.push(std::fs::read(&ntfs_img).unwrap());
    }
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        seed >> 17
    };
    let (mut opened, mut failures) = (0, 0);
    for original in &originals {
        for _ in 0..150 {
            let mut img = original.clone();
            // Metadata sits in the first MiB of these small images (superblocks, FATs, $MFT
            // is further in for NTFS: also hit its boot sector's MFT pointer area).
            for _ in 0..1 + next() % 8 {
                let at = (next() % (MIB.min(img.len() as u64))) as usize;
                img[at] ^= 1 << (next() % 8);
            }
            let disk: Disk = Arc::new(img);
            let Ok(table) = PartitionTable::read(&disk) else {
                continue;
            };
            for p in &table.partitions {
                if let Ok(mut fs) = guest_fs::open(&disk, p) {
                    opened += 1;
                    exercise(fs.as_mut(), "/", 0, &mut failures);
                }
            }
        }
    }
    assert!(opened > 100, "most damaged images still open ({opened})");
    eprintln!("{opened} damaged file systems opened, {failures} reads refused");
}
