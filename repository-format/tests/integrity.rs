//! Every file proves where it belongs (issue #11, items 5, 6, 7, 15, 16, 17): an index or a
//! manifest copied to another place is damage, a damaged or planted key file does not lock the
//! others out, a planted generation folder cannot overflow the numbering, a damaged index can be
//! quarantined, gc frees a failed backup's chunks when no writer is alive, and a read-only
//! repository can be read. Each test fails on the code before these changes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use repository_format::*;

fn plain(dir: &Path) -> Repository {
    Repository::init(
        dir.join("repo"),
        &InitOptions {
            chunk_size: CS,
            compression_level: 1,
            ..Default::default()
        },
    )
    .unwrap()
}

fn index_path(repo: &Repository, key: &TargetKey, g: GenerationId) -> PathBuf {
    repo.root()
        .join("targets")
        .join(key.as_str())
        .join(g.folder_name())
        .join("disk-2000.fidx")
}

/// Three generations of target `name`: full, then two incrementals changing chunk 1, then 2.
fn three_generations(repo: &Repository, name: &str) -> (Vec<GenerationId>, Vec<Vec<u8>>) {
    let g1_data = disk_bytes(8 * CS as usize, 21);
    let mut g2_data = g1_data.clone();
    g2_data[CS as usize..2 * CS as usize].fill(0x42);
    let mut g3_data = g2_data.clone();
    g3_data[2 * CS as usize..3 * CS as usize].fill(0x43);
    let (g1, _) = backup(repo, name, &g1_data, None);
    let cs = CS as u64;
    let (g2, _) = backup(repo, name, &g2_data, Some((g1, &[Area::new(cs, cs)])));
    let (g3, _) = backup(repo, name, &g3_data, Some((g2, &[Area::new(2 * cs, cs)])));
    (vec![g1, g2, g3], vec![g1_data, g2_data, g3_data])
}

/// Item 5: generation 1's index copied over generation 3's. Before, the restore of
/// generation 3 returned generation 1's data and check was clean; now every read names the file.
fn swapped_index(repo: Repository) {
    let (gens, data) = three_generations(&repo, "web01");
    let key = repo.target_key(&identity("web01")).unwrap();
    let target = index_path(&repo, &key, gens[2]);
    std::fs::copy(index_path(&repo, &key, gens[0]), &target).unwrap();

    let err = repo.disk_reader(&key, gens[2], 2000).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Index { .. }), "{err:?}");
    assert!(
        text.contains(&target.display().to_string()),
        "names the file: {text}"
    );
    assert!(
        text.contains("is not the index generation 3 was committed with"),
        "{text}"
    );
    if !repo.is_encrypted() {
        // Plain: the header still says where it came from.
        assert!(text.contains("generation 1"), "{text}");
    }
    // The base of the next incremental is refused the same way.
    assert!(repo.fixed_index(&key, gens[2], 2000).is_err());
    // The other generations are untouched.
    assert_eq!(restore(&repo, "web01", gens[0]), data[0]);
    assert_eq!(restore(&repo, "web01", gens[1]), data[1]);

    let report = repo.check(&CheckOptions::default()).unwrap();
    assert!(!report.ok());
    let p = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::DamagedIndex)
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert_eq!(p.path, target);
    assert_eq!((p.generation, p.disk), (Some(gens[2].0), Some(2000)));
}

#[test]
fn a_swapped_index_is_damage_plain() {
    let dir = tempfile::tempdir().unwrap();
    swapped_index(plain(dir.path()));
}

#[test]
fn a_swapped_index_is_damage_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    swapped_index(encrypted_repo(&dir.path().join("repo")));
}

/// Item 5: an index keeps its place in its header even where the manifest recorded no identity
/// (a generation of format version 1): a bound index of another place is refused there too.
#[test]
fn a_bound_index_names_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    let (gens, _) = three_generations(&repo, "web01");
    let key = repo.target_key(&identity("web01")).unwrap();
    let idx = repo.fixed_index(&key, gens[1], 2000).unwrap();
    let b = idx.binding().expect("a new index is bound");
    assert_eq!(
        (b.target.as_str(), b.generation, b.disk),
        (key.as_str(), gens[1], 2000)
    );
    let m = repo.manifest(&key, gens[1]).unwrap();
    let rec = m.disk(2000).unwrap();
    assert_eq!(rec.index_id, Some(idx.uuid()));
    let bytes = std::fs::read(index_path(&repo, &key, gens[1])).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        rec.index_sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str())
    );
    // Decoded without the manifest, the header still says where it belongs.
    let codec = Codec::new(1, None);
    let back = FixedIndex::decode(Path::new("i"), &bytes, &codec).unwrap();
    assert_eq!(back.binding(), Some(b));
}

