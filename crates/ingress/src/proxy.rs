//! One published port at work: its accept loop, and the relay of each client connection
//! to a replica — pick the endpoints in the balancer's order, connect to the first that
//! answers within the connect timeout (the others go cooling), optionally start with a
//! PROXY protocol v2 header, then copy bytes both ways until both sides are done.
//!
//! A relay outlives its port: when the port leaves the table its listener is dropped at
//! once, but connections already open finish on their own (and a replica that leaves the
//! table gets its `stop_grace_period` to finish them). Only the ingress's own stop ends
//! them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mycluster_background::{Loop, LoopControl};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy_protocol;
use crate::stats::Stats;
use crate::table::PortRoute;

/// What every relay of the ingress shares.
pub(crate) struct Relays {
    pub connect_timeout: Duration,
    pub stats: Arc<Stats>,
    /// The ingress's stop: ends the relays still open.
    pub stop: CancellationToken,
}

/// One open port, as its accept loop and relays see it.
pub(crate) struct Port {
    pub port: u16,
    pub route: Mutex<PortRoute>,
    /// Client connections closed since the last warning about them.
    unsaid: Mutex<Unsaid>,
}

#[derive(Default)]
struct Unsaid {
    failed: u64,
    last_said: Option<Instant>,
}

/// At most one warning a second per port about connections no replica took: a service
/// with every replica down under load would otherwise write a line per connection.
const SAY_FAILURES_EVERY: Duration = Duration::from_secs(1);

impl Port {
    pub fn new(port: u16, route: PortRoute) -> Port {
        Port {
            port,
            route: Mutex::new(route),
            unsaid: Mutex::new(Unsaid::default()),
        }
    }

    pub fn route(&self) -> MutexGuard<'_, PortRoute> {
        lock(&self.route)
    }

    /// Says that a client's connection was closed because `tried` endpoints all failed,
    /// at most once a second (with how many since).
    fn note_failure(&self, tried: usize) {
        let now = Instant::now();
        let mut unsaid = lock(&self.unsaid);
        unsaid.failed += 1;
        if unsaid
            .last_said
            .is_some_and(|at| now.duration_since(at) < SAY_FAILURES_EVERY)
        {
            return;
        }
        let failed = std::mem::take(&mut unsaid.failed);
        unsaid.last_said = Some(now);
        drop(unsaid);
        let service = self.route().service.clone();
        if tried == 0 {
            tracing::warn!(
                "ingress: port {}: service {service} has no running, healthy replica: closed {failed} client connection(s)",
                self.port
            );
        } else {
            tracing::warn!(
                "ingress: port {}: no replica of service {service} answered ({tried} tried): closed {failed} client connection(s)",
                self.port
            );
        }
    }
}

/// A lock that a panic elsewhere does not make unusable: the balancer's state is valid
/// after any of its (panic-free) methods.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first wait after a failed accept (out of file descriptors, most likely), doubled
/// up to [`ACCEPT_RETRY_CAP`]: relays that end free some.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const ACCEPT_RETRY_CAP: Duration = Duration::from_secs(1);

/// The accept loop of one port: until `stop` (the port left the table, or the ingress
/// stops), each client connection gets a relay of its own. Returns once the listener is
/// closed.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    port: Arc<Port>,
    relays: Arc<Relays>,
    stop: CancellationToken,
) {
    let name = format!("ingress: port {}", port.port);
    let mut acceptor = Acceptor {
        listener,
        port,
        relays,
        stop: stop.clone(),
    };
    Loop::new(name, ACCEPT_RETRY, stop)
        .max_backoff(ACCEPT_RETRY_CAP)
        .quiet_recovery()
        .run_with(&mut acceptor, |acceptor| Box::pin(acceptor.step()))
        .await;
    // The listener closes here, with the acceptor: the port is free again.
}

struct Acceptor {
    listener: TcpListener,
    port: Arc<Port>,
    relays: Arc<Relays>,
    stop: CancellationToken,
}

impl Acceptor {
    async fn step(&mut self) -> Result<LoopControl, String> {
        let accepted = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Ok(LoopControl::Stop),
            accepted = self.listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                self.relays.stats.accepted();
                let (port, relays) = (self.port.clone(), self.relays.clone());
                tokio::spawn(async move {
                    let stop = relays.stop.clone();
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = relay(client, peer, &port, &relays) => {}
                    }
                    relays.stats.closed();
                });
                Ok(LoopControl::Now)
            }
            Err(e) => Err(format!("cannot accept a connection: {e}")),
        }
    }
}

/// One client connection, from the choice of replica to the last byte.
async fn relay(mut client: TcpStream, peer: SocketAddr, port: &Port, relays: &Relays) {
    // Small requests and answers (HTTP, RPC) must not wait for Nagle's algorithm on
    // either side of the relay.
    let _ = client.set_nodelay(true);
    let (candidates, proxied) = {
        let mut route = port.route();
        (route.balancer.order(Instant::now()), route.proxied.clone())
    };
    let Some((endpoint, mut backend)) = connect(&candidates, port, relays).await else {
        relays.stats.failed();
        port.note_failure(candidates.len());
        // Dropping the client's socket closes it: it sees the connection end at once
        // rather than hang.
        return;
    };
    relays.stats.relayed();
    let _ = backend.set_nodelay(true);
    // The replica says whether it expects the header (see `Endpoint::proxy_protocol`).
    if proxied.contains(&endpoint) {
        let local = match client.local_addr() {
            Ok(local) => local,
            Err(e) => {
                tracing::debug!("ingress: port {}: client {peer} gone: {e}", port.port);
                return;
            }
        };
        let header = proxy_protocol::encode(peer, local);
        if let Err(e) = backend.write_all(&header).await {
            tracing::debug!(
                "ingress: port {}: cannot write the PROXY header to {endpoint}: {e}",
                port.port
            );
            return;
        }
    }
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok(_) => {}
        // A reset by either side ends the relay; the other side sees its socket close.
        Err(e) => tracing::debug!(
            "ingress: port {}: relay {peer} <-> {endpoint} ended: {e}",
            port.port
        ),
    }
}

/// Connects to the first of `candidates` that answers within the connect timeout; each
/// that does not goes cooling.
async fn connect(
    candidates: &[SocketAddr],
    port: &Port,
    relays: &Relays,
) -> Option<(SocketAddr, TcpStream)> {
    for (tried, &endpoint) in candidates.iter().enumerate() {
        let attempt = tokio::time::timeout(relays.connect_timeout, TcpStream::connect(endpoint));
        let why = match attempt.await {
            Ok(Ok(stream)) => {
                port.route().balancer.answered(endpoint, tried > 0);
                return Some((endpoint, stream));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", relays.connect_timeout),
        };
        relays.stats.connect_failed();
        let cooling = {
            let mut route = port.route();
            route.balancer.failed(endpoint, Instant::now());
            route.balancer.cooling(Instant::now())
        };
        tracing::debug!(
            "ingress: port {}: replica {endpoint} did not take a connection ({why}); trying the next ({cooling} cooling)",
            port.port
        );
    }
    None
}
