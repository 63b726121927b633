//! `completions` and `man`: shell completion scripts and manual pages, generated from the same
//! clap definitions the binary parses with, so they never disagree with it.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::report::Report;

/// Writes the completion script for `shell` on stdout.
///
/// # Errors
/// Writing to stdout failed.
pub fn completions(shell: clap_complete::Shell) -> Result<Report> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "safekeeping", &mut out);
    let text = String::from_utf8(out).map_err(|e| Error::Other(e.to_string()))?;
    Ok(Report::new(
        Outcome::Success,
        &serde_json::json!({ "shell": shell.to_string(), "script": text }),
        text,
    ))
}

/// Writes `safekeeping.1` and one page per subcommand (`safekeeping-backup.1`,
/// `safekeeping-repo-key-add.1`, ...) into `dir`, creating it.
///
/// # Errors
/// The folder or a page cannot be written.
pub fn man_pages(dir: &Path) -> Result<Report> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = Vec::new();
    write_pages(&Cli::command(), "safekeeping", dir, &mut written)?;
    let text = format!(
        "wrote {} manual pages into {}\n",
        written.len(),
        dir.display()
    );
    Ok(Report::new(
        Outcome::Success,
        &serde_json::json!({ "folder": dir, "pages": written }),
        text,
    ))
}

fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    // clap_mangen titles a page by the command's name: give subcommands their full name.
    let page_cmd = cmd.clone().name(name.to_string());
    let file = format!("{name}.1");
    let mut out = Vec::new();
    clap_mangen::Man::new(page_cmd)
        .render(&mut out)
        .map_err(|e| Error::io(format!("rendering {file}"), e))?;
    std::fs::write(dir.join(&file), out)
        .map_err(|e| Error::io(format!("writing {}", dir.join(&file).display()), e))?;
    written.push(file);
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
