//! Waiting for property changes with `WaitForUpdatesEx` on a private property collector.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::property::{object_spec, property_spec};
use crate::xml::Element;

/// A property collector created for one waiter and destroyed afterwards, so concurrent waits
/// never see each other's filters.
pub(crate) struct PrivateCollector<'a> {
    client: &'a Client,
    collector: MoRef,
}

impl<'a> PrivateCollector<'a> {
    pub(crate) async fn create(
        client: &'a Client,
        obj: &MoRef,
        path: &str,
    ) -> Result<PrivateCollector<'a>> {
        let root = client.service_content().property_collector.clone();
        let response = client
            .call(Element::vim("CreatePropertyCollector").child(root.to_element("_this")))
            .await?;
        let collector = response
            .get("returnval")
            .ok_or_else(|| Error::Unexpected("CreatePropertyCollector returned nothing".into()))
            .and_then(MoRef::from_element)?;
        let this = PrivateCollector { client, collector };
        let spec = Element::vim("spec")
            .child(property_spec(&obj.kind, &[path]))
            .child(object_spec(obj, false, Vec::new()));
        let filter = Element::vim("CreateFilter")
            .child(this.collector.to_element("_this"))
            .child(spec)
            .text_child("partialUpdates", "false");
        if let Err(e) = client.call(filter).await {
            this.destroy().await;
            return Err(e);
        }
        Ok(this)
    }

    pub(crate) async fn destroy(self) {
        let body =
            Element::vim("DestroyPropertyCollector").child(self.collector.to_element("_this"));
        if let Err(e) = self.client.call(body).await {
            tracing::debug!(collector = %self.collector, error = %e, "cannot destroy property collector");
        }
    }
}

impl Client {
    /// Waits until property `path` of `obj` satisfies `done`, using `WaitForUpdatesEx` on a
    /// private property collector. Returns the satisfying value.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`; faults (for example `ManagedObjectNotFound`).
    pub async fn wait_for_property<F>(
        &self,
        obj: &MoRef,
        path: &str,
        timeout: Duration,
        mut done: F,
    ) -> Result<Element>
    where
        F: FnMut(&Element) -> bool,
    {
        let collector = PrivateCollector::create(self, obj, path).await?;
        let result = self
            .wait_on(&collector, obj, path, timeout, &mut done)
            .await;
        collector.destroy().await;
        result
    }

    /// Waits on a collector made by [`PrivateCollector::create`] for `obj` and `path`.
    pub(crate) async fn wait_on(
        &self,
        collector: &PrivateCollector<'_>,
        obj: &MoRef,
        path: &str,
        timeout: Duration,
        done: &mut dyn FnMut(&Element) -> bool,
    ) -> Result<Element> {
        let collector = &collector.collector;
        let started = Instant::now();
        let mut version = String::new();
        // Leave room under the per-call HTTP timeout for the server's answer.
        let longest = self
            .call_timeout()
            .saturating_sub(Duration::from_secs(5))
            .max(Duration::from_secs(1));
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    what: format!("{path} of {obj}"),
                    after: timeout,
                });
            }
            let wait = remaining.min(longest).as_secs().max(1);
            let body = Element::vim("WaitForUpdatesEx")
                .child(collector.to_element("_this"))
                .text_child("version", version.clone())
                .child(Element::vim("options").text_child("maxWaitSeconds", wait.to_string()));
            let response = self.call(body).await?;
            let Some(update_set) = response.get("returnval") else {
                continue; // maxWaitSeconds passed without a change
            };
            version = update_set.text_at("version").unwrap_or_default().to_owned();
            for filter in update_set.all("filterSet") {
                for object in filter.all("objectSet") {
                    if object.text_at("kind") == Some("leave") {
                        return Err(Error::Fault {
                            kind: crate::FaultKind::ManagedObjectNotFound,
                            fault_string: format!("{obj} was deleted while waiting"),
                            detail_xml: None,
                        });
                    }
                    for change in object.all("changeSet") {
                        if change.text_at("name") != Some(path) {
                            continue;
                        }
                        if let Some(val) = change.get("val") {
                            if done(val) {
                                return Ok(val.clone());
                            }
                        }
                    }
                }
            }
        }
    }
}
