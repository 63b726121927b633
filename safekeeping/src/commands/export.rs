//! `export TARGET --disk N --output FILE`: one disk of a generation as a sparse raw image.

use serde_json::json;

use crate::cli::ExportArgs;
use crate::config::Config;
use crate::disk_io::SparseImage;
use crate::error::{Error, Result};
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::repo;
use crate::report::Report;

/// Exports a disk; only non-zero chunks are written, the rest stays holes.
///
/// # Errors
/// Unknown target, generation or disk; damaged chunks (the partial file is removed);
/// an existing output file.
pub fn run(config: &Config, args: &ExportArgs) -> Result<Report> {
    let r = repo::open(config)?;
    let (summary, _) = repo::find_target(&r, &args.target)?;
    let m = repo::pick_generation(&r, &summary.key, args.generation)?;
    let disk = m.disks.get(args.disk as usize).ok_or_else(|| {
        Error::NotInRepository(format!(
            "generation {} of {} has {} disks (numbered from 0), no disk {}",
            m.generation,
            args.target,
            m.disks.len(),
            args.disk
        ))
    })?;
    // Works on a read-only repository too (without a recorded lock; the library warns).
    let _lock = r.lock_shared_for_reading(repo::lock_wait(config))?;
    let reader = r.disk_reader(&summary.key, m.generation, disk.disk.key)?;
    let mut image = SparseImage::create(&args.output, reader.capacity())?;
    for chunk in reader.stream(crate::repo::read_threads()) {
        let chunk = chunk?;
        image.write_at(chunk.offset, &chunk.data)?;
    }
    let written = image.bytes_written();
    image.commit()?;
    let doc = json!({
        "target": args.target.to_string(),
        "generation": m.generation.0,
        "disk": args.disk,
        "device_key": disk.disk.key,
        "capacity": disk.disk.capacity,
        "bytes_written": written,
        "output": args.output,
    });
    let text = format!(
        "exported disk {} ({}) of generation {} to {}: {} of data, the rest sparse\n",
        args.disk,
        human_bytes(disk.disk.capacity),
        m.generation,
        args.output.display(),
        human_bytes(written)
    );
    Ok(Report::new(Outcome::Success, &doc, text))
}
