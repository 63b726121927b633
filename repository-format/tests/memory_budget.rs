//! Concurrent ingests share one memory budget: together they never hold more than its limit,
//! each always progresses (no deadlock, even under a limit below one ingest's minimum), and an
//! ingest alone never takes more than its own sizing.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use repository_format::*;

const INGESTS: usize = 8;

/// A source that notes, at every read, what the budget holds.
struct Watched {
    inner: MemorySource,
    budget: Arc<MemoryBudget>,
    most_seen: Arc<AtomicU64>,
}

impl DiskSource for Watched {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), SourceError> {
        self.most_seen
            .fetch_max(self.budget.in_use(), Ordering::SeqCst);
        self.inner.read_at(offset, buf)
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
}

/// Backs up `INGESTS` VMs (one disk each, different content) at once through `repo`, each
/// from its own thread, and checks that each restores to its bytes.
fn back_up_at_once(repo: &Repository, most_seen: &Arc<AtomicU64>) {
    let lock = repo.lock_shared(Duration::from_secs(5)).unwrap();
    let datas: Vec<Vec<u8>> = (0..INGESTS)
        .map(|i| disk_bytes(CS as usize * 40 + 123, i as u64 + 1))
        .collect();
    let gens: Vec<(TargetKey, GenerationId)> = std::thread::scope(|s| {
        let handles: Vec<_> = datas
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let lock = &lock;
                s.spawn(move || {
                    let id = identity(&format!("vm{i}"));
                    let key = repo.target_key(&id).unwrap();
                    let tl = repo.lock_target(&key, Duration::from_secs(5)).unwrap();
                    let w = repo
                        .begin_generation(lock, tl, id, BackupMode::Full, None)
                        .unwrap();
                    let mut src = Watched {
                        inner: MemorySource::new(data.clone()),
                        budget: repo.memory_budget().clone(),
                        most_seen: most_seen.clone(),
                    };
                    let len = data.len() as u64;
                    w.ingest_disk(
                        DiskDescriptor::new(2000, len),
                        None,
                        &[Area::new(0, len)],
                        &mut src,
                        &|_| {},
                    )
                    .unwrap();
                    let g = w
                        .commit(GenerationStatus::Succeeded, Default::default())
                        .unwrap();
                    (key, g)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((key, g), data) in gens.iter().zip(&datas) {
        let mut r = repo.disk_reader(key, *g, 2000).unwrap();
        let mut back = vec![0u8; data.len()];
        r.read_at(0, &mut back).unwrap();
        assert!(back == *data, "{key} does not restore to its bytes");
    }
}

#[test]
fn concurrent_ingests_stay_under_the_shared_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = repo(dir.path());
    let tuning = IngestTuning::for_chunk_size(CS);
    // Room for two ingests' minimums and a few extra slots: the eight ingests must share.
    let limit = 2 * tuning.min_bytes(CS) + 3 * ingest::slot_bytes(CS);
    assert!(limit < INGESTS as u64 * tuning.max_bytes(CS));
    let budget = MemoryBudget::new(limit);
    repo.set_memory_budget(budget.clone());
    let most_seen = Arc::new(AtomicU64::new(0));
    back_up_at_once(&repo, &most_seen);
    assert!(
        budget.high_water() <= limit,
        "held {} of {limit}",
        budget.high_water()
    );
    assert!(most_seen.load(Ordering::SeqCst) <= limit);
    // The ingests did draw on it, and gave everything back.
    assert!(budget.high_water() >= tuning.min_bytes(CS));
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_limit_below_one_ingests_minimum_runs_them_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = repo(dir.path());
    let tuning = IngestTuning::for_chunk_size(CS);
    let budget = MemoryBudget::new(1);
    repo.set_memory_budget(budget.clone());
    let most_seen = Arc::new(AtomicU64::new(0));
    back_up_at_once(&repo, &most_seen);
    // Each minimum went alone, and none grew past it: never two ingests' worth at once.
    assert_eq!(budget.high_water(), tuning.min_bytes(CS));
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn an_ingest_alone_takes_at_most_its_own_sizing() {
    let dir = tempfile::tempdir().unwrap();
    let mut repo = repo(dir.path());
    let tuning = IngestTuning::for_chunk_size(CS);
    let budget = MemoryBudget::new(DEFAULT_MEMORY_BUDGET);
    repo.set_memory_budget(budget.clone());
    let data = disk_bytes(CS as usize * 64, 9);
    let (g, _) = backup(&repo, "alone", &data, None);
    assert_eq!(restore(&repo, "alone", g), data);
    assert!(budget.high_water() >= tuning.min_bytes(CS));
    assert!(
        budget.high_water() <= tuning.max_bytes(CS),
        "{} > {}",
        budget.high_water(),
        tuning.max_bytes(CS)
    );
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_repository_draws_on_the_process_budget_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    assert!(Arc::ptr_eq(repo.memory_budget(), MemoryBudget::process()));
    assert_eq!(MemoryBudget::process().limit(), DEFAULT_MEMORY_BUDGET);
}
