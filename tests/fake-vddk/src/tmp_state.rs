//! What a run leaves behind for `VixDiskLib_Cleanup`, like the real library's hot-added disks
//! and its files in `tmpDirectory`.
//!
//! Every disk opened over a remote connection gets a marker file
//! `<tmpDirectory>/fake-vddk-state/<pid>-<n>.json` (the fake's stand-in for a disk hot-added
//! to the backup appliance); Close removes it. A process that is killed leaves its markers,
//! and Cleanup for the same server removes those whose process is gone (counted as cleaned
//! up) and leaves those of running processes (counted as remaining).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn folder(tmp: &Path) -> PathBuf {
    tmp.join("fake-vddk-state")
}

/// Writes a marker for a disk just opened; returns its path (removed at Close).
pub fn create(
    tmp: &Path,
    server: &str,
    vmx_spec: Option<&str>,
    disk: &str,
    transport: &str,
) -> std::io::Result<PathBuf> {
    let dir = folder(tmp);
    std::fs::create_dir_all(&dir)?;
    let pid = std::process::id();
    let path = dir.join(format!(
        "{pid}-{}.json",
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let text = json!({"pid": pid, "server": server, "vmx_spec": vmx_spec, "disk": disk,
                      "transport": transport})
    .to_string();
    let tmp_file = path.with_extension("tmp");
    std::fs::write(&tmp_file, text)?;
    std::fs::rename(&tmp_file, &path)?;
    Ok(path)
}

/// Whether process `pid` exists.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes markers for `server` left by processes that are gone; returns
/// `(cleaned up, remaining)`.
pub fn cleanup(tmp: &Path, server: &str) -> std::io::Result<(u32, u32)> {
    let dir = folder(tmp);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut cleaned, mut remaining) = (0u32, 0u32);
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["server"] != server {
            continue;
        }
        let pid = v["pid"].as_i64().and_then(|p| i32::try_from(p).ok());
        match pid {
            Some(pid) if alive(pid) => remaining += 1,
            _ => {
                std::fs::remove_file(&path)?;
                cleaned += 1;
            }
        }
    }
    Ok((cleaned, remaining))
}
