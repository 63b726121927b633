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
    /// Use the repository `[repositories.NAME]` of the configuration instead of
    /// `[repository]`, for any command.
    #[arg(long, global = true, value_name = "NAME")]
    pub repo: Option<String>,
    /// Use the vCenter `[vcenters.NAME]` of the configuration instead of `[vcenter]`
    /// (backup, restore, list --resolve, doctor). On restore it also picks, among backups of
    /// VMs of the same name, the one taken from that vCenter.
    #[arg(long, global = true, value_name = "NAME")]
    pub vcenter: Option<String>,
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
    /// Repository maintenance: init, reindex, key.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Back up one or more targets.
    Backup(BackupArgs),
    /// Restore a target as a new VM (or over an existing one).
    // Boxed: the restore options are by far the largest arguments (clippy::large_enum_variant).
    Restore(Box<RestoreArgs>),
    /// List targets and their generations.
    List(ListArgs),
    /// Show one generation: disks, sizes, change ids, VM metadata.
    Show(ShowArgs),
    /// Space in figures: what the generations describe, what is distinct, what is stored, and
    /// the deduplication and compression ratios, per target and in all.
    Stats(StatsArgs),
    /// What changed between two generations of a target: bytes per disk, disks added or
    /// removed, and the VM's configuration (`.vmx` keys, placement, NICs).
    Diff(DiffArgs),
    /// Verify the repository (add --read-data to read and hash every chunk, --repair to move
    /// damaged chunks to quarantine/ so the next backup, full or incremental, stores them again).
    Check(CheckArgs),
    /// Forget generations by a retention policy.
    Prune(PruneArgs),
    /// Delete chunks no generation references.
    Gc(GcArgs),
    /// Write one disk of a generation to a sparse raw image file.
    Export(ExportArgs),
    /// Check that this machine is ready for the first backup: configuration, repository,
    /// vCenter login and privileges, VDDK, the machine's own uuid. Exit 0 only when all pass.
    Doctor,
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Write the manual pages (one per command) into a folder.
    #[command(hide = true)]
    Man(ManArgs),
    /// Copy generations into another configured repository (`[repositories.NAME]`): only the
    /// chunks it lacks travel, each verified; an interrupted copy resumes.
    Copy(CopyArgs),
    /// Serve one disk of a generation over NBD (read-only, or writes into --overlay) until
    /// Ctrl-C: boot it under QEMU/KVM, convert it, mount it, without restoring first.
    Serve(ServeArgs),
    /// List partitions and files of a backed-up disk, or extract files, without restoring it.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Run a job of the configuration (`[jobs.NAME]`): back up, then prune by the job's
    /// retention (unless the backup failed completely), then gc and check if the job asks.
    /// Exit 0, 3 (some targets failed) or 1 (the backup failed completely or a step failed).
    Run(RunArgs),
    /// The jobs of the configuration.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The run history: every backup run and job, newest first, with its outcome (a run
    /// killed before it ended shows as `interrupted`).
    Runs(RunsArgs),
}

/// `run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job's name (`[jobs.NAME]`).
    #[arg(value_name = "JOB")]
    pub job: String,
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List the configured jobs.
    List,
}

/// `runs`
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs that did not fully succeed (partial, failed, interrupted).
    #[arg(long)]
    pub failed: bool,
    /// Only runs started since then: a duration back from now (36h, 7d, 2w) or a date
    /// (2026-12-01, or RFC 3339 with a time).
    #[arg(long, value_name = "DURATION|DATE", value_parser = parse_since)]
    pub since: Option<time::OffsetDateTime>,
}

/// Parses `--since`: a duration back from now, a `YYYY-MM-DD` date (midnight UTC) or an RFC
/// 3339 time.
fn parse_since(text: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date_format) {
        return Ok(d.midnight().assume_utc());
    }
    let seconds =
        parse_keep_within(text).map_err(|e| format!("{e}; or a date such as 2026-12-01"))?;
    let seconds = i64::try_from(seconds).map_err(|_| format!("`{text}` is too long ago"))?;
    time::OffsetDateTime::now_utc()
        .checked_sub(time::Duration::seconds(seconds))
        .ok_or_else(|| format!("`{text}` is too long ago"))
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The same checks as `safekeeping doctor`.
    Check,
}

/// `completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man`
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The folder to write `safekeeping.1`, `safekeeping-backup.1`, ... into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `copy`
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The destination: a repository named in the configuration (`[repositories.NAME]`).
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Targets to copy (vm:, ivd: or vapp:, as `list` shows them); default: every target.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<Target>,
    /// Copy this generation (needs exactly one TARGET); default: the newest successful
    /// generation of each target.
    #[arg(long, value_name = "N", conflicts_with = "all_generations")]
    pub generation: Option<u64>,
    /// Copy every committed generation of each target.
    #[arg(long)]
    pub all_generations: bool,
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
    /// S3 object lock: write again (same bytes, new retention) every object the generations
    /// use whose retention ends soon, so re-used chunks stay locked (run it regularly).
    RefreshLock(RefreshLockArgs),
}

