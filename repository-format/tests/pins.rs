//! Pins: a long reader (`serve`, `files`) pins its generation; prune, delete and gc keep
//! running and keep what it reads, and a pin never slips in under an exclusive holder.

mod common;

use std::time::Duration;

use common::*;
use repository_format::*;

/// Generation 1 and an incremental generation 2 whose first chunk differs, so that gc would
/// free generation 1's first chunk once generation 1 is gone.
fn two_generations(dir: &std::path::Path) -> (Repository, TargetKey, Vec<u8>) {
    let repo = repo(dir);
    let data = disk_bytes(CS as usize * 4, 9);
    let (g1, _) = backup(&repo, "web", &data, None);
    let mut changed = data.clone();
    changed[..CS as usize].fill(0x5A);
    backup(
        &repo,
        "web",
        &changed,
        Some((g1, &[Area::new(0, CS as u64)])),
    );
    let key = repo.target_key(&identity("web")).unwrap();
    (repo, key, data)
}

fn keep_last_one() -> RetentionPolicy {
    RetentionPolicy {
        keep_last: 1,
        ..Default::default()
    }
}

#[test]
fn prune_delete_and_gc_run_beside_a_pin_and_keep_the_pinned_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, key, gen1) = two_generations(dir.path());
    let pin = repo
        .pin_generation(&key, GenerationId(1), Duration::ZERO)
        .unwrap();
    assert_eq!(pin.mode(), LockMode::Pin);
    let pins = repo.pins().unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(
        pins[0].pin,
        Some(PinnedGeneration {
            target: key.clone(),
            generation: 1
        })
    );

    // The exclusive lock is free to take while the pin is held (no wait)...
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    // ...and prune keeps the pinned generation, saying why.
    let report = repo
        .prune(
            &x,
            &keep_last_one(),
            None,
            time::OffsetDateTime::now_utc(),
            false,
        )
        .unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    let g1 = &report.targets[0].generations[1];
    assert_eq!(g1.id, GenerationId(1));
    assert!(g1.keep);
    assert!(
        g1.reasons.iter().any(|r| r.starts_with("pinned by")),
        "{:?}",
        g1.reasons
    );
    // Deleting it directly is refused too.
    assert!(matches!(
        repo.delete_generation(&x, &key, GenerationId(1)),
        Err(Error::GenerationPinned { generation: 1, .. })
    ));
    // gc marks it: nothing it reads goes, and the pin is counted.
    let gc = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(gc.generations_pinned, 1);
    assert_eq!(gc.chunks_removed, 0, "{gc:?}");
    assert_eq!(restore(&repo, "web", GenerationId(1)), gen1);

    // A pin waits for the exclusive holder: none is taken under a running prune or gc.
    match repo.pin_generation(&key, GenerationId(2), Duration::from_millis(300)) {
        Err(Error::Locked { holders, .. }) => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].mode, LockMode::Exclusive);
        }
        other => panic!("a pin under an exclusive holder: {other:?}"),
    }
    drop(x);

    // Once the reader ends, the next prune removes the generation and gc frees its chunk.
    drop(pin);
    assert!(repo.pins().unwrap().is_empty());
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let report = repo
        .prune(
            &x,
            &keep_last_one(),
            None,
            time::OffsetDateTime::now_utc(),
            false,
        )
        .unwrap();
    assert_eq!(report.removed, vec![(key.clone(), GenerationId(1))]);
    let gc = repo.gc(&x, &GcOptions::default()).unwrap();
    assert_eq!(gc.generations_pinned, 0);
    assert_eq!(
        gc.chunks_removed, 1,
        "generation 1's own first chunk: {gc:?}"
    );
}

#[test]
fn gc_deletes_nothing_when_a_pinned_generation_lost_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, key, _) = two_generations(dir.path());
    let pin = repo
        .pin_generation(&key, GenerationId(1), Duration::ZERO)
        .unwrap();
    // As a version that does not know pins would: the manifest goes under the reader.
    std::fs::remove_dir_all(
        repo.root()
            .join("targets")
            .join(key.as_str())
            .join(GenerationId(1).folder_name()),
    )
    .unwrap();
    let x = repo.lock_exclusive(Duration::ZERO).unwrap();
    let before = std::fs::read_dir(repo.root().join("chunks"))
        .unwrap()
        .count();
    match repo.gc(&x, &GcOptions::default()) {
        Err(Error::PinnedGenerationMissing { generation: 1, .. }) => {}
        other => panic!("gc with a pinned generation gone: {other:?}"),
    }
    let after = std::fs::read_dir(repo.root().join("chunks"))
        .unwrap()
        .count();
    assert_eq!(before, after);
    drop(pin);
}
