//! `copy_generation_to`, `copies_in` and `init_location_sharing_keys` between local folders and
//! (when a SeaweedFS cluster is available, see `s3_cluster`) a bucket.

mod common;
#[cfg(feature = "s3")]
#[allow(dead_code)]
mod s3_cluster;

use std::time::Duration;

use common::*;
use repository_format::*;

/// Copies generation `id` of target `name` from `src` to `dest`; the progress it reported
/// (total announced, bytes of chunks seen).
fn copy_one(
    src: &Repository,
    dest: &Repository,
    name: &str,
    id: GenerationId,
) -> Result<(GenerationCopy, u64, u64)> {
    let a = src.lock_shared(Duration::ZERO)?;
    let b = dest.lock_shared(Duration::ZERO)?;
    let key = src.target_key(&identity(name))?;
    let (mut total, mut seen) = (0, 0);
    let c = src.copy_generation_to(&a, dest, &b, &key, id, &mut |p| match p {
        CopyProgress::Started { bytes } => total = bytes,
        CopyProgress::Chunk { bytes } => seen += bytes,
    })?;
    Ok((c, total, seen))
}

#[test]
fn copied_generations_keep_their_numbers_so_the_newest_stays_newest() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo(&dir.path().join("src"));
    let dest = repo(&dir.path().join("dest"));
    let old = disk_bytes(CS as usize * 6, 1);
    let mut new = old.clone();
    let last = new.len() - 1;
    new[last] ^= 1;
    let (g1, _) = backup(&src, "v", &old, None);
    let (g2, _) = backup(&src, "v", &new, Some((g1, &[Area::new(last as u64, 1)])));

    // The newest first, then the older one (copy, later copy --all-generations).
    let (c2, total, seen) = copy_one(&src, &dest, "v", g2).unwrap();
    assert_eq!(c2.generation, g2);
    assert!(c2.as_is);
    // The total is the disk data the stored (non-zero) chunks cover; every distinct chunk is
    // reported once.
    let skey = src.target_key(&identity("v")).unwrap();
    let idx = src.fixed_index(&skey, g2, 2000).unwrap();
    let stored: u64 = idx
        .stored_chunks()
        .map(|(slot, _)| idx.chunk_range(slot).1 as u64)
        .sum();
    assert_eq!(total, stored);
    assert!(stored > 0 && seen > 0 && seen <= total);
    let (c1, _, _) = copy_one(&src, &dest, "v", g1).unwrap();
    assert_eq!(c1.generation, g1);
    // Only what generation 1 has that 2 has not travels.
    let in_g2: std::collections::HashSet<_> = idx.stored_chunks().map(|(_, d)| d).collect();
    let only_g1: std::collections::HashSet<_> = src
        .fixed_index(&skey, g1, 2000)
        .unwrap()
        .stored_chunks()
        .map(|(_, d)| d)
        .filter(|d| !in_g2.contains(d))
        .collect();
    assert_eq!(c1.chunks_sent, only_g1.len() as u64, "{c1:?}");
    assert!(c1.chunks_present > 0, "{c1:?}");
    let key = dest.target_key(&identity("v")).unwrap();
    assert_eq!(dest.latest_successful(&key).unwrap().unwrap().id, g2);
    assert_eq!(restore(&dest, "v", g2), new);
    assert_eq!(restore(&dest, "v", g1), old);
    let done = src.copies_in(&dest).unwrap();
    assert!(done.contains(&key, g1) && done.contains(&key, g2));

    // An interrupted copy (no manifest: nothing committed) is cleared and done again under
    // the same number, sending only what is missing.
    let (c3, _, _) = {
        let gen_dir = dir
            .path()
            .join("dest/repo/targets")
            .join(key.to_string())
            .join(g1.folder_name());
        std::fs::remove_file(gen_dir.join("manifest")).unwrap();
        std::fs::write(gen_dir.join("incomplete.json"), b"{}").unwrap();
        assert_eq!(dest.latest_successful(&key).unwrap().unwrap().id, g2);
        copy_one(&src, &dest, "v", g1).unwrap()
    };
    assert_eq!(c3.generation, g1, "{c3:?}");
    assert_eq!(c3.chunks_sent, 0, "{c3:?}");
    assert_eq!(restore(&dest, "v", g1), old);

    // A number the destination already uses (its own backup) is not taken over.
    let other = repo(&dir.path().join("other"));
    let (o1, _) = backup(&other, "v", &new, None);
    let (c, _, _) = copy_one(&src, &other, "v", g1).unwrap();
    assert_eq!(o1, GenerationId(1));
    assert_eq!(c.generation, GenerationId(2));
    assert_eq!(restore(&other, "v", o1), new);
    assert_eq!(restore(&other, "v", c.generation), old);

    // Into itself: refused.
    let err = copy_one(&src, &src, "v", g1).unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[test]
