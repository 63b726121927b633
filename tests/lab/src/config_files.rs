//! The files `up` writes for the other tools: `safekeeping.toml`, `vddk/vddk.conf` and
//! `lab.json`.

use anyhow::Result;
use serde_json::json;

use crate::fsutil::write_atomic;
use crate::lab_dir::LabDir;
use crate::server::ServerInfo;

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The safekeeping command line's configuration for this lab.
pub fn safekeeping_toml(dir: &LabDir, info: &ServerInfo) -> String {
    let p = |p: std::path::PathBuf| toml_str(&p.to_string_lossy());
    format!(
        "# Written by `safekeeping-lab up`: the lab's vCenter simulator and fake VDDK.\n\
         [vcenter]\n\
         url = {url}\n\
         user = {user}\n\
         password_file = {password}\n\
         thumbprint_sha256 = {sha256}\n\
         # ca_file = {ca} works too (the certificate is valid for 127.0.0.1 and localhost)\n\
         \n\
         [vddk]\n\
         libdir = {libdir}\n\
         config = {conf}\n\
         transports = \"nbdssl:nbd\"\n\
         \n\
         [repository]\n\
         path = {repo}\n\
         \n\
         [defaults]\n\
         parallel = 2\n\
         max_vddk_connections = 8\n\
         lock_wait_seconds = 60\n",
        url = toml_str(&info.url),
        user = toml_str(&info.user),
        password = p(dir.password()),
        sha256 = toml_str(&info.thumbprint_sha256),
        ca = p(dir.cert()),
        libdir = p(dir.vddk()),
        conf = p(dir.vddk_conf()),
        repo = p(dir.repo()),
    )
}

/// The fake VDDK's configuration: datastores, credentials and the certificate's SHA-1
/// thumbprint. Tests append fault-injection keys to it.
pub fn vddk_conf(dir: &LabDir, info: &ServerInfo) -> String {
    let mut s = String::from("# Written by `safekeeping-lab up` for the fake libvixDiskLib.\n");
    for (name, path) in &info.inventory.datastores {
        s.push_str(&format!("fake.datastore.{name} = {path}\n"));
    }
    s.push_str(&format!("fake.user = {}\n", info.user));
    s.push_str(&format!(
        "fake.password_file = {}\n",
        dir.password().display()
    ));
    s.push_str(&format!("fake.thumbprint = {}\n", info.thumbprint_sha1));
    // safekeeping hands VDDK its vCenter session, never the password (see connection.rs of
    // the fake for what it checks of the session).
    s.push_str("fake.cookie_accept = true\n");
    s.push_str(&format!(
        "fake.sessions_file = {}\n",
        dir.lab_state().join("sessions").display()
    ));
    s.push_str(&format!(
        "fake.stats_file = {}\n",
        dir.vddk_stats().display()
    ));
    s
}

/// `lab.json`: everything a test needs to know about the lab.
pub fn lab_json(dir: &LabDir, info: &ServerInfo) -> serde_json::Value {
    json!({
        "dir": dir.root(),
        "url": info.url,
        "port": info.port,
        "pid": info.pid,
        "user": info.user,
        "password_file": dir.password(),
        "ca_file": dir.cert(),
        "thumbprint_sha1": info.thumbprint_sha1,
        "thumbprint_sha256": info.thumbprint_sha256,
        "datacenter": info.inventory.datacenter,
        "cluster": info.inventory.cluster,
        "hosts": info.inventory.hosts,
        "pool": info.inventory.pool,
        "vm_folder": info.inventory.vm_folder,
        "vm_folder_moref": info.inventory.vm_folder_moref,
        "pool_moref": info.inventory.pool_moref,
        "datastores": info.inventory.datastores,
        "datastore_morefs": info.inventory.datastore_morefs,
        "networks": info.inventory.networks,
        "dv_portgroups": info.inventory.dv_portgroups,
        "vddk_libdir": dir.vddk(),
        "vddk_config": dir.vddk_conf(),
        "vddk_stats": dir.vddk_stats(),
        "safekeeping_toml": dir.safekeeping_toml(),
        "repository": dir.repo(),
        "log": dir.log(),
        "change_log": dir.lab_state().join("cbt.json"),
    })
}

/// Writes all three files.
pub fn write_all(dir: &LabDir, info: &ServerInfo) -> Result<()> {
    write_atomic(&dir.vddk_conf(), vddk_conf(dir, info).as_bytes(), 0o644)?;
    write_atomic(
        &dir.safekeeping_toml(),
        safekeeping_toml(dir, info).as_bytes(),
        0o644,
    )?;
    let json = serde_json::to_vec_pretty(&lab_json(dir, info))?;
    write_atomic(&dir.lab_json(), &json, 0o644)
}

#[cfg(test)]
mod tests {
    use super::toml_str;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_str("x\u{1}"), "\"x\\u0001\"");
    }
}
