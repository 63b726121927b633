//! Asynchronous reads and writes (ReadAsync/WriteAsync + Wait).
//!
//! A request owns its buffer from submission until its completion is collected: the buffer
//! becomes a raw allocation that only VDDK touches, and is handed back in a [`Completion`].
//! VDDK may run the completion callback inside the submitting call or on one of its threads;
//! the callback only records `(request, result)` in a mutex-protected list.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vddk_sys::*;

use crate::disk::Disk;
use crate::error::{Error, Result, VixError as VixErr};

/// Identifies a submitted request; ids increase in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Whether a request read or wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// ReadAsync.
    Read,
    /// WriteAsync.
    Write,
}

/// A finished request, with its buffer (holding the data, for reads).
#[derive(Debug)]
pub struct Completion {
    /// The request.
    pub id: RequestId,
    /// Read or write.
    pub kind: IoKind,
    /// First sector of the request.
    pub start_sector: u64,
    /// Bytes the request read or wrote.
    pub len: usize,
    /// The buffer given at submission; empty for [`Disk::write_async_shared`], whose shared
    /// buffer is released when its completion is collected.
    pub buffer: Vec<u8>,
    /// Success, or VDDK's error for this request.
    pub result: Result<(), VixErr>,
}

/// Memory asynchronous writes read from, shared between them (see
/// [`Disk::write_async_shared`]): a chunk written as several runs around its zero blocks is
/// one buffer, released (or returned to its pool) when the last of its writes completes.
/// Whatever `as_ref` returns must not change while a write is in flight: it cannot in safe
/// code, since the request holds a shared reference-counted handle to it.
pub type SharedBuffer = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Who owns a request's memory while VDDK uses it.
enum RequestBuffer {
    /// From `Box::into_raw`; VDDK owns the contents until the request completes.
    Owned(*mut [u8]),
    /// Kept alive (and, being shared, unchanged) until the request completes; VDDK reads
    /// `len` bytes at a pointer into it.
    Shared(SharedBuffer),
}

/// Completion results reported by callbacks, not yet collected.
#[derive(Default)]
struct Finished {
    results: Mutex<Vec<(u64, u64)>>,
    /// Signalled by every callback.
    arrived: Condvar,
}

/// What the callback's data pointer points to.
struct CallbackData {
    id: u64,
    finished: Arc<Finished>,
}

struct InFlight {
    kind: IoKind,
    start_sector: u64,
    /// Bytes VDDK reads or writes.
    len: usize,
    buffer: RequestBuffer,
    /// From `Box::into_raw`; the callback reads it until the request completes.
    data: *mut CallbackData,
}

impl InFlight {
    /// Frees both allocations and returns the buffer (empty for a shared one, which is
    /// released here).
    ///
    /// # Safety
    /// VDDK is done with the request: its callback has run, or it refused the request.
    unsafe fn reclaim(self) -> Vec<u8> {
        // SAFETY: both pointers came from Box::into_raw and are reclaimed once (self is
        // consumed); VDDK no longer uses them per this function's contract.
        unsafe {
            drop(Box::from_raw(self.data));
            match self.buffer {
                RequestBuffer::Owned(buffer) => Box::from_raw(buffer).into_vec(),
                RequestBuffer::Shared(shared) => {
                    drop(shared);
                    Vec::new()
                }
            }
        }
    }
}

/// The requests of one disk.
#[derive(Default)]
pub(crate) struct AsyncRequests {
    next: u64,
    in_flight: BTreeMap<u64, InFlight>,
    finished: Arc<Finished>,
}

impl AsyncRequests {
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Gives up on requests VDDK never completed: their buffers and callback data are leaked
    /// rather than freed while VDDK might still use them.
    pub(crate) fn abandon(&mut self) {
        let n = self.in_flight.len();
        // Dropping the map frees nothing the entries point to: they are raw pointers.
        self.in_flight.clear();
        crate::library::note_abandoned(n);
        tracing::error!(target: "vddk", "{n} async request(s) never completed; leaking their buffers");
    }
}

impl Drop for AsyncRequests {
    fn drop(&mut self) {
        if !self.in_flight.is_empty() {
            self.abandon();
        }
    }
}

/// The VixDiskLibCompletionCB given with every request.
unsafe extern "C" fn completion_callback(data: *mut c_void, result: vddk_sys::VixError) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is the CallbackData pointer passed at submission; it stays alive until
        // this request's result has been collected, which needs the push below to have happened.
        let cb = unsafe { &*data.cast::<CallbackData>() };
        // Copy what is needed out of `cb` first: once the result is pushed, the collecting
        // thread may reclaim (free) the CallbackData at any moment, so `cb` must not be touched
        // after the push. Notifying through `cb.finished` after the push was a use-after-free.
        let (id, finished) = (cb.id, Arc::clone(&cb.finished));
        finished
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, result));
        finished.arrived.notify_all();
    }));
}

