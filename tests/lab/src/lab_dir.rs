//! The lab directory and the files in it.

use std::path::{Path, PathBuf};

/// A lab directory (`--dir`): every file the lab writes lives under it.
#[derive(Debug, Clone)]
pub struct LabDir {
    root: PathBuf,
}

impl LabDir {
    /// A lab directory at `root`, made absolute.
    pub fn new(root: &Path) -> std::io::Result<LabDir> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()?.join(root)
        };
        Ok(LabDir { root })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lab password (mode 0600, no trailing newline).
    pub fn password(&self) -> PathBuf {
        self.root.join("password")
    }

    /// The server's certificate (PEM), written by the server.
    pub fn cert(&self) -> PathBuf {
        self.root.join("lab-cert.pem")
    }

    /// What the server reports once it listens: port, thumbprints, inventory.
    pub fn server_info(&self) -> PathBuf {
        self.root.join("lab-server.json")
    }

    /// The server's process id.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("vcsim.pid")
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.root.join("vcsim.log")
    }

    /// The configuration for the safekeeping command line.
    pub fn safekeeping_toml(&self) -> PathBuf {
        self.root.join("safekeeping.toml")
    }

    /// The machine-readable description of the lab.
    pub fn lab_json(&self) -> PathBuf {
        self.root.join("lab.json")
    }

    /// The fake VDDK's directory (`libdir`).
    pub fn vddk(&self) -> PathBuf {
        self.root.join("vddk")
    }

    /// The fake VDDK's configuration file.
    pub fn vddk_conf(&self) -> PathBuf {
        self.vddk().join("vddk.conf")
    }

    /// The fake VDDK library.
    pub fn vddk_lib(&self) -> PathBuf {
        self.vddk().join("lib64").join("libvixDiskLib.so.8")
    }

    /// Where the fake VDDK appends its statistics.
    pub fn vddk_stats(&self) -> PathBuf {
        self.root.join("vddk-stats.jsonl")
    }

    /// The datastores' directories live under here.
    pub fn datastores(&self) -> PathBuf {
        self.root.join("datastores")
    }

    /// The simulator's saved state (`cbt.json`, the change-tracking log).
    pub fn lab_state(&self) -> PathBuf {
        self.root.join("lab-state")
    }

    /// The safekeeping repository of the lab configuration.
    pub fn repo(&self) -> PathBuf {
        self.root.join("repo")
    }
}
