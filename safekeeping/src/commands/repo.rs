//! `repo init` and `repo reindex`.

use repository_format::{
    Chunking, ChunkingChoice, EncryptionMode, InitOptions, Repository, RepositoryLocation,
};
use serde_json::json;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Creates the repository at the configured path, cutting disks as `chunking` says; with
/// `copy_key_from`, with the key material, chunking, chunk size and encryption of that
/// configured repository instead; with `object_lock_days`, under S3 object lock.
///
/// # Errors
/// When the folder exists and is not empty, or cannot be written; an unknown
/// `copy_key_from` name, or that repository cannot be opened.
pub fn init(
    config: &Config,
    encrypt: bool,
    copy_key_from: Option<&str>,
    object_lock_days: Option<u32>,
    chunking: ChunkingChoice,
) -> Result<Report> {
    let keys_from = match copy_key_from {
        Some(name) => {
            let other = config
                .named(name)
                .map_err(|e| Error::Other(format!("--copy-key-from: {e}")))?;
            let r = repo::open(&other).map_err(|e| {
                Error::Other(format!("--copy-key-from {}: {e}", other.repository_label()))
            })?;
            Some(r)
        }
        None => None,
    };
    let encrypt = encrypt || keys_from.as_ref().is_some_and(Repository::is_encrypted);
    let passphrase = if encrypt {
        Some(config.passphrase()?.ok_or_else(|| {
            Error::Other(
                "encryption needs a passphrase: set SAFEKEEPING_PASSPHRASE (or SAFEKEEPING_REPOSITORY_PASSPHRASE), or name a file holding it with --passphrase-file or repository.passphrase_file in the configuration".into(),
            )
        })?)
    } else {
        None
    };
    let base = match chunking {
        ChunkingChoice::ContentDefined => InitOptions::content_defined(),
        ChunkingChoice::Fixed => InitOptions::default(),
    };
    let opts = InitOptions {
        compression_level: config.defaults.compression_level,
        encryption: if encrypt {
            EncryptionMode::Aes256Gcm
        } else {
            EncryptionMode::None
        },
        ..base
    };
    let mut location = repo::location(config)?;
    if let Some(days) = object_lock_days {
        match &mut location {
            RepositoryLocation::S3(s3) => s3.object_lock_days = Some(days),
            RepositoryLocation::Local(p) => {
                return Err(Error::Other(format!(
                    "--object-lock-days needs a repository in S3 object storage; {} is a folder",
                    p.display()
                )))
            }
        }
    }
    if let RepositoryLocation::Local(p) = &location {
        // A second `repo init` is a no-op request, not a damaged folder: say what is there.
        if p.join("config").is_file() {
            return Err(Error::Other(format!(
                "a repository already exists at {}: nothing to create (`safekeeping list` shows what it holds)",
                p.display()
            )));
        }
    }
    let r = match &keys_from {
        Some(from) => {
            Repository::init_location_sharing_keys(&location, &opts, passphrase.as_ref(), from)?
        }
        None => Repository::init_location(&location, &opts, passphrase.as_ref())?,
    };
    let c = r.config();
    let (chunking, chunks) = match c.chunking {
        Chunking::Fixed => (
            ChunkingChoice::Fixed,
            format!("fixed chunks of {} KiB", c.chunk_size / 1024),
        ),
        Chunking::AlignedCdc { min, max, .. } => (
            ChunkingChoice::ContentDefined,
            format!(
                "content-defined chunks of {} KiB to {} KiB",
                min / 1024,
                max / 1024
            ),
        ),
    };
    let doc = json!({
        "path": location.display(),
        "repository_id": c.repository_id,
        "format_version": c.format_version,
        "chunking": chunking.to_string(),
        "chunk_size": c.chunk_size,
        "compression_level": c.compression_level,
        "encrypted": r.is_encrypted(),
        "key_fingerprint": r.key_fingerprint(),
        "keys_from": copy_key_from,
        "object_lock_days": r.object_lock_days(),
    });
    let mut text = format!(
        "created {}repository {} at {} (format version {}, {chunks}, zstd level {})\n",
        if r.is_encrypted() { "encrypted " } else { "" },
        c.repository_id,
        location.display(),
        c.format_version,
        c.compression_level
    );
    if let Some(days) = r.object_lock_days() {
        text.push_str(&format!(
            "every object is written under S3 object lock (compliance mode) for {days} days\n"
        ));
    }
    if let Some(name) = copy_key_from {
        text.push_str(&format!(
            "with the key material of repository {name}: copies between the two send chunks as they are\n"
        ));
    }
    Ok(Report::new(Outcome::Success, &doc, text))
}

/// Rebuilds the catalog from the generation folders.
///
/// # Errors
/// Lock timeouts and I/O errors.
pub fn reindex(config: &Config) -> Result<Report> {
    let r = repo::open(config)?;
    let lock = r.lock_exclusive(repo::lock_wait(config))?;
    let report = r.reindex(&lock)?;
    let text = format!(
        "{}, {}; removed {} and {}\n",
        crate::format::count(report.targets as u64, "target", "targets"),
        crate::format::count(report.generations as u64, "generation", "generations"),
        crate::format::count(
            report.incomplete_removed.len() as u64,
            "abandoned generation folder",
            "abandoned generation folders"
        ),
        crate::format::count(
            report.temp_files_removed as u64,
            "temporary file",
            "temporary files"
        )
    );
    Ok(Report::new(Outcome::Success, &report, text))
}

/// Extends the S3 object lock of what the generations use (`repo refresh-lock`).
///
/// # Errors
/// A repository without object lock, a damaged object (named), storage errors.
pub fn refresh_lock(config: &Config, args: &crate::cli::RefreshLockArgs) -> Result<Report> {
    let r = repo::open(config)?;
    let days = r.object_lock_days().ok_or_else(|| {
        Error::Other(format!(
            "{} has no object lock (it is set by repo init --object-lock-days)",
            r.location().display()
        ))
    })?;
    let within = args.within_days.unwrap_or((days / 2).max(1));
    let lock = r.lock_shared(repo::lock_wait(config))?;
    let report = r.refresh_object_lock(
        &lock,
        std::time::Duration::from_secs(u64::from(within) * 86_400),
        args.dry_run,
    )?;
    let text = format!(
        "{} {} objects ({} chunks, {}) retained for less than {within} more days; {} locked long enough\n",
        if args.dry_run { "would write again" } else { "wrote again" },
        report.objects_rewritten,
        report.chunks_rewritten,
        crate::format::human_bytes(report.bytes_rewritten),
        report.objects_kept
    );
    Ok(Report::new(Outcome::Success, &report, text))
}
