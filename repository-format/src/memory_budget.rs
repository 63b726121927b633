//! One budget for the memory that chunks in flight take, shared by every ingest of a process.
//!
//! Each disk ingest holds chunk buffers (being read, queued, hashed, compressed) and the blobs
//! being written. Sized per ingest, a run of many VMs multiplies that by the disks in flight;
//! sized per process, the total stays under one limit however many disks run at once.
//!
//! The rules that keep every ingest moving and the total under the limit:
//! - an ingest takes its **minimum** in one step when it starts ([`MemoryBudget::reserve`]),
//!   waiting for it if needed; takers are served first come, first served, so a waiting ingest
//!   cannot be overtaken forever;
//! - beyond it, an ingest takes **extra** a slot at a time, only when the memory is free and
//!   nobody waits ([`Reservation::try_grow`]): it never waits while holding memory, so
//!   ingests cannot deadlock on each other;
//! - an ingest gives extra back as soon as its slot comes back while someone waits
//!   ([`MemoryBudget::has_waiters`], [`Reservation::shrink`]), and everything when it ends.
//!
//! A minimum larger than the whole limit is granted once nothing else is held, so one ingest
//! always runs, even under a limit set too small for it.
//!
//! The budget also keeps **spare buffers** ([`MemoryBudget::buffer`], [`MemoryBudget::recycle`]):
//! a buffer an ingest no longer needs goes to the next ingest instead of back to the
//! allocator. glibc's malloc keeps freed 1 MiB buffers in the arena of the thread that made
//! them, and every disk's ingest runs on another thread, so freeing and allocating them anew
//! per disk left far more resident than was held (measured: 280 MiB resident for 191 MiB held,
//! docs/benchmarks.md). Spares count against the limit: what is held plus the spares never
//! exceeds it, and spares are freed first when a taker needs the room.
//!
//! [`MemoryBudget::process`] is the process's budget, which the repository's ingests use
//! unless given another ([`crate::Repository::set_memory_budget`]). Its limit starts at
//! [`DEFAULT_MEMORY_BUDGET`]; [`MemoryBudget::set_limit`] changes it (the configuration's).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// The default limit: 96 MiB of chunks in flight (buffers, their blobs, read-ahead). The
/// rest of a backup process and what glibc's malloc keeps beside what is held took about
/// 110 MiB more at eight disks in flight (docs/benchmarks.md, "Many VMs in one run"): this
/// keeps the whole under 256 MiB. One VM's two disks still get every buffer they want.
pub const DEFAULT_MEMORY_BUDGET: u64 = 96 << 20;

/// A limit on bytes held, shared between threads; see the [module documentation](self).
#[derive(Debug)]
pub struct MemoryBudget {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    limit: u64,
    in_use: u64,
    /// Buffers given back, for the next taker; their capacity counts in `spare_bytes`.
    spares: Vec<Vec<u8>>,
    spare_bytes: u64,
    high_water: u64,
    /// The next ticket handed to a [`MemoryBudget::reserve`] that has to wait.
    next_ticket: u64,
    /// The ticket served next: a waiter goes only when its turn has come.
    serving: u64,
}

impl State {
    fn waiting(&self) -> bool {
        self.serving != self.next_ticket
    }

    fn fits(&self, bytes: u64) -> bool {
        // An oversized request goes alone rather than never.
        self.in_use.saturating_add(bytes) <= self.limit || self.in_use == 0
    }

