//! Repositories written by format version 3 (fixed chunks, `SKFIDX03` indexes: runs of stored
//! chunks) open, verify, restore byte for byte and take new generations under the format-4
//! code, staying version 3: fixed chunks and `SKFIDX03` indexes, the config never rewritten.
//! The fixtures under `tests/fixtures/format-v3` were written by the code at commit b2f2af0
//! (the last release of format 3) with the helpers of `tests/common`: one plain and one
//! encrypted repository (passphrase [`PASSPHRASE`]), target `fixture`, generation 1 full (6
//! chunks of 64 KiB, `disk_bytes(_, 5)`) and generation 2 incremental (chunk 3 replaced by
//! `disk_bytes(64 KiB, 9)`). They are copied before use.

mod common;

use std::path::Path;

use common::*;
use repository_format::*;

fn version_3_repository_reads_and_grows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/format-v3")
        .join(kind);
    let root = dir.path().join(kind);
    copy_dir(&src, &root);
    // Git keeps no empty folders; a repository at rest has an empty `locks/`.
    std::fs::create_dir_all(root.join("locks")).unwrap();
    let repo = reopen(&root);
    assert_eq!(repo.config().format_version, 3);
    assert_eq!(repo.config().chunking, config::Chunking::Fixed);
    assert!(repo.cut_rule().unwrap().is_none());
    assert_eq!(repo.is_encrypted(), kind == "encrypted");
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);

    let key = repo.target_key(&identity("fixture")).unwrap();
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 2), b"SKFIDX03");
    }
    let g1 = disk_bytes(6 * CS as usize, 5);
    let mut g2 = g1.clone();
    g2[3 * CS as usize..4 * CS as usize].copy_from_slice(&disk_bytes(CS as usize, 9));
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
    let old = repo.fixed_index(&key, GenerationId(2), 2000).unwrap();
    assert!(!old.is_variable());

    // An incremental on a version-3 base stays fixed: one 64 KiB chunk read, a version-3
    // index inheriting the other chunks.
    let mut g3 = g2.clone();
    g3[..10].copy_from_slice(b"generation");
    let (id, stats) = backup(
        &repo,
        "fixture",
        &g3,
        Some((GenerationId(2), &[Area::new(0, 10)])),
    );
    assert_eq!(id, GenerationId(3));
    assert_eq!(stats.read_bytes, CS as u64, "{stats:?}");
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 3), b"SKFIDX03");
    }
    let new = repo.fixed_index(&key, id, 2000).unwrap();
    assert!(!new.is_variable());
    assert_eq!(
        new.stored_chunks().skip(1).collect::<Vec<_>>(),
        old.stored_chunks().skip(1).collect::<Vec<_>>()
    );
    assert_eq!(restore(&repo, "fixture", id), g3);
    drop(repo);
    let repo = reopen(&root);
    assert_eq!(
        repo.config().format_version,
        3,
        "the config is never rewritten"
    );
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

#[test]
fn a_plain_version_3_repository_reads_and_grows() {
    version_3_repository_reads_and_grows("plain");
}

#[test]
fn an_encrypted_version_3_repository_reads_and_grows() {
    version_3_repository_reads_and_grows("encrypted");
}
