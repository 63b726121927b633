//! Encryption at rest: round trips, keys, tampering, and what an encrypted repository's files
//! reveal. (The whole suite also runs encrypted: `SAFEKEEPING_TEST_ENCRYPTED=1 cargo test`.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use repository_format::*;
use sha2::Digest as _;

fn pass(s: &str) -> Passphrase {
    Passphrase::from(s)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Every stored blob of a repository (chunks, indexes, manifests, metadata).
fn blobs(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| fs::read(p).map(|b| b.starts_with(b"SK01")).unwrap_or(false))
        .filter(|p| !p.ends_with("config"))
        .collect()
}

#[test]
fn every_blob_is_encrypted_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(&dir.path().join("repo"));
    assert!(repo.is_encrypted());
    let data = disk_bytes(CS as usize * 9 + 1234, 1);
    let (g, _) = backup(&repo, "web01", &data, None);
    assert_eq!(restore(&repo, "web01", g), data);
    let found = blobs(repo.root());
    assert!(found.len() >= 5, "{found:?}");
    for p in found {
        let b = fs::read(&p).unwrap();
        assert!(
            matches!(b[5], b'E' | b'X'),
            "{} has encoding {}",
            p.display(),
            b[5] as char
        );
    }
    // Reopened with the passphrase, everything reads back.
    let again = reopen(repo.root());
    assert_eq!(restore(&again, "web01", g), data);
    let key = again.target_key(&identity("web01")).unwrap();
    assert_eq!(
        again.read_metadata(&key, g, "vm.vmx").unwrap(),
        b"displayName = \"x\""
    );
    let m = again.manifest(&key, g).unwrap();
    assert_eq!(m.target.name, "web01");
    assert_eq!(
        m.key_fingerprint(),
        Some(again.key_fingerprint().unwrap().0.as_str())
    );
    assert_eq!(
        again.config().key_fingerprint.as_ref(),
        again.key_fingerprint()
    );
    assert!(again.check(&CheckOptions { read_data: true }).unwrap().ok());
}

