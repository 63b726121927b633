//! `export TARGET --disk N --output FILE`: one disk of a generation as a sparse raw image.

use std::io::Write;

use serde_json::json;

use crate::cli::ExportArgs;
use crate::config::Config;
use crate::disk_io::SparseImage;
use crate::error::{Error, Result};
use crate::format::human_bytes;
use crate::outcome::Outcome;
use crate::progress::Progress;
use crate::repo;
use crate::report::Report;

/// Exports a disk; only non-zero chunks are written, the rest stays holes. `--output -`
/// writes the whole disk, holes as zeros, on stdout.
///
/// # Errors
/// Unknown target, generation or disk; damaged chunks (the partial file is removed);
/// an existing output file.
pub fn run(config: &Config, args: &ExportArgs, quiet: bool) -> Result<Report> {
    let r = repo::open(config)?;
    let (summary, _) = repo::find_configured_target(&r, &args.target, config)?;
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
    let to_stdout = args.output.as_os_str() == "-";
    // Bytes of the disk passed, holes included: the bar reaches the end with the disk.
    let progress = Progress::new(
        format!("export: disk {} of generation {}", args.disk, m.generation),
        reader.capacity(),
        quiet,
    );
    let written = if to_stdout {
        write_stream(&reader, std::io::stdout().lock(), &progress)?
    } else {
        let mut image = SparseImage::create(&args.output, reader.capacity())?;
        // A file takes writes anywhere: each distinct chunk is read and verified once and
        // written at every offset holding it. The bar counts chunk bytes, then the holes.
        let mut passed = 0u64;
        for chunk in reader.stream_distinct(crate::repo::read_threads()) {
            let chunk = chunk?;
            for &offset in std::iter::once(&chunk.offset).chain(&chunk.copies) {
                image.write_at(offset, &chunk.data)?;
                progress.add(chunk.data.len() as u64);
                passed += chunk.data.len() as u64;
            }
        }
        progress.add(reader.capacity().saturating_sub(passed));
        let written = image.bytes_written();
        image.commit()?;
        written
    };
    progress.finish();
    let doc = json!({
        "target": args.target.to_string(),
        "generation": m.generation.0,
        "disk": args.disk,
        "device_key": disk.disk.key,
        "capacity": disk.disk.capacity,
        "bytes_written": written,
        "output": args.output,
    });
    if to_stdout {
        // stdout carries the disk: the summary goes to the log, and no report is printed.
        tracing::info!(
            disk = args.disk,
            generation = m.generation.0,
            bytes = disk.disk.capacity,
            "exported the disk to stdout"
        );
        return Ok(Report::new(Outcome::Success, &doc, String::new()).without_output());
    }
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

/// Writes the disk in order on `out`, zeros where no chunk is stored; returns the bytes of
/// stored data. Every chunk is verified before a byte of it is written, and a damaged one stops
/// the stream with an error (the reader of the pipe sees a short disk and our exit code 1).
fn write_stream(
    reader: &repository_format::DiskReader,
    mut out: impl Write,
    progress: &Progress,
) -> Result<u64> {
    let stdout_err = |e| Error::io("writing the disk to stdout", e);
    let zeros = vec![0u8; 1 << 20];
    let mut position = 0u64;
    let mut written = 0u64;
    let fill = |out: &mut dyn Write, position: &mut u64, to: u64| -> Result<()> {
        while *position < to {
            let n = (to - *position).min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n]).map_err(stdout_err)?;
            *position += n as u64;
        }
        Ok(())
    };
    for chunk in reader.stream(crate::repo::read_threads()) {
        let chunk = chunk?;
        let from = position;
        fill(&mut out, &mut position, chunk.offset)?;
        out.write_all(&chunk.data).map_err(stdout_err)?;
        position += chunk.data.len() as u64;
        written += chunk.data.len() as u64;
        progress.add(position - from);
    }
    let from = position;
    fill(&mut out, &mut position, reader.capacity())?;
    progress.add(position - from);
    out.flush().map_err(stdout_err)?;
    Ok(written)
}
