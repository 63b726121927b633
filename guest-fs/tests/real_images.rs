//! Partition tables and file systems built by the real tools (sfdisk, mke2fs -d, mkfs.fat +
//! mcopy, mkntfs + ntfs-3g) are read back entry by entry: names (non-ASCII too), kinds,
//! sizes, modes, mtimes, symlink targets, and every file's content by digest.

mod images;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use guest_fs::{Content, Disk, Entry, EntryKind, GuestFs, PartitionTable, ReadAt, TableKind};
use images::*;

/// Every entry under `dir`, by path relative to the root.
fn walk(fs: &mut dyn GuestFs, dir: &str, out: &mut BTreeMap<String, Entry>) {
    for e in fs.list(dir).unwrap() {
        let p = if dir == "/" {
            e.name.clone()
        } else {
            format!("{}/{}", dir.trim_start_matches('/'), e.name)
        };
        if e.kind == EntryKind::Dir {
            walk(fs, &format!("/{p}"), out);
        }
        out.insert(p, e);
    }
}

/// Asserts the file system holds exactly `expected`.
fn check_tree(fs: &mut dyn GuestFs, expected: &BTreeMap<String, Expected>) {
    let mut found = BTreeMap::new();
    walk(fs, "/", &mut found);
    // ext4 has lost+found; nothing else may differ.
    found.remove("lost+found");
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "same names"
    );
    let content = fs.content();
    for (path, want) in expected {
        let e = &found[path];
        match want {
            Expected::File {
                sha256: digest,
                size,
                mode,
            } => {
                assert_eq!(e.kind, EntryKind::File, "{path}");
                assert_eq!(e.size, *size, "{path} size");
                let mut data = Vec::new();
                assert_eq!(fs.read_file(&format!("/{path}"), &mut data).unwrap(), *size);
                assert_eq!(&sha256(&data), digest, "{path} content");
                if matches!(content, Content::Ext4) {
                    assert_eq!(e.mode, Some(*mode), "{path} mode");
                }
            }
            Expected::Dir => assert_eq!(e.kind, EntryKind::Dir, "{path}"),
            Expected::Symlink(target) => {
                // ntfs-3g writes Interix symlinks; read as symlinks too.
                assert_eq!(e.kind, EntryKind::Symlink, "{path} in {content}");
                assert_eq!(e.link_target.as_deref(), Some(target.as_str()));
            }
        }
        let mtime = e.mtime.unwrap_or_else(|| panic!("{path} has an mtime"));
        // FAT keeps 2-second steps.
        assert!(
            (mtime - MTIME).abs() <= 2,
            "{path} mtime {mtime} (want {MTIME})"
        );
    }
    assert!(matches!(
        fs.stat("/no/such/file"),
        Err(guest_fs::Error::NotFound(_))
    ));
}

fn disk(p: &Path) -> Disk {
    Arc::new(std::fs::File::open(p).unwrap())
}

#[test]
fn gpt_disk_with_fat_and_ext4_partitions() {
    let w = workdir();
    let (src, src_fat) = (w.path().join("src"), w.path().join("src-fat"));
    let tree = source_tree(&src, true);
    let tree_fat = source_tree(&src_fat, false);
    let (fat_img, ext_img, disk_img) = (
        w.path().join("fat.img"),
        w.path().join("ext.img"),
        w.path().join("disk.img"),
    );
    fat(&src_fat, &fat_img, 40 * MIB);
    ext4(&src, &ext_img, 32 * MIB);
    partitioned(
        &disk_img,
        80 * MIB,
        "gpt",
        &[
            Part {
                image: &fat_img,
                sfdisk_type: "U",
                start_mib: 1,
            },
            Part {
                image: &ext_img,
                sfdisk_type: "L",
                start_mib: 42,
            },
        ],
        "",
    );
    let d = disk(&disk_img);
    let t = PartitionTable::read(&d).unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    let summary: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.content, p.type_name.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, MIB, Content::Fat, "EFI System"),
            (2, 42 * MIB, Content::Ext4, "Linux filesystem")
        ]
    );
    check_tree(
        guest_fs::open(&d, t.get(1).unwrap()).unwrap().as_mut(),
        &tree_fat,
    );
    check_tree(
        guest_fs::open(&d, t.get(2).unwrap()).unwrap().as_mut(),
        &tree,
    );
    assert!(t
        .get(3)
        .unwrap_err()
        .to_string()
        .contains("partitions: 1, 2"));
}

