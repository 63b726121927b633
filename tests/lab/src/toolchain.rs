//! Building what the lab runs: the Go simulator (cached in `<target>/lab/`) and the fake
//! libvixDiskLib (a workspace cdylib).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use fs2::FileExt;
use sha2::{Digest, Sha256};

/// The Go sources of the simulator, in this package.
const VCSIM_SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vcsim");

/// The directory of this executable (`<target>/debug`), where cargo also puts the fake
/// VDDK library.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the safekeeping-lab executable")?;
    let dir = exe
        .parent()
        .context("the safekeeping-lab executable has no directory")?;
    // Test harnesses run from target/debug/deps.
    if dir.file_name().is_some_and(|n| n == "deps") {
        return Ok(dir.parent().unwrap_or(dir).to_path_buf());
    }
    Ok(dir.to_path_buf())
}

/// The cargo target directory (the parent of the profile directory).
pub fn target_dir() -> Result<PathBuf> {
    let profile = profile_dir()?;
    Ok(profile.parent().unwrap_or(&profile).to_path_buf())
}

/// A hash of the Go sources (names and contents), so a rebuild happens exactly when they
/// change, even when they change while a build runs.
fn sources_hash(dir: &Path) -> Result<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "go") {
            names.push(path);
        }
    }
    names.sort();
    let mut h = Sha256::new();
    for p in names {
        let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    Ok(hex::encode(h.finalize()))
}

/// Returns the simulator binary, building it with `go build` (GOPATH mode against
/// Debian's govmomi) when it is missing or older than its sources. Concurrent callers
/// wait for one build.
pub fn ensure_server() -> Result<PathBuf> {
    let out_dir = target_dir()?.join("lab");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = out_dir.join("lab-vcsim");
    let sources = Path::new(VCSIM_SOURCES);
    if !sources.is_dir() {
        if binary.exists() {
            return Ok(binary);
        }
        bail!(
            "the simulator's Go sources ({}) are missing and {} was never built",
            sources.display(),
            binary.display()
        );
    }
    let lock = File::create(out_dir.join("build.lock"))?;
    lock.lock_exclusive()
        .context("waiting for another lab build")?;
    let stamp = out_dir.join("lab-vcsim.sources");
    let mut hash = sources_hash(sources)?;
    let built_from = fs::read_to_string(&stamp).unwrap_or_default();
    if binary.exists() && built_from.trim() == hash {
        return Ok(binary);
    }
    let go = which("go").context(
        "the Go toolchain is needed to build the lab simulator: install golang-go \
         (bash scripts/setup.sh does)",
    )?;
    let govmomi = Path::new("/usr/share/gocode/src/github.com/vmware/govmomi/simulator");
    if !govmomi.is_dir() {
        bail!(
            "govmomi is missing ({}): install golang-github-vmware-govmomi-dev \
             (bash scripts/setup.sh does)",
            govmomi.display()
        );
    }
    let tmp = out_dir.join(format!("lab-vcsim.tmp{}", std::process::id()));
    let mut gopath = String::from("/usr/share/gocode");
    if let Ok(extra) = std::env::var("GOPATH") {
        if !extra.is_empty() {
            gopath = format!("{gopath}:{extra}");
        }
    }
    eprintln!("safekeeping-lab: building the simulator (go build, once)");
    loop {
        build(&go, sources, &gopath, &out_dir, &tmp)?;
        // Sources edited during the build: build again.
        let after = sources_hash(sources)?;
        if after == hash {
            break;
        }
        hash = after;
    }
    fs::rename(&tmp, &binary).with_context(|| format!("installing {}", binary.display()))?;
    crate::fsutil::write_atomic(&stamp, hash.as_bytes(), 0o644)?;
    Ok(binary)
}

fn build(go: &Path, sources: &Path, gopath: &str, out_dir: &Path, tmp: &Path) -> Result<()> {
    let out = Command::new(go)
        .current_dir(sources)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", out_dir.join("gocache"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .arg("build")
        .arg("-o")
        .arg(tmp)
        .arg(".")
        .output()
        .context("running go build")?;
    if !out.status.success() {
        let _ = fs::remove_file(tmp);
        bail!(
            "go build of the lab simulator failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Finds the fake libvixDiskLib built by cargo (package fake-vixdisklib, library name
/// `vixDiskLib`), building it when it is missing.
pub fn ensure_fake_vddk() -> Result<PathBuf> {
    let lib = profile_dir()?.join("libvixDiskLib.so");
    if lib.exists() {
        return Ok(lib);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "safekeeping-lab: {} is missing; running cargo build -p fake-vixdisklib",
        lib.display()
    );
    let mut cmd = Command::new(cargo);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["build", "-p", "fake-vixdisklib"]);
    if profile_dir()?.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build -p fake-vixdisklib")?;
    if !status.success() || !lib.exists() {
        bail!(
            "the fake VDDK library {} is missing and `cargo build -p fake-vixdisklib` did not \
             produce it",
            lib.display()
        );
    }
    Ok(lib)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
