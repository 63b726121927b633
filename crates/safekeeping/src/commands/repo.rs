//! `repo init` and `repo reindex`.

use repository_format::{InitOptions, Repository};
use serde_json::json;

use crate::config::Config;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Creates the repository at the configured path.
///
/// # Errors
/// When the folder exists and is not empty, or cannot be written.
pub fn init(config: &Config) -> Result<Report> {
    let opts = InitOptions {
        compression_level: config.defaults.compression_level,
        ..InitOptions::default()
    };
    let r = Repository::init(&config.repository.path, &opts)?;
    let c = r.config();
    let doc = json!({
        "path": config.repository.path,
        "repository_id": c.repository_id,
        "chunk_size": c.chunk_size,
        "compression_level": c.compression_level,
    });
    let text = format!(
        "created repository {} at {} (chunk size {} KiB, zstd level {})\n",
        c.repository_id,
        config.repository.path.display(),
        c.chunk_size / 1024,
        c.compression_level
    );
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
        "{} targets, {} generations; removed {} abandoned generation folders and {} temporary files\n",
        report.targets,
        report.generations,
        report.incomplete_removed.len(),
        report.temp_files_removed
    );
    Ok(Report::new(Outcome::Success, &report, text))
}
