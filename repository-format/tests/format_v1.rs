//! Repositories written by the previous release (format version 1, before the storage layer,
//! lock objects and typed disk uuids) open, verify, restore byte for byte and take new
//! generations with this one. The fixtures under `tests/fixtures/format-v1` were written by
//! the code at commit f0ba30d: one plain and one encrypted repository (passphrase
//! [`PASSPHRASE`]), target `fixture`, generation 1 full (6 chunks of 64 KiB, `disk_bytes(_, 5)`)
//! and generation 2 incremental (chunk 3 replaced by `disk_bytes(64 KiB, 9)`), with
//! `disk_uuid` and `disk_mode` in the disk record and a `vm.json` metadata file. They are
//! copied before use, so the committed files are never changed.

mod common;

use common::*;
use repository_format::*;

fn previous_release_repository_reads_and_grows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (root, repo) = open_fixture(1, kind, dir.path());

    let key = repo.target_key(&identity("fixture")).unwrap();
    let gens: Vec<u64> = repo
        .generations(&key)
        .unwrap()
        .iter()
        .map(|g| g.id.0)
        .collect();
    assert_eq!(gens, vec![1, 2]);
    let (g1, g2) = fixture_disks();
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
    assert_eq!(restore(&repo, "fixture", GenerationId(2)), g2);
    // The disk uuid and mode the old release kept in the record's extra fields read as the
    // typed fields, under the same JSON keys.
    let m = repo.manifest(&key, GenerationId(2)).unwrap();
    assert_eq!(
        m.disks[0].disk.disk_uuid.as_deref(),
        Some("6000c29f-fixture")
    );
    assert_eq!(m.disks[0].disk.disk_mode.as_deref(), Some("persistent"));
    assert_eq!(m.disks[0].disk.change_id.as_deref(), Some("52 ff/2"));
    assert_eq!(
        repo.read_metadata(&key, GenerationId(1), "vm.json")
            .unwrap(),
        b"{\"name\":\"fixture\"}"
    );

    // This release adds an incremental on top of the old generations (its lock protocol
    // works beside the old release's leftover lock files) and everything still verifies.
    let (g3, id) = grow_fixture(&repo, &g2);
    assert_eq!(restore(&repo, "fixture", id), g3);
    drop(repo);
    let repo = reopen(&root);
    assert_verifies(&repo);
    assert_eq!(restore(&repo, "fixture", GenerationId(1)), g1);
}

#[test]
fn a_plain_repository_of_the_previous_release_reads_and_grows() {
    previous_release_repository_reads_and_grows("plain");
}

#[test]
fn an_encrypted_repository_of_the_previous_release_reads_and_grows() {
    previous_release_repository_reads_and_grows("encrypted");
}