impl Disk {
    /// Starts reading `buffer.len() / 512` sectors at `start_sector` into `buffer`; the data
    /// comes back in a [`Completion`] from [`Disk::wait`] or [`Disk::take_completed`].
    ///
    /// # Errors
    /// Bounds and size errors as for [`Disk::read`]; [`Error::Vix`] when VDDK refuses the
    /// request (the buffer is then dropped).
    pub fn read_async(&mut self, start_sector: u64, buffer: Vec<u8>) -> Result<RequestId> {
        self.submit(IoKind::Read, start_sector, buffer)
    }

    /// Starts writing `buffer` at `start_sector`; the buffer comes back in a [`Completion`].
    ///
    /// # Errors
    /// As for [`Disk::write`].
    pub fn write_async(&mut self, start_sector: u64, buffer: Vec<u8>) -> Result<RequestId> {
        self.check_writable()?;
        self.submit(IoKind::Write, start_sector, buffer)
    }

    /// Starts writing `range` of `buffer` at `start_sector`, without copying it: the request
    /// holds a handle to the buffer until its completion is collected, so several writes can
    /// share one buffer (and memory aligned for direct I/O stays as it is). The completion's
    /// `buffer` is empty.
    ///
    /// # Errors
    /// As for [`Disk::write`]; [`Error::InvalidArgument`] for a range outside the buffer.
    pub fn write_async_shared(
        &mut self,
        start_sector: u64,
        buffer: SharedBuffer,
        range: std::ops::Range<usize>,
    ) -> Result<RequestId> {
        self.check_writable()?;
        let bytes: &[u8] = (*buffer).as_ref();
        let Some(part) = bytes.get(range.clone()) else {
            return Err(Error::InvalidArgument(format!(
                "write of bytes {range:?} of a {}-byte buffer",
                bytes.len()
            )));
        };
        let (ptr, len) = (part.as_ptr().cast_mut(), part.len());
        self.submit_request(
            IoKind::Write,
            start_sector,
            len,
            ptr,
            RequestBuffer::Shared(buffer),
        )
    }

