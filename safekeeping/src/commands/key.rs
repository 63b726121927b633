//! `repo key list|add|passwd|export|remove`: the key files of an encrypted repository.
//!
//! The current passphrase comes from where every command gets it (`SAFEKEEPING_PASSPHRASE`,
//! `SAFEKEEPING_REPOSITORY_PASSPHRASE`, `--passphrase-file`, `repository.passphrase_file`); a
//! new one from `--new-passphrase-file` or `SAFEKEEPING_NEW_PASSPHRASE`. Never from arguments,
//! and never prompted for.

use std::path::Path;

use repository_format::{KeyId, Passphrase};
use serde_json::json;

use crate::cli::KeyCommand;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Environment variable holding the new passphrase of `repo key add` / `repo key passwd`.
pub const NEW_PASSPHRASE_ENV: &str = "SAFEKEEPING_NEW_PASSPHRASE";

/// Runs one `repo key` subcommand.
///
/// # Errors
/// No passphrase, a wrong one, refused removals, I/O.
pub fn run(config: &Config, command: &KeyCommand) -> Result<Report> {
    let r = repo::open(config)?;
    let current = || {
        config.passphrase()?.ok_or_else(|| {
            Error::Other("this command needs the repository's current passphrase".into())
        })
    };
    match command {
        KeyCommand::List => {
            let keys = r.key_list()?;
            let mut text = String::new();
            for k in &keys {
                let created = k
                    .created
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                text.push_str(&format!(
                    "{}  created {}  argon2id {} MiB, {} passes{}\n",
                    k.id,
                    created,
                    k.kdf.memory_kib / 1024,
                    k.kdf.iterations,
                    if k.current {
                        "  (opened this time)"
                    } else {
                        ""
                    }
                ));
            }
            let doc = json!({
                "key_fingerprint": r.key_fingerprint(),
                "keys": keys,
            });
            Ok(Report::new(Outcome::Success, &doc, text))
        }
        KeyCommand::Add(a) => {
            let new = new_passphrase(a.new_passphrase_file.as_deref())?;
            let id = r.key_add(&current()?, &new)?;
            let text = format!("added key {id}; export it: safekeeping repo key export\n");
            Ok(Report::new(Outcome::Success, &json!({ "added": id }), text))
        }
        KeyCommand::Passwd(a) => {
            let new = new_passphrase(a.new_passphrase_file.as_deref())?;
            let id = r.key_passwd(&current()?, &new)?;
            let text = format!("changed the passphrase of key {id}\n");
            Ok(Report::new(
                Outcome::Success,
                &json!({ "changed": id }),
                text,
            ))
        }
        KeyCommand::Export(a) => {
            let bytes = r.key_export(&current()?)?;
            let file: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Other(format!("exported key file is not JSON: {e}")))?;
            match &a.output {
                Some(path) => {
                    write_private_new(path, &bytes)?;
                    let text = format!(
                        "wrote key {} to {}; keep it offline, away from the passphrase\n",
                        file["id"].as_str().unwrap_or("?"),
                        path.display()
                    );
                    Ok(Report::new(
                        Outcome::Success,
                        &json!({ "id": file["id"], "output": path }),
                        text,
                    ))
                }
                None => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    Ok(Report::new(
                        Outcome::Success,
                        &json!({ "key_file": file }),
                        text,
                    ))
                }
            }
        }
        KeyCommand::Remove(a) => {
            let id = KeyId::new(a.id.clone())?;
            r.key_remove(&id)?;
            Ok(Report::new(
                Outcome::Success,
                &json!({ "removed": id }),
                format!("removed key {id}\n"),
            ))
        }
    }
}

/// The new passphrase: from `file`, else from [`NEW_PASSPHRASE_ENV`].
fn new_passphrase(file: Option<&Path>) -> Result<Passphrase> {
    if let Some(path) = file {
        return Ok(Passphrase::read_file(path)?);
    }
    match std::env::var(NEW_PASSPHRASE_ENV) {
        Ok(p) if !p.is_empty() => Ok(Passphrase::from(p)),
        _ => Err(Error::Other(format!(
            "the new passphrase comes from --new-passphrase-file FILE or {NEW_PASSPHRASE_ENV} (never from the command line)"
        ))),
    }
}

/// Creates `path` (which must not exist) readable by its owner only, with `bytes`, durably.
fn write_private_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Error::Other(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(())
}
