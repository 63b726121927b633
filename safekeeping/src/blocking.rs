//! Running blocking work (repository I/O, VDDK calls, lock waits) from async code.

use crate::error::{Error, Result};

/// Runs `f` on tokio's blocking pool and returns its result. The repository and VDDK are
/// synchronous libraries: calling them on a runtime worker would stall every other target's
/// vCenter calls.
///
/// # Errors
/// `f`'s error, or [`Error::Other`] when the worker thread panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("worker thread failed: {e}")))?
}
