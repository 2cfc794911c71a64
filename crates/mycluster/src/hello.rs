//! `mycluster hello`: the demo workload. An HTTP server answering "Hello World" on every
//! path, as the original's `crccheck/hello-world` did on port 8000, with an
//! `X-Served-By: <hostname>` header naming the replica (or `$MYCLUSTER_SERVED_BY`, which
//! the process driver sets, since its replicas share one hostname); `--proxy-protocol`
//! reads the PROXY protocol v2 header the ingress sends first on each connection and
//! answers the client's address it gives in `X-Client-Address`; `--exit-after` makes it
//! end on its own, to show crash handling.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mycluster_background::{Loop, LoopControl};
use mycluster_ingress::proxy_protocol;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::HelloArgs;
use crate::manager::stop_on_signal;

/// What names the replica instead of the hostname, when set.
pub const SERVED_BY_ENV: &str = "MYCLUSTER_SERVED_BY";

pub async fn run(args: HelloArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let app = Router::new().fallback(hello).with_state(served_by());
    // As PID 1 of a container, the kernel gives it no default SIGTERM action: without its
    // own handler every `docker stop` would wait out the whole grace period.
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let server = async {
        if args.proxy_protocol {
            serve_proxied(listener, app, stop).await;
            Ok(())
        } else {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    };
    match args.exit_after {
        Some(secs) => {
            let wait = Duration::try_from_secs_f64(secs)
                .context("--exit-after must be a positive number")?;
            tokio::select! {
                served = server => served?,
                _ = tokio::time::sleep(wait) => std::process::exit(args.exit_code),
            }
        }
        None => server.await?,
    }
    Ok(())
}

/// Which replica answered, without changing the body: behind a load balancer a user
/// sees the balancing (`curl -i`). In a container the hostname is the container's.
fn served_by() -> HeaderValue {
    let named = std::env::var(SERVED_BY_ENV)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    named
        .or_else(mycluster_agent::hostname)
        .and_then(|name| HeaderValue::from_str(&name).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

/// The client's address, from the connection's PROXY protocol header.
#[derive(Clone, Copy)]
struct ClientAddress(SocketAddr);

async fn hello(
    State(served_by): State<HeaderValue>,
    client: Option<Extension<ClientAddress>>,
) -> (HeaderMap, &'static str) {
    let mut headers = HeaderMap::new();
    headers.insert("x-served-by", served_by);
    if let Some(Extension(ClientAddress(client))) = client {
        if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
            headers.insert("x-client-address", value);
        }
    }
    (headers, "Hello World\n")
}

/// How long a new connection has to send its PROXY protocol header.
const HEADER_WAIT: Duration = Duration::from_secs(10);

/// Serves `app` on connections that each start with a PROXY protocol v2 header, until
/// `stop`; then lets open requests finish, for at most a few seconds.
async fn serve_proxied(listener: TcpListener, app: Router, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut server = Server {
        listener,
        app,
        builder: auto::Builder::new(TokioExecutor::new()),
        graceful: &graceful,
        stop: stop.clone(),
    };
    Loop::new("hello", Duration::from_millis(50), stop)
        .max_backoff(Duration::from_secs(1))
        .quiet_recovery()
        .run_with(&mut server, |server| Box::pin(server.accept()))
        .await;
    // New clients are refused at once rather than left waiting during the grace period.
    drop(server);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

struct Server<'a> {
    listener: TcpListener,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    stop: CancellationToken,
}

impl Server<'_> {
    /// Accepts one connection and serves it in a task of its own.
    async fn accept(&mut self) -> Result<LoopControl, String> {
        let (mut stream, peer) = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Ok(LoopControl::Stop),
            accepted = self.listener.accept() => accepted.map_err(|e| format!("cannot accept a connection: {e}"))?,
        };
        let app = self.app.clone();
        let builder = self.builder.clone();
        let watcher = self.graceful.watcher();
        tokio::spawn(async move {
            let header =
                tokio::time::timeout(HEADER_WAIT, proxy_protocol::read_header(&mut stream)).await;
            let app = match header {
                Ok(Ok(header)) => match header.source() {
                    Some(client) => app.layer(Extension(ClientAddress(client))),
                    // The proxy's own connection (a health check): no client to name.
                    None => app,
                },
                Ok(Err(e)) => {
                    tracing::warn!("hello: connection from {peer} closed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "hello: connection from {peer} closed: no PROXY protocol header within {HEADER_WAIT:?}"
                    );
                    return;
                }
            };
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                .into_owned();
            // A client that hangs up or sends garbage ends its own connection only.
            let _ = watcher.watch(connection).await;
        });
        Ok(LoopControl::Now)
    }
}
