//! Harnesses for the repository's on-disk formats: blobs, fixed indexes, manifests and the
//! repository config.

use std::path::Path;

use repository_format::blob::{self, BlobError, BlobKind, Codec};
use repository_format::format::{BLOB_HEADER_LEN, INDEX_HEADER_LEN};
use repository_format::target::TargetKey;
use repository_format::{
    ChunkDigest, Config, Error, FixedIndex, GenerationId, KeyFile, Manifest, Passphrase,
};
use sha2::{Digest as _, Sha256};

use crate::input::Input;
use crate::scratch::scratch;

const KINDS: [BlobKind; 5] = [
    BlobKind::Chunk,
    BlobKind::Index,
    BlobKind::Manifest,
    BlobKind::Config,
    BlobKind::Metadata,
];

/// Blob envelope: arbitrary bytes decode to `Err` or to a payload within the limit that the
/// header accounts for; any payload encodes and decodes back; damage is detected.
///
/// Input: kind selector, limit selector, then the bytes.
pub fn blob(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = KINDS[input.byte() as usize % KINDS.len()];
    let limit_sel = input.byte();
    let bytes = input.rest();
    let limit = match limit_sel % 4 {
        0 => bytes.len(),
        1 => 16,
        2 => 1 << 20,
        _ => 0,
    };
    let codec = Codec::new(0, None);

    // 1. The bytes as a stored blob.
    match codec.decode(kind, bytes, limit) {
        Ok(out) => {
            assert!(
                out.len() <= limit,
                "decoded {} bytes over limit {limit}",
                out.len()
            );
            let header = blob::parse_header(bytes).expect("decoded blob has a header");
            assert_eq!(header.kind, kind);
            assert_eq!(
                header.payload_len as usize + BLOB_HEADER_LEN,
                bytes.len(),
                "header length does not account for the blob"
            );
            let payload = blob::check(kind, bytes).expect("decoded blob passes check");
            if header.encoding == blob::Encoding::Plain {
                assert_eq!(out, payload);
            }
        }
        Err(BlobError::Truncated { actual, expected }) => {
            assert!(actual < expected, "truncated {actual} >= {expected}")
        }
        Err(_) => {}
    }

    // 2. The same bytes under a key: only authentic blobs decode.
    let keyed = Codec::new(1, Some(test_key()));
    if let Ok(out) = keyed.decode(kind, bytes, limit) {
        assert!(out.len() <= limit);
    }

    // 3. The bytes as a payload: round trip at every compression setting, plain and encrypted.
    let sealed = keyed.encode(kind, bytes);
    assert_eq!(
        keyed.decode(kind, &sealed, bytes.len()).as_deref(),
        Ok(bytes),
        "encrypted round trip"
    );
    assert!(
        codec.decode(kind, &sealed, bytes.len()).is_err(),
        "decoded without the key"
    );
    for at in [
        0,
        5,
        16,
        BLOB_HEADER_LEN,
        sealed.len() / 2,
        sealed.len() - 1,
    ] {
        let mut tampered = sealed.clone();
        tampered[at] ^= 0x20;
        assert!(
            keyed.decode(kind, &tampered, bytes.len()).is_err(),
            "tampered byte {at} of an encrypted blob undetected"
        );
    }
    for level in [0, 1] {
        let encoded = Codec::new(level, None).encode(kind, bytes);
        let back = codec
            .decode(kind, &encoded, bytes.len())
            .unwrap_or_else(|e| panic!("round trip at level {level} failed: {e}"));
        assert_eq!(
            back, bytes,
            "round trip at level {level} changed the payload"
        );
        let other = KINDS[(KINDS.iter().position(|k| *k == kind).unwrap_or(0) + 1) % KINDS.len()];
        assert!(matches!(
            codec.decode(other, &encoded, bytes.len()),
            Err(BlobError::WrongKind { .. })
        ));
        if !bytes.is_empty() {
            assert!(matches!(
                codec.decode(kind, &encoded, bytes.len() - 1),
                Err(BlobError::TooLarge { .. })
            ));
        }
        for cut in [0, BLOB_HEADER_LEN - 1, BLOB_HEADER_LEN, encoded.len() - 1] {
            if cut < encoded.len() {
                assert!(
                    codec.decode(kind, &encoded[..cut], bytes.len()).is_err(),
                    "blob cut to {cut} bytes decoded"
                );
            }
        }
        if encoded.len() > BLOB_HEADER_LEN {
            let mut flipped = encoded.clone();
            let at = BLOB_HEADER_LEN + (bytes.len() / 2).min(flipped.len() - BLOB_HEADER_LEN - 1);
            flipped[at] ^= 0x01;
            assert!(
                codec.decode(kind, &flipped, bytes.len()).is_err(),
                "flipped bit at {at} undetected"
            );
        }
    }
}

