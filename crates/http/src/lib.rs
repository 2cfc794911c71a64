//! The HTTP server of MyCluster's ports — the manager's API and each agent's port
//! (health, metrics, its tasks' logs): accepts connections and serves a router over
//! HTTP/1.1 and HTTP/2 (so an agent can carry all its requests to the manager on one
//! connection), over TLS or in the clear, with the limits a client must not get past
//! before a request even exists: header size, the time to send the headers (and finish
//! the TLS handshake), connections in all.
//!
//! One port serves both TLS and plain HTTP, told apart by the first byte (a TLS
//! handshake starts with 0x16). Who may speak plain HTTP is the listener's `Plain`: on
//! the manager's main port only a loopback peer (elsewhere a plain request gets a 400
//! that says to use https, and its connection is closed: a token it carried has crossed
//! the network already, but nothing answers it); on a listener its operator declared
//! local, and on an agent's port, anyone (`Plain::Anyone`: the agent's health probes,
//! Docker healthchecks and Prometheus scrapes speak plain HTTP and carry no secret; its
//! logs route reads `Peer` and `OverTls` and answers plain HTTP from this host only).
//!
//! Its own crate rather than a module of `mycluster-tls`: what it needs is a server
//! stack (axum, hyper), which the CLI, the monitor, setup and the ingress — clients that
//! link the TLS crate and serve nothing — would otherwise compile too.

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

/// The peer of the connection a request came on, which `serve` puts in every request's
/// extensions (absent in tests that call a router directly).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// Whether the connection a request came on is TLS, which `serve` puts beside `Peer`:
/// a handler that must not answer plain HTTP from another host reads both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverTls(pub bool);

impl Peer {
    /// Whether the peer is on this host (a loopback address, IPv4-mapped included).
    pub fn is_loopback(&self) -> bool {
        self.0.ip().to_canonical().is_loopback()
    }
}

/// Connection-level limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// The time a client has to send a request's headers (slow-loris).
    pub header_read_timeout: Duration,
    /// Hyper's own buffer for the request head: a backstop above the manager API's
    /// JSON-answered limit, for heads so large they never reach it.
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
    /// Clients on this host only (a loopback peer); the rest must use TLS, and a plain
    /// request from them is answered a 400 whose error document's message is `refusal`
    /// (which says how to reach this server instead).
    LoopbackPeers { refusal: &'static str },
    /// Anyone: TLS is off (`--insecure-no-tls`), the listener is reached only from this
    /// host's loopback (`--local-listen`, published on 127.0.0.1), or what it serves
    /// in the clear carries no secret (an agent's port, whose logs route refuses plain
    /// HTTP from other hosts itself: see `OverTls`).
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
            let is_tls = probe[0] == mycluster_tls::TLS_HANDSHAKE_BYTE;
            let over_tls = OverTls(is_tls && transport.tls.is_some());
            let service = app.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(Peer(peer));
                request.extensions_mut().insert(over_tls);
                request
            });
            let service = TowerToHyperService::new(service);
            match (&transport.tls, is_tls, transport.plain) {
                (Some(tls), true, _) => {
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
                (Some(_), false, Plain::LoopbackPeers { refusal }) if !Peer(peer).is_loopback() => {
                    refuse_plain(stream, refusal).await;
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

/// The answer to plain HTTP where only TLS is served: the error document saying
/// `refusal`, then the connection closed (what was sent is never parsed: it may hold a
/// token that crossed the network in the clear, and nothing is done with it).
async fn refuse_plain(mut stream: TcpStream, refusal: &str) {
    let body = serde_json::json!({ "message": refusal, "code": 400 }).to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use mycluster_tls::{ClusterCa, Pin};

    /// A server of `plain` on loopback, with TLS from a CA of its own; its address and
    /// that CA's pin.
    async fn server(plain: Plain, stop: &CancellationToken) -> (std::net::SocketAddr, Pin) {
        let ca = ClusterCa::generate().unwrap();
        let tls = ca
            .server_config("MyCluster test", &["localhost".into()])
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/who",
            get(
                |axum::Extension(Peer(peer)): axum::Extension<Peer>| async move {
                    peer.ip().to_string()
                },
            ),
        );
        let transport = Transport {
            tls: Some(mycluster_tls::TlsAcceptor::from(tls)),
            plain,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            serve(listener, app, &ServerLimits::default(), transport, stop).await
        });
        (addr, ca.pin())
    }

    fn client(pin: Option<Pin>) -> reqwest::Client {
        mycluster_tls::install_default_provider();
        let config = match pin {
            Some(pin) => mycluster_tls::pinned_client(pin).unwrap(),
            None => mycluster_tls::trusting_nobody().unwrap(),
        };
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn one_port_serves_tls_to_a_pinning_client_and_plain_http() {
        let stop = CancellationToken::new();
        let (addr, pin) = server(Plain::Anyone, &stop).await;
        let get = |scheme: &str, pin| {
            let url = format!("{scheme}://{addr}/who");
            async move { client(pin).get(url).send().await }
        };
        let tls = get("https", Some(pin)).await.unwrap();
        assert_eq!(tls.text().await.unwrap(), "127.0.0.1", "the peer, over TLS");
        let plain = get("http", None).await.unwrap();
        assert_eq!(
            plain.text().await.unwrap(),
            "127.0.0.1",
            "the peer, in the clear"
        );
        // A client that pins another CA refuses the server before sending anything.
        let other = ClusterCa::generate().unwrap().pin();
        let refused = get("https", Some(other)).await.unwrap_err();
        let why = mycluster_tls::refused_certificate(&refused);
        assert!(
            why.is_some_and(|w| w.contains("not from the CA")),
            "{refused:?}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_loopback_peer_may_skip_tls_where_others_may_not() {
        // Only another host is refused (see `plain_http_is_served_on_loopback_only` in
        // the agent's TLS tests); from loopback the port answers in the clear.
        let stop = CancellationToken::new();
        let (addr, _) = server(
            Plain::LoopbackPeers {
                refusal: "use https",
            },
            &stop,
        )
        .await;
        let plain = client(None)
            .get(format!("http://{addr}/who"))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), 200);
        stop.cancel();
    }
}
