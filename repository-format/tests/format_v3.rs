//! Repositories written by format version 3 (fixed chunks, `SKFIDX03` indexes: runs of stored
//! chunks) open, verify, restore byte for byte and take new generations under the format-4
//! code, staying version 3: fixed chunks and `SKFIDX03` indexes, the config never rewritten.
//! The fixtures under `tests/fixtures/format-v3` were written by the code at commit b2f2af0
//! (the last release of format 3) with the helpers of `tests/common`: one plain and one
//! encrypted repository (passphrase [`PASSPHRASE`]), target `fixture`, generation 1 full (6
//! chunks of 64 KiB, `disk_bytes(_, 5)`) and generation 2 incremental (chunk 3 replaced by
//! `disk_bytes(64 KiB, 9)`). They are copied before use.

mod common;

use common::*;
use repository_format::*;

fn version_3_repository_reads_and_grows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (root, repo) = open_fixture(3, kind, dir.path());
    assert_eq!(repo.config().chunking, config::Chunking::Fixed);
    assert!(repo.cut_rule().unwrap().is_none());

    let key = repo.target_key(&identity("fixture")).unwrap();
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 2), b"SKFIDX03");
    }
    let (g1, g2) = fixture_disks();
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
    let old = repo.fixed_index(&key, GenerationId(2), 2000).unwrap();
    assert!(!old.is_variable());

    // An incremental on a version-3 base stays fixed: one 64 KiB chunk read, a version-3
    // index inheriting the other chunks.
    let (g3, id) = grow_fixture(&repo, &g2);
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
    assert_verifies(&repo);
}

#[test]
fn a_plain_version_3_repository_reads_and_grows() {
    version_3_repository_reads_and_grows("plain");
}

#[test]
fn an_encrypted_version_3_repository_reads_and_grows() {
    version_3_repository_reads_and_grows("encrypted");
}