    /// Requests submitted and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.requests.in_flight()
    }

    fn submit(&mut self, kind: IoKind, start_sector: u64, buffer: Vec<u8>) -> Result<RequestId> {
        // Checked before the buffer becomes a raw allocation, so a refused request drops it.
        self.check_io(start_sector, buffer.len())?;
        let len = buffer.len();
        let buf_ptr: *mut [u8] = Box::into_raw(buffer.into_boxed_slice());
        self.submit_request(
            kind,
            start_sector,
            len,
            buf_ptr.cast::<u8>(),
            RequestBuffer::Owned(buf_ptr),
        )
    }

    /// Submits a request for `len` bytes at `ptr`, which `buffer` keeps valid (and, for a
    /// shared buffer, unchanged) until the request's completion is collected.
    fn submit_request(
        &mut self,
        kind: IoKind,
        start_sector: u64,
        len: usize,
        ptr: *mut u8,
        buffer: RequestBuffer,
    ) -> Result<RequestId> {
        let count = match self.check_io(start_sector, len) {
            Ok(0) => Err(Error::InvalidArgument("empty async request".into())),
            other => other,
        };
        let count = match count {
            Ok(c) => c,
            Err(e) => {
                if let RequestBuffer::Owned(b) = buffer {
                    // SAFETY: from Box::into_raw in `submit`, never given to VDDK.
                    drop(unsafe { Box::from_raw(b) });
                }
                return Err(e);
            }
        };
        let lib = self.conn.library.clone();
        let id = self.requests.next;
        self.requests.next += 1;
        let data = Box::into_raw(Box::new(CallbackData {
            id,
            finished: self.requests.finished.clone(),
        }));
        let data_ptr = data.cast::<c_void>();
        // Registered before the call: the callback may run before the call returns.
        self.requests.in_flight.insert(
            id,
            InFlight {
                kind,
                start_sector,
                len,
                buffer,
                data,
            },
        );
        let api = &lib.lib.api;
        // SAFETY: required symbols; live handle used by this thread only; `ptr` addresses
        // `count` sectors that its request buffer (held in `in_flight`) keeps allocated and
        // untouched by Rust until the completion is collected, like the callback data. Reads
        // only come with owned buffers (write_async_shared is the only shared submitter), so
        // VDDK never writes into shared memory.
        let rc = unsafe {
            match kind {
                IoKind::Read => api.VixDiskLib_ReadAsync(
                    self.raw,
                    start_sector,
                    count,
                    ptr,
                    Some(completion_callback),
                    data_ptr,
                ),
                IoKind::Write => api.VixDiskLib_WriteAsync(
                    self.raw,
                    start_sector,
                    count,
                    ptr.cast_const(),
                    Some(completion_callback),
                    data_ptr,
                ),
            }
        };
        if rc == u64::from(VIX_ASYNC) {
            return Ok(RequestId(id));
        }
        let called_back = self
            .requests
            .finished
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(i, _)| *i == id);
        if called_back {
            return Ok(RequestId(id));
        }
        if rc == u64::from(VIX_OK) {
            // Completed synchronously without a callback.
            self.requests
                .finished
                .results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, rc));
            return Ok(RequestId(id));
        }
        // Refused up front: VDDK never calls back for a refused request, so both allocations
        // are ours again.
        if let Some(r) = self.requests.in_flight.remove(&id) {
            // SAFETY: VDDK refused the request, so it holds neither pointer.
            drop(unsafe { r.reclaim() });
        }
        let op = match kind {
            IoKind::Read => "ReadAsync",
            IoKind::Write => "WriteAsync",
        };
        Err(lib.vix_error(op, rc).into())
    }

    /// Collects requests that have already completed, without blocking, in submission order.
    pub fn take_completed(&mut self) -> Vec<Completion> {
        let results: Vec<(u64, u64)> = std::mem::take(
            &mut *self
                .requests
                .finished
                .results
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let lib = self.conn.library.clone();
        let mut out = Vec::with_capacity(results.len());
        for (id, rc) in results {
            let Some(r) = self.requests.in_flight.remove(&id) else {
                tracing::warn!(target: "vddk", id, "completion for an unknown request ignored");
                continue;
            };
            let (kind, start_sector, len) = (r.kind, r.start_sector, r.len);
            // SAFETY: the callback ran (or the call completed synchronously), so VDDK is done
            // with the request; it was removed from the map, so it is reclaimed once.
            let buffer = unsafe { r.reclaim() };
            let op = match kind {
                IoKind::Read => "ReadAsync",
                IoKind::Write => "WriteAsync",
            };
            let result = if rc == u64::from(VIX_OK) {
                Ok(())
            } else {
                Err(lib.vix_error(op, rc))
            };
            out.push(Completion {
                id: RequestId(id),
                kind,
                start_sector,
                len,
                buffer,
                result,
            });
        }
        out.sort_by_key(|c| c.id);
        out
    }

    /// Waits until at least one request has completed and returns every completion available,
    /// in submission order; returns an empty list when nothing is in flight. Use it to keep a
    /// fixed number of requests in flight.
    ///
    /// Completions normally arrive on VDDK's own threads; if none arrives within
    /// `poll` (libraries that complete requests only inside Wait), it falls back to
    /// [`Disk::wait`].
    ///
    /// # Errors
    /// As [`Disk::wait`].
    pub fn wait_any(&mut self, poll: Duration) -> Result<Vec<Completion>> {
        if self.requests.in_flight() == 0 {
            return Ok(Vec::new());
        }
        {
            let finished = self.requests.finished.clone();
            let guard = finished.results.lock().unwrap_or_else(|p| p.into_inner());
            let _guard = finished
                .arrived
                .wait_timeout_while(guard, poll, |r| r.is_empty())
                .unwrap_or_else(|p| p.into_inner());
        }
        let done = self.take_completed();
        if done.is_empty() {
            return self.wait();
        }
        Ok(done)
    }

    /// Waits for every submitted request (VixDiskLib_Wait) and returns their completions in
    /// submission order. Each completion carries its own result.
    ///
    /// # Errors
    /// [`Error::Vix`] when Wait itself fails (requests then stay in flight);
    /// [`Error::Library`] if Wait returns while requests are still outstanding.
    pub fn wait(&mut self) -> Result<Vec<Completion>> {
        if self.requests.in_flight() > 0 {
            let lib = self.conn.library.clone();
            // SAFETY: required symbol; live handle used by this thread only.
            let rc = unsafe { lib.lib.api.VixDiskLib_Wait(self.raw) };
            lib.check("Wait", rc)?;
        }
        let done = self.take_completed();
        if self.requests.in_flight() > 0 {
            return Err(Error::Library(format!(
                "Wait returned with {} request(s) outstanding",
                self.requests.in_flight()
            )));
        }
        Ok(done)
    }
}