fn a_repository_sharing_keys_gets_chunks_as_they_are_and_its_own_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let src = encrypted_repo(&dir.path().join("src"));
    let data = disk_bytes(CS as usize * 5, 9);
    let (g, _) = backup(&src, "s", &data, None);
    let twin_pass = Passphrase::from("twin passphrase");
    let opts = InitOptions {
        // Ignored: the chunk size and encryption come from the source.
        chunk_size: CS * 2,
        kdf: KdfParams::insecure_for_tests(),
        ..Default::default()
    };
    let twin = Repository::init_location_sharing_keys(
        &RepositoryLocation::Local(dir.path().join("twin")),
        &opts,
        Some(&twin_pass),
        &src,
    )
    .unwrap();
    assert!(twin.is_encrypted());
    assert_eq!(twin.config().chunk_size, src.config().chunk_size);
    assert_eq!(twin.key_fingerprint(), src.key_fingerprint());
    assert_ne!(twin.config().repository_id, src.config().repository_id);
    let (c, _, _) = copy_one(&src, &twin, "s", g).unwrap();
    assert!(c.as_is);
    assert!(c.chunks_sent > 0);
    let key = src.target_key(&identity("s")).unwrap();
    for (_, d) in src.fixed_index(&key, g, 2000).unwrap().stored_chunks() {
        assert_eq!(
            std::fs::read(src.chunk_store().path(&d)).unwrap(),
            std::fs::read(twin.chunk_store().path(&d)).unwrap()
        );
    }
    drop(twin);
    // The twin opens with its own passphrase, not with the source's.
    let root = dir.path().join("twin");
    let reopened = Repository::open_with(&root, Some(&twin_pass)).unwrap();
    assert_eq!(restore(&reopened, "s", g), data);
    let wrong = Repository::open_with(&root, Some(&Passphrase::from(PASSPHRASE)));
    assert!(matches!(wrong, Err(Error::WrongPassphrase { .. })));
}

/// A chunk the destination's cache lists but the store lost is sent again: the copy asks the
/// store, not the cache.
#[cfg(feature = "s3")]
#[test]
fn a_chunk_the_destination_cache_claims_but_the_store_lacks_is_sent_again() {
    let Some(c) = s3_cluster::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = repo(&dir.path().join("src"));
    let data = disk_bytes(CS as usize * 6, 21);
    let mut changed = data.clone();
    changed[0] ^= 1;
    let (g1, _) = backup(&src, "c", &data, None);
    let (g2, _) = backup(&src, "c", &changed, Some((g1, &[Area::new(0, 1)])));
    let loc = c.location("safekeeping-tests", "copy-cache");
    let dest = Repository::init_location(
        &RepositoryLocation::S3(loc.clone()),
        &InitOptions {
            chunk_size: CS,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    copy_one(&src, &dest, "c", g1).unwrap();
    let cached = dest.cached_chunk_count().unwrap();
    assert!(cached > 1);
    // Behind the cache's back, a chunk that generation 2 shares with 1 disappears.
    let key = src.target_key(&identity("c")).unwrap();
    let (_, shared) = src
        .fixed_index(&key, g2, 2000)
        .unwrap()
        .stored_chunks()
        .last()
        .unwrap();
    s3_cluster::backend(&loc)
        .delete(&ChunkStore::key(&shared))
        .unwrap();
    assert_eq!(dest.cached_chunk_count(), Some(cached));
    let (c2, _, _) = copy_one(&src, &dest, "c", g2).unwrap();
    // The changed first chunk and the lost one.
    assert_eq!(c2.chunks_sent, 2, "{c2:?}");
    assert_eq!(restore(&dest, "c", c2.generation), changed);
    let r = dest.check(&CheckOptions { read_data: true }).unwrap();
    assert!(r.ok(), "{:#?}", r.problems);
}
