//! The command line, parsed once by clap into these structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::target::Target;

/// Backup and restore of VMware vSphere virtual machines.
#[derive(Debug, Parser)]
#[command(name = "safekeeping", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: $XDG_CONFIG_HOME/safekeeping/config.toml).
    #[arg(long, global = true, env = "SAFEKEEPING_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// File holding the repository passphrase (overrides `[repository] passphrase_file`;
    /// `SAFEKEEPING_PASSPHRASE` takes precedence). Never the passphrase itself.
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Also write log lines to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// More log output (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Repository maintenance: init, reindex.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Back up one or more targets.
    Backup(BackupArgs),
    /// Restore a target as a new VM (or over an existing one).
    Restore(RestoreArgs),
    /// List targets and their generations.
    List(ListArgs),
    /// Show one generation: disks, sizes, change ids, VM metadata.
    Show(ShowArgs),
    /// Verify the repository (add --read-data to read and hash every chunk, --repair to move
    /// damaged chunks to quarantine/ so the next full backup stores them again).
    Check(CheckArgs),
    /// Forget generations by a retention policy.
    Prune(PruneArgs),
    /// Delete chunks no generation references.
    Gc,
    /// Write one disk of a generation to a sparse raw image file.
    Export(ExportArgs),
    /// Serve one disk of a generation over NBD (read-only, or writes into --overlay) until
    /// Ctrl-C: boot it under QEMU/KVM, convert it, mount it, without restoring first.
    Serve(ServeArgs),
    /// List partitions and files of a backed-up disk, or extract files, without restoring it.
    #[command(subcommand)]
    Files(FilesCommand),
}

/// `files` subcommands.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Without --partition: the disk's partitions. With it: the folder PATH (default `/`).
    Ls(FilesLsArgs),
    /// Extract files and folders (with names, modes, mtimes, symlinks) into --output.
    Get(FilesGetArgs),
}

/// Which disk and file system `files` reads.
#[derive(Debug, Args)]
pub struct FilesSource {
    /// The target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Generation (default: the latest successful one).
    #[arg(long, value_name = "N")]
    pub generation: Option<u64>,
    /// Disk number (from 0, in the order `show` lists them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub disk: u32,
    /// Partition number as Linux numbers them (1, 2, ... ; logical MBR partitions from 5;
    /// 0 = a file system on the whole disk).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
}

/// `files ls`
#[derive(Debug, Args)]
pub struct FilesLsArgs {
    /// Disk and partition.
    #[command(flatten)]
    pub source: FilesSource,
    /// Folder (or file) in the guest file system.
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Mode, size and modification time too.
    #[arg(short, long)]
    pub long: bool,
}

/// `files get`
#[derive(Debug, Args)]
pub struct FilesGetArgs {
    /// Disk and partition.
    #[command(flatten)]
    pub source: FilesSource,
    /// Files or folders in the guest file system.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<String>,
    /// Folder to write them into (created if missing).
    #[arg(long, short, value_name = "DIR")]
    pub output: PathBuf,
    /// Replace files that exist in DIR.
    #[arg(long)]
    pub overwrite: bool,
}

/// `repo` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create an empty repository at the configured path.
    Init(InitArgs),
    /// Rebuild the repository's catalog from its manifests.
    Reindex,
    /// Key files of an encrypted repository: list, add, passwd, export, remove.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// `repo key` subcommands. The current passphrase comes from `SAFEKEEPING_PASSPHRASE` or the
/// passphrase file; a new one from `--new-passphrase-file` or `SAFEKEEPING_NEW_PASSPHRASE`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files.
    List,
    /// Add a key file wrapping the same keys under a new passphrase.
    Add(NewPassphraseArgs),
    /// Change the passphrase of the key file the current passphrase opens.
    Passwd(NewPassphraseArgs),
    /// Print (or write) the key file the current passphrase opens, to keep offline.
    Export(KeyExportArgs),
    /// Remove a key file (never the last one).
    Remove(KeyRemoveArgs),
}

/// Where `repo key add` / `passwd` read the new passphrase.
#[derive(Debug, Args)]
pub struct NewPassphraseArgs {
    /// File holding the new passphrase (else `SAFEKEEPING_NEW_PASSPHRASE`).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

/// `repo key export`
#[derive(Debug, Args)]
pub struct KeyExportArgs {
    /// Write the key file here (created with mode 600; must not exist) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `repo key remove`
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The key id (from `repo key list`).
    pub id: String,
}

/// `repo init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Encrypt everything stored (AES-256-GCM) under the configured passphrase.
    #[arg(long)]
    pub encrypt: bool,
    /// Encryption: `none` or `aes-256-gcm` (the same as --encrypt).
    #[arg(long, value_name = "MODE", conflicts_with = "encrypt")]
    pub encryption: Option<repository_format::EncryptionMode>,
}

