//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use repository_format::*;

pub const CS: u32 = 64 * 1024;

/// The passphrase of the test repositories that are encrypted.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A test repository; encrypted when `SAFEKEEPING_TEST_ENCRYPTED=1` (the whole suite then
/// runs again under encryption: `SAFEKEEPING_TEST_ENCRYPTED=1 cargo test -p repository-format`).
pub fn repo(dir: &std::path::Path) -> Repository {
    if std::env::var_os("SAFEKEEPING_TEST_ENCRYPTED").is_some_and(|v| v == "1") {
        encrypted_repo(&dir.join("repo"))
    } else {
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
}

/// An encrypted repository at `root` (cheap KDF parameters: tests only).
pub fn encrypted_repo(root: &std::path::Path) -> Repository {
    Repository::init_with(
        root,
        &InitOptions {
            chunk_size: CS,
            compression_level: 1,
            encryption: Encryption::Aes256Gcm,
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        },
        Some(&Passphrase::from(PASSPHRASE)),
    )
    .unwrap()
}

/// Opens a test repository again (with the passphrase if it is encrypted).
pub fn reopen(root: &std::path::Path) -> Repository {
    match Repository::open(root) {
        Err(Error::PassphraseRequired { .. }) => {
            Repository::open_with(root, Some(&Passphrase::from(PASSPHRASE))).unwrap()
        }
        other => other.unwrap(),
    }
}

pub fn identity(name: &str) -> TargetIdentity {
    let mut id = TargetIdentity::new(TargetKind::Vm, name);
    id.instance_uuid = Some(format!("uuid-{name}"));
    id
}

/// Deterministic disk content: zero, text-like and random chunks mixed.
pub fn disk_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = vec![0u8; len];
    for (i, c) in out.chunks_mut(CS as usize).enumerate() {
        match (i as u64 + seed) % 4 {
            0 => {}
            1 => {
                for (j, b) in c.iter_mut().enumerate() {
                    *b = b"the quick brown fox "[j % 20];
                }
            }
            _ => {
                for b in c.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
        }
    }
    out
}

/// Writes one generation with one disk (key 2000) and returns its id and stats.
pub fn backup(
    repo: &Repository,
    name: &str,
    data: &[u8],
    base: Option<(GenerationId, &[Area])>,
) -> (GenerationId, DiskStats) {
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let id = identity(name);
    let key = repo.target_key(&id).unwrap();
    let tl = repo.lock_target(&key, Duration::from_secs(5)).unwrap();
    let (mode, parent) = match base {
        Some((p, _)) => (BackupMode::Incremental, Some(p)),
        None => (BackupMode::Full, None),
    };
    let mut w = repo.begin_generation(&lock, tl, id, mode, parent).unwrap();
    let mut src = MemorySource::new(data.to_vec());
    let disk = DiskDescriptor::new(2000, data.len() as u64);
    let stats = match base {
        Some((p, areas)) => {
            let idx = repo.fixed_index(&key, p, 2000).unwrap();
            w.ingest_disk(disk, Some(&idx), areas, &mut src, &|_| {})
                .unwrap()
        }
        None => w
            .ingest_disk(
                disk,
                None,
                &[Area::new(0, data.len() as u64)],
                &mut src,
                &|_| {},
            )
            .unwrap(),
    };
    w.put_metadata("vm.vmx", b"displayName = \"x\"").unwrap();
    let g = w
        .commit(GenerationStatus::Succeeded, Default::default())
        .unwrap();
    (g, stats)
}

/// A full generation of target `name` being written, with the shared repository lock that must
/// be held while it is (returned first: keep it alive as long as the writer). Also the key.
pub fn begin_full(repo: &Repository, name: &str) -> (RepositoryLock, TargetKey, GenerationWriter) {
    let lock = repo.lock_shared(Duration::ZERO).unwrap();
    let id = identity(name);
    let key = repo.target_key(&id).unwrap();
    let w = repo
        .begin_generation(
            &lock,
            repo.lock_target(&key, Duration::ZERO).unwrap(),
            id,
            BackupMode::Full,
            None,
        )
        .unwrap();
    (lock, key, w)
}

pub fn restore(repo: &Repository, name: &str, g: GenerationId) -> Vec<u8> {
    let key = repo.target_key(&identity(name)).unwrap();
    let mut r = repo.disk_reader(&key, g, 2000).unwrap();
    let mut out = vec![0u8; r.capacity() as usize];
    r.read_at(0, &mut out).unwrap();
    out
}

/// Copies a fixture repository into a scratch folder, so the committed files never change.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The payload magic of the index of `generation` (plain repositories: the blob is readable
/// with a codec without a key).
pub fn index_magic(root: &Path, key: &TargetKey, generation: u64) -> [u8; 8] {
    let path = root
        .join("targets")
        .join(key.as_str())
        .join(format!("gen-{generation:06}"))
        .join("disk-2000.fidx");
    let bytes = std::fs::read(&path).unwrap();
    let payload = Codec::new(1, None)
        .decode_bound(BlobKind::Index, &bytes, 1 << 20, &[])
        .unwrap();
    payload[..8].try_into().unwrap()
}

/// Copies the fixture repository `tests/fixtures/format-v{version}/{kind}` into `dir` (so the
/// committed files never change), recreates its empty `locks/` folder (a repository at rest
/// has one, and git keeps no empty folders), opens it and checks that it verifies. Returns its
/// root and the repository.
pub fn open_fixture(version: u32, kind: &str, dir: &Path) -> (PathBuf, Repository) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/format-v{version}"))
        .join(kind);
    let root = dir.join(kind);
    copy_dir(&src, &root);
    std::fs::create_dir_all(root.join("locks")).unwrap();
    let repo = reopen(&root);
    assert_eq!(repo.config().format_version, version);
    assert_eq!(repo.is_encrypted(), kind == "encrypted");
    assert_verifies(&repo);
    (root, repo)
}

/// Asserts that `check --read-data` finds nothing wrong.
pub fn assert_verifies(repo: &Repository) {
    let report = repo.check(&CheckOptions { read_data: true }).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
}

/// The disks of the two generations every fixture's target `fixture` holds: generation 1, six
/// 64 KiB chunks of `disk_bytes(_, 5)`, and generation 2 with chunk 3 replaced by
/// `disk_bytes(64 KiB, 9)`.
pub fn fixture_disks() -> (Vec<u8>, Vec<u8>) {
    let g1 = disk_bytes(6 * CS as usize, 5);
    let mut g2 = g1.clone();
    g2[3 * CS as usize..4 * CS as usize].copy_from_slice(&disk_bytes(CS as usize, 9));
    (g1, g2)
}

/// Adds to a fixture an incremental on generation 2 whose disk has its first 10 bytes changed,
/// and checks that it is generation 3 and read one chunk. Returns the new disk and generation.
pub fn grow_fixture(repo: &Repository, g2: &[u8]) -> (Vec<u8>, GenerationId) {
    let mut g3 = g2.to_vec();
    g3[..10].copy_from_slice(b"generation");
    let (id, stats) = backup(
        repo,
        "fixture",
        &g3,
        Some((GenerationId(2), &[Area::new(0, 10)])),
    );
    assert_eq!(id, GenerationId(3));
    assert_eq!(stats.read_bytes, CS as u64, "{stats:?}");
    (g3, id)
}