/// One random key per process.
fn test_key() -> repository_format::Key {
    static KEY: std::sync::OnceLock<repository_format::Key> = std::sync::OnceLock::new();
    KEY.get_or_init(|| repository_format::Key::generate().expect("random key"))
        .clone()
}

/// Fixed index: arbitrary bytes are refused or decode to an index that encodes back to an
/// equal index and whose geometry is consistent.
///
/// Input: mode byte (0: raw blob; 1: payload in a valid envelope; 2: payload with a correct
/// digest-list hash in a valid envelope; 3: an index built from the input; 4: a version-4
/// (content-defined) payload with a valid header and binding, the disk size, stored count and
/// run list from the input and the body hash made right, so the run-list checks are reached;
/// 5: a content-defined index built from the input by splices), then the bytes.
pub fn fixed_index(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 6;
    let codec = Codec::new(1, None);
    let path = Path::new("fuzz.fidx");
    let bytes = input.rest();
    let blob = match mode {
        0 => bytes.to_vec(),
        1 => codec.encode(BlobKind::Index, bytes),
        2 => codec.encode(BlobKind::Index, &with_list_hash(bytes)),
        4 => codec.encode(BlobKind::Index, &v4_payload(bytes)),
        5 => {
            let mut idx = variable_index_from(bytes);
            idx.bind(repository_format::fixed_index::IndexBinding::new(
                TargetKey::new("vm-fuzz").expect("valid key"),
                GenerationId(5),
                2000,
            ));
            let encoded = idx.encode(&codec);
            let back = FixedIndex::decode(path, &encoded, &codec)
                .unwrap_or_else(|e| panic!("a fresh variable index does not decode: {e}"));
            assert_eq!(back, idx, "variable index round trip");
            return;
        }
        _ => {
            let mut idx = index_from(bytes);
            // Half of them bound to a place (version 2 header), half legacy (version 1).
            if bytes.first().is_some_and(|b| b % 2 == 1) {
                idx.bind(repository_format::fixed_index::IndexBinding::new(
                    TargetKey::new("vm-fuzz").expect("valid key"),
                    GenerationId(u64::from(bytes[0])),
                    i32::from(bytes[0]) - 100,
                ));
            }
            let encoded = idx.encode(&codec);
            let back = FixedIndex::decode(path, &encoded, &codec)
                .unwrap_or_else(|e| panic!("a fresh index does not decode: {e}"));
            assert_eq!(back, idx, "index round trip");
            return;
        }
    };
    match FixedIndex::decode(path, &blob, &codec) {
        Ok(idx) if idx.is_variable() => {
            assert!(idx.chunk_size().is_power_of_two());
            // The slots tile the disk: chunks of 1..=chunk size bytes with ids, and holes
            // never two in a row.
            let mut at = 0u64;
            let mut hole_before = false;
            for i in 0..idx.chunk_count() {
                let (off, len) = idx.chunk_range(i);
                assert_eq!(off, at, "slot {i} starts where the one before ends");
                assert!(len > 0, "slot {i} is empty");
                let hole = idx.slot(i).is_none();
                assert!(!(hole && hole_before), "two holes in a row at slot {i}");
                if !hole {
                    assert!(len <= idx.chunk_size() as usize, "chunk {i} too long");
                }
                assert_eq!(idx.slot_at(off), i, "slot_at of slot {i}'s start");
                hole_before = hole;
                at += len as u64;
            }
            assert_eq!(at, idx.size(), "the slots cover the disk");
            let again = FixedIndex::decode(path, &idx.encode(&codec), &codec)
                .unwrap_or_else(|e| panic!("re-encoded variable index does not decode: {e}"));
            assert_eq!(again, idx, "decode(encode(decode(x))) != decode(x)");
        }
        Ok(idx) => {
            let count = idx.size().div_ceil(idx.chunk_size() as u64);
            assert_eq!(idx.chunk_count() as u64, count, "chunk count vs size");
            assert!(idx.chunk_size().is_power_of_two());
            if idx.chunk_count() > 0 {
                let (off, len) = idx.chunk_range(idx.chunk_count() - 1);
                assert_eq!(off + len as u64, idx.size(), "last chunk ends at the size");
                assert!(len > 0 && len <= idx.chunk_size() as usize);
            }
            let again = FixedIndex::decode(path, &idx.encode(&codec), &codec)
                .unwrap_or_else(|e| panic!("re-encoded index does not decode: {e}"));
            assert_eq!(again, idx, "decode(encode(decode(x))) != decode(x)");
        }
        Err(Error::Blob { .. } | Error::Index { .. }) => {}
        Err(other) => panic!("unexpected error kind for a bad index: {other}"),
    }
}

