//! The HTTP server: accepts connections and serves the API over HTTP/1.1 and HTTP/2 (so
//! an agent can carry all its requests on one connection), over TLS or in the clear,
//! with the limits a client must not get past before a request even exists: header
//! size, the time to send the headers (and finish the TLS handshake), connections in all.
//!
//! One port serves both TLS and plain HTTP, told apart by the first byte (a TLS
//! handshake starts with 0x16). Plain HTTP is served only where it cannot have crossed
//! a network: from a loopback peer, or on a listener its operator declared local
//! (`Plain::Anyone`, setup's port published on the host's 127.0.0.1). Anywhere else a
//! plain request gets a 400 that says to use https, and its connection is closed: a
//! token it carried has crossed the network already, but nothing answers it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::guard::Peer;

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// The time a client has to send a request's headers (slow-loris).
    pub header_read_timeout: Duration,
    /// Hyper's own buffer for the request head: a backstop above the API's JSON-answered
    /// limit, for heads so large they never reach it.
    pub max_head_bytes: usize,
    /// Open connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Concurrent requests on one HTTP/2 connection.
    pub max_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 64 * 1024,
            max_connections: 16_384,
            max_streams: 256,
        }
    }
}

/// Who may speak plain HTTP to a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plain {
    /// Clients on this host only (a loopback peer); the rest must use TLS.
    LoopbackPeers,
    /// Anyone: TLS is off (`--insecure-no-tls`), or the listener is reached only from
    /// this host's loopback (`--local-listen`, published on 127.0.0.1).
    Anyone,
}

/// How a listener serves: its TLS (none: plain HTTP only) and who may skip it.
#[derive(Clone)]
pub struct Transport {
    pub tls: Option<mycluster_tls::TlsAcceptor>,
    pub plain: Plain,
}

/// Serves `app` on `listener` until `stop`; then lets open requests finish (long-polls
/// answer at once on stop), for at most a few seconds.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServerLimits,
    transport: Transport,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut accept_failures = 0u32;
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_failures = 0;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close
                    // instead of spinning.
                    accept_failures += 1;
                    if accept_failures == 1 || accept_failures.is_multiple_of(100) {
                        tracing::warn!("cannot accept a connection: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let first_byte = limits.header_read_timeout;
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let transport = transport.clone();
        tokio::spawn(async move {
            // Until a client sends its first byte, hyper waits (to tell HTTP/1 from
            // HTTP/2) with no deadline: a connection that stays silent would hold a slot
            // for ever.
            let mut probe = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut probe)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let service = app.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                request
            });
            let service = TowerToHyperService::new(service);
            let is_tls = probe[0] == mycluster_tls::TLS_HANDSHAKE_BYTE;
            match (&transport.tls, is_tls) {
                (Some(tls), true) => {
                    // The handshake within the same deadline as a request's headers.
                    let Ok(Ok(stream)) = tokio::time::timeout(first_byte, tls.accept(stream)).await
                    else {
                        return;
                    };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                }
                (Some(_), false)
                    if transport.plain == Plain::LoopbackPeers
                        && !peer.ip().to_canonical().is_loopback() =>
                {
                    refuse_plain(stream).await;
                }
                _ => {
                    // A client that hangs up or sends garbage ends its own connection
                    // only.
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                }
            }
            drop(permit);
        });
    }
    // New clients are refused at once rather than left waiting during the grace period.
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("connections still open after 5 s: closing them");
        }
    }
}

/// The answer to plain HTTP where only TLS is served: the error document, then the
/// connection closed (what was sent is never parsed: it may hold a token that crossed
/// the network in the clear, and nothing is done with it).
async fn refuse_plain(mut stream: TcpStream) {
    const BODY: &str = "{\"message\":\"this port speaks HTTPS: use https:// (plain HTTP is served only to clients on the manager's own host); `mycluster token --curl` prints a working curl line\",\"code\":400}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        write_and_close(&mut stream, &answer),
    )
    .await;
}

async fn write_and_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, text: &str) {
    if stream.write_all(text.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    // Closed with the request still unread, the kernel would answer with a reset, which
    // many clients report instead of the 400: drain a little first, into nothing (never
    // parsed).
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}
