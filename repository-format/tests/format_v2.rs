//! Repositories written by format version 2 (dense, bound `SKFIDX02` indexes) open, verify,
//! restore byte for byte and take new generations, whose indexes are version 3 (runs of
//! stored chunks). The fixtures under `tests/fixtures/format-v2` were written by the code at
//! commit 303174f with the helpers of `tests/common`: one plain and one encrypted repository
//! (passphrase [`PASSPHRASE`]), target `fixture`, generation 1 full (6 chunks of 64 KiB,
//! `disk_bytes(_, 5)`) and generation 2 incremental (chunk 3 replaced by
//! `disk_bytes(64 KiB, 9)`). They are copied before use, so the committed files are never
//! changed.

mod common;

use common::*;
use repository_format::*;

fn version_2_repository_reads_and_grows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (root, repo) = open_fixture(2, kind, dir.path());

    let key = repo.target_key(&identity("fixture")).unwrap();
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 2), b"SKFIDX02");
    }
    let (g1, g2) = fixture_disks();
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
    let old = repo.fixed_index(&key, GenerationId(2), 2000).unwrap();
    assert_eq!(old.binding().map(|b| b.generation), Some(GenerationId(2)));

    // An incremental on a version-2 base writes a version-3 index that inherits the base's
    // chunks, and the whole repository still verifies.
    let (g3, id) = grow_fixture(&repo, &g2);
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 3), b"SKFIDX03");
    }
    let new = repo.fixed_index(&key, id, 2000).unwrap();
    assert_eq!(
        new.stored_chunks().skip(1).collect::<Vec<_>>(),
        old.stored_chunks().skip(1).collect::<Vec<_>>()
    );
    assert_eq!(restore(&repo, "fixture", id), g3);
    drop(repo);
    let repo = reopen(&root);
    assert_eq!(
        repo.config().format_version,
        2,
        "the config is never rewritten"
    );
    assert_verifies(&repo);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
}

#[test]
fn a_plain_version_2_repository_reads_and_grows() {
    version_2_repository_reads_and_grows("plain");
}

#[test]
fn an_encrypted_version_2_repository_reads_and_grows() {
    version_2_repository_reads_and_grows("encrypted");
}
