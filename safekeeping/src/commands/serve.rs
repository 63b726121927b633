//! `serve TARGET --listen unix:PATH|HOST:PORT [--overlay FILE]`: a disk of a generation as an
//! NBD export until Ctrl-C or SIGTERM.

use repository_format::CacheOptions;

use crate::cancel::Cancel;
use crate::cli::ServeArgs;
use crate::config::Config;
use crate::error::Result;
use crate::instant::serve::{self, ServeOptions};
use crate::outcome::Outcome;
use crate::report::Report;

/// Serves until stopped, then reports what was served.
///
/// # Errors
/// Unknown target, generation or disk; a non-loopback address without `--allow-remote`;
/// a socket path that exists; an overlay of another disk.
pub async fn run(config: &Config, args: ServeArgs, cancel: Cancel) -> Result<Report> {
    let opts = ServeOptions {
        target: args.target,
        generation: args.generation,
        disk: args.disk,
        listen: args.listen,
        allow_remote: args.allow_remote,
        overlay: args.overlay,
        cache: CacheOptions {
            cache_bytes: args.cache_mib.max(1) << 20,
            ..CacheOptions::default()
        },
    };
    let r = serve::run(config, opts, cancel).await?;
    let text = format!(
        "stopped serving disk {} of generation {} of {} ({} chunks read from the repository{})\n",
        r.disk,
        r.generation,
        r.target,
        r.chunks_loaded,
        match &r.overlay {
            Some(p) => format!("; writes kept in {}", p.display()),
            None => String::new(),
        }
    );
    Ok(Report::new(Outcome::Success, &r, text))
}