/// Item 5: the same index bound to one place does not decrypt for another (the place is in
/// the associated data), and a legacy (unbound) encoding of an index decodes unbound.
#[test]
fn an_encrypted_index_authenticates_only_at_its_place() {
    let key = Key::generate().unwrap();
    let codec = Codec::new(1, Some(key));
    let mut idx = FixedIndex::new(3 * CS as u64, CS).unwrap();
    idx.set(1, Some(ChunkDigest::of(b"x")));
    let here =
        fixed_index::IndexBinding::new(TargetKey::new("vm-a").unwrap(), GenerationId(3), 2000);
    let legacy = idx.try_encode(&codec).unwrap();
    assert!(FixedIndex::decode(Path::new("i"), &legacy, &codec)
        .unwrap()
        .binding()
        .is_none());
    idx.bind(here.clone());
    let blob = idx.try_encode(&codec).unwrap();
    assert_eq!(
        FixedIndex::decode_at(Path::new("i"), &blob, &codec, Some(&here))
            .unwrap()
            .binding(),
        Some(&here)
    );
    for elsewhere in [
        fixed_index::IndexBinding::new(TargetKey::new("vm-a").unwrap(), GenerationId(1), 2000),
        fixed_index::IndexBinding::new(TargetKey::new("vm-b").unwrap(), GenerationId(3), 2000),
        fixed_index::IndexBinding::new(TargetKey::new("vm-a").unwrap(), GenerationId(3), 2001),
    ] {
        let e = FixedIndex::decode_at(Path::new("i"), &blob, &codec, Some(&elsewhere)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Blob {
                    reason: BlobError::Authentication,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

/// Item 5: a manifest moved into another target's folder (same generation number and
/// repository) is refused: before, the restore of target b returned target a's disk.
#[test]
fn a_manifest_in_another_targets_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    let a = disk_bytes(4 * CS as usize, 1);
    let b = disk_bytes(4 * CS as usize, 2);
    let (ga, _) = backup(&repo, "a", &a, None);
    let (gb, _) = backup(&repo, "b", &b, None);
    assert_eq!(ga, gb);
    let ka = repo.target_key(&identity("a")).unwrap();
    let kb = repo.target_key(&identity("b")).unwrap();
    let folder = |k: &TargetKey| {
        repo.root()
            .join("targets")
            .join(k.as_str())
            .join(ga.folder_name())
    };
    for f in ["manifest", "disk-2000.fidx"] {
        std::fs::copy(folder(&ka).join(f), folder(&kb).join(f)).unwrap();
    }
    let repo = reopen(repo.root());
    let err = repo.manifest(&kb, gb).unwrap_err().to_string();
    assert!(err.contains("lies in folder"), "{err}");
    assert!(repo.disk_reader(&kb, gb, 2000).is_err());
    // Listing skips it; check reports it.
    assert!(repo.generations(&kb).unwrap().is_empty());
    let report = repo.check(&CheckOptions::default()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::DamagedManifest
                && p.path == folder(&kb).join("manifest")),
        "{:#?}",
        report.problems
    );
    // Target a is intact.
    assert_eq!(restore(&repo, "a", ga), a);
}

/// Item 15: `check --repair` quarantines a damaged index: the generation is reported damaged,
/// its restore fails naming the missing index, and the other generations stay whole.
#[test]
fn repair_quarantines_a_damaged_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    let (gens, data) = three_generations(&repo, "web01");
    let key = repo.target_key(&identity("web01")).unwrap();
    let idx = index_path(&repo, &key, gens[2]);
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len() - 5;
    bytes[n] ^= 0x20;
    std::fs::write(&idx, &bytes).unwrap();

    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let report = repo.check_and_repair(&x).unwrap();
    drop(x);
    assert!(!report.ok());
    assert_eq!(report.quarantined_indexes.len(), 1, "{report:#?}");
    let q = &report.quarantined_indexes[0];
    assert_eq!((q.generation, q.disk, &q.path), (gens[2].0, 2000, &idx));
    assert!(q
        .quarantine_path
        .starts_with(repo.root().join("quarantine")));
    assert_eq!(std::fs::read(&q.quarantine_path).unwrap(), bytes);
    assert!(!idx.exists());
    assert!(report
        .damaged_generations
        .iter()
        .any(|g| g.generation == gens[2].0 && g.target == key.as_str() && g.disks == [2000]));
    let err = repo
        .disk_reader(&key, gens[2], 2000)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&idx.display().to_string()), "{err}");
    assert_eq!(restore(&repo, "web01", gens[1]), data[1]);
    // A later check counts the quarantined file and still reports the generation.
    let again = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(again.quarantine_files, 1);
    assert!(again
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::DamagedIndex && p.generation == Some(gens[2].0)));
}

