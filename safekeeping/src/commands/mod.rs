//! The edge of the application: one module per command. Each turns its parsed arguments into
//! the plain options the wings take (defaults from the configuration filled in once, here),
//! runs the command and formats its report. [`run`](fn@run) dispatches the parsed command line.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod docs;
pub mod doctor;
pub mod export;
pub mod files;
pub mod gc;
pub mod jobs;
pub mod key;
pub mod list;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod run;
pub mod runs;
pub mod serve;
pub mod show;
pub mod stats;

use crate::blocking::blocking;
use crate::cancel::Cancel;
use crate::cli::{Cli, Command, ConfigCommand, JobsCommand, RepoCommand};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::report::Report;

/// Runs the command line's command and returns its report.
///
/// # Errors
/// When the command cannot start (configuration, repository, vCenter unreachable). Failures
/// of individual targets are in the report instead.
pub async fn run(cli: Cli) -> Result<Report> {
    // Commands that need no configuration, or (doctor) report a bad one as a finding.
    match &cli.command {
        Command::Doctor | Command::Config(ConfigCommand::Check) => {
            return Ok(doctor::run(
                cli.config.as_deref(),
                cli.repo.as_deref(),
                cli.vcenter.as_deref(),
            )
            .await)
        }
        Command::Completions(a) => return docs::completions(a.shell),
        Command::Man(a) => return docs::man_pages(&a.dir),
        _ => {}
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(name) = &cli.repo {
        config
            .select(name)
            .map_err(|e| Error::Other(format!("--repo: {e}")))?;
    }
    if let Some(name) = &cli.vcenter {
        config
            .select_vcenter(name)
            .map_err(|e| Error::Other(format!("--vcenter: {e}")))?;
    }
    if let Some(p) = cli.passphrase_file {
        config.repository.passphrase_file = Some(p);
    }
    // Backup and restore catch SIGINT/SIGTERM to clean up (snapshots, half-restored VMs);
    // the repository commands keep the default behaviour, their writes are crash-safe.
    let cancel = Cancel::new();
    if cli.command.uses_vddk() {
        cancel.on_signals();
    }
    match cli.command {
        Command::List(args)
            if !args.resolve.is_empty() || !args.all.is_empty() || !args.exclude.is_empty() =>
        {
            list::resolve(&config, &args).await
        }
        Command::Backup(args) => backup::run(config, args, cancel, cli.quiet > 0).await,
        Command::Run(args) => run::run(config, &args.job, cancel, cli.quiet > 0).await,
        Command::Restore(args) => restore::run(config, *args, cancel, cli.quiet > 0).await,
        Command::Copy(args) => {
            let quiet = cli.quiet > 0;
            blocking(move || copy::run(&config, &args, quiet)).await
        }
        Command::Serve(args) => serve::run(&config, args, cancel).await,
        other => {
            let quiet = cli.quiet > 0;
            blocking(move || run_repository_command(&config, other, quiet)).await
        }
    }
}

/// Commands that only touch the repository; they block on file I/O and locks.
fn run_repository_command(config: &Config, command: Command, quiet: bool) -> Result<Report> {
    match command {
        Command::Repo(RepoCommand::Init(a)) => repo::init(
            config,
            a.encrypt || a.encryption == Some(repository_format::EncryptionMode::Aes256Gcm),
            a.copy_key_from.as_deref(),
            a.object_lock_days,
            a.chunking,
        ),
        Command::Repo(RepoCommand::Key(k)) => key::run(config, &k),
        Command::Repo(RepoCommand::Reindex) => repo::reindex(config),
        Command::Repo(RepoCommand::RefreshLock(a)) => repo::refresh_lock(config, &a),
        Command::List(a) => list::run(config, a.target.as_ref()),
        Command::Show(a) => show::run(config, &a.target, a.generation),
        Command::Stats(a) => stats::run(config, a.target.as_ref()),
        Command::Diff(a) => diff::run(config, &a),
        Command::Check(a) => check::run(config, a, quiet),
        Command::Prune(a) => prune::run(config, &a),
        Command::Gc(a) => gc::run(config, a.dry_run, quiet),
        Command::Export(a) => export::run(config, &a, quiet),
        Command::Files(f) => files::run(config, &f),
        Command::Jobs(JobsCommand::List) => jobs::list(config),
        Command::Runs(a) => runs::run(config, &a),
        Command::Backup(_)
        | Command::Run(_)
        | Command::Restore(_)
        | Command::Copy(_)
        | Command::Serve(_)
        | Command::Doctor
        | Command::Config(_)
        | Command::Completions(_)
        | Command::Man(_) => Err(Error::Other("not a repository command".into())),
    }
}

/// `--max-connections`, else the configuration's `max_vddk_connections`: backup and restore
/// resolve the limit the same way.
pub(crate) fn max_connections(arg: Option<u16>, config: &Config) -> usize {
    arg.map(usize::from)
        .unwrap_or(config.defaults.max_vddk_connections)
        .max(1)
}

/// `--transport MODES` replaces `[vddk] transports` for this run (checked by clap); VDDK then
/// tries these modes in this order for every disk.
pub(crate) fn override_transports(config: &mut Config, transport: Option<&str>) {
    if let (Some(t), Some(v)) = (transport, config.vddk.as_mut()) {
        tracing::info!(transports = t, "--transport overrides [vddk] transports");
        v.transports = Some(t.to_string());
    }
}