/// `payload` with the SHA-256 at 48..80 set to the hash of the digest list, so the fuzzer
/// reaches the checks behind it.
fn with_list_hash(payload: &[u8]) -> Vec<u8> {
    let mut p = payload.to_vec();
    if p.len() >= INDEX_HEADER_LEN {
        let body = &p[INDEX_HEADER_LEN..];
        let whole = body.len() / 32 * 32;
        let hash: [u8; 32] = Sha256::digest(&body[..whole]).into();
        p[48..80].copy_from_slice(&hash);
    }
    p
}

/// A version-4 payload: a valid header (largest chunk 64 KiB) and binding, then from `bytes`
/// the disk size in 4 KiB blocks (one byte) plus a tail (one byte), the stored chunk count
/// (one byte) and the run list (the rest), with the body hash computed over it.
fn v4_payload(bytes: &[u8]) -> Vec<u8> {
    let mut input = Input::new(bytes);
    let size = u64::from(input.byte()) * 4096 + u64::from(input.byte()) * 16;
    let count = u64::from(input.byte());
    let body = input.rest();
    let target = b"vm-fuzz";
    let mut p = Vec::with_capacity(110 + body.len());
    p.extend_from_slice(&repository_format::format::INDEX_MAGIC_V4);
    p.extend_from_slice(&[7; 16]);
    p.extend_from_slice(&0i64.to_le_bytes());
    p.extend_from_slice(&size.to_le_bytes());
    p.extend_from_slice(&65536u32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    let hash: [u8; 32] = Sha256::digest(body).into();
    p.extend_from_slice(&hash);
    p.extend_from_slice(&count.to_le_bytes());
    p.extend_from_slice(&5u64.to_le_bytes());
    p.extend_from_slice(&2000i32.to_le_bytes());
    p.extend_from_slice(&(target.len() as u16).to_le_bytes());
    p.extend_from_slice(target);
    p.extend_from_slice(body);
    p
}

/// A content-defined index built from fuzz bytes: a disk of up to 255 blocks and a tail, then
/// splices of ranges and chunks read from the input; refused splices (which must leave the
/// index as it was) are skipped.
fn variable_index_from(bytes: &[u8]) -> FixedIndex {
    const B: u64 = 4096;
    let mut input = Input::new(bytes);
    let size = u64::from(input.byte()) * B + u64::from(input.byte() % 2) * 100;
    let mut idx = FixedIndex::new_variable(size, 65536).expect("small index");
    let mut seq = 0u64;
    while !input.rest().is_empty() {
        let a = (u64::from(input.byte()) * B).min(size / B * B);
        let b = (u64::from(input.byte()) * B).min(size).max(a);
        let mut chunks = Vec::new();
        let mut at = a;
        for _ in 0..input.byte() % 6 {
            let offset = at + u64::from(input.byte() % 3) * B;
            let len = ((u64::from(input.byte() % 16) + 1) * B).min(b.saturating_sub(offset));
            if len == 0 || (len % B != 0 && offset + len != size) {
                break;
            }
            seq += 1;
            chunks.push((offset, len as u32, ChunkDigest::of(&seq.to_le_bytes())));
            at = offset + len;
        }
        let before = idx.clone();
        if idx.splice(a, b, &chunks).is_err() {
            assert_eq!(idx, before, "a refused splice changed the index");
        }
    }
    idx
}

/// A small index built from fuzz bytes: size, chunk size and slot contents.
fn index_from(bytes: &[u8]) -> FixedIndex {
    let mut input = Input::new(bytes);
    let chunk_size = 1u32 << (16 + input.byte() % 9);
    let chunks = u64::from(input.byte() % 64);
    let tail = u64::from(input.byte()) * 997 % u64::from(chunk_size);
    let size = chunks * u64::from(chunk_size) + tail;
    let mut idx = FixedIndex::new(size, chunk_size).expect("small index");
    for i in 0..idx.chunk_count() {
        let b = input.byte();
        idx.set(i, (b % 3 != 0).then(|| ChunkDigest::of(&[b, i as u8])));
    }
    idx
}

/// Manifest (JSON in an `M` blob), read through `Repository::manifest`: bad files are refused
/// with a manifest or blob error naming the file; accepted manifests keep their invariants
/// (plain file names, unique disk keys) and survive a write/read round trip unchanged.
///
/// Input: mode byte (0: raw file; 1: JSON in a valid envelope; 2: JSON whose repository id and
/// generation are set to the scratch repository's, in a zstd envelope), then the bytes.
pub fn manifest(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 3;
    let bytes = input.rest();
    let s = scratch();
    let repo = &s.repo;
    let key = TargetKey::new("vm-fuzz").expect("valid key");
    let id = GenerationId(1);
    let dir = repo
        .root()
        .join("targets")
        .join(key.as_str())
        .join(id.folder_name());
    std::fs::create_dir_all(&dir).expect("generation folder");
    let file = match mode {
        0 => bytes.to_vec(),
        1 => Codec::new(0, None).encode(BlobKind::Manifest, bytes),
        _ => {
            let json = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Object(mut map)) => {
                    map.insert(
                        "repository_id".into(),
                        repo.config().repository_id.to_string().into(),
                    );
                    map.insert("generation".into(), 1.into());
                    // The folder's target (`vm-fuzz`): a manifest of another target is
                    // refused, so the accepted path needs this one.
                    map.insert(
                        "target".into(),
                        serde_json::json!({ "kind": "vm", "name": "fuzz" }),
                    );
                    serde_json::to_vec(&map).expect("json")
                }
                _ => bytes.to_vec(),
            };
            Codec::new(3, None).encode(BlobKind::Manifest, &json)
        }
    };
    std::fs::write(dir.join("manifest"), &file).expect("write manifest");
    match repo.manifest(&key, id) {
        Ok(m) => {
            let mut keys = std::collections::HashSet::new();
            for d in &m.disks {
                assert!(keys.insert(d.disk.key), "disk key {} twice", d.disk.key);
                assert!(plain_name(&d.index_file), "index file {:?}", d.index_file);
            }
            for n in &m.metadata_files {
                assert!(plain_name(n), "metadata file {n:?}");
            }
            // Round trip: what was accepted, written back, reads back equal.
            let json = serde_json::to_vec_pretty(&m).expect("manifest serialises");
            let reparsed: Manifest = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("serialised manifest does not parse: {e}"));
            assert_eq!(reparsed, m, "manifest JSON round trip");
            std::fs::write(
                dir.join("manifest"),
                Codec::new(1, None).encode(BlobKind::Manifest, &json),
            )
            .expect("write manifest");
            let again = repo
                .manifest(&key, id)
                .unwrap_or_else(|e| panic!("rewritten manifest does not read: {e}"));
            assert_eq!(again, m, "manifest file round trip");
        }
        Err(Error::Manifest { path, .. } | Error::Blob { path, .. } | Error::Io { path, .. }) => {
            assert!(path.ends_with("manifest"), "error names {path:?}");
        }
        Err(other) => panic!("unexpected error kind for a bad manifest: {other}"),
    }
}

