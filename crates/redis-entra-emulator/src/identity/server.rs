//! Serving a router over HTTPS (or plain HTTP), one task per connection.
//!
//! Each accepted connection gets its own task: its TLS handshake (bounded by a timeout), then
//! HTTP/1.1 or HTTP/2 through hyper-util's auto builder. A failed handshake, garbage bytes or a
//! client that stalls affects that connection only. When the shutdown future completes the
//! listener closes, connections finish the request in flight and close, and the server task
//! ends (after at most [`DRAIN_TIMEOUT`], when stragglers are cut off).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long a client has to complete its TLS handshake.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers (HTTP/1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after shutdown is requested.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The most connections one of the fake Entra ID's listeners (the HTTPS authority, the
/// managed-identity endpoints, IMDS) holds at once; one more is closed at once, unanswered.
pub const MAX_IDENTITY_CONNECTIONS: usize = 1024;

/// Serves `router` on `listener` until `shutdown` completes: over TLS with `tls`, over plain
/// HTTP when `tls` is `None` (the managed-identity endpoint, like App Service's, is
/// `http://127.0.0.1:PORT`).
///
/// Spawns the server task and returns its handle at once; the task ends once the server has
/// stopped, so await the handle to know that the listener is closed and the connections
/// drained.
///
/// # Panics
///
/// When called outside a Tokio runtime (as [`tokio::spawn`] does).
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(accept_loop(listener, acceptor, router, shutdown))
}

/// Accepts connections until shutdown, then drains them.
async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    accept_bounded(
        listener,
        MAX_IDENTITY_CONNECTIONS,
        "identity server",
        shutdown,
        move |stream, peer, stop| connection(stream, peer, acceptor.clone(), router.clone(), stop),
    )
    .await;
}

/// Accepts connections on `listener` until `shutdown`, each served in its own task by
/// `serve(stream, peer, stop)`, at most `limit` at once (one more is closed at once,
/// unanswered); then tells them to stop (`stop` turns true) and waits for them, at most
/// [`DRAIN_TIMEOUT`].
pub(super) async fn accept_bounded<F, Fut>(
    listener: TcpListener,
    limit: usize,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let permits = Arc::new(Semaphore::new(limit));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, limit, "{name}: too many connections, closing this one");
                        continue;
                    };
                    let served = serve(stream, peer, stop_rx.clone());
                    connections.spawn(async move {
                        served.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "{name}: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Receivers see the change, or the sender gone: either way they wind down.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    tracing::debug!(?local, "{name} stopped");
}

/// One connection: the TLS handshake if any, then HTTP.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => serve_http(TokioIo::new(stream), router, stop).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                result = handshake => match result {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.changed() => return,
            };
            serve_http(TokioIo::new(tls), router, stop).await;
        }
    }
}

/// HTTP/1.1 or HTTP/2 on an established connection, closed gracefully on shutdown.
pub(super) async fn serve_http<I>(io: I, router: Router, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        router.clone().oneshot(request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
    }
}
