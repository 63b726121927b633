//! Waiting for tasks.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::fault;
use crate::moref::MoRef;
use crate::xml::Element;

impl Client {
    /// Waits until `task` succeeds or fails, polling its `info` property (every 100 ms at
    /// first, backing off to 2 s). Returns the task's `result` value, if any.
    ///
    /// # Errors
    ///
    /// The task's fault as [`Error::Fault`], [`Error::Timeout`] after `timeout`.
    pub async fn wait_for_task(&self, task: &MoRef, timeout: Duration) -> Result<Option<Element>> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let props = self.object_properties(task, &["info"]).await?;
            let info = props
                .get("info")
                .ok_or_else(|| Error::Unexpected(format!("{task} has no info")))?;
            match info.text_at("state").map(str::trim) {
                Some("success") => return Ok(info.get("result").cloned()),
                Some("error") => {
                    return Err(match info.get("error") {
                        Some(e) => fault::from_localized_method_fault(e),
                        None => Error::Unexpected(format!("{task} failed without an error")),
                    })
                }
                Some("queued" | "running") => {}
                other => {
                    return Err(Error::Unexpected(format!(
                        "{task} is in unknown state {other:?}"
                    )))
                }
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