fn plain_name(n: &str) -> bool {
    !n.is_empty() && !n.starts_with('.') && !n.contains(['/', '\\', '\0'])
}

/// Repository config, read through `Repository::open`: bad files are refused with a config or
/// blob error; an accepted config is one this version supports and survives a round trip.
///
/// Input: mode byte (0: raw file; 1: JSON in a valid envelope; 2: JSON in a zstd envelope),
/// then the bytes.
pub fn config(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 3;
    let bytes = input.rest();
    let s = scratch();
    let root = &s.config_root;
    let file = match mode {
        0 => bytes.to_vec(),
        1 => Codec::new(0, None).encode(BlobKind::Config, bytes),
        _ => Codec::new(3, None).encode(BlobKind::Config, bytes),
    };
    std::fs::write(root.join("config"), &file).expect("write config");
    match repository_format::Repository::open(root) {
        Ok(repo) => {
            let c = repo.config();
            // Every version this release reads (a version-1 repository keeps its number).
            assert!((repository_format::format::OLDEST_FORMAT_VERSION
                ..=repository_format::format::FORMAT_VERSION)
                .contains(&c.format_version));
            assert!(c.chunk_size.is_power_of_two());
            assert!((repository_format::format::MIN_CHUNK_SIZE
                ..=repository_format::format::MAX_CHUNK_SIZE)
                .contains(&c.chunk_size));
            assert_eq!(c.hash, "sha256");
            let json = serde_json::to_vec_pretty(c).expect("config serialises");
            let reparsed: Config = serde_json::from_slice(&json)
                .unwrap_or_else(|e| panic!("serialised config does not parse: {e}"));
            assert_eq!(&reparsed, c, "config JSON round trip");
            std::fs::write(
                root.join("config"),
                Codec::new(0, None).encode(BlobKind::Config, &json),
            )
            .expect("write config");
            let again = repository_format::Repository::open(root)
                .unwrap_or_else(|e| panic!("rewritten config does not open: {e}"));
            assert_eq!(again.config(), c, "config file round trip");
        }
        // A well-formed config of an encrypted repository asks for its passphrase.
        Err(Error::Config { .. } | Error::Blob { .. } | Error::PassphraseRequired { .. }) => {}
        Err(other) => panic!("unexpected error kind for a bad config: {other}"),
    }
}

