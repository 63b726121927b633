//! One module per command; [`run`] dispatches the parsed command line.

use crate::cancel::Cancel;
use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::Result;
use crate::report::Report;

/// Runs the command line's command and returns its report.
///
/// # Errors
/// When the command cannot start (configuration, repository, vCenter unreachable). Failures
/// of individual targets are in the report instead.
pub async fn run(cli: Cli) -> Result<Report> {
    let cancel = Cancel::new();
    cancel.on_signals();
    let config = Config::load(cli.config.as_deref())?;
    let _ = (&config, &cancel);
    match cli.command {
        Command::Repo(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::List(_)
        | Command::Show(_)
        | Command::Check(_)
        | Command::Prune(_)
        | Command::Gc
        | Command::Export(_) => Err(crate::Error::Other("this command is not built yet".into())),
    }
}