#[test]
fn mbr_disk_with_a_logical_ntfs_partition() {
    let w = workdir();
    let src = w.path().join("src");
    let tree = source_tree(&src, true);
    let (ext_img, ntfs_img, disk_img) = (
        w.path().join("ext.img"),
        w.path().join("ntfs.img"),
        w.path().join("disk.img"),
    );
    ext4(&src, &ext_img, 32 * MIB);
    assert!(
        ntfs(&src, &ntfs_img, 24 * MIB),
        "ntfs-3g can mount here (FUSE)"
    );
    partitioned(
        &disk_img,
        80 * MIB,
        "dos",
        &[Part {
            image: &ext_img,
            sfdisk_type: "83",
            start_mib: 1,
        }],
        &format!(
            "start={}, type=5\nstart={}, size={}, type=7\n",
            40 * 2048,
            41 * 2048,
            24 * 2048
        ),
    );
    copy_into(&disk_img, &ntfs_img, 41 * MIB);
    let d = disk(&disk_img);
    let t = PartitionTable::read(&d).unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    let numbers: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.content))
        .collect();
    assert_eq!(
        numbers,
        vec![
            (1, MIB, Content::Ext4),
            (2, 40 * MIB, Content::Unknown),
            (5, 41 * MIB, Content::Ntfs)
        ]
    );
    check_tree(
        guest_fs::open(&d, t.get(5).unwrap()).unwrap().as_mut(),
        &tree,
    );
    check_tree(
        guest_fs::open(&d, t.get(1).unwrap()).unwrap().as_mut(),
        &tree,
    );
}

#[test]
fn file_systems_without_a_partition_table_are_partition_0() {
    let w = workdir();
    let (src, src_fat) = (w.path().join("src"), w.path().join("src-fat"));
    let tree = source_tree(&src, true);
    let tree_fat = source_tree(&src_fat, false);
    let (fat_img, ext_img) = (w.path().join("fat.img"), w.path().join("ext.img"));
    fat(&src_fat, &fat_img, 40 * MIB);
    ext4(&src, &ext_img, 32 * MIB);
    // A FAT boot sector ends in 55 AA like an MBR: it must not be read as one.
    for (img, content, expected) in [
        (&fat_img, Content::Fat, &tree_fat),
        (&ext_img, Content::Ext4, &tree),
    ] {
        let d = disk(img);
        let t = PartitionTable::read(&d).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(
            (t.partitions[0].number, t.partitions[0].content),
            (0, content)
        );
        check_tree(
            guest_fs::open(&d, t.get(0).unwrap()).unwrap().as_mut(),
            expected,
        );
    }
}

#[test]
fn lvm_and_unknown_content_are_named_with_a_suggestion() {
    let w = workdir();
    let (pv, disk_img) = (w.path().join("pv.img"), w.path().join("disk.img"));
    let mut label = vec![0u8; 4 * MIB as usize];
    label[512..520].copy_from_slice(b"LABELONE");
    label[536..544].copy_from_slice(b"LVM2 001");
    std::fs::write(&pv, &label).unwrap();
    let blank = w.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 4 * MIB as usize]).unwrap();
    partitioned(
        &disk_img,
        16 * MIB,
        "gpt",
        &[
            Part {
                image: &pv,
                sfdisk_type: "E6D6D379-F507-44C2-A23C-238F2A3DF928",
                start_mib: 1,
            },
            Part {
                image: &blank,
                sfdisk_type: "L",
                start_mib: 6,
            },
        ],
        "",
    );
    let d = disk(&disk_img);
    let t = PartitionTable::read(&d).unwrap();
    assert_eq!(t.partitions[0].content, Content::Lvm);
    let e = guest_fs::open(&d, t.get(1).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("LVM physical volume") && e.contains("safekeeping serve"),
        "{e}"
    );
    let e = guest_fs::open(&d, t.get(2).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no file system") && e.contains("export"), "{e}");
}

/// A disk whose bytes in one range cannot be read (a damaged chunk).
struct Damaged {
    inner: std::fs::File,
    bad: std::ops::Range<u64>,
}

impl ReadAt for Damaged {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset < self.bad.end && offset + buf.len() as u64 > self.bad.start {
            return Err(io::Error::other("chunk 0123abcd is damaged"));
        }
        ReadAt::read_at(&self.inner, offset, buf)
    }
}

#[test]
fn a_damaged_area_fails_the_file_on_it_and_names_it_while_others_read() {
    let w = workdir();
    let src = w.path().join("src");
    source_tree(&src, true);
    let img = w.path().join("ext.img");
    ext4(&src, &img, 32 * MIB);
    let bytes = std::fs::read(&img).unwrap();
    let head = &pattern(1, 4096)[..];
    let at = bytes
        .windows(4096)
        .position(|x| x == head)
        .expect("big.bin's first block") as u64;
    let d: Disk = Arc::new(Damaged {
        inner: std::fs::File::open(&img).unwrap(),
        bad: at + MIB..at + MIB + 1,
    });
    let t = PartitionTable::read(&d).unwrap();
    let mut fs = guest_fs::open(&d, t.get(0).unwrap()).unwrap();
    let e = fs
        .read_file(&format!("/{BIG}"), &mut io::sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains(BIG) && e.contains("damaged"), "{e}");
    let mut out = Vec::new();
    fs.read_file("/readme.txt", &mut out).unwrap();
    assert_eq!(out, b"safekeeping file-level restore\n");
}
