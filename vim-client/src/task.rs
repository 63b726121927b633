//! Waiting for tasks.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::fault;
use crate::moref::MoRef;
use crate::updates::PrivateCollector;
use crate::xml::Element;

impl Client {
    /// Waits until `task` succeeds or fails and returns its `result` value, if any. It waits
    /// for updates of the task's `info` with `WaitForUpdatesEx`; when the server cannot set up
    /// a private property collector it polls instead (see [`Client::poll_task`]).
    ///
    /// # Errors
    ///
    /// The task's fault as [`Error::Fault`], [`Error::Timeout`] after `timeout`.
    pub async fn wait_for_task(&self, task: &MoRef, timeout: Duration) -> Result<Option<Element>> {
        let collector = match PrivateCollector::create(self, task, "info").await {
            Ok(c) => c,
            Err(e) => {
                // Servers without CreatePropertyCollector, or a task that is already gone:
                // polling gives the precise answer.
                tracing::debug!(error = %e, "cannot watch the task; polling it");
                return self.poll_task(task, timeout).await;
            }
        };
        let mut finished = |info: &Element| {
            matches!(
                info.text_at("state").map(str::trim),
                Some("success" | "error")
            )
        };
        let result = self
            .wait_on(&collector, task, "info", timeout, &mut finished)
            .await;
        collector.destroy().await;
        task_outcome(task, &result?)
    }

    /// Waits until `task` succeeds or fails by polling its `info` property (every 100 ms at
    /// first, backing off to 2 s).
    ///
    /// # Errors
    ///
    /// As [`Client::wait_for_task`].
    pub async fn poll_task(&self, task: &MoRef, timeout: Duration) -> Result<Option<Element>> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let props = self.object_properties(task, &["info"]).await?;
            let info = props
                .get("info")
                .ok_or_else(|| Error::Unexpected(format!("{task} has no info")))?;
            if !matches!(
                info.text_at("state").map(str::trim),
                Some("queued" | "running")
            ) {
                return task_outcome(task, info);
            }
            if started.elapsed() >= timeout {
                let name = info.text_at("descriptionId").unwrap_or(&task.value);
                return Err(Error::Timeout {
                    what: format!("task {name} ({task})"),
                    after: timeout,
                });
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Calls a `..._Task` method and returns the task reference from its `returnval`.
    ///
    /// # Errors
    ///
    /// Faults from the call.
    pub async fn start_task(&self, body: Element) -> Result<MoRef> {
        let method = body.local().to_owned();
        let response = self.call(body).await?;
        response
            .get("returnval")
            .ok_or_else(|| Error::Unexpected(format!("{method} returned no task")))
            .and_then(MoRef::from_element)
    }

    /// Calls a `..._Task` method and waits for it; see [`Client::wait_for_task`].
    ///
    /// # Errors
    ///
    /// Faults from the call or the task, timeouts.
    pub async fn run_task(&self, body: Element, timeout: Duration) -> Result<Option<Element>> {
        let task = self.start_task(body).await?;
        self.wait_for_task(&task, timeout).await
    }
}

/// The result or fault of a finished `TaskInfo`.
fn task_outcome(task: &MoRef, info: &Element) -> Result<Option<Element>> {
    match info.text_at("state").map(str::trim) {
        Some("success") => Ok(info.get("result").cloned()),
        Some("error") => Err(match info.get("error") {
            Some(e) => fault::from_localized_method_fault(e),
            None => Error::Unexpected(format!("{task} failed without an error")),
        }),
        other => Err(Error::Unexpected(format!(
            "{task} is in unknown state {other:?}"
        ))),
    }
}