#[test]
fn opening_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    encrypted_repo(&root);
    let err = Repository::open(&root).unwrap_err();
    assert!(matches!(err, Error::PassphraseRequired { .. }), "{err}");
    assert!(err.to_string().contains("is encrypted"), "{err}");
    let err = Repository::open_with(&root, Some(&pass("wrong horse"))).unwrap_err();
    assert!(
        matches!(err, Error::WrongPassphrase { tried: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    // init refuses encryption without a passphrase, or with an empty one.
    let opts = InitOptions {
        encryption: Encryption::Aes256Gcm,
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    assert!(matches!(
        Repository::init(dir.path().join("r2"), &opts),
        Err(Error::PassphraseRequired { .. })
    ));
    assert!(matches!(
        Repository::init_with(dir.path().join("r3"), &opts, Some(&pass(""))),
        Err(Error::InvalidOption(_))
    ));
    assert!(!dir.path().join("r2").exists() && !dir.path().join("r3").exists());
}

#[test]
fn a_config_downgraded_to_plain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = encrypted_repo(&root);
    // Rewrite the config as an unencrypted one (a valid K blob: the config is not sealed).
    let mut cfg = repo.config().clone();
    cfg.encryption = Encryption::None;
    cfg.key_fingerprint = None;
    let json = serde_json::to_vec(&cfg).unwrap();
    fs::write(
        root.join("config"),
        Codec::new(0, None).encode(BlobKind::Config, &json),
    )
    .unwrap();
    for p in [None, Some(pass(PASSPHRASE))] {
        let err = Repository::open_with(&root, p.as_ref()).unwrap_err();
        assert!(err.to_string().contains("altered"), "{err}");
    }
    // A plain repository opened with a passphrase: the caller expected encryption.
    let plain = Repository::init(dir.path().join("plain"), &InitOptions::default()).unwrap();
    let err = Repository::open_with(plain.root(), Some(&pass("x"))).unwrap_err();
    assert!(err.to_string().contains("not encrypted"), "{err}");
    assert!(Repository::open(plain.root()).is_ok());
}

#[test]
fn chunk_ids_are_keyed_and_dedup_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let a = encrypted_repo(&dir.path().join("a"));
    let b = encrypted_repo(&dir.path().join("b"));
    let data = disk_bytes(CS as usize * 6, 7);
    backup(&a, "vm", &data, None);
    backup(&b, "vm", &data, None);
    let names = |r: &Repository| -> std::collections::BTreeSet<String> {
        walk(&r.root().join("chunks"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let (na, nb) = (names(&a), names(&b));
    assert!(!na.is_empty());
    assert!(
        na.is_disjoint(&nb),
        "same data, different keys, shared chunk names"
    );
    let chunk = &data[3 * CS as usize..4 * CS as usize]; // a random chunk of seed 7
    let plain_id = ChunkDigest::of(chunk).to_hex();
    assert!(
        !na.contains(&plain_id),
        "an encrypted repository used the SHA-256 name"
    );
    assert!(na.contains(&a.chunk_store().codec().chunk_id(chunk).to_hex()));
    // Within a repository, identical data is stored once.
    let before = na.len();
    let (_, stats) = backup(&a, "vm2", &data, None);
    assert_eq!(stats.new_chunks, 0, "{stats:?}");
    assert_eq!(names(&a).len(), before);
    // The two repositories' target folders differ too.
    assert_ne!(
        a.target_key(&identity("vm")).unwrap(),
        b.target_key(&identity("vm")).unwrap()
    );
}

/// Re-computes the CRC of a modified blob, so only the encryption can catch the change.
fn fix_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[24..]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn tampering_is_detected_by_read_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(&dir.path().join("repo"));
    let data = disk_bytes(CS as usize * 4, 2);
    let (g, _) = backup(&repo, "web", &data, None);
    let key = repo.target_key(&identity("web")).unwrap();
    let codec = repo.chunk_store().codec().clone();
    // Chunks 0 and 1 of seed 2 are random data (stored, not zero).
    let c1 = repo
        .chunk_store()
        .path(&codec.chunk_id(&data[CS as usize..2 * CS as usize]));
    let c2 = repo
        .chunk_store()
        .path(&codec.chunk_id(&data[..CS as usize]));
    let orig1 = fs::read(&c1).unwrap();
    let read_fails = |what: &str, needle: &str| {
        let mut r = repo.disk_reader(&key, g, 2000).unwrap();
        let mut buf = vec![0u8; 4 * CS as usize];
        let err = r.read_at(0, &mut buf).unwrap_err().to_string();
        assert!(err.contains(needle), "{what}: {err}");
        let report = repo.check(&CheckOptions { read_data: true }).unwrap();
        assert_eq!(report.problems.len(), 1, "{what}: {:?}", report.problems);
        assert_eq!(report.problems[0].kind, ProblemKind::DamagedChunk, "{what}");
        assert!(
            report.problems[0].detail.contains(needle),
            "{what}: {:?}",
            report.problems[0]
        );
    };

    // A ciphertext byte changed (CRC fixed up): authentication fails.
    let mut b = orig1.clone();
    b[24 + 12 + 5] ^= 1;
    fix_crc(&mut b);
    fs::write(&c1, &b).unwrap();
    read_fails("ciphertext", "fails authentication");

    // The header's encoding changed from X to E (or back): authentication fails.
    let mut b = orig1.clone();
    b[5] = if b[5] == b'X' { b'E' } else { b'X' };
    fix_crc(&mut b);
    fs::write(&c1, &b).unwrap();
    read_fails("encoding byte", "fails authentication");

    // Truncated with the length field and CRC made consistent: authentication fails.
    let mut b = orig1[..orig1.len() - 100].to_vec();
    let len = (b.len() - 24) as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    fix_crc(&mut b);
    fs::write(&c1, &b).unwrap();
    read_fails("truncation", "fails authentication");

    // A valid plain blob in its place is refused.
    let plain = Codec::new(1, None).encode(BlobKind::Chunk, &data[CS as usize..2 * CS as usize]);
    fs::write(&c1, &plain).unwrap();
    read_fails("plain substitute", "not encrypted");

    // Another valid chunk of this repository under this name: the keyed id does not match.
    fs::copy(&c2, &c1).unwrap();
    read_fails("swapped chunk", "hashes to");

    fs::write(&c1, &orig1).unwrap();
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());

    // A manifest with one flipped ciphertext byte is named by check and not listed.
    let mpath = repo
        .root()
        .join("targets")
        .join(key.as_str())
        .join("gen-000001/manifest");
    let morig = fs::read(&mpath).unwrap();
    let mut m = morig.clone();
    let n = m.len() - 20;
    m[n] ^= 0x80;
    fix_crc(&mut m);
    fs::write(&mpath, &m).unwrap();
    let report = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::DamagedManifest);
    assert!(repo
        .manifest(&key, g)
        .unwrap_err()
        .to_string()
        .contains("authentication"));
    // A manifest of another generation's kind byte (index → manifest) is a different blob.
    fs::write(&mpath, &morig).unwrap();
    let ipath = mpath.with_file_name("disk-2000.fidx");
    let mut i = fs::read(&ipath).unwrap();
    i[4] = b'M';
    fix_crc(&mut i);
    fs::write(&mpath, &i).unwrap();
    assert!(repo
        .manifest(&key, g)
        .unwrap_err()
        .to_string()
        .contains("authentication"));
    fs::write(&mpath, &morig).unwrap();
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
}

#[test]
fn maintenance_works_on_an_encrypted_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = encrypted_repo(&dir.path().join("repo"));
    let d1 = disk_bytes(CS as usize * 6, 11);
    let d2 = disk_bytes(CS as usize * 6, 12);
    let (g1, _) = backup(&repo, "web", &d1, None);
    let (g2, _) = backup(
        &repo,
        "web",
        &d2,
        Some((g1, &[Area::new(0, d2.len() as u64)])),
    );
    let key = repo.target_key(&identity("web")).unwrap();
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let policy = RetentionPolicy {
        keep_last: 1,
        ..Default::default()
    };
    let pr = repo
        .prune(&x, &policy, None, time::OffsetDateTime::now_utc(), false)
        .unwrap();
    assert_eq!(repo.generations(&key).unwrap().len(), 1, "{pr:?}");
    let gc = repo
        .gc(
            &x,
            &GcOptions {
                grace: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(gc.generations_marked, 1);
    let r = repo.reindex(&x).unwrap();
    assert!(!r.catalog_rebuilt, "no catalog in an encrypted repository");
    drop(x);
    assert!(repo.check(&CheckOptions { read_data: true }).unwrap().ok());
    assert_eq!(restore(&repo, "web", g2), d2);
    assert!(!repo.root().join("catalog").exists());
}

#[test]
fn key_management() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = encrypted_repo(&root);
    let first = repo.key_list().unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].current);
    let old = pass(PASSPHRASE);

    // add: both passphrases open it
    let alice = pass("alice's passphrase");
    assert!(matches!(
        repo.key_add(&pass("nope"), &alice),
        Err(Error::WrongPassphrase { .. })
    ));
    assert!(repo.key_add(&old, &pass("")).is_err());
    let id2 = repo.key_add(&old, &alice).unwrap();
    assert_eq!(repo.key_list().unwrap().len(), 2);
    let via_alice = Repository::open_with(&root, Some(&alice)).unwrap();
    assert_eq!(via_alice.key_fingerprint(), repo.key_fingerprint());
    assert!(via_alice
        .key_list()
        .unwrap()
        .iter()
        .any(|k| k.id == id2 && k.current));

    // passwd: the same file, a new passphrase; the old one stops working
    let bob = pass("bob's passphrase");
    assert_eq!(repo.key_passwd(&alice, &bob).unwrap(), id2);
    assert!(Repository::open_with(&root, Some(&bob)).is_ok());
    assert!(matches!(
        Repository::open_with(&root, Some(&alice)),
        Err(Error::WrongPassphrase { tried: 2, .. })
    ));

    // remove: unknown id, then one of two, then never the last
    assert!(matches!(
        repo.key_remove(&KeyId::new("0123456789abcdef").unwrap()),
        Err(Error::KeyNotFound(_))
    ));
    repo.key_remove(&first[0].id).unwrap();
    assert!(matches!(
        Repository::open_with(&root, Some(&old)),
        Err(Error::WrongPassphrase { tried: 1, .. })
    ));
    assert!(matches!(
        repo.key_remove(&id2),
        Err(Error::KeyRemoveRefused { .. })
    ));
    assert_eq!(repo.key_list().unwrap().len(), 1);

    // export, lose the key file, put the export back
    let exported = repo.key_export(&bob).unwrap();
    assert!(repo.key_export(&old).is_err());
    let text = String::from_utf8(exported.clone()).unwrap();
    assert!(text.contains(id2.as_str()) && text.contains("argon2id"));
    let kf = root.join("keys").join(id2.as_str());
    fs::remove_file(&kf).unwrap();
    let err = Repository::open_with(&root, Some(&bob)).unwrap_err();
    assert!(err.to_string().contains("no key file"), "{err}");
    let report = repo.check(&CheckOptions::default()).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::DamagedKeyFile);
    fs::write(&kf, &exported).unwrap();
    let back = Repository::open_with(&root, Some(&bob)).unwrap();
    assert!(back.check(&CheckOptions::default()).unwrap().ok());

    // A key file of another repository is reported, and does not open this one.
    let other = encrypted_repo(&dir.path().join("other"));
    let foreign = other.key_export(&old).unwrap();
    fs::write(root.join("keys/00000000000000aa"), foreign).unwrap();
    let report = back.check(&CheckOptions::default()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].kind, ProblemKind::DamagedKeyFile);
    assert!(matches!(
        Repository::open_with(&root, Some(&old)),
        Err(Error::WrongPassphrase { .. })
    ));

    // No key operations on a plain repository.
    let plain = Repository::init(dir.path().join("plain"), &InitOptions::default()).unwrap();
    assert!(matches!(plain.key_list(), Err(Error::NotEncrypted(_))));
}