/// `backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Targets: vm:NAME, vm:vm-123, vm:UUID, vm:DC/vm/folder/NAME, ivd:NAME, ivd:ID,
    /// tag:[CATEGORY/]NAME.
    #[arg(required_unless_present = "all", value_name = "TARGET")]
    pub targets: Vec<Target>,
    /// Back up every target of a kind (repeatable).
    #[arg(long, value_enum, value_name = "KIND")]
    pub all: Vec<crate::vsphere::selection::TargetKindArg>,
    /// Leave a target out (repeatable; vm:, ivd: or tag:).
    #[arg(long, value_name = "TARGET")]
    pub exclude: Vec<Target>,
    /// Read every disk in full, even when an incremental is possible.
    #[arg(long)]
    pub full: bool,
    /// Do not ask VMware Tools to quiesce the guest file systems.
    #[arg(long)]
    pub no_quiesce: bool,
    /// Targets backed up at the same time (default from the configuration).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// VDDK connections open at once across all targets, i.e. disks read at the same time
    /// (default from the configuration, `max_vddk_connections`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: Option<u16>,
}

pub use crate::restore::RestoreMode;

/// `restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backed-up target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Generation to restore (default: the latest successful one).
    #[arg(long, value_name = "N")]
    pub generation: Option<u64>,
    /// Name of the restored VM, vApp or first class disk (default: NAME-restored-TIMESTAMP).
    #[arg(long, value_name = "NEW", value_parser = parse_vm_name)]
    pub name: Option<String>,
    /// Replace an existing VM of that name.
    #[arg(long)]
    pub overwrite: bool,
    /// With --overwrite: power the existing VM off first.
    #[arg(long, requires = "overwrite")]
    pub force: bool,
    /// Keep the original identity (uuids, MAC addresses), for a VM that is gone.
    #[arg(long)]
    pub recovery: bool,
    /// Create or import.
    #[arg(long, value_enum, default_value_t = RestoreMode::Create)]
    pub mode: RestoreMode,
    /// Datacenter to restore into.
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<String>,
    /// VM folder (name or path) to restore into.
    #[arg(long, value_name = "FOLDER")]
    pub folder: Option<String>,
    /// Resource pool to restore into.
    #[arg(long, value_name = "POOL")]
    pub resource_pool: Option<String>,
    /// Host to restore onto.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Datastore for the VM files and every disk.
    #[arg(long, value_name = "DS")]
    pub datastore: Option<String>,
    /// Datastore for one disk: N=DS (N counts disks from 0); repeatable.
    #[arg(long, value_name = "N=DS", value_parser = parse_disk_datastore)]
    pub disk_datastore: Vec<(u32, String)>,
    /// Network mapping OLD=NEW; repeatable. Unmapped NICs keep their network name.
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_pair)]
    pub network: Vec<(String, String)>,
    /// Power the VM on when the restore has finished.
    #[arg(long)]
    pub power_on: bool,
    /// For a first class disk (`ivd:`): attach the restored disk to this VM (`vm:NAME`).
    #[arg(long, value_name = "vm:NAME")]
    pub attach: Option<Target>,
    /// VDDK connections open at once, i.e. disks written at the same time (default from the
    /// configuration, `max_vddk_connections`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: Option<u16>,
}

/// `list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this target.
    #[arg(value_name = "TARGET")]
    pub target: Option<Target>,
}

/// `show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Generation (default: the latest).
    #[arg(long, value_name = "N")]
    pub generation: Option<u64>,
}

/// `check`
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct CheckArgs {
    /// Read, decompress and hash every chunk, not only the structure.
    #[arg(long)]
    pub read_data: bool,
    /// Also move every chunk whose content is damaged to quarantine/ (implies --read-data;
    /// takes the exclusive repository lock), so the next full backup of the same data stores
    /// it again and heals every generation that uses it.
    #[arg(long)]
    pub repair: bool,
}