/// Key files (`keys/<id>`, JSON wrapping the master keys under an Argon2id-derived key), read
/// through `Repository::open_with` on an encrypted repository: a hostile or damaged key file
/// is an error naming it (or is skipped when another file unlocks), never a panic; a parsed key
/// file serialises back to itself.
///
/// Input: mode byte (0: the file alone under a fixed name; 1: beside the genuine key file;
/// 2: JSON whose id, repository id and fingerprint are set to the genuine file's, with the
/// key derivation made cheap, alone), then the bytes.
pub fn key_file(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte() % 3;
    let mut bytes = input.rest().to_vec();
    let path = Path::new("keys/fuzz");
    if let Ok(f) = KeyFile::parse(path, &bytes) {
        let again = KeyFile::parse(path, &f.to_bytes())
            .unwrap_or_else(|e| panic!("serialised key file does not parse: {e}"));
        assert_eq!(again, f, "key file round trip");
    }
    let s = scratch();
    let keys = s.encrypted_root.join("keys");
    for e in std::fs::read_dir(&keys).expect("keys folder").flatten() {
        std::fs::remove_file(e.path()).expect("remove key file");
    }
    let (genuine_name, genuine_bytes) = &s.genuine_key;
    let mut name = "0123456789abcdef".to_string();
    match mode {
        0 => {}
        1 => std::fs::write(keys.join(genuine_name), genuine_bytes).expect("write key file"),
        _ => {
            let genuine: serde_json::Value =
                serde_json::from_slice(genuine_bytes).expect("genuine key file is JSON");
            if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(&bytes) {
                for field in ["id", "repository_id", "key_fingerprint", "key_file_version"] {
                    map.insert(field.into(), genuine[field].clone());
                }
                if let Some(serde_json::Value::Object(kdf)) = map.get_mut("kdf") {
                    // Keep each attempt cheap: the bounds themselves are checked by the crate.
                    kdf.insert("memory_kib".into(), 8.into());
                    kdf.insert("iterations".into(), 1.into());
                    kdf.insert("parallelism".into(), 1.into());
                }
                bytes = serde_json::to_vec(&map).expect("json");
                name = genuine_name.clone();
            }
        }
    }
    std::fs::write(keys.join(&name), &bytes).expect("write key file");
    let passphrase = Passphrase::from_bytes(crate::scratch::PASSPHRASE.to_vec());
    match repository_format::Repository::open_with(&s.encrypted_root, Some(&passphrase)) {
        Ok(repo) => {
            // Unlocked: by the genuine file, or by fuzz bytes that wrap the same keys.
            assert!(repo.config().encryption != repository_format::EncryptionMode::None);
        }
        Err(
            Error::KeyFile { .. }
            | Error::WrongPassphrase { .. }
            | Error::InvalidOption(_)
            | Error::Config { .. },
        ) => {}
        Err(other) => panic!("unexpected error kind for a bad key file: {other}"),
    }
}