/// What lies on disk: no plaintext marker, no SHA-256 of a known block (hex or raw), no VM
/// name, uuid or metadata file name anywhere in the repository, in contents or in file names.
#[test]
fn nothing_plaintext_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    const MIB: usize = 1 << 20;
    let opts = |encryption| InitOptions {
        chunk_size: MIB as u32,
        compression_level: 1,
        encryption,
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let marker = b"SAFEKEEPING-PLAINTEXT-MARKER-7f3a9c";
    // 2 MiB of the marker repeated (compressible), then a 1 MiB known block, then random.
    let mut disk = Vec::with_capacity(4 * MIB);
    while disk.len() < 2 * MIB {
        disk.extend_from_slice(marker);
    }
    disk.truncate(2 * MIB);
    let known: Vec<u8> = (0..MIB as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    disk.extend_from_slice(&known);
    disk.extend_from_slice(&disk_bytes(MIB, 99));
    let known_sha = sha2::Sha256::digest(&known);
    let marker_sha = sha2::Sha256::digest(&disk[..MIB]);
    let name = "payroll-db-01";
    let uuid = "5012abcd-1111-2222-3333-444455556666";
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("marker", marker.to_vec()),
        ("marker prefix", marker[..16].to_vec()),
        (
            "known block sha256 hex",
            hex::encode(known_sha).into_bytes(),
        ),
        ("known block sha256 raw", known_sha.to_vec()),
        (
            "marker chunk sha256 hex",
            hex::encode(marker_sha).into_bytes(),
        ),
        ("marker chunk sha256 raw", marker_sha.to_vec()),
        ("vm name", name.as_bytes().to_vec()),
        ("instance uuid", uuid.as_bytes().to_vec()),
        ("metadata name", b"payroll-db-01.vmx".to_vec()),
    ];
    let scan = |root: &Path| -> Vec<String> {
        let mut hits = Vec::new();
        for p in walk(root) {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let bytes = fs::read(&p).unwrap();
            for (what, n) in &needles {
                if rel.as_bytes().windows(n.len()).any(|w| w == &n[..]) {
                    hits.push(format!("{what} in the name {rel}"));
                }
                if bytes.windows(n.len()).any(|w| w == &n[..]) {
                    hits.push(format!("{what} in {rel}"));
                }
            }
        }
        hits
    };
    let write = |repo: &Repository| {
        let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
        let mut id = TargetIdentity::new(TargetKind::Vm, name);
        id.instance_uuid = Some(uuid.into());
        let key = repo.target_key(&id).unwrap();
        let tl = repo.lock_target(&key, Duration::from_secs(5)).unwrap();
        let mut w = repo
            .begin_generation(&lock, tl, id, BackupMode::Full, None)
            .unwrap();
        w.put_metadata("payroll-db-01.vmx", b"displayName = \"payroll-db-01\"")
            .unwrap();
        let mut src = MemorySource::new(disk.clone());
        w.ingest_disk(
            DiskDescriptor::new(2000, disk.len() as u64),
            None,
            &[Area::new(0, disk.len() as u64)],
            &mut src,
            &|_| {},
        )
        .unwrap();
        let g = w
            .commit(GenerationStatus::Succeeded, Default::default())
            .unwrap();
        let mut r = repo.disk_reader(&key, g, 2000).unwrap();
        let mut back = vec![0u8; disk.len()];
        r.read_at(0, &mut back).unwrap();
        assert!(back == disk, "restore differs");
    };

    // Control: the scan finds all of it in a plain repository (so it can find things).
    let plain = Repository::init(dir.path().join("plain"), &opts(Encryption::None)).unwrap();
    write(&plain);
    let hits = scan(plain.root());
    for (what, _) in &needles {
        if *what != "known block sha256 raw" && *what != "marker chunk sha256 raw" {
            assert!(
                hits.iter().any(|h| h.starts_with(what)),
                "control misses {what}: {hits:?}"
            );
        }
    }

    let enc = Repository::init_with(
        dir.path().join("enc"),
        &opts(Encryption::Aes256Gcm),
        Some(&pass(PASSPHRASE)),
    )
    .unwrap();
    write(&enc);
    let hits = scan(enc.root());
    assert!(hits.is_empty(), "plaintext leaked: {hits:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Any blob kind and content round-trips under a key; any flipped bit is caught.
    #[test]
    fn encrypted_blobs_round_trip_and_catch_flips(
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        repeat in any::<bool>(),
        level in 0i32..4,
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let key = repository_format::key::Key::generate().unwrap();
        let codec = Codec::new(level, Some(key));
        let data = if repeat { data.repeat(8) } else { data };
        for kind in [BlobKind::Chunk, BlobKind::Index, BlobKind::Manifest, BlobKind::Metadata] {
            let blob = codec.encode(kind, &data);
            prop_assert_eq!(&codec.decode(kind, &blob, data.len()).unwrap(), &data);
            let mut bad = blob.clone();
            let i = pos.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(codec.decode(kind, &bad, data.len()).is_err(), "flip at {} undetected", i);
            prop_assert!(Codec::new(level, None).decode(kind, &blob, data.len()).is_err());
        }
    }
}
