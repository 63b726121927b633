//! Writing a sparse raw disk image atomically: the file is created under a temporary name in
//! the destination directory, sized to the disk's capacity (holes), non-zero chunks are written
//! at their offsets, then it is fsynced, renamed into place and the directory fsynced. A
//! failure or interruption leaves no partial file under the final name.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An image being written; [`SparseImage::commit`] publishes it, dropping it removes it.
#[derive(Debug)]
pub struct SparseImage {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
    bytes_written: u64,
}

impl SparseImage {
    /// Starts an image of `capacity` bytes to become `dest`, which must not exist.
    ///
    /// # Errors
    /// When `dest` exists or the temporary file cannot be created.
    pub fn create(dest: &Path, capacity: u64) -> Result<SparseImage> {
        if dest.exists() {
            return Err(Error::Other(format!(
                "{} already exists; export never overwrites a file",
                dest.display()
            )));
        }
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Other(format!("{} is not a file name", dest.display())))?;
        let temp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
        let image = SparseImage {
            file,
            temp,
            dest: dest.to_path_buf(),
            committed: false,
            bytes_written: 0,
        };
        image
            .file
            .set_len(capacity)
            .map_err(|e| Error::io(format!("size {}", image.temp.display()), e))?;
        Ok(image)
    }

    /// Writes `data` at `offset`, skipping it entirely when it is all zeros (it stays a hole).
    ///
    /// # Errors
    /// On I/O failure.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.iter().all(|&b| b == 0) {
            return Ok(());
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io(format!("write {}", self.temp.display()), e))?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    /// Bytes of data written (holes excluded).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// fsyncs, renames into place, fsyncs the directory.
    ///
    /// # Errors
    /// On I/O failure, in which case the temporary file is removed.
    pub fn commit(mut self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(format!("fsync {}", self.temp.display()), e))?;
        if self.dest.exists() {
            return Err(Error::Other(format!(
                "{} appeared while exporting; not overwriting it",
                self.dest.display()
            )));
        }
        std::fs::rename(&self.temp, &self.dest)
            .map_err(|e| Error::io(format!("rename to {}", self.dest.display()), e))?;
        self.committed = true;
        let dir = parent_dir(&self.dest);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))?;
        Ok(())
    }
}

impl Drop for SparseImage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_data_keeps_holes_and_publishes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("disk.img");
        let mut img = SparseImage::create(&dest, 64 << 20).unwrap();
        img.write_at(0, &[0u8; 4096]).unwrap();
        img.write_at(32 << 20, &[7u8; 4096]).unwrap();
        assert!(!dest.exists(), "nothing under the final name before commit");
        assert_eq!(img.bytes_written(), 4096);
        img.commit().unwrap();
        let data = std::fs::read(&dest).unwrap();
        assert_eq!(data.len(), 64 << 20);
        assert_eq!(&data[32 << 20..(32 << 20) + 4096], &[7u8; 4096][..]);
        assert!(data[..4096].iter().all(|&b| b == 0));
        let blocks = std::fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "sparse: {blocks} bytes allocated");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_image_leaves_nothing_and_existing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("disk.img");
        {
            let mut img = SparseImage::create(&dest, 1 << 20).unwrap();
            img.write_at(0, &[1u8; 10]).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(&dest, b"keep").unwrap();
        assert!(SparseImage::create(&dest, 10).is_err());
        assert_eq!(std::fs::read(&dest).unwrap(), b"keep");
    }
}
