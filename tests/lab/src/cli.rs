//! The command line: one function per subcommand.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::admin::Admin;
use crate::lab_dir::LabDir;
use crate::size::parse_size;
use crate::{config_files, digest, fsutil, s3, server, toolchain, tools};

/// Starts and drives the safekeeping test lab (vCenter simulator + fake VDDK).
#[derive(Parser, Debug)]
#[command(name = "safekeeping-lab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Builds what is needed, starts the simulator and writes DIR/safekeeping.toml.
    Up {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stops the simulator and removes the lab's files.
    Down {
        #[arg(long)]
        dir: PathBuf,
        /// Keep DIR/repo (the safekeeping repository) instead of deleting it.
        #[arg(long)]
        keep_repo: bool,
    },
    /// Shows whether the lab is up, and its VMs (JSON).
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Creates a powered-on VM with thin disks and NICs; prints its moref.
    CreateVm {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        /// Disk size (64M, 2G, 1T); repeat for more disks.
        #[arg(long = "disk", required = true, value_parser = parse_size)]
        disks: Vec<u64>,
        /// Network name; repeat for more NICs.
        #[arg(long = "nic")]
        nics: Vec<String>,
        /// Datastore for the VM's folder and disks (default datastore1).
        #[arg(long)]
        datastore: Option<String>,
        /// SCSI controller: pvscsi, lsilogic, lsilogic-sas or buslogic.
        #[arg(long, default_value = "pvscsi")]
        controller: String,
        /// NIC type: vmxnet3, e1000 or e1000e.
        #[arg(long, default_value = "vmxnet3")]
        nic_type: String,
        /// Guest id (otherGuest64, ubuntu64Guest, ...).
        #[arg(long, default_value = "otherGuest64")]
        guest_id: String,
        /// Firmware: bios or efi.
        #[arg(long, default_value = "bios")]
        firmware: String,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        #[arg(long, default_value_t = 1024)]
        memory_mb: u64,
        /// Leave the VM powered off.
        #[arg(long)]
        powered_off: bool,
        /// Make disk N (0-based) independent_persistent, which snapshots do not freeze;
        /// repeatable.
        #[arg(long = "independent-disk", value_name = "N")]
        independent_disks: Vec<usize>,
    },
    /// Writes deterministic data (or zeros) into a VM's current disk, as the guest would.
    GuestWrite {
        #[arg(long)]
        dir: PathBuf,
        /// VM name or moref; needs --disk.
        #[arg(long, required_unless_present = "path", requires = "disk")]
        vm: Option<String>,
        /// Disk index, 0-based, in device order.
        #[arg(long)]
        disk: Option<usize>,
        /// Any disk by datastore path instead (first class disks): "[ds] fcd/ID.vmdk".
        #[arg(long, conflicts_with_all = ["vm", "disk"])]
        path: Option<String>,
        #[arg(long, value_parser = parse_size)]
        offset: u64,
        /// Bytes to write (with --from-file: default the whole file).
        #[arg(long, value_parser = parse_size, required_unless_present = "from_file")]
        len: Option<u64>,
        /// Seed of the generator (see docs/lab.md).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write zeros instead of the generator's bytes.
        #[arg(long)]
        zero: bool,
        /// Write this file's bytes (e.g. a file system image built by a test) instead.
        #[arg(long, conflicts_with = "zero")]
        from_file: Option<PathBuf>,
    },
    /// Prints the SHA-256 of a disk's whole logical content, read from its files.
    DiskDigest {
        #[arg(long)]
        dir: PathBuf,
        /// VM name (any VM, restored ones included); needs --disk.
        #[arg(long, conflicts_with = "path", requires = "disk")]
        vm: Option<String>,
        /// Disk index, 0-based, in device order.
        #[arg(long)]
        disk: Option<usize>,
        /// A datastore path, "[datastore1] folder/disk.vmdk".
        #[arg(long)]
        path: Option<String>,
        /// Hash in this process instead of asking the simulator (whose SHA-256 uses the
        /// CPU's SHA instructions and is much faster on big disks).
        #[arg(long)]
        local: bool,
    },
    /// Moves a VM in the inventory, creating what is missing: a nested VM folder, a cluster
    /// (with one host of its own), nested resource pools; prints its folder, pool and host
    /// (JSON).
    PlaceVm {
        #[arg(long)]
        dir: PathBuf,
        /// VM name or moref.
        #[arg(long)]
        vm: String,
        /// Folder path below the datacenter's VM folder (`prod/web`).
        #[arg(long)]
        folder: Option<String>,
        /// Cluster to move the VM to (its root pool and first host).
        #[arg(long)]
        cluster: Option<String>,
        /// Resource pool path below the cluster's root pool (`gold/db`).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Prints a VM's moref, uuids, power state, disks, NICs and snapshots (JSON).
    VmInfo {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        vm: String,
    },
    /// Powers a VM on or off.
    Power {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        vm: String,
        #[arg(value_enum)]
        state: PowerState,
    },
    /// Creates a vApp with one powered-off child VM per --vm (start order = argument order);
    /// prints the vApp's moref.
    CreateVapp {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        /// NAME:SIZE[,SIZE...], e.g. db:64M,1G; repeat for more VMs, in start order.
        #[arg(long = "vm", required = true, value_parser = parse_vapp_vm)]
        vms: Vec<VAppVm>,
        /// Datastore for the VMs (default datastore1).
        #[arg(long)]
        datastore: Option<String>,
        /// Power the vApp on afterwards (children in start order).
        #[arg(long)]
        power_on: bool,
    },
    /// Prints a vApp's children in start order, its products, properties and the order of
    /// the last power operations (JSON).
    VappInfo {
        #[arg(long)]
        dir: PathBuf,
        /// vApp name or moref.
        #[arg(long)]
        vapp: String,
    },
    /// Powers a vApp on (children in start order) or off (reverse order); prints the order.
    PowerVapp {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        vapp: String,
        #[arg(value_enum)]
        state: PowerState,
    },
    /// Creates a tag category and tag (when missing) and attaches the tag to an object.
    Tag {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        category: String,
        #[arg(long)]
        tag: String,
        /// vm:NAME, vapp:NAME or ivd:ID (a first class disk); omit to only create.
        #[arg(long)]
        attach: Option<String>,
    },
    /// The S3 lab: a SeaweedFS cluster on loopback (docs/lab.md, "The S3 lab").
    S3 {
        #[command(subcommand)]
        cmd: s3::S3Cmd,
    },
    /// Prints the path of a program the lab uses (SeaweedFS's weed, the venv's Python).
    Which {
        #[arg(value_enum)]
        tool: Tool,
    },
    /// Associates a storage policy (by name) with a VM's home or, with --disk, one of its
    /// disks, as vCenter's SPBM keeps it (DIR/pbm-associations.json lists them).
    SetPolicy {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        vm: String,
        /// Disk position (from 0); omit for the VM home.
        #[arg(long)]
        disk: Option<usize>,
        #[arg(long)]
        policy: String,
    },
    /// Makes a VM look encrypted (config.keyId with the lab's key provider) and/or gives it a
    /// virtual TPM device; vcsim has neither.
    SecureVm {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        vm: String,
        #[arg(long)]
        encrypted: bool,
        #[arg(long)]
        vtpm: bool,
    },
    /// Shows or sets the simulator's fault-injection knobs (JSON).
    Knobs {
        #[arg(long)]
        dir: PathBuf,
        /// Make CreateSnapshot with quiesce fail (ApplicationQuiesceFault).
        #[arg(long)]
        fail_quiesced_snapshots: Option<bool>,
        /// Areas per QueryChangedDiskAreas reply (0 = unlimited).
        #[arg(long)]
        max_changed_areas: Option<u32>,
        /// Privilege ids HasPrivilegeOnEntities reports as not granted, comma-separated
        /// (an empty value grants everything again).
        #[arg(long, value_name = "PRIV,...")]
        deny_privileges: Option<String>,
    },
}

/// One `--vm NAME:SIZE[,SIZE...]` of create-vapp.
#[derive(Clone, Debug)]
struct VAppVm {
    name: String,
    disks: Vec<u64>,
}

fn parse_vapp_vm(s: &str) -> Result<VAppVm, String> {
    let (name, sizes) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME:SIZE[,SIZE...], e.g. db:64M,1G"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: the VM name is empty"));
    }
    let disks = sizes
        .split(',')
        .map(parse_size)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VAppVm {
        name: name.to_string(),
        disks,
    })
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Tool {
    /// SeaweedFS's weed.
    Weed,
    /// The lab venv's Python (with pyVmomi).
    Python,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PowerState {
    On,
    Off,
}

/// Runs one subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up { dir } => up(&LabDir::new(&dir)?),
        Cmd::Down { dir, keep_repo } => down(&LabDir::new(&dir)?, keep_repo),
        Cmd::Status { dir } => status(&LabDir::new(&dir)?),
        Cmd::CreateVm {
            dir,
            name,
            disks,
            nics,
            datastore,
            controller,
            nic_type,
            guest_id,
            firmware,
            cpus,
            memory_mb,
            powered_off,
            independent_disks,
        } => {
            let dir = LabDir::new(&dir)?;
            let body = json!({
                "independent_disks": independent_disks,
                "name": name, "disks": disks, "nics": nics, "datastore": datastore.unwrap_or_default(),
                "controller": controller, "nic_type": nic_type, "guest_id": guest_id,
                "firmware": firmware, "cpus": cpus, "memory_mb": memory_mb, "power_on": !powered_off,
            });
            let res = admin(&dir)?.post("create-vm", &body)?;
            println!("{}", str_field(&res, "moref")?);
            Ok(())
        }
        Cmd::GuestWrite {
            dir,
            vm,
            disk,
            path,
            offset,
            len,
            seed,
            zero,
            from_file,
        } => {
            let dir = LabDir::new(&dir)?;
            let from_file = match from_file {
                Some(f) => Some(
                    std::fs::canonicalize(&f)
                        .with_context(|| format!("--from-file {}", f.display()))?,
                ),
                None => None,
            };
            let len = match (len, &from_file) {
                (Some(l), _) => l,
                (None, Some(f)) => std::fs::metadata(f)?.len(),
                (None, None) => bail!("--len is needed"),
            };
            let body = json!({
                "vm": vm.unwrap_or_default(), "disk": disk.unwrap_or_default(),
                "path": path.unwrap_or_default(), "offset": offset, "len": len, "seed": seed, "zero": zero,
                "from_file": from_file.map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            });
            admin(&dir)?.post("guest-write", &body)?;
            Ok(())
        }
        Cmd::DiskDigest {
            dir,
            vm,
            disk,
            path,
            local,
        } => {
            let dir = LabDir::new(&dir)?;
            let query: Vec<(&str, String)> = match (&vm, disk, &path) {
                (Some(vm), Some(disk), None) => {
                    vec![("vm", vm.clone()), ("disk", disk.to_string())]
                }
                (None, _, Some(p)) => vec![("path", p.clone())],
                _ => bail!("give either --vm NAME --disk N or --path \"[ds] folder/disk.vmdk\""),
            };
            let server_up = server::read_pid(&dir)?.is_some_and(server::is_lab_server);
            let digest = if !local && server_up {
                let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let res = admin(&dir)?.get("disk-digest", &q)?;
                str_field(&res, "sha256")?.to_string()
            } else {
                let file = match (vm, disk, path) {
                    (Some(vm), Some(disk), None) => disk_local_path(&dir, &vm, disk)?,
                    (_, _, Some(p)) => datastore_local_path(&dir, &p)?,
                    _ => bail!("give either --vm NAME --disk N or --path"),
                };
                digest::disk_digest(&file)?.0
            };
            println!("{digest}");
            Ok(())
        }
        Cmd::PlaceVm {
            dir,
            vm,
            folder,
            cluster,
            pool,
        } => {
            let dir = LabDir::new(&dir)?;
            let body = json!({
                "vm": vm, "folder": folder.unwrap_or_default(),
                "cluster": cluster.unwrap_or_default(), "pool": pool.unwrap_or_default(),
            });
            let res = admin(&dir)?.post("place-vm", &body)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::VmInfo { dir, vm } => {
            let dir = LabDir::new(&dir)?;
            let res = admin(&dir)?.get("vm-info", &[("vm", &vm)])?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::Power { dir, vm, state } => {
            let dir = LabDir::new(&dir)?;
            let state = match state {
                PowerState::On => "on",
                PowerState::Off => "off",
            };
            admin(&dir)?.post("power", &json!({"vm": vm, "state": state}))?;
            Ok(())
        }
        Cmd::CreateVapp {
            dir,
            name,
            vms,
            datastore,
            power_on,
        } => {
            let dir = LabDir::new(&dir)?;
            let vms: Vec<Value> = vms
                .iter()
                .map(|v| json!({"name": v.name, "disks": v.disks}))
                .collect();
            let body = json!({
                "name": name, "vms": vms, "datastore": datastore.unwrap_or_default(),
                "power_on": power_on,
            });
            let res = admin(&dir)?.post("create-vapp", &body)?;
            println!("{}", str_field(&res, "moref")?);
            Ok(())
        }
        Cmd::VappInfo { dir, vapp } => {
            let dir = LabDir::new(&dir)?;
            let res = admin(&dir)?.get("vapp-info", &[("vapp", &vapp)])?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::PowerVapp { dir, vapp, state } => {
            let dir = LabDir::new(&dir)?;
            let state = match state {
                PowerState::On => "on",
                PowerState::Off => "off",
            };
            let res = admin(&dir)?.post("vapp-power", &json!({"vapp": vapp, "state": state}))?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::Tag {
            dir,
            category,
            tag,
            attach,
        } => {
            let dir = LabDir::new(&dir)?;
            let body =
                json!({"category": category, "tag": tag, "attach": attach.unwrap_or_default()});
            let res = admin(&dir)?.post("tag", &body)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::SetPolicy {
            dir,
            vm,
            disk,
            policy,
        } => {
            let dir = LabDir::new(&dir)?;
            let disk = disk.map_or(-1, |d| d as i64);
            let body = json!({"vm": vm, "disk": disk, "policy": policy});
            let res = admin(&dir)?.post("set-policy", &body)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::SecureVm {
            dir,
            vm,
            encrypted,
            vtpm,
        } => {
            let dir = LabDir::new(&dir)?;
            let body = json!({"vm": vm, "encrypted": encrypted, "vtpm": vtpm});
            let res = admin(&dir)?.post("secure-vm", &body)?;
            println!("{}", serde_json::to_string_pretty(&res)?);
            Ok(())
        }
        Cmd::S3 { cmd } => s3::run(cmd),
        Cmd::Which { tool } => {
            let path = match tool {
                Tool::Weed => tools::weed()?,
                Tool::Python => tools::python()?,
            };
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Knobs {
            dir,
            fail_quiesced_snapshots,
            max_changed_areas,
            deny_privileges,
        } => {
            let dir = LabDir::new(&dir)?;
            let a = admin(&dir)?;
            let mut knobs = a.get("knobs", &[])?;
            if fail_quiesced_snapshots.is_some()
                || max_changed_areas.is_some()
                || deny_privileges.is_some()
            {
                if let Some(v) = fail_quiesced_snapshots {
                    knobs["fail_quiesced_snapshots"] = json!(v);
                }
                if let Some(v) = max_changed_areas {
                    knobs["max_changed_areas"] = json!(v);
                }
                if let Some(v) = &deny_privileges {
                    let denied: Vec<&str> = v.split(',').filter(|p| !p.is_empty()).collect();
                    knobs["denied_privileges"] = json!(denied);
                }
                knobs = a.post("knobs", &knobs)?;
            }
            println!("{}", serde_json::to_string_pretty(&knobs)?);
            Ok(())
        }
    }
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .with_context(|| format!("the lab's answer has no {name}: {v}"))
}

fn admin(dir: &LabDir) -> Result<Admin> {
    let info = server::read_info(dir)?;
    Admin::open(dir, &info)
}

fn disk_local_path(dir: &LabDir, vm: &str, disk: usize) -> Result<PathBuf> {
    let info = admin(dir)?.get("vm-info", &[("vm", vm)])?;
    let disks = info
        .get("disks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(d) = disks.get(disk) else {
        bail!(
            "VM {vm} has {} disks; disk {disk} does not exist",
            disks.len()
        );
    };
    Ok(PathBuf::from(str_field(d, "local_path")?))
}

/// Resolves `"[ds] folder/file"` to a local file with the lab's datastore directories.
fn datastore_local_path(dir: &LabDir, ds_path: &str) -> Result<PathBuf> {
    let info = server::read_info(dir)?;
    let rest = ds_path.trim().strip_prefix('[').with_context(|| {
        format!("{ds_path:?} is not a datastore path like \"[ds] folder/disk.vmdk\"")
    })?;
    let (ds, file) = rest
        .split_once(']')
        .with_context(|| format!("{ds_path:?} has no closing ]"))?;
    let root = info
        .inventory
        .datastores
        .get(ds)
        .with_context(|| format!("the lab has no datastore {ds:?}"))?;
    let file = file.trim();
    if file.is_empty() || file.split('/').any(|c| c == "..") {
        bail!("{ds_path:?} does not name a file inside the datastore");
    }
    Ok(PathBuf::from(root).join(file))
}

fn up(dir: &LabDir) -> Result<()> {
    fs::create_dir_all(dir.root()).with_context(|| format!("creating {}", dir.root().display()))?;
    if let Some(pid) = server::read_pid(dir)? {
        if server::is_lab_server(pid) {
            bail!(
                "a lab is already up in {} (simulator pid {pid}); run `safekeeping-lab down --dir {}` first",
                dir.root().display(),
                dir.root().display()
            );
        }
        // A stale pid file from a lab that died: start afresh.
        let _ = fs::remove_file(dir.pid_file());
    }
    // A new simulator has an empty inventory: files of an earlier lab's VMs would sit in
    // its datastores unknown to it and collide with new VMs' folders.
    let leftovers = fs::read_dir(dir.datastores())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|ds| fs::read_dir(ds.path()).is_ok_and(|mut d| d.next().is_some()))
        })
        .unwrap_or(false);
    if leftovers {
        bail!(
            "{} holds the datastores of an earlier lab that is no longer running; run \
             `safekeeping-lab down --dir {}` to remove them first",
            dir.root().display(),
            dir.root().display()
        );
    }
    let binary = toolchain::ensure_server()?;
    let lib = toolchain::ensure_fake_vddk()?;

    let mut secret = [0u8; 18];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
        .context("reading /dev/urandom for the lab password")?;
    fsutil::write_atomic(&dir.password(), hex::encode(secret).as_bytes(), 0o600)?;

    fs::create_dir_all(dir.vddk_lib().parent().expect("lib64 has a parent"))?;
    let lib_bytes = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
    fsutil::write_atomic(&dir.vddk_lib(), &lib_bytes, 0o755)?;
    fs::create_dir_all(dir.repo().parent().expect("repo has a parent"))?;

    let info = server::start(dir, &binary)?;
    // The server answers its admin endpoint before we hand the lab over.
    let admin = Admin::open(dir, &info)?;
    admin.get("status", &[]).with_context(|| {
        format!(
            "the simulator started but does not answer; log:\n{}",
            server::log_tail(dir)
        )
    })?;
    config_files::write_all(dir, &info)?;
    println!("{}", dir.safekeeping_toml().display());
    eprintln!(
        "safekeeping-lab: up at {} (pid {}); lab description in {}",
        info.url,
        info.pid,
        dir.lab_json().display()
    );
    Ok(())
}

fn down(dir: &LabDir, keep_repo: bool) -> Result<()> {
    if let Some(pid) = server::read_pid(dir)? {
        if server::is_lab_server(pid) {
            // Ask politely, then SIGTERM, then SIGKILL.
            if let Ok(a) = admin(dir) {
                let _ = a.post("shutdown", &json!({}));
            }
            if !server::wait_gone(pid, Duration::from_secs(3)) {
                server::signal(pid, "TERM")?;
                if !server::wait_gone(pid, Duration::from_secs(5)) {
                    server::signal(pid, "KILL")?;
                    if !server::wait_gone(pid, Duration::from_secs(5)) {
                        bail!("the simulator (pid {pid}) does not stop");
                    }
                }
            }
        }
    }
    let files = [
        dir.safekeeping_toml(),
        dir.lab_json(),
        dir.server_info(),
        dir.password(),
        dir.cert(),
        dir.vddk_stats(),
        dir.log(),
        dir.pid_file(),
    ];
    for f in files {
        match fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
        }
    }
    let mut dirs = vec![dir.vddk(), dir.datastores(), dir.lab_state()];
    if !keep_repo {
        dirs.push(dir.repo());
    }
    for d in dirs {
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", d.display())),
        }
    }
    // The directory itself goes when nothing else is left in it.
    let _ = fs::remove_dir(dir.root());
    Ok(())
}

fn status(dir: &LabDir) -> Result<()> {
    let pid = server::read_pid(dir)?;
    let running = pid.is_some_and(server::is_lab_server);
    let mut out = json!({"dir": dir.root(), "up": running, "pid": pid});
    if running {
        let info = server::read_info(dir)?;
        out["url"] = json!(info.url);
        out["lab"] = admin(dir)?.get("status", &[])?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !running {
        bail!("no lab is up in {}", dir.root().display());
    }
    Ok(())
}
