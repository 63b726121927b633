//! Accepting clients on a unix socket or a TCP address until told to stop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;

use tokio::sync::Semaphore;

use crate::connection::{serve_connection_sharing, Export, DEVICE_CALLS};
use crate::device::BlockDevice;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// A unix socket path (created; must not exist).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl ListenAddress {
    /// The NBD URI a client uses (`nbd+unix:///?socket=PATH` or `nbd://HOST:PORT`).
    pub fn uri(&self) -> String {
        match self {
            ListenAddress::Unix(p) => format!("nbd+unix:///?socket={}", p.display()),
            ListenAddress::Tcp(a) => format!("nbd://{a}"),
        }
    }
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

/// A bound listener. A unix socket file it created is removed when it is dropped.
pub struct Server {
    listener: Listener,
    address: ListenAddress,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .finish()
    }
}

impl Server {
    /// Binds the address. An existing path is never replaced: it may be another program's.
    /// Call it inside the tokio runtime that will [`run`](Server::run) the server (the
    /// listener registers with the current runtime).
    ///
    /// # Errors
    /// The path exists, or the address cannot be bound.
    pub fn bind(address: &ListenAddress) -> io::Result<Server> {
        let (listener, address) = match address {
            ListenAddress::Unix(p) => {
                if p.symlink_metadata().is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} already exists; remove it or choose another socket path",
                            p.display()
                        ),
                    ));
                }
                (
                    Listener::Unix(UnixListener::bind(p)?, p.clone()),
                    address.clone(),
                )
            }
            ListenAddress::Tcp(a) => {
                let std = std::net::TcpListener::bind(a)?;
                std.set_nonblocking(true)?;
                let l = TcpListener::from_std(std)?;
                let bound = ListenAddress::Tcp(l.local_addr()?);
                (Listener::Tcp(l), bound)
            }
        };
        Ok(Server { listener, address })
    }

    /// The bound address (for TCP port 0, the chosen port).
    pub fn address(&self) -> &ListenAddress {
        &self.address
    }

    /// Serves clients, each on its own task, until `shutdown` completes; then closes every
    /// connection. Connection errors are logged, not returned: one bad client does not stop
    /// the others.
    ///
    /// # Errors
    /// Accepting failed in a way that will not heal (the listener is gone).
    pub async fn run(
        self,
        device: Arc<dyn BlockDevice>,
        export: Export,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let export = Arc::new(export);
        let calls = Arc::new(Semaphore::new(DEVICE_CALLS));
        let mut clients = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = self.accept() => a,
            };
            match accepted {
                Ok((conn, peer)) => {
                    tracing::info!(peer = %peer, "NBD client connected");
                    let (device, export, calls) = (device.clone(), export.clone(), calls.clone());
                    clients.spawn(async move {
                        let r = match conn {
                            Conn::Unix(s) => {
                                serve_connection_sharing(s, device, export, calls).await
                            }
                            Conn::Tcp(s) => {
                                serve_connection_sharing(s, device, export, calls).await
                            }
                        };
                        match r {
                            Ok(()) => tracing::info!(peer = %peer, "NBD client disconnected"),
                            Err(e) => {
                                tracing::warn!(peer = %peer, error = %e, "NBD client dropped")
                            }
                        }
                    });
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accepting an NBD client failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
            while clients.try_join_next().is_some() {}
        }
        clients.shutdown().await;
        Ok(())
    }

    async fn accept(&self) -> io::Result<(Conn, String)> {
        match &self.listener {
            Listener::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok((Conn::Unix(s), p.display().to_string()))
            }
            Listener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Conn::Tcp(s), a.to_string()))
            }
        }
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// Errors after which accepting again can succeed (out of descriptors, an aborted handshake).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = &self.listener {
            // Ours: created by bind above, which refuses an existing path.
            let _ = std::fs::remove_file(p);
        }
    }
}