    fn take(&mut self, bytes: u64) {
        self.in_use += bytes;
        self.high_water = self.high_water.max(self.in_use);
        // Room for what is held comes before spares.
        while self.in_use + self.spare_bytes > self.limit {
            let Some(b) = self.spares.pop() else { break };
            self.spare_bytes -= b.capacity() as u64;
        }
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            state: Mutex::new(State {
                limit,
                in_use: 0,
                spares: Vec::new(),
                spare_bytes: 0,
                high_water: 0,
                next_ticket: 0,
                serving: 0,
            }),
            changed: Condvar::new(),
        })
    }

    /// The process's budget, [`DEFAULT_MEMORY_BUDGET`] until [`MemoryBudget::set_limit`].
    pub fn process() -> &'static Arc<MemoryBudget> {
        static PROCESS: OnceLock<Arc<MemoryBudget>> = OnceLock::new();
        PROCESS.get_or_init(|| MemoryBudget::new(DEFAULT_MEMORY_BUDGET))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The counters are updated in single statements: a panicking holder leaves them whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the limit. What is held stays held; a lower limit applies to what is taken
    /// next, a higher one wakes the waiters it now fits.
    pub fn set_limit(&self, limit: u64) {
        self.state().limit = limit;
        self.changed.notify_all();
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.state().limit
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        self.state().in_use
    }

    /// The most bytes held at once since the budget was made (or [`MemoryBudget::reset_high_water`]).
    pub fn high_water(&self) -> u64 {
        self.state().high_water
    }

    /// Starts the high-water mark again from what is held now.
    pub fn reset_high_water(&self) {
        let mut s = self.state();
        s.high_water = s.in_use;
    }

    /// Whether a [`MemoryBudget::reserve`] is waiting: holders of extra then give it back.
    pub fn has_waiters(&self) -> bool {
        self.state().waiting()
    }

    /// Takes `bytes` in one step, waiting (first come, first served) until they fit under the
    /// limit, or until nothing is held when `bytes` alone exceed it.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let mut s = self.state();
        if !s.waiting() && s.fits(bytes) {
            s.take(bytes);
        } else {
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            while !(s.serving == ticket && s.fits(bytes)) {
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.take(bytes);
            s.serving += 1;
            // The next in line may fit too.
            self.changed.notify_all();
        }
        drop(s);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// An empty buffer with room for `capacity` bytes: a spare if one fits (not more than twice
    /// as large), else a new one. Its memory is the caller's to pay for from a reservation.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut s = self.state();
        let fits = |b: &Vec<u8>| b.capacity() >= capacity && b.capacity() / 2 <= capacity;
        if let Some(i) = s.spares.iter().rposition(fits) {
            let mut b = s.spares.swap_remove(i);
            s.spare_bytes -= b.capacity() as u64;
            b.clear();
            return b;
        }
        drop(s);
        Vec::with_capacity(capacity)
    }

    /// Keeps `buf` as a spare for [`MemoryBudget::buffer`] while what is held and the spares
    /// fit under the limit; frees it otherwise.
    pub fn recycle(&self, buf: Vec<u8>) {
        let bytes = buf.capacity() as u64;
        let mut s = self.state();
        if bytes > 0 && s.in_use + s.spare_bytes + bytes <= s.limit {
            s.spare_bytes += bytes;
            s.spares.push(buf);
        }
    }

    /// Bytes of spare buffers kept.
    pub fn spare_bytes(&self) -> u64 {
        self.state().spare_bytes
    }

    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut s = self.state();
        s.in_use = s.in_use.saturating_sub(bytes);
        drop(s);
        self.changed.notify_all();
    }
}

