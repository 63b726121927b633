//! Repositories written by format version 2 (dense, bound `SKFIDX02` indexes) open, verify,
//! restore byte for byte and take new generations, whose indexes are version 3 (runs of
//! stored chunks). The fixtures under `tests/fixtures/format-v2` were written by the code at
//! commit 303174f with the helpers of `tests/common`: one plain and one encrypted repository
//! (passphrase [`PASSPHRASE`]), target `fixture`, generation 1 full (6 chunks of 64 KiB,
//! `disk_bytes(_, 5)`) and generation 2 incremental (chunk 3 replaced by
//! `disk_bytes(64 KiB, 9)`). They are copied before use, so the committed files are never
//! changed.

mod common;

use std::path::Path;

use common::*;
use repository_format::*;

fn version_2_repository_reads_and_grows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/format-v2")
        .join(kind);
    let root = dir.path().join(kind);
    copy_dir(&src, &root);
    // A version-2 repository at rest has an empty `locks/` folder (its lock records are
    // deleted when released), and git keeps no empty folders: recreate it as it was.
    std::fs::create_dir_all(root.join("locks")).unwrap();
    let repo = reopen(&root);
    assert_eq!(repo.config().format_version, 2);
    assert_eq!(repo.is_encrypted(), kind == "encrypted");
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);

    let key = repo.target_key(&identity("fixture")).unwrap();
    if kind == "plain" {
        assert_eq!(&index_magic(&root, &key, 2), b"SKFIDX02");
    }
    let g1 = disk_bytes(6 * CS as usize, 5);
    let mut g2 = g1.clone();
    g2[3 * CS as usize..4 * CS as usize].copy_from_slice(&disk_bytes(CS as usize, 9));
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
    let old = repo.fixed_index(&key, GenerationId(2), 2000).unwrap();
    assert_eq!(old.binding().map(|b| b.generation), Some(GenerationId(2)));

    // An incremental on a version-2 base writes a version-3 index that inherits the base's
    // chunks, and the whole repository still verifies.
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
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
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
