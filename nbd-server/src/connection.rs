//! One client connection: the fixed newstyle handshake, then the transmission phase with
//! several requests in flight (each served by a blocking task; replies go out in completion
//! order, as NBD allows).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::device::{errno_of, BlockDevice, Extent};
use crate::protocol::{self as p, cflag, cmd, errno, info, rep, reply, tflag, ClientOption};

/// How many requests of one connection are accepted at once (more wait in the socket).
const IN_FLIGHT: usize = 16;
/// Device calls running at once, for all connections of a server together: each runs on a
/// blocking thread, and a few threads already keep a verified, decompressing reader busy;
/// more only cost memory (per-thread allocator arenas, buffers).
pub(crate) const DEVICE_CALLS: usize = 8;

/// What is exported, and under which name.
#[derive(Debug, Clone)]
pub struct Export {
    /// The export name (`NBD_OPT_LIST`); the empty name, the default export, selects it too.
    pub name: String,
    /// A line for `NBD_INFO_DESCRIPTION`.
    pub description: String,
    /// The preferred I/O size announced in `NBD_INFO_BLOCK_SIZE` (the repository's chunk size
    /// makes reads cheapest).
    pub preferred_block_size: u32,
}

/// Why a connection ended other than by the client's `NBD_CMD_DISC` or a closed socket.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol; the stream cannot be trusted to be in step.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// What the negotiation agreed on.
#[derive(Debug, Default, Clone, Copy)]
struct Session {
    structured: bool,
    base_allocation: bool,
}

/// Serves one client until it disconnects.
///
/// # Errors
/// A socket error, or a client that breaks the protocol (bad magic, oversized write).
pub async fn serve_connection<S>(
    stream: S,
    device: Arc<dyn BlockDevice>,
    export: Arc<Export>,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let calls = Arc::new(Semaphore::new(DEVICE_CALLS));
    serve_connection_sharing(stream, device, export, calls).await
}

/// [`serve_connection`] with the limit on device calls shared by all of a server's clients.
pub(crate) async fn serve_connection_sharing<S>(
    mut stream: S,
    device: Arc<dyn BlockDevice>,
    export: Arc<Export>,
    calls: Arc<Semaphore>,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(session) = negotiate(&mut stream, device.as_ref(), &export).await? else {
        return Ok(());
    };
    transmit(stream, device, session, calls).await
}

fn transmission_flags(device: &dyn BlockDevice) -> u16 {
    let mut f = tflag::HAS_FLAGS | tflag::SEND_DF | tflag::CAN_MULTI_CONN;
    if device.writable() {
        f |= tflag::SEND_FLUSH | tflag::SEND_FUA | tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES;
    } else {
        f |= tflag::READ_ONLY;
    }
    f
}

fn known(export: &Export, name: &str) -> bool {
    name.is_empty() || name == export.name
}

