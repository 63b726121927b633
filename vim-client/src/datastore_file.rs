//! Datastore files over HTTP (`/folder/<path>?dcPath=..&dsName=..`) and the `FileManager`.

use std::path::Path;

use reqwest::header::{CONTENT_LENGTH, COOKIE};
use reqwest::{StatusCode, Url};
use tokio::io::AsyncWriteExt;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::moref::MoRef;
use crate::xml::Element;

/// A datastore path, `[datastore] dir/file.vmdk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatastorePath {
    /// The datastore name.
    pub datastore: String,
    /// The path inside the datastore, without a leading slash.
    pub path: String,
}

impl DatastorePath {
    /// A path in a datastore.
    pub fn new(datastore: impl Into<String>, path: impl Into<String>) -> Self {
        DatastorePath {
            datastore: datastore.into(),
            path: path.into().trim_start_matches('/').to_owned(),
        }
    }

    /// The directory part (`dir` of `[ds] dir/file.vmdk`; empty at the top).
    pub fn parent_dir(&self) -> &str {
        self.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }

    /// The file name part.
    pub fn file_name(&self) -> &str {
        self.path
            .rsplit_once('/')
            .map(|(_, f)| f)
            .unwrap_or(&self.path)
    }
}

impl std::str::FromStr for DatastorePath {
    type Err = Error;

    /// Parses `[ds] path`.
    fn from_str(s: &str) -> Result<DatastorePath> {
        let bad = || {
            Error::InvalidInput(format!(
                "`{s}` is not a datastore path like `[ds1] vm/vm.vmx`"
            ))
        };
        let rest = s.trim().strip_prefix('[').ok_or_else(bad)?;
        let (ds, path) = rest.split_once(']').ok_or_else(bad)?;
        if ds.is_empty() {
            return Err(bad());
        }
        // Leading slashes and blanks in any order: what is left prints and parses back as is.
        let path = path.trim_start_matches(|c: char| c == '/' || c.is_whitespace());
        Ok(DatastorePath::new(ds, path.trim_end()))
    }
}

impl std::fmt::Display for DatastorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.datastore, self.path)
    }
}

