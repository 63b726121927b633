//! Reading HTTP bodies with a size limit, checked before the body is read (Content-Length) and
//! again while it streams (chunked answers, or a server that sends more than it announced).
//!
//! Without a limit a hostile or confused server, or a `.vmx` whose `nvram` names a flat disk,
//! would make the backup host read gigabytes into memory.

use crate::error::{Error, Result};

/// Default for [`crate::ClientOptions::max_response_bytes`]: 128 MiB. Inventory calls are
/// paged (500 objects per RetrievePropertiesEx page), so real answers stay far below it.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 128 << 20;

/// Default for [`crate::ClientOptions::max_file_bytes`]: 16 MiB. The datastore files read into
/// memory (`.vmx`, `.nvram` — about 540 KiB with EFI —, `.vmsd`, disk descriptors) are far
/// smaller; a flat disk is not.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

/// Refuses a response whose announced length is over `limit`, before reading any of it.
pub(crate) fn check_announced(
    response: &reqwest::Response,
    limit: u64,
    what: &dyn Fn() -> String,
) -> Result<()> {
    match response.content_length() {
        Some(n) if n > limit => Err(Error::TooLarge {
            what: what(),
            limit,
            announced: Some(n),
        }),
        _ => Ok(()),
    }
}

/// Reads the whole body, at most `limit` bytes; more is [`Error::TooLarge`].
pub(crate) async fn read_body(
    response: &mut reqwest::Response,
    limit: u64,
    what: &dyn Fn() -> String,
    transport: &dyn Fn(reqwest::Error) -> Error,
) -> Result<Vec<u8>> {
    check_announced(response, limit, what)?;
    let capacity = response.content_length().unwrap_or(0).min(limit);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: what(),
                limit,
                announced: response.content_length(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