/// The handshake; `None` when the client aborted.
async fn negotiate<S>(
    s: &mut S,
    device: &dyn BlockDevice,
    export: &Export,
) -> Result<Option<Session>, ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&p::NBD_MAGIC.to_be_bytes());
    hello.extend_from_slice(&p::IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(p::FLAG_FIXED_NEWSTYLE | p::FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello).await?;
    s.flush().await?;
    let client_flags = s.read_u32().await?;
    if client_flags & !(p::CLIENT_FIXED_NEWSTYLE | p::CLIENT_NO_ZEROES) != 0 {
        return Err(ConnectionError::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & p::CLIENT_NO_ZEROES != 0;
    let mut session = Session::default();
    loop {
        let magic = s.read_u64().await?;
        if magic != p::IHAVEOPT {
            return Err(ConnectionError::Protocol(format!(
                "bad option magic {magic:#x}"
            )));
        }
        let option = s.read_u32().await?;
        let len = s.read_u32().await?;
        if len > p::MAX_OPTION_LEN {
            // Skip it without holding it in memory, then say why.
            let skipped =
                tokio::io::copy(&mut (&mut *s).take(u64::from(len)), &mut tokio::io::sink())
                    .await?;
            if skipped < u64::from(len) {
                return Err(ConnectionError::Protocol("option cut short".into()));
            }
            send(
                s,
                p::option_reply(option, rep::ERR_TOO_BIG, b"option too long"),
            )
            .await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;
        let parsed = match p::parse_option(option, &data) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "NBD client sent a malformed option");
                send(
                    s,
                    p::option_reply(option, rep::ERR_INVALID, e.reason.as_bytes()),
                )
                .await?;
                continue;
            }
        };
        match parsed {
            ClientOption::ExportName(name) => {
                if !known(export, &name) {
                    return Err(ConnectionError::Protocol(format!(
                        "no export named {name:?}"
                    )));
                }
                let mut b = Vec::with_capacity(10 + 124);
                b.extend_from_slice(&device.size().to_be_bytes());
                b.extend_from_slice(&transmission_flags(device).to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                send(s, b).await?;
                return Ok(Some(session));
            }
            ClientOption::Abort => {
                // The client may already have closed; the reply is a courtesy.
                let _ = send(s, p::option_reply(option, rep::ACK, &[])).await;
                return Ok(None);
            }
            ClientOption::List => {
                // Name length, name, then the description in the rest.
                let mut d = (export.name.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(export.name.as_bytes());
                d.extend_from_slice(export.description.as_bytes());
                let mut b = p::option_reply(option, rep::SERVER, &d);
                b.extend(p::option_reply(option, rep::ACK, &[]));
                send(s, b).await?;
            }
            ClientOption::StartTls => {
                send(
                    s,
                    p::option_reply(
                        option,
                        rep::ERR_POLICY,
                        b"TLS is not offered; use a unix socket or loopback",
                    ),
                )
                .await?;
            }
            ClientOption::Info { go, name, requests } => {
                if !known(export, &name) {
                    send(
                        s,
                        p::option_reply(option, rep::ERR_UNKNOWN, b"no such export"),
                    )
                    .await?;
                    continue;
                }
                let mut b = Vec::new();
                let mut e = info::EXPORT.to_be_bytes().to_vec();
                e.extend_from_slice(&device.size().to_be_bytes());
                e.extend_from_slice(&transmission_flags(device).to_be_bytes());
                b.extend(p::option_reply(option, rep::INFO, &e));
                let mut bs = info::BLOCK_SIZE.to_be_bytes().to_vec();
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(
                    &export
                        .preferred_block_size
                        .clamp(512, p::MAX_PAYLOAD)
                        .to_be_bytes(),
                );
                bs.extend_from_slice(&p::MAX_PAYLOAD.to_be_bytes());
                b.extend(p::option_reply(option, rep::INFO, &bs));
                if requests.contains(&info::NAME) {
                    let mut n = info::NAME.to_be_bytes().to_vec();
                    n.extend_from_slice(export.name.as_bytes());
                    b.extend(p::option_reply(option, rep::INFO, &n));
                }
                if requests.contains(&info::DESCRIPTION) {
                    let mut d = info::DESCRIPTION.to_be_bytes().to_vec();
                    d.extend_from_slice(export.description.as_bytes());
                    b.extend(p::option_reply(option, rep::INFO, &d));
                }
                b.extend(p::option_reply(option, rep::ACK, &[]));
                send(s, b).await?;
                if go {
                    return Ok(Some(session));
                }
            }
            ClientOption::StructuredReply => {
                if session.structured {
                    send(
                        s,
                        p::option_reply(option, rep::ERR_INVALID, b"already negotiated"),
                    )
                    .await?;
                } else {
                    session.structured = true;
                    send(s, p::option_reply(option, rep::ACK, &[])).await?;
                }
            }
            ClientOption::MetaContext { set, name, queries } => {
                if !session.structured {
                    send(
                        s,
                        p::option_reply(
                            option,
                            rep::ERR_INVALID,
                            b"negotiate structured replies first",
                        ),
                    )
                    .await?;
                    continue;
                }
                if !known(export, &name) {
                    send(
                        s,
                        p::option_reply(option, rep::ERR_UNKNOWN, b"no such export"),
                    )
                    .await?;
                    continue;
                }
                let matched = if queries.is_empty() {
                    // Listing with no query lists everything; setting none selects none.
                    !set
                } else {
                    queries
                        .iter()
                        .any(|q| q == p::BASE_ALLOCATION || (!set && (q == "base:")))
                };
                let mut b = Vec::new();
                if matched {
                    let mut d = p::BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    d.extend_from_slice(p::BASE_ALLOCATION.as_bytes());
                    b.extend(p::option_reply(option, rep::META_CONTEXT, &d));
                }
                if set {
                    session.base_allocation = matched;
                }
                b.extend(p::option_reply(option, rep::ACK, &[]));
                send(s, b).await?;
            }
            ClientOption::Unknown(code) => {
                send(
                    s,
                    p::option_reply(code, rep::ERR_UNSUP, b"option not supported"),
                )
                .await?;
            }
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: Vec<u8>) -> io::Result<()> {
    s.write_all(&bytes).await?;
    s.flush().await
}

/// The transmission phase.
async fn transmit<S>(
    stream: S,
    device: Arc<dyn BlockDevice>,
    session: Session,
    calls: Arc<Semaphore>,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            wr.write_all(&b).await?;
            if rx.is_empty() {
                wr.flush().await?;
            }
        }
        wr.flush().await?;
        wr.shutdown().await
    });
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let result = loop {
        let mut hb = [0u8; p::RequestHeader::LEN];
        match rd.read_exact(&mut hb).await {
            Ok(_) => {}
            // A client that closes without NBD_CMD_DISC is common (killed tools); not an error.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e.into()),
        }
        let req = match p::RequestHeader::decode(&hb) {
            Ok(r) => r,
            Err(e) => break Err(ConnectionError::Protocol(e.to_string())),
        };
        if req.command == cmd::DISC {
            break Ok(());
        }
        let payload = if req.command == cmd::WRITE {
            if req.length > p::MAX_PAYLOAD {
                break Err(ConnectionError::Protocol(format!(
                    "write of {} bytes exceeds the {} byte maximum",
                    req.length,
                    p::MAX_PAYLOAD
                )));
            }
            let mut d = vec![0u8; req.length as usize];
            if let Err(e) = rd.read_exact(&mut d).await {
                break Err(e.into());
            }
            d
        } else {
            Vec::new()
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let (device, tx, calls) = (device.clone(), tx.clone(), calls.clone());
        tasks.spawn(async move {
            let bytes = match calls.acquire_owned().await {
                Ok(_call) => handle(device, session, req, payload).await,
                Err(_) => error_reply(session, req.cookie, errno::ESHUTDOWN, "server stopping"),
            };
            let _ = tx.send(bytes).await;
            drop(permit);
        });
        // Reap finished tasks so the set does not grow with a long session.
        while tasks.try_join_next().is_some() {}
    };
    // Every accepted request gets its reply before the connection closes.
    while tasks.join_next().await.is_some() {}
    drop(tx);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if result.is_ok() && e.kind() != io::ErrorKind::BrokenPipe => {
            return Err(e.into())
        }
        _ => {}
    }
    result
}

/// An error reply in the negotiated form.
fn error_reply(session: Session, cookie: u64, error: u32, message: &str) -> Vec<u8> {
    tracing::debug!(cookie, error, message, "NBD request failed");
    if session.structured {
        p::error_chunk(cookie, error, message)
    } else {
        p::simple_reply(cookie, error)
    }
}

/// Runs a blocking device call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("device task failed: {e}"))))
}

