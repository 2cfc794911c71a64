//! `mycluster hello`: the demo workload. An HTTP server answering "Hello World" on every
//! path, as the original's `crccheck/hello-world` did on port 8000, with an
//! `X-Served-By: <hostname>` header naming the replica (or `$MYCLUSTER_SERVED_BY`, which
//! the process driver sets, since its replicas share one hostname); `--proxy-protocol`
//! reads the PROXY protocol v2 header the ingress sends first on each connection and
//! answers the client's address it gives in `X-Client-Address`; `--exit-after` makes it
//! end on its own, to show crash handling.
//!
//! Two more flags make it a test workload (the demo image is `FROM scratch` plus this
//! binary: there is no other program in it): `--allocate SIZE` holds that much memory,
//! written, from the start (under a lower memory limit the kernel kills it); and
//! `--state-file PATH` adds one to the counter in that file at start, and answers it on
//! `GET /state` (a replica's replacement on the same volume answers one more).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mycluster_background::{Loop, LoopControl};
use mycluster_core::service::Bytes;
use mycluster_ingress::proxy_protocol;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::HelloArgs;
use crate::manager::stop_on_signal;

/// What names the replica instead of the hostname, when set.
pub const SERVED_BY_ENV: &str = "MYCLUSTER_SERVED_BY";

pub async fn run(args: HelloArgs) -> anyhow::Result<()> {
    // Held until the process ends: what counts is that it stays in use.
    let held = args.allocate.as_deref().map(allocate).transpose()?;
    let count = args.state_file.as_deref().map(count).transpose()?;
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let mut app = Router::new();
    if let Some(count) = count {
        app = app.route("/state", get(move || async move { format!("{count}\n") }));
    }
    let name = served_by();
    // One line at start: what `mycluster logs` (and `docker logs`) shows of a replica.
    println!(
        "hello: {} serving on port {}",
        name.to_str().unwrap_or("this replica"),
        args.port
    );
    let app = app.fallback(hello).with_state(name);
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
    drop(held);
    Ok(())
}

/// `size` of memory, every byte written (memory only reserved would not count against a
/// limit).
fn allocate(size: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = Bytes::parse(size).map_err(|e| anyhow!("--allocate: {e}"))?;
    let len = usize::try_from(bytes.0).context("--allocate: more than this machine addresses")?;
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(len)
        .map_err(|e| anyhow!("--allocate {size}: cannot allocate {bytes}: {e}"))?;
    memory.resize(len, 1u8);
    // Read back, so no optimizer drops the writes of memory nothing reads.
    std::hint::black_box(&memory);
    eprintln!("hello: holding {bytes} of memory");
    Ok(memory)
}

/// Adds one to the counter in `path` (0 when the file is missing) and writes it back,
/// synced: written beside it and renamed over it, so a crash leaves the old count or the
/// new one, never half of one.
fn count(path: &Path) -> anyhow::Result<u64> {
    let shown = path.display();
    let previous = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            anyhow!(
                "--state-file {shown} holds {:?}, not a counter",
                text.trim()
            )
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read --state-file {shown}")),
    };
    let next = previous.saturating_add(1);
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = std::path::PathBuf::from(aside);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&aside)?;
        std::io::Write::write_all(&mut file, format!("{next}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        // The rename itself is durable once the directory is synced.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write --state-file {shown}"))?;
    eprintln!("hello: state {shown} counts {next}");
    Ok(next)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_counts_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("count");
        assert_eq!(count(&path).expect("first"), 1);
        assert_eq!(count(&path).expect("second"), 2);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "2\n");
        std::fs::write(&path, "two").expect("write");
        let err = count(&path).expect_err("garbage").to_string();
        assert!(err.contains("not a counter"), "{err}");
        let missing_dir = dir.path().join("no/such/dir/count");
        assert!(count(&missing_dir).is_err());
    }

    #[test]
    fn allocation_holds_the_size_asked() {
        assert_eq!(allocate("1M").expect("1M").len(), 1 << 20);
        let err = allocate("lots").expect_err("bad size").to_string();
        assert!(err.starts_with("--allocate: "), "{err}");
    }
}