/// `prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only this target (default: every target).
    #[arg(value_name = "TARGET")]
    pub target: Option<Target>,
    /// Keep the N most recent generations.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the last generation of each of the N most recent hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the last generation of each of the N most recent days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the last generation of each of the N most recent weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the last generation of each of the N most recent months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the last generation of each of the N most recent years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every generation younger than this (e.g. 36h, 14d, 2w).
    #[arg(long, value_name = "DURATION", value_parser = parse_keep_within)]
    pub keep_within: Option<u64>,
    /// Say what would be forgotten without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Disk number (from 0, in the order `show` lists them).
    #[arg(long, value_name = "N")]
    pub disk: u32,
    /// Generation (default: the latest successful one).
    #[arg(long, value_name = "N")]
    pub generation: Option<u64>,
    /// The raw image file to write (sparse; must not exist).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// Generation (default: the latest successful one).
    #[arg(long, value_name = "N")]
    pub generation: Option<u64>,
    /// Disk number (from 0, in the order `show` lists them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub disk: u32,
    /// Where NBD clients connect: `unix:PATH` (a new socket file) or `HOST:PORT`
    /// (loopback only unless --allow-remote).
    #[arg(long, value_name = "unix:PATH|HOST:PORT", value_parser = parse_listen)]
    pub listen: nbd_server::ListenAddress,
    /// Accept a TCP address other machines can reach (NBD has no authentication).
    #[arg(long)]
    pub allow_remote: bool,
    /// Accept writes into this local copy-on-write file (created, or continued if it is an
    /// overlay of the same disk); the repository is never written.
    #[arg(long, value_name = "FILE")]
    pub overlay: Option<PathBuf>,
    /// Chunk cache size in MiB (decompressed chunks shared by all clients).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub cache_mib: usize,
}

/// `unix:PATH` or `HOST:PORT` (`HOST` an IP address or `localhost`).
pub fn parse_listen(s: &str) -> Result<nbd_server::ListenAddress, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("unix: needs a socket path".into());
        }
        return Ok(nbd_server::ListenAddress::Unix(PathBuf::from(p)));
    }
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_string(),
    };
    addr.parse::<std::net::SocketAddr>()
        .map(nbd_server::ListenAddress::Tcp)
        .map_err(|_| format!("`{s}` is neither unix:PATH nor IP:PORT (e.g. 127.0.0.1:10809)"))
}

fn parse_vm_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("a VM name cannot be empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err("a VM name cannot contain control characters".into());
    }
    if s.chars().count() > 80 {
        return Err("vCenter limits VM names to 80 characters".into());
    }
    Ok(s.to_string())
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => Err(format!("`{s}` is not OLD=NEW")),
    }
}

fn parse_disk_datastore(s: &str) -> Result<(u32, String), String> {
    let (n, ds) = parse_pair(s).map_err(|_| format!("`{s}` is not N=DATASTORE"))?;
    let n = n
        .parse::<u32>()
        .map_err(|_| format!("`{n}` in `{s}` is not a disk number"))?;
    Ok((n, ds))
}

impl Command {
    /// Whether the command reads or writes disks through VDDK (and so needs the library path
    /// set before the process starts its threads).
    pub fn uses_vddk(&self) -> bool {
        matches!(self, Command::Backup(_) | Command::Restore(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_restore_mappings() {
        let cli = Cli::try_parse_from([
            "safekeeping",
            "--json",
            "restore",
            "vm:web01",
            "--network",
            "VM Network=DMZ",
            "--disk-datastore",
            "1=fast",
            "--mode",
            "import",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Restore(r) = cli.command else {
            panic!("not restore")
        };
        assert_eq!(r.network, vec![("VM Network".into(), "DMZ".into())]);
        assert_eq!(r.disk_datastore, vec![(1, "fast".into())]);
        assert_eq!(r.mode, RestoreMode::Import);
    }

    #[test]
    fn rejects_bad_values_at_parse_time() {
        assert!(Cli::try_parse_from(["safekeeping", "backup", "web01"]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "backup"]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "restore", "vm:a", "--network", "x"]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "restore", "vm:a", "--force"]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "restore", "vm:a", "--name", "a\nb"]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "restore", "vm:a", "--name", " "]).is_err());
        assert!(Cli::try_parse_from(["safekeeping", "backup", "vm:a", "--parallel", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["safekeeping", "restore", "vm:a", "--max-connections", "0"])
                .is_err()
        );
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from(["safekeeping", "list", "--json", "-vv"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.verbose, 2);
    }
}

/// Parses `--keep-within`: a whole number with a unit of `h` (hours), `d` (days), `w` (weeks),
/// `m` (30-day months) or `y` (365-day years), into seconds.
fn parse_keep_within(text: &str) -> Result<u64, String> {
    let text = text.trim();
    // Split before the last character, on a character boundary (the unit may be any text).
    let split = text.char_indices().last().map_or(0, |(i, _)| i);
    let (number, unit) = text.split_at(split);
    let per_unit: u64 = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "m" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => {
            return Err(format!(
                "`{text}`: expected a number and a unit of h, d, w, m or y"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: `{number}` is not a whole number"))?;
    n.checked_mul(per_unit)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod keep_within_tests {
    use super::parse_keep_within;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_keep_within("36h"), Ok(36 * 3600));
        assert_eq!(parse_keep_within("2w"), Ok(14 * 86_400));
        assert!(parse_keep_within("").is_err());
        assert!(parse_keep_within("12").is_err());
        assert!(parse_keep_within("xd").is_err());
        assert!(parse_keep_within("3é").is_err());
        assert!(parse_keep_within("99999999999999999y").is_err());
    }
}