/// Serves one request; returns the bytes of its whole reply.
async fn handle(
    device: Arc<dyn BlockDevice>,
    session: Session,
    req: p::RequestHeader,
    payload: Vec<u8>,
) -> Vec<u8> {
    let cookie = req.cookie;
    let known_flags = cflag::FUA | cflag::NO_HOLE | cflag::DF | cflag::REQ_ONE | (1 << 4);
    if req.flags & !known_flags != 0 {
        return error_reply(session, cookie, errno::EINVAL, "unknown command flags");
    }
    let size = device.size();
    let len = u64::from(req.length);
    let in_range = req.offset.checked_add(len).is_some_and(|e| e <= size);
    let writes = matches!(req.command, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    if writes && !device.writable() {
        return error_reply(
            session,
            cookie,
            errno::EPERM,
            "the export is read-only (serve with --overlay to write)",
        );
    }
    if !in_range && req.command != cmd::FLUSH {
        let e = if writes { errno::ENOSPC } else { errno::EINVAL };
        return error_reply(session, cookie, e, "request beyond the end of the disk");
    }
    let fua = req.flags & cflag::FUA != 0;
    let (offset, flags) = (req.offset, req.flags);
    let done = |r: io::Result<()>| match r {
        Ok(()) => p::simple_reply(cookie, 0),
        Err(e) => error_reply(session, cookie, errno_of(&e), &e.to_string()),
    };
    match req.command {
        cmd::READ => read(device, session, req).await,
        cmd::WRITE => done(blocking(move || device.write_at(offset, &payload, fua)).await),
        cmd::FLUSH => done(blocking(move || device.flush()).await),
        cmd::TRIM => done(blocking(move || device.trim(offset, len)).await),
        cmd::WRITE_ZEROES => done(blocking(move || device.write_zeroes(offset, len, fua)).await),
        cmd::BLOCK_STATUS => {
            if !session.base_allocation {
                return error_reply(
                    session,
                    cookie,
                    errno::EINVAL,
                    "no metadata context negotiated",
                );
            }
            if len == 0 {
                return error_reply(session, cookie, errno::EINVAL, "zero-length block status");
            }
            match blocking(move || device.extents(offset, len)).await {
                Ok(extents) => block_status(cookie, &extents, len, flags & cflag::REQ_ONE != 0),
                Err(e) => error_reply(session, cookie, errno_of(&e), &e.to_string()),
            }
        }
        other => error_reply(
            session,
            cookie,
            errno::EINVAL,
            &format!("unsupported command {other}"),
        ),
    }
}

/// A `NBD_REPLY_TYPE_BLOCK_STATUS` chunk for `base:allocation`, clipped to the request.
fn block_status(cookie: u64, extents: &[Extent], len: u64, req_one: bool) -> Vec<u8> {
    let mut d = p::BASE_ALLOCATION_ID.to_be_bytes().to_vec();
    let mut covered = 0u64;
    for e in extents.iter().filter(|e| e.len > 0) {
        if covered >= len {
            break;
        }
        let l = e.len.min(len - covered);
        covered += l;
        let flags = if e.hole {
            p::state::HOLE | p::state::ZERO
        } else {
            0
        };
        // `len` came from a u32, so `l` fits.
        d.extend_from_slice(&(l as u32).to_be_bytes());
        d.extend_from_slice(&flags.to_be_bytes());
        if req_one {
            break;
        }
    }
    if covered == 0 {
        // A device that reported nothing: say "data", which is always true.
        d.extend_from_slice(&(len as u32).to_be_bytes());
        d.extend_from_slice(&0u32.to_be_bytes());
    }
    let mut b = p::chunk_header(
        cookie,
        reply::FLAG_DONE,
        reply::BLOCK_STATUS,
        d.len() as u32,
    );
    b.extend(d);
    b
}

/// Serves a read: simple reply, or structured chunks with holes sent as holes.
async fn read(device: Arc<dyn BlockDevice>, session: Session, req: p::RequestHeader) -> Vec<u8> {
    let cookie = req.cookie;
    if req.length > p::MAX_PAYLOAD {
        let e = if session.structured {
            errno::EOVERFLOW
        } else {
            errno::EINVAL
        };
        return error_reply(session, cookie, e, "read longer than the maximum payload");
    }
    let (offset, len) = (req.offset, u64::from(req.length));
    if !session.structured {
        let r = blocking(move || {
            let mut b = p::simple_reply(cookie, 0);
            let h = b.len();
            b.resize(h + len as usize, 0);
            device.read_at(offset, &mut b[h..])?;
            Ok(b)
        })
        .await;
        return r.unwrap_or_else(|e| error_reply(session, cookie, errno_of(&e), &e.to_string()));
    }
    if len == 0 {
        return p::chunk_header(cookie, reply::FLAG_DONE, reply::NONE, 0);
    }
    let one_piece = req.flags & cflag::DF != 0;
    let r = blocking(move || {
        let extents = if one_piece {
            vec![Extent { len, hole: false }]
        } else {
            device.extents(offset, len)?
        };
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        let mut pieces = extents.iter().filter(|e| e.len > 0).peekable();
        while pos < end {
            // A device whose map stops early: the rest is read as data.
            let e = pieces.next().copied().unwrap_or(Extent {
                len: end - pos,
                hole: false,
            });
            let l = e.len.min(end - pos);
            let last = pos + l >= end;
            let flags = if last { reply::FLAG_DONE } else { 0 };
            if e.hole {
                out.extend(p::chunk_header(cookie, flags, reply::OFFSET_HOLE, 12));
                out.extend_from_slice(&pos.to_be_bytes());
                out.extend_from_slice(&(l as u32).to_be_bytes());
            } else {
                out.extend(p::chunk_header(
                    cookie,
                    flags,
                    reply::OFFSET_DATA,
                    8 + l as u32,
                ));
                out.extend_from_slice(&pos.to_be_bytes());
                let at = out.len();
                out.resize(at + l as usize, 0);
                device.read_at(pos, &mut out[at..])?;
            }
            pos += l;
        }
        Ok(out)
    })
    .await;
    r.unwrap_or_else(|e| error_reply(session, cookie, errno_of(&e), &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_status_is_clipped_to_the_request() {
        let ex = [
            Extent {
                len: 100,
                hole: false,
            },
            Extent {
                len: 1000,
                hole: true,
            },
        ];
        let b = block_status(7, &ex, 300, false);
        // header 20 + context 4 + two descriptors of 8
        assert_eq!(b.len(), 20 + 4 + 16);
        assert_eq!(&b[24..28], &100u32.to_be_bytes());
        assert_eq!(&b[32..36], &200u32.to_be_bytes());
        assert_eq!(&b[36..40], &3u32.to_be_bytes());
        let one = block_status(7, &ex, 300, true);
        assert_eq!(one.len(), 20 + 4 + 8);
    }
}