impl Client {
    /// The `/folder` URL of a datastore file in the datacenter at inventory path `dc_path`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when the URL cannot be built.
    pub fn datastore_file_url(&self, dc_path: &str, file: &DatastorePath) -> Result<Url> {
        let mut url = self.base_url().clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| Error::InvalidInput("server URL cannot have a path".into()))?;
            segments.pop_if_empty().push("folder");
            for part in file.path.split('/').filter(|p| !p.is_empty()) {
                segments.push(part);
            }
        }
        url.query_pairs_mut()
            .append_pair("dcPath", dc_path)
            .append_pair("dsName", &file.datastore);
        Ok(url)
    }

    /// Downloads a datastore file to `dest` (written to a temporary file beside it, fsynced,
    /// then renamed). Returns the number of bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Http`] (404 for a missing file), transport and I/O errors;
    /// [`Error::TooLarge`] (nothing is left at `dest`) for a file over
    /// [`crate::ClientOptions::max_file_bytes`].
    pub async fn download_datastore_file(
        &self,
        dc_path: &str,
        file: &DatastorePath,
        dest: &Path,
    ) -> Result<u64> {
        let url = self.datastore_file_url(dc_path, file)?;
        let mut response = self.file_get(&url).await?;
        let limit = self.max_file_bytes();
        let what = || format!("datastore file {file}");
        crate::bounded::check_announced(&response, limit, &what)?;
        let io = |source| Error::Io {
            path: dest.to_owned(),
            source,
        };
        let tmp = dest.with_file_name(format!(
            ".{}.part",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut total = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.map_transport(&url, e))?
            {
                total += chunk.len() as u64;
                if total > limit {
                    return Err(Error::TooLarge {
                        what: what(),
                        limit,
                        announced: response.content_length(),
                    });
                }
                out.write_all(&chunk).await.map_err(io)?;
            }
            out.sync_all().await.map_err(io)?;
            Ok(())
        }
        .await;
        drop(out);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest).await.map_err(io)?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                d.sync_all().await.map_err(io)?;
            }
        }
        Ok(total)
    }

    /// Reads a (small) datastore file into memory, for `.vmx`, `.nvram` and descriptor files.
    /// At most [`crate::ClientOptions::max_file_bytes`] are read: a larger file (say a flat
    /// disk that a `.vmx` names as its `nvram`) is refused from its Content-Length before any
    /// of it is read, or as soon as the stream passes the limit.
    ///
    /// # Errors
    ///
    /// As [`Client::download_datastore_file`], including [`Error::TooLarge`] naming the file
    /// and the limit.
    pub async fn read_datastore_file(
        &self,
        dc_path: &str,
        file: &DatastorePath,
    ) -> Result<Vec<u8>> {
        self.read_datastore_file_limited(dc_path, file, self.max_file_bytes())
            .await
    }

    /// [`Client::read_datastore_file`] with an explicit limit in bytes, for callers that know a
    /// tighter (or, for a large file they truly need in memory, looser) bound.
    ///
    /// # Errors
    ///
    /// As [`Client::read_datastore_file`].
    pub async fn read_datastore_file_limited(
        &self,
        dc_path: &str,
        file: &DatastorePath,
        max_bytes: u64,
    ) -> Result<Vec<u8>> {
        let url = self.datastore_file_url(dc_path, file)?;
        let mut response = self.file_get(&url).await?;
        crate::bounded::read_body(
            &mut response,
            max_bytes,
            &|| format!("datastore file {file}"),
            &|e| self.map_transport(&url, e),
        )
        .await
    }

    /// Uploads bytes to a datastore file (created or replaced).
    ///
    /// # Errors
    ///
    /// [`Error::Http`], transport errors.
    pub async fn write_datastore_file(
        &self,
        dc_path: &str,
        file: &DatastorePath,
        data: Vec<u8>,
    ) -> Result<()> {
        let len = data.len() as u64;
        self.put(dc_path, file, || {
            Ok((reqwest::Body::from(data.clone()), len))
        })
        .await
    }

    /// Uploads a local file to a datastore file (created or replaced), streaming it.
    ///
    /// # Errors
    ///
    /// I/O errors on `src`, [`Error::Http`], transport errors.
    pub async fn upload_datastore_file(
        &self,
        src: &Path,
        dc_path: &str,
        file: &DatastorePath,
    ) -> Result<()> {
        let io = |source| Error::Io {
            path: src.to_owned(),
            source,
        };
        let open = || -> Result<(reqwest::Body, u64)> {
            let f = std::fs::File::open(src).map_err(io)?;
            let len = f.metadata().map_err(io)?.len();
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(f));
            Ok((reqwest::Body::wrap_stream(stream), len))
        };
        self.put(dc_path, file, open).await
    }

    /// PUT with the session cookie; on 401 logs in again once and repeats with a fresh body.
    async fn put<F>(&self, dc_path: &str, file: &DatastorePath, body: F) -> Result<()>
    where
        F: Fn() -> Result<(reqwest::Body, u64)>,
    {
        let url = self.datastore_file_url(dc_path, file)?;
        let send = || async {
            let (body, len) = body()?;
            self.http()
                .put(url.clone())
                .header(COOKIE, self.cookie_header()?)
                .header(CONTENT_LENGTH, len)
                .body(body)
                .send()
                .await
                .map_err(|e| self.map_transport(&url, e))
        };
        let mut response = send().await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.relogin().await? {
            response = send().await?;
        }
        check_status(&url, &mut response).await
    }

    /// GET with the session cookie; on 401 logs in again once and repeats.
    async fn file_get(&self, url: &Url) -> Result<reqwest::Response> {
        let send = || async {
            self.http()
                .get(url.clone())
                .header(COOKIE, self.cookie_header()?)
                .send()
                .await
                .map_err(|e| self.map_transport(url, e))
        };
        let mut response = send().await?;
        if response.status() == StatusCode::UNAUTHORIZED && self.relogin().await? {
            response = send().await?;
        }
        check_status(url, &mut response).await?;
        Ok(response)
    }

    /// Creates a datastore directory (`[ds] dir`), with parents if `create_parents`.
    ///
    /// # Errors
    ///
    /// `FileAlreadyExists`, `FileNotFound` (missing parent), other faults.
    pub async fn make_directory(
        &self,
        dir: &DatastorePath,
        datacenter: Option<&MoRef>,
        create_parents: bool,
    ) -> Result<()> {
        let body = Element::vim("MakeDirectory")
            .child(self.file_manager()?.to_element("_this"))
            .text_child("name", dir.to_string())
            .opt_child(datacenter.map(|d| d.to_element("datacenter")))
            .text_child("createParentDirectories", create_parents.to_string());
        self.call(body).await.map(|_| ())
    }

    /// Deletes a datastore file or directory (recursively) and waits.
    ///
    /// # Errors
    ///
    /// `FileNotFound`, other task faults.
    pub async fn delete_datastore_file(
        &self,
        file: &DatastorePath,
        datacenter: Option<&MoRef>,
    ) -> Result<()> {
        let body = Element::vim("DeleteDatastoreFile_Task")
            .child(self.file_manager()?.to_element("_this"))
            .text_child("name", file.to_string())
            .opt_child(datacenter.map(|d| d.to_element("datacenter")));
        self.run_task(body, self.task_timeout()).await.map(|_| ())
    }

    fn file_manager(&self) -> Result<MoRef> {
        self.service_content()
            .file_manager
            .clone()
            .ok_or_else(|| Error::Unexpected("server has no FileManager".into()))
    }
}

async fn check_status(url: &Url, response: &mut reqwest::Response) -> Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 300 {
            break;
        }
    }
    body.truncate(300);
    let mut shown = url.clone();
    shown.set_query(None);
    Err(Error::Http {
        status: status.as_u16(),
        url: shown.to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_datastore_paths() {
        let p: DatastorePath = "[datastore1] web01/web01.vmx".parse().unwrap();
        assert_eq!(p, DatastorePath::new("datastore1", "web01/web01.vmx"));
        assert_eq!(p.parent_dir(), "web01");
        assert_eq!(p.file_name(), "web01.vmx");
        assert_eq!(p.to_string(), "[datastore1] web01/web01.vmx");
        let spaced: DatastorePath = "[my ds] a b/c.vmdk".parse().unwrap();
        assert_eq!(spaced.datastore, "my ds");
        assert!("no brackets".parse::<DatastorePath>().is_err());
        assert!("[] x".parse::<DatastorePath>().is_err());
        assert!("[ds x".parse::<DatastorePath>().is_err());
    }
}