/// Item 7: a planted `gen-18446744073709551615` cannot make the next number wrap to 0 (or
/// panic): the backup fails with an error naming the folder.
#[test]
fn a_planted_highest_generation_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    let data = disk_bytes(2 * CS as usize, 3);
    backup(&repo, "web01", &data, None);
    let key = repo.target_key(&identity("web01")).unwrap();
    let planted = repo
        .root()
        .join("targets")
        .join(key.as_str())
        .join(GenerationId(u64::MAX).folder_name());
    assert!(planted.ends_with("gen-18446744073709551615"));
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("incomplete.json"), b"{}").unwrap();

    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let tl = repo.lock_target(&key, Duration::ZERO).unwrap();
    let err = repo
        .begin_generation(&lock, tl, identity("web01"), BackupMode::Full, None)
        .unwrap_err();
    assert!(matches!(err, Error::GenerationLimit { .. }), "{err:?}");
    assert!(
        err.to_string().contains("gen-18446744073709551615"),
        "{err}"
    );
    assert_eq!(
        GenerationId(u64::MAX - 1).next(&key).unwrap(),
        GenerationId(u64::MAX)
    );
}

/// The first key file of `repo` as JSON.
fn key_file_json(repo: &Repository) -> (String, serde_json::Value) {
    let keys = repo.root().join("keys");
    let e = std::fs::read_dir(&keys).unwrap().next().unwrap().unwrap();
    let v = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
    (e.file_name().to_string_lossy().into_owned(), v)
}

/// Item 6: a planted key file with huge derivation parameters is refused when read, before
/// anything is derived, and one that is damaged (bad nonce) is skipped: the good key file
/// still opens the repository, and check names both. Before, the damaged file (tried first:
/// lowest id) stopped the open with its error, and the costly one was derived.
#[test]
fn damaged_or_planted_key_files_do_not_lock_the_others_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(&dir.path().join("repo"));
    let (_, good) = key_file_json(&repo);
    let keys = repo.root().join("keys");

    let mut costly = good.clone();
    costly["id"] = "0000000000000001".into();
    costly["kdf"]["memory_kib"] = (128 * 1024).into();
    costly["kdf"]["iterations"] = 40.into();
    std::fs::write(keys.join("0000000000000001"), costly.to_string()).unwrap();
    let e = KeyFile::parse(Path::new("k"), costly.to_string().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("iterations"), "{e}");

    let mut damaged = good.clone();
    damaged["id"] = "0000000000000000".into();
    damaged["nonce"] = "not hex".into();
    std::fs::write(keys.join("0000000000000000"), damaged.to_string()).unwrap();

    let repo = Repository::open_with(repo.root(), Some(&Passphrase::from(PASSPHRASE)))
        .expect("the good key file opens the repository");
    let wrong = Repository::open_with(repo.root(), Some(&Passphrase::from("wrong"))).unwrap_err();
    assert!(
        matches!(wrong, Error::WrongPassphrase { tried: 1, .. }),
        "{wrong:?}"
    );
    let report = repo.check(&CheckOptions::default()).unwrap();
    let bad: Vec<&Path> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::DamagedKeyFile)
        .map(|p| p.path.as_path())
        .collect();
    assert!(
        bad.contains(&keys.join("0000000000000001").as_path()),
        "{bad:?}"
    );
    for limits in [
        KdfParams {
            memory_kib: 3 * 1024 * 1024,
            iterations: 1,
            parallelism: 1,
        },
        KdfParams {
            memory_kib: 1024 * 1024,
            iterations: 8,
            parallelism: 1,
        },
    ] {
        assert!(limits.validate().is_err(), "{limits:?}");
    }
    assert!(KdfParams::default().validate().is_ok());
}

