//! The `safekeeping` command: parses the command line, sets up logging and the runtime, runs
//! the command, prints its report and exits 0, 1 or 3 (2 for usage errors, from clap).

use std::process::ExitCode;

use clap::Parser;
use safekeeping::cli::Cli;
use safekeeping::report::Report;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let safekeeping::cli::Command::Backup(args) = &cli.command {
        if let Err(message) = args.check() {
            use clap::CommandFactory;
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }
    let json = cli.json;
    let quiet = cli.quiet > 0;
    if cli.command.uses_vddk() {
        // VDDK finds its bundled libraries through LD_LIBRARY_PATH, which is read only at
        // process start: re-execute now, before any thread exists, if it is missing.
        if let Ok(config) = safekeeping::config::Config::load(cli.config.as_deref()) {
            if let Some(v) = &config.vddk {
                if let Err(e) = vddk::ensure_library_path(&v.libdir) {
                    return fail(json, &anyhow::anyhow!("cannot prepare VDDK: {e}"));
                }
            }
        }
    }
    if let Err(e) = safekeeping::logging::init(cli.verbose, cli.quiet, cli.log_file.as_deref()) {
        let path = cli.log_file.as_deref().unwrap_or(std::path::Path::new(""));
        return fail(
            json,
            &anyhow::anyhow!("cannot open the log file {}: {e}", path.display()),
        );
    }
    let report = match run(cli) {
        Ok(r) => r,
        Err(e) => return fail(json, &e),
    };
    report.print(json, quiet);
    report.outcome.into()
}

fn run(cli: Cli) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(safekeeping::commands::run(cli))?)
}

/// Reports a run that could not start or finish. Our errors carry their causes in their own
/// message, so only the outermost one is printed.
fn fail(json: bool, e: &anyhow::Error) -> ExitCode {
    let message = e.to_string();
    eprintln!("safekeeping: error: {message}");
    tracing::debug!("error details: {e:?}");
    if json {
        Report::failed(&message).print(true, false);
    }
    ExitCode::from(1)
}
