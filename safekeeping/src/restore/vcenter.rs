//! Which vCenter a restore goes into: `--to-vcenter NAME`; else the one `--vcenter NAME`
//! chose; else the vCenter the generation came from, when the configuration has it (by name,
//! then by URL); else the default `[vcenter]`. Placement and network mappings are then checked
//! against the chosen vCenter, since the plan is made with its session.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::restore::{open_shared, RestoreOptions};
use crate::vcenter_origin::VcenterOrigin;

/// The configuration to restore with (its `vcenter` is the target vCenter) and a sentence
/// saying which vCenter that is and why. Reads the repository (blocking).
///
/// # Errors
/// An unknown `--to-vcenter` name (listing the configured ones), the repository, a target
/// not in it.
pub fn choose(
    config: &Config,
    options: &RestoreOptions,
    to_vcenter: Option<&str>,
) -> Result<(Config, String)> {
    let chosen = |name: Option<&str>, why: String| -> Result<(Config, String)> {
        let c = config
            .with_vcenter(name)
            .map_err(|e| Error::Other(format!("--to-vcenter: {e}")))?;
        let said = format!(
            "into vCenter {} ({}): {why}",
            c.vcenter_label(),
            c.vcenter.url
        );
        Ok((c, said))
    };
    if let Some(name) = to_vcenter {
        let name = (name != crate::config::DEFAULT_VCENTER).then_some(name);
        return chosen(name, "--to-vcenter".into());
    }
    if config.vcenter_pinned {
        return chosen(config.vcenter_name.as_deref(), "--vcenter".into());
    }
    let (repo, _lock) = open_shared(config, options)?;
    let (_, manifest) =
        crate::repo::find_target_from(&repo, &options.target, options.from_vcenter.as_deref())?;
    let Some(origin) = VcenterOrigin::recorded(&manifest.target) else {
        return chosen(None, "the generation does not record its vCenter".into());
    };
    // Chosen from the record: the login then checks that the configured vCenter is still
    // the one with the recorded instance uuid.
    let expect = |(mut c, said): (Config, String)| -> Result<(Config, String)> {
        c.expected_vcenter_uuid = Some(origin.instance_uuid.clone()).filter(|u| !u.is_empty());
        Ok((c, said))
    };
    if let Some(name) = origin.name.as_deref() {
        if config.vcenters.contains_key(name) {
            return expect(chosen(
                Some(name),
                "the vCenter the generation came from".into(),
            )?);
        }
    }
    let default = config
        .with_vcenter(None)
        .map_err(|e| Error::Other(e.to_string()))?;
    if origin.name.is_none() && default.vcenter.url == origin.url {
        return expect(chosen(None, "the vCenter the generation came from".into())?);
    }
    if let Some((name, _)) = config.vcenters.iter().find(|(_, v)| v.url == origin.url) {
        return expect(chosen(
            Some(name),
            "the vCenter the generation came from (same URL)".into(),
        )?);
    }
    chosen(
        None,
        format!(
            "the generation came from {}, which the configuration does not have",
            origin.describe()
        ),
    )
}