/// Item 17: a failed backup's chunks are freed by the next gc at once when no writer is alive;
/// with a live lock holder the grace still protects recent chunks. Before, both kept them for
/// the 5-minute grace.
#[test]
fn gc_frees_a_failed_backups_chunks_when_no_writer_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    {
        let (_lock, _key, w) = begin_full(&repo, "failed");
        let data = disk_bytes(4 * CS as usize, 7);
        w.ingest_disk(
            DiskDescriptor::new(2000, data.len() as u64),
            None,
            &[Area::new(0, data.len() as u64)],
            &mut MemorySource::new(data),
            &|_| {},
        )
        .unwrap();
        // Dropped uncommitted: the backup failed, its chunks are unreferenced.
    }
    let count = || {
        let mut n = 0;
        for e in walk(&repo.root().join("chunks")) {
            if !e.file_name().unwrap().to_string_lossy().starts_with('.') {
                n += 1;
            }
        }
        n
    };
    let before = count();
    assert!(before >= 3, "{before}");

    // A writer gc can see (a live target lock): the grace protects what may be its chunks.
    let other = repo
        .lock_target(&TargetKey::new("vm-busy").unwrap(), Duration::ZERO)
        .unwrap();
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let r = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(r.chunks_removed, 0, "{r:#?}");
    assert_eq!(r.grace_seconds, DEFAULT_GRACE_SECONDS);
    assert_eq!(r.live_lock_holders, 1);
    drop(other);

    // No writer alive: they go at once.
    let r = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(r.grace_seconds, 0, "{r:#?}");
    assert_eq!(r.chunks_removed as usize, before, "{r:#?}");
    assert_eq!(count(), 0);
}

const DEFAULT_GRACE_SECONDS: u64 = 300;

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Item 5 with copy: a copied generation's index is bound to its new place (other target
/// folder, other number), and the destination checks clean and restores.
#[test]
fn copy_binds_indexes_to_their_new_place() {
    let dir = tempfile::tempdir().unwrap();
    let src = plain(dir.path());
    let dest = encrypted_repo(&dir.path().join("dest"));
    let (gens, data) = three_generations(&src, "web01");
    // The destination already has a generation of this target: numbers differ.
    backup(&dest, "web01", &disk_bytes(8 * CS as usize, 99), None);
    let a = src.lock_shared(Duration::ZERO).unwrap();
    let b = dest.lock_shared(Duration::ZERO).unwrap();
    let r = src.copy_to(&a, &dest, &b, &CopyOptions::default()).unwrap();
    drop((a, b));
    assert_eq!(r.copied.len(), 3);
    let dkey = dest.target_key(&identity("web01")).unwrap();
    for (i, g) in gens.iter().enumerate() {
        let (_, _, _, did) = r.copied.iter().find(|c| c.1 == g.0).cloned().unwrap();
        let did = GenerationId(did);
        assert_ne!(did, *g);
        let idx = dest.fixed_index(&dkey, did, 2000).unwrap();
        let bind = idx.binding().unwrap();
        assert_eq!((&bind.target, bind.generation), (&dkey, did));
        assert_eq!(restore(&dest, "web01", did), data[i]);
    }
    let report = dest.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

/// Item 16: a repository on a read-only mount can be listed, checked, restored from (the
/// lock cannot be recorded: a lock that is not held, and a warning), and refuses writers with
/// a clear error. Tests run as root, who ignores permission bits: a read-only bind mount is
/// what makes the file system refuse writes.
#[test]
fn a_read_only_repository_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let repo = plain(dir.path());
    let (gens, data) = three_generations(&repo, "web01");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let Some(_mount) = ReadOnlyMount::new(repo.root(), &ro) else {
        return;
    };
    let repo = Repository::open(&ro).unwrap();
    let key = repo.target_key(&identity("web01")).unwrap();
    // A recorded shared lock is impossible here...
    let e = repo.lock_shared(Duration::ZERO).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied)),
        "{e:?}"
    );
    // ...a reader goes on without one.
    let lock = repo.lock_shared_for_reading(Duration::ZERO).unwrap();
    assert!(!lock.is_held());
    assert!(lock.not_held_reason().is_some());
    assert_eq!(repo.generations(&key).unwrap().len(), 3);
    assert_eq!(restore(&repo, "web01", gens[2]), data[2]);
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
    // Nothing that writes accepts that lock (the repository lock is checked first; the
    // target lock comes from a writable scratch repository, since none can be taken here).
    let scratch = plain(&dir.path().join("scratch"));
    let tl = scratch.lock_target(&key, Duration::ZERO).unwrap();
    let e = repo
        .begin_generation(&lock, tl, identity("web01"), BackupMode::Full, None)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, Error::LockRequired { .. }), "{e:?}");
    assert!(e.to_string().contains("read-only"), "{e}");
}

/// A read-only bind mount of `src` at `at`, unmounted on drop; `None` (with a note) where
/// this sandbox may not mount.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(src: &Path, at: &Path) -> Option<Self> {
        let run = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let at_s = at.to_str().unwrap();
        if !run(&["--bind", src.to_str().unwrap(), at_s]) {
            eprintln!(
                "SKIPPED: cannot bind-mount here (not permitted); the read-only test needs it"
            );
            return None;
        }
        let m = ReadOnlyMount(at.to_path_buf());
        assert!(
            run(&["-o", "remount,bind,ro", at_s]),
            "bind mount made but cannot be made read-only"
        );
        Some(m)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
