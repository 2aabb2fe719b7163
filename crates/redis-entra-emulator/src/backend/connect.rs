//! Reaching the backend: where it listens, the byte stream to it, and opening one.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Where the backend listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// `host:port` over plain TCP.
    Tcp(String, u16),
    /// A unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(h, p) => write!(f, "redis://{h}:{p}"),
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// A byte stream to the backend.
#[derive(Debug)]
pub enum BackendStream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixSocket),
}

/// A unix socket to the backend, registered with the runtime for reading only.
///
/// Tokio registers its sockets for reading and writing, edge-triggered. On a unix socket the
/// kernel then wakes the runtime's poller every time the backend reads a request (reading
/// frees the sender's buffer space: `unix_write_space`), once per request pipeline, although
/// the gateway almost never waits to write: the bench showed the backend's CPU per request
/// 1.5 times what it is behind haproxy, which asks for writability only when a write would
/// block. Registered for reading only, that wakeup stops at the poller's event mask. A write
/// that would block registers a duplicate of the descriptor for writability, for as long as
/// it waits.
#[derive(Debug)]
pub struct UnixSocket {
    socket: AsyncFd<std::os::unix::net::UnixStream>,
    /// While a write waits for room: the duplicate registered for writability.
    write_wait: Option<AsyncFd<OwnedFd>>,
}

impl UnixSocket {
    fn new(stream: UnixStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        // SAFETY: the `UnixStream` owns its descriptor, open until the `AsyncFd` drops it,
        // and always gives the same one.
        let socket = unsafe { AsyncFd::register_with_interest(std, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            socket,
            write_wait: None,
        })
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| s.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Runs `write` now; if it would block, waits for room on a registration of its own.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&std::os::unix::net::UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let Self { socket, write_wait } = self;
            let waiter = match write_wait {
                None => match write(socket.get_ref()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let dup = socket.get_ref().as_fd().try_clone_to_owned()?;
                        // SAFETY: as above, for the duplicate this `OwnedFd` owns.
                        let waiter =
                            unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
                                .map_err(io::Error::from)?;
                        write_wait.insert(waiter)
                    }
                    done => return Poll::Ready(done),
                },
                Some(waiter) => waiter,
            };
            let mut guard = ready!(waiter.poll_write_ready(cx))?;
            match guard.try_io(|_| write(socket.get_ref())) {
                Ok(done) => {
                    *write_wait = None;
                    return Poll::Ready(done);
                }
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => s.poll_write_with(cx, |mut w| w.write(buf)),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(_) => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Poll::Ready(s.socket.get_ref().shutdown(std::net::Shutdown::Write)),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => s.poll_write_with(cx, |mut w| w.write_vectored(bufs)),
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
}

/// Opens a new unauthenticated stream to `addr`.
pub(super) async fn connect_to(addr: &BackendAddr) -> io::Result<BackendStream> {
    match addr {
        BackendAddr::Tcp(h, p) => {
            let s = TcpStream::connect((h.as_str(), *p)).await?;
            s.set_nodelay(true)?;
            Ok(BackendStream::Tcp(s))
        }
        BackendAddr::Unix(path) => Ok(BackendStream::Unix(UnixSocket::new(
            UnixStream::connect(path).await?,
        )?)),
    }
}