/// `repo refresh-lock`
#[derive(Debug, Args)]
pub struct RefreshLockArgs {
    /// Refresh what is retained for less than this many more days (default: half the
    /// repository's object lock days, at least 1).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub within_days: Option<u32>,
    /// Only count what would be written again.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Give the new repository the key material (chunk-id and encryption keys), chunk size
    /// and encryption of the configured repository NAME, wrapped under this repository's own
    /// passphrase, so `copy` between the two sends chunks as they are.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["encrypt", "encryption"])]
    pub copy_key_from: Option<String>,
    /// S3 only: write every object with a COMPLIANCE object lock retention of N days (the
    /// bucket must exist with object lock enabled); prune and gc keep what is still locked.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub object_lock_days: Option<u32>,
    /// How disks are cut into chunks, chosen once: `content-defined` (format version 4: cut
    /// by content at 4 KiB boundaries into chunks of up to 2 MiB, so copies of data at other
    /// offsets deduplicate; the benchmark disk stores 604 MiB instead of 733 MiB) or `fixed`
    /// (1 MiB chunks, format version 3, which releases before format version 4 can read).
    /// With --copy-key-from, that repository's chunking is taken instead.
    #[arg(long, value_name = "KIND", default_value = "content-defined")]
    pub chunking: repository_format::ChunkingChoice,
}

/// `backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Targets: vm:NAME, vm:vm-123, vm:UUID, vm:DC/vm/folder/NAME, ivd:NAME, ivd:ID,
    /// vapp:NAME, tag:[CATEGORY/]NAME.
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
    /// Do not ask VMware Tools to quiesce the guest file systems (the same as --quiesce off).
    #[arg(long, conflicts_with = "quiesce")]
    pub no_quiesce: bool,
    /// Quiescing: require (fail the target, no snapshot left, when the guest cannot be
    /// quiesced), try (default: fall back once to a snapshot without quiescing, and say so)
    /// or off. Overrides `quiesce` in the target's configuration section.
    #[arg(long, value_enum, value_name = "MODE")]
    pub quiesce: Option<crate::target_settings::QuiesceMode>,
    /// Leave disk N (0-based, as `show` and `export --disk` count) out of the backup;
    /// repeatable; only with exactly one vm: target. A restore recreates it empty.
    #[arg(long, value_name = "N")]
    pub exclude_disk: Vec<usize>,
    /// VDDK transport modes in order of preference, `:`-separated (`hotadd:nbdssl`):
    /// overrides `[vddk] transports` for this run.
    #[arg(long, value_name = "MODES", value_parser = crate::target_settings::check_transports)]
    pub transport: Option<String>,
    /// Targets backed up at the same time (default from the configuration).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// VDDK connections open at once across all targets, i.e. disks read at the same time
    /// (default from the configuration, `max_vddk_connections`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: Option<u16>,
    /// After the run, write Prometheus metrics (this run per target, and the newest
    /// successful generation of every target in the repository) to this file, replaced
    /// atomically: for node_exporter's textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Print the plan (targets resolved; per disk full or incremental and why) and create
    /// nothing: no snapshot, no generation, no CBT change.
    #[arg(long)]
    pub dry_run: bool,
}

impl BackupArgs {
    /// Checks what clap cannot express: `--exclude-disk` counts the disks of one VM, so it
    /// needs exactly one `vm:` target and no `--all`.
    ///
    /// # Errors
    /// The usage error's message.
    pub fn check(&self) -> Result<(), String> {
        if self.exclude_disk.is_empty() {
            return Ok(());
        }
        let one_vm = self.all.is_empty()
            && self.targets.len() == 1
            && matches!(self.targets[0], Target::Vm(_));
        if one_vm {
            Ok(())
        } else {
            Err("--exclude-disk needs exactly one vm: target (and no --all): disk numbers belong to one VM; use [targets.\"vm:NAME\"] exclude_disks in the configuration for several".into())
        }
    }
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
    /// Restore into the vCenter `[vcenters.NAME]` (`default` for `[vcenter]`); placement and
    /// network mappings are checked against it. Default: the vCenter the generation came
    /// from when it is configured, else `[vcenter]`.
    #[arg(long, value_name = "NAME")]
    pub to_vcenter: Option<String>,
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
    /// Leave out the disks the backup excluded, instead of recreating them empty with their
    /// original capacity.
    #[arg(long)]
    pub drop_excluded_disks: bool,
    /// VDDK transport modes in order of preference, `:`-separated (`hotadd:nbdssl`):
    /// overrides `[vddk] transports` for this restore.
    #[arg(long, value_name = "MODES", value_parser = crate::target_settings::check_transports)]
    pub transport: Option<String>,
    /// Print the plan (generation, name, placement, per-disk datastores, network mapping, the
    /// VM --overwrite would replace), every name checked against vCenter; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Storage policy (by name) for the VM home and every disk, instead of the policies the
    /// backup recorded.
    #[arg(long, value_name = "POLICY")]
    pub profile: Option<String>,
    /// Storage policy for one disk: N=POLICY (N counts disks from 0); repeatable; wins over
    /// --profile for that disk.
    #[arg(long, value_name = "N=POLICY", value_parser = parse_disk_profile)]
    pub disk_profile: Vec<(u32, String)>,
}

