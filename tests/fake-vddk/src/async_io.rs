//! ReadAsync/WriteAsync: requests run on a per-disk worker thread (or inline when
//! `fake.async_inline = true`) and complete through the caller's callback.

use std::ffi::c_void;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use vddk_sys::*;

use crate::disk::FakeDisk;

/// One accepted request. Pointers are carried as integers to cross to the worker.
pub struct Job {
    pub write: bool,
    pub start: u64,
    pub buf: usize,
    pub len: usize,
    pub callback: unsafe extern "C" fn(*mut c_void, VixError),
    pub data: usize,
}

impl Job {
    /// Runs the request and calls the completion callback.
    ///
    /// # Safety
    /// `buf..buf+len` is valid (writable for reads) until the callback has run, and
    /// `callback`/`data` are the caller's, as VDDK's async contract requires.
    pub unsafe fn run(&self, disk: &FakeDisk) {
        let result = if self.write {
            // SAFETY: valid for `len` bytes until completion (see `# Safety`).
            let buf = unsafe { std::slice::from_raw_parts(self.buf as *const u8, self.len) };
            disk.write(self.start, buf)
        } else {
            // SAFETY: as above, and writable.
            let buf = unsafe { std::slice::from_raw_parts_mut(self.buf as *mut u8, self.len) };
            disk.read(self.start, buf)
        };
        let code = result.err().unwrap_or(VIX_OK as VixError);
        // SAFETY: the caller's callback with the caller's data, called exactly once.
        unsafe { (self.callback)(self.data as *mut c_void, code) };
    }
}

/// Requests not yet completed, so `Wait` and `Close` can block until none are left.
#[derive(Default)]
pub struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    fn done(&self) {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *c -= 1;
        if *c == 0 {
            self.idle.notify_all();
        }
    }

    /// Blocks until every accepted request has completed.
    pub fn wait_idle(&self) {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *c > 0 {
            c = self.idle.wait(c).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The worker threads of one disk handle: several, so that (like VDDK's NBD pipeline)
/// requests overlap and may complete out of order.
pub struct Worker {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    pub pending: Arc<Pending>,
}

impl Worker {
    /// Starts `threads` workers (at least one) for `disk`.
    pub fn start(disk: Arc<FakeDisk>, threads: usize) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(Pending::default());
        let threads = (0..threads.max(1))
            .map(|_| {
                let (rx, disk, p) = (rx.clone(), disk.clone(), pending.clone());
                std::thread::spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { break };
                    // SAFETY: the job was accepted under VDDK's async contract (see Job::run).
                    unsafe { job.run(&disk) };
                    p.done();
                })
            })
            .collect();
        Self {
            tx: Some(tx),
            threads,
            pending,
        }
    }

    /// Queues a job; the callback runs on a worker thread.
    pub fn submit(&self, job: Job) -> bool {
        self.pending.add();
        match self.tx.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => true,
            _ => {
                self.pending.done();
                false
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.pending.wait_idle();
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