/// Bytes held from a [`MemoryBudget`]; dropping it gives them back.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The budget this reservation draws on.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Takes `bytes` more if they fit under the limit now and nobody waits; never waits.
    pub fn try_grow(&mut self, bytes: u64) -> bool {
        let mut s = self.budget.state();
        if s.waiting() || s.in_use.saturating_add(bytes) > s.limit {
            return false;
        }
        s.take(bytes);
        self.bytes += bytes;
        true
    }

    /// Gives `bytes` back (at most what is held).
    pub fn shrink(&mut self, bytes: u64) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.budget.release(bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Barrier;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reserve_takes_what_fits_and_drop_gives_it_back() {
        let b = MemoryBudget::new(10 * MIB);
        let r = b.reserve(4 * MIB);
        assert_eq!((r.bytes(), b.in_use()), (4 * MIB, 4 * MIB));
        let r2 = b.reserve(6 * MIB);
        assert_eq!(b.in_use(), 10 * MIB);
        drop(r);
        assert_eq!(b.in_use(), 6 * MIB);
        drop(r2);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.high_water(), 10 * MIB);
        b.reset_high_water();
        assert_eq!(b.high_water(), 0);
    }

    #[test]
    fn growing_stops_at_the_limit_and_shrinking_frees() {
        let b = MemoryBudget::new(4 * MIB);
        let mut r = b.reserve(MIB);
        assert!(r.try_grow(2 * MIB));
        assert!(!r.try_grow(2 * MIB), "5 MiB is over the 4 MiB limit");
        assert!(r.try_grow(MIB));
        assert_eq!((r.bytes(), b.in_use()), (4 * MIB, 4 * MIB));
        r.shrink(3 * MIB);
        assert_eq!((r.bytes(), b.in_use()), (MIB, MIB));
        r.shrink(10 * MIB);
        assert_eq!((r.bytes(), b.in_use()), (0, 0));
        assert_eq!(b.high_water(), 4 * MIB);
    }

    #[test]
    fn spares_are_reused_and_never_push_past_the_limit() {
        let b = MemoryBudget::new(4 * MIB);
        let mut buf = b.buffer(MIB as usize);
        buf.extend_from_slice(&[7u8; 100]);
        let at = buf.as_ptr();
        b.recycle(buf);
        assert_eq!(b.spare_bytes(), MIB);
        // The same allocation comes back, emptied; a much smaller request does not take it.
        assert_eq!(b.buffer(1024).capacity(), 1024);
        let again = b.buffer(MIB as usize);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        assert_eq!(b.spare_bytes(), 0);
        // Spares make room for what is held: held + spares stays under the limit.
        b.recycle(again);
        b.recycle(Vec::with_capacity(MIB as usize));
        assert_eq!(b.spare_bytes(), 2 * MIB);
        let r = b.reserve(3 * MIB);
        assert_eq!(b.spare_bytes(), MIB);
        b.recycle(Vec::with_capacity(MIB as usize));
        assert_eq!(b.spare_bytes(), MIB, "no room for a second spare");
        drop(r);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn an_oversized_minimum_goes_alone() {
        let b = MemoryBudget::new(MIB);
        let big = b.reserve(3 * MIB);
        assert_eq!(b.in_use(), 3 * MIB);
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve(MIB).bytes());
        // The waiter can only be served once the oversized holder is gone.
        while !b.has_waiters() {
            std::thread::yield_now();
        }
        assert_eq!(b.in_use(), 3 * MIB);
        drop(big);
        assert_eq!(waiter.join().unwrap(), MIB);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn extra_is_refused_while_someone_waits() {
        let b = MemoryBudget::new(4 * MIB);
        let mut holder = b.reserve(3 * MIB);
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve(2 * MIB));
        while !b.has_waiters() {
            std::thread::yield_now();
        }
        // 1 MiB is free, but the waiter comes first.
        assert!(!holder.try_grow(MIB));
        holder.shrink(MIB);
        let served = waiter.join().unwrap();
        assert_eq!(served.bytes(), 2 * MIB);
        assert_eq!(b.in_use(), 4 * MIB);
        assert!(!b.has_waiters());
    }

    #[test]
    fn a_lower_limit_applies_to_what_comes_next_and_a_higher_one_wakes_waiters() {
        let b = MemoryBudget::new(4 * MIB);
        let mut r = b.reserve(2 * MIB);
        b.set_limit(2 * MIB);
        assert!(!r.try_grow(MIB));
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve(MIB).bytes());
        while !b.has_waiters() {
            std::thread::yield_now();
        }
        b.set_limit(3 * MIB);
        assert_eq!(waiter.join().unwrap(), MIB);
        assert_eq!(b.limit(), 3 * MIB);
    }

    /// 32 threads each take a minimum, grow opportunistically, give back while others wait,
    /// and end: every one finishes (no deadlock) and the total never exceeds the limit.
    #[test]
    fn many_takers_all_progress_and_never_exceed_the_limit() {
        const THREADS: u64 = 32;
        let limit = 10 * MIB;
        let b = MemoryBudget::new(limit);
        let start = Barrier::new(THREADS as usize);
        let finished = AtomicU64::new(0);
        let most_seen = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (b, start, finished, most_seen) = (&b, &start, &finished, &most_seen);
                scope.spawn(move || {
                    start.wait();
                    for round in 0..50u64 {
                        // Minimums of 1 to 3 MiB, so that several fit at once but not all.
                        let minimum = MIB * (1 + (t + round) % 3);
                        let mut r = b.reserve(minimum);
                        for _ in 0..4 {
                            if b.has_waiters() {
                                r.shrink(r.bytes() - minimum);
                            } else {
                                r.try_grow(MIB);
                            }
                            most_seen.fetch_max(b.in_use(), Ordering::SeqCst);
                            std::thread::yield_now();
                        }
                        assert!(r.bytes() >= minimum);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(finished.load(Ordering::SeqCst), THREADS);
        assert_eq!(b.in_use(), 0);
        assert!(b.high_water() <= limit, "high water {}", b.high_water());
        assert!(most_seen.load(Ordering::SeqCst) <= limit);
        // Contended: the takers filled the budget at some point.
        assert!(b.high_water() >= limit - 2 * MIB, "{}", b.high_water());
    }
}
