//! Ctrl-C and SIGTERM: the first signal asks every running backup or restore to stop at the
//! next chunk, so that cleanup (snapshot removal, destroying a half-restored VM) still runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::error::{Error, Result};

/// A shared stop request.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    notify: Notify,
    /// A child token is also cancelled when its parent is.
    parent: Option<Cancel>,
}

impl Cancel {
    /// A token nobody has cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// A token that is cancelled with this one, and can also be cancelled on its own without
    /// touching this one: the disks of one target stop together when one of them fails.
    pub fn child(&self) -> Cancel {
        Cancel {
            inner: Arc::new(Inner {
                parent: Some(self.clone()),
                ..Inner::default()
            }),
        }
    }

    /// Asks everything holding this token to stop.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
            || self.inner.parent.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Resolves once a stop is requested.
    pub async fn cancelled(&self) {
        match &self.inner.parent {
            None => self.cancelled_itself().await,
            Some(parent) => {
                tokio::select! {
                    _ = self.cancelled_itself() => {}
                    _ = Box::pin(parent.cancelled()) => {}
                }
            }
        }
    }

    async fn cancelled_itself(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.inner.flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Listens for SIGINT and SIGTERM on the current runtime and cancels on the first one.
    pub fn on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!("interrupted: stopping and cleaning up (snapshots, partial restores)");
            me.cancel();
            wait_for_signal().await;
            tracing::warn!("second interrupt: cleanup is still running, please wait");
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelled_wakes_waiters() {
        let c = Cancel::new();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!c.is_cancelled());
        c.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .unwrap();
        assert!(c.is_cancelled());
    }

    #[tokio::test]
    async fn a_child_stops_with_its_parent_but_not_the_other_way() {
        let parent = Cancel::new();
        let child = parent.child();
        child.cancel();
        assert!(child.is_cancelled() && !parent.is_cancelled());

        let child = parent.child();
        let c2 = child.clone();
        let waiter = tokio::spawn(async move { c2.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!child.is_cancelled());
        parent.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the child's waiter woke on the parent's cancel")
            .unwrap();
        assert!(child.is_cancelled());
    }
}

/// The results of work that ran side by side under one [`Cancel`] (the disks of a target), in
/// order, or the error that stopped them: the first real failure rather than the
/// [`Error::Interrupted`] it caused in the others.
///
/// # Errors
/// The first error that is not [`Error::Interrupted`], else [`Error::Interrupted`] when any
/// was interrupted.
pub fn first_failure<T>(outcomes: Vec<Result<T>>) -> Result<Vec<T>> {
    let mut done = Vec::with_capacity(outcomes.len());
    let mut interrupted = None;
    for outcome in outcomes {
        match outcome {
            Ok(t) => done.push(t),
            Err(Error::Interrupted) => interrupted = Some(Error::Interrupted),
            Err(e) => return Err(e),
        }
    }
    match interrupted {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod first_failure_tests {
    use super::*;

    #[test]
    fn the_first_real_failure_wins_over_the_interruptions_it_caused() {
        let r = first_failure(vec![
            Ok(1),
            Err(Error::Interrupted),
            Err(Error::Other("read failed".into())),
            Ok(2),
        ]);
        assert!(r.unwrap_err().to_string().contains("read failed"));
        let r = first_failure::<u8>(vec![Ok(1), Err(Error::Interrupted)]);
        assert!(matches!(r, Err(Error::Interrupted)));
        assert_eq!(first_failure::<u8>(vec![Ok(1), Ok(2)]).unwrap(), vec![1, 2]);
    }
}
