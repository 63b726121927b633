//! Real guest disk images built with the real tools (mke2fs -d, mkfs.fat + mcopy, mkntfs +
//! ntfs-3g, sfdisk), and the source tree they hold. Shared with the end-to-end tests
//! (`tests/e2e/tests/instant_access.rs` includes this file).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;
/// Modification time given to every source file (2024-02-29 12:34:56 UTC, even seconds for FAT).
pub const MTIME: i64 = 1_709_210_096;

/// Runs a tool, panicking with its output unless it succeeds.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a source entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// A file with its content's SHA-256 (hex) and size.
    File {
        sha256: String,
        size: u64,
        mode: u32,
    },
    /// A folder.
    Dir,
    /// A symlink and its target.
    Symlink(String),
}

/// Deterministic bytes (an LCG: cheap, incompressible enough, distinct per seed).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// The name with non-ASCII characters used in every tree.
pub const UNICODE_DIR: &str = "Grüße";
pub const UNICODE_FILE: &str = "naïve – 日本.txt";
/// The multi-megabyte file (its first 4 KiB are unique on the disk: tests find it by them).
pub const BIG: &str = "data/big.bin";

/// Writes the source tree into `dir` and returns every entry by path (relative, `/`).
/// `symlinks`: FAT has none.
pub fn source_tree(dir: &Path, symlinks: bool) -> BTreeMap<String, Expected> {
    let mut t = BTreeMap::new();
    let mut file = |rel: &str, content: &[u8], mode: u32| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        t.insert(
            rel.to_string(),
            Expected::File {
                sha256: sha256(content),
                size: content.len() as u64,
                mode,
            },
        );
    };
    file("readme.txt", b"safekeeping file-level restore\n", 0o644);
    file("empty.txt", b"", 0o600);
    file(BIG, &pattern(1, 5 * MIB as usize + 123), 0o640);
    file(
        "data/nested/deeper/notes.md",
        b"# deep\nthree levels down\n",
        0o644,
    );
    file(
        &format!("{UNICODE_DIR}/{UNICODE_FILE}"),
        "grüße aus 日本\n".as_bytes(),
        0o644,
    );
    file("bin/tool.sh", b"#!/bin/sh\necho ok\n", 0o755);
    // Sparse: 3 MiB with 4 KiB of data at 1 MiB and at the end, the rest never written.
    let sparse = dir.join("data/sparse.img");
    {
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(3 * MIB).unwrap();
        f.write_all_at(&pattern(2, 4096), MIB).unwrap();
        f.write_all_at(&pattern(3, 4096), 3 * MIB - 4096).unwrap();
    }
    let content = std::fs::read(&sparse).unwrap();
    std::fs::set_permissions(&sparse, std::fs::Permissions::from_mode(0o644)).unwrap();
    t.insert(
        "data/sparse.img".into(),
        Expected::File {
            sha256: sha256(&content),
            size: content.len() as u64,
            mode: 0o644,
        },
    );
    for d in [
        "data",
        "data/nested",
        "data/nested/deeper",
        UNICODE_DIR,
        "bin",
    ] {
        t.insert(d.to_string(), Expected::Dir);
    }
    if symlinks {
        std::os::unix::fs::symlink("data/nested/deeper/notes.md", dir.join("notes-link")).unwrap();
        t.insert(
            "notes-link".into(),
            Expected::Symlink("data/nested/deeper/notes.md".into()),
        );
    }
    // Fixed mtimes, files and folders (touch -h: symlinks themselves).
    let stamp = "@".to_string() + &MTIME.to_string();
    for rel in t.keys() {
        let p = dir.join(rel);
        run("touch", &["-h", "-d", &stamp, p.to_str().unwrap()]);
    }
    t
}

/// An ext4 image of `size` bytes holding `src` (`mke2fs -d`).
pub fn ext4(src: &Path, out: &Path, size: u64) {
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-E",
            "root_owner=0:0",
            "-d",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            &format!("{}k", size / 1024),
        ],
    );
}

/// A FAT32 image of `size` bytes holding `src` (`mkfs.fat` + `mcopy -s -m`).
pub fn fat(src: &Path, out: &Path, size: u64) {
    let _ = std::fs::remove_file(out);
    run(
        "mkfs.fat",
        &[
            "-F",
            "32",
            "-C",
            out.to_str().unwrap(),
            &(size / 1024).to_string(),
        ],
    );
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        run(
            "mcopy",
            &[
                "-s",
                "-m",
                "-Q",
                "-i",
                out.to_str().unwrap(),
                p.to_str().unwrap(),
                "::/",
            ],
        );
    }
}

/// An NTFS image of `size` bytes holding `src` (`mkntfs`, then ntfs-3g through FUSE and
/// `cp -a`). Returns false when FUSE mounting is not possible here.
pub fn ntfs(src: &Path, out: &Path, size: u64) -> bool {
    let f = std::fs::File::create(out).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run("mkntfs", &["-F", "-Q", "-q", out.to_str().unwrap()]);
    let mnt = tempfile::tempdir().unwrap();
    let m = mnt.path().to_str().unwrap();
    let ok = Command::new("ntfs-3g")
        .args([out.to_str().unwrap(), m])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return false;
    }
    let copied = Command::new("cp")
        .args(["-a", &format!("{}/.", src.display()), m])
        .status();
    let _ = Command::new("sync").status();
    let unmounted = Command::new("fusermount")
        .args(["-u", m])
        .status()
        .is_ok_and(|s| s.success())
        || Command::new("umount")
            .arg(m)
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        copied.is_ok_and(|s| s.success()),
        "cp -a into the NTFS mount"
    );
    assert!(unmounted, "unmount the NTFS image");
    true
}

/// A partition for [`partitioned`]: image file, sfdisk type, start in MiB.
pub struct Part<'a> {
    pub image: &'a Path,
    pub sfdisk_type: &'a str,
    pub start_mib: u64,
}

/// A disk image of `size` bytes with a `label` (`gpt` or `dos`) table made by sfdisk and the
/// images copied to their partitions.
pub fn partitioned(out: &Path, size: u64, label: &str, parts: &[Part<'_>], extra_script: &str) {
    let f = std::fs::File::create(out).unwrap();
    f.set_len(size).unwrap();
    let mut script = format!("label: {label}\n");
    for p in parts {
        let len = std::fs::metadata(p.image).unwrap().len();
        script += &format!(
            "start={}, size={}, type={}\n",
            p.start_mib * 2048,
            len / 512,
            p.sfdisk_type
        );
    }
    script += extra_script;
    let mut child = Command::new("sfdisk")
        .args([
            "-q",
            "--no-reread",
            "--no-tell-kernel",
            out.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sfdisk:\n{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for p in parts {
        copy_into(out, p.image, p.start_mib * MIB);
    }
}

/// Copies `image` into `disk` at `offset`, keeping holes.
pub fn copy_into(disk: &Path, image: &Path, offset: u64) {
    run(
        "dd",
        &[
            &format!("if={}", image.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            &format!("seek={}", offset / MIB),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

/// A temporary folder for images.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