/// `list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this target.
    #[arg(value_name = "TARGET", conflicts_with = "resolve")]
    pub target: Option<Target>,
    /// Ask vCenter what these targets select now (folder:, cluster:, host:, rp:, datastore:,
    /// tag:, vm:), without backing anything up; the repository is not read.
    #[arg(long, value_name = "TARGET", num_args = 1..)]
    pub resolve: Vec<Target>,
    /// Resolve every target of a kind too, as `backup --all` does (repeatable).
    #[arg(long, value_enum, value_name = "KIND", conflicts_with = "target")]
    pub all: Vec<crate::vsphere::selection::TargetKindArg>,
    /// With --resolve or --all: leave a target out, as `backup --exclude` does (repeatable).
    #[arg(long, value_name = "TARGET", conflicts_with = "target")]
    pub exclude: Vec<Target>,
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

/// `stats`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this target (default: every target and the total).
    #[arg(value_name = "TARGET")]
    pub target: Option<Target>,
}

/// `diff`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The target.
    #[arg(value_name = "TARGET")]
    pub target: Target,
    /// The older generation.
    #[arg(value_name = "GEN1")]
    pub from: u64,
    /// The newer generation.
    #[arg(value_name = "GEN2")]
    pub to: u64,
}

/// `check`
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct CheckArgs {
    /// Read, decompress and hash every chunk, not only the structure.
    #[arg(long)]
    pub read_data: bool,
    /// Also move every chunk whose content is damaged to quarantine/ (implies --read-data;
    /// takes the exclusive repository lock), so the next backup (full or incremental) of the same data stores
    /// it again and heals every generation that uses it.
    #[arg(long)]
    pub repair: bool,
    /// Read, decompress and hash only part N of M of the chunks (by chunk id, for example
    /// `1/7`): on seven nights `1/7` … `7/7` verify everything once, at a seventh of the reads.
    #[arg(long, value_name = "N/M", conflicts_with_all = ["read_data", "repair"])]
    pub read_data_subset: Option<repository_format::ReadSubset>,
}

/// `prune`: at least one rule, so that a forgotten option is a usage error (exit 2), not a
/// prune that keeps nothing or a run that fails like a broken repository.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("rule").required(true).multiple(true).args([
    "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
    "keep_within",
])))]
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

/// `gc`
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Count what would be removed, remove nothing.
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
    /// The raw image file to write (sparse; must not exist), or `-` for the raw disk on stdout
    /// (holes written as zeros), for example into `qemu-img convert` or `ssh`.
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

fn parse_disk_profile(s: &str) -> Result<(u32, String), String> {
    let (n, p) = parse_pair(s).map_err(|_| format!("`{s}` is not N=POLICY"))?;
    let n = n
        .parse::<u32>()
        .map_err(|_| format!("`{n}` in `{s}` is not a disk number"))?;
    Ok((n, p))
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
        matches!(
            self,
            Command::Backup(_)
                | Command::Run(_)
                | Command::Restore(_)
                | Command::Doctor
                | Command::Config(ConfigCommand::Check)
        )
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
    fn copy_and_repo_arguments() {
        let cli = Cli::try_parse_from([
            "safekeeping",
            "copy",
            "--to",
            "offsite",
            "vm:web01",
            "--repo",
            "site-a",
        ])
        .unwrap();
        assert_eq!(cli.repo.as_deref(), Some("site-a"));
        let Command::Copy(c) = cli.command else {
            panic!("not copy")
        };
        assert_eq!(c.to, "offsite");
        assert_eq!(c.targets.len(), 1);
        assert!(!c.all_generations && c.generation.is_none());
        assert!(Cli::try_parse_from(["safekeeping", "copy", "vm:a"]).is_err());
        assert!(Cli::try_parse_from([
            "safekeeping",
            "copy",
            "--to",
            "x",
            "--generation",
            "2",
            "--all-generations"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "safekeeping",
            "repo",
            "init",
            "--encrypt",
            "--copy-key-from",
            "x"
        ])
        .is_err());
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
pub(crate) fn parse_keep_within(text: &str) -> Result<u64, String> {
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

    #[test]
    fn since_takes_a_duration_or_a_date() {
        use super::parse_since;
        let now = time::OffsetDateTime::now_utc();
        let d = parse_since("2d").unwrap();
        assert!((now - d - time::Duration::days(2)).abs() < time::Duration::minutes(1));
        assert_eq!(
            parse_since("2026-12-01").unwrap().unix_timestamp(),
            1_796_083_200
        );
        assert!(parse_since("2026-12-01T10:00:00Z").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}
