//! A TCP relay that can be cut, for the failover bench's silent partition of a process
//! agent: the agent talks to the manager through one relay and is probed by the monitor
//! through another, so cutting both cuts the worker off as a pulled cable would, with no
//! privileges (no iptables, no network namespaces).
//!
//! Cut is *silent*, not a refusal: connections already open stay open and carry nothing
//! either way, and new ones are accepted and held, so neither side sees the connection
//! close — as across a real split, only timeouts and missed heartbeats tell. A healed
//! relay drops what it held while cut (what was sent then is lost, as packets would be)
//! and forwards new connections again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::BenchError;

/// A relay from a local port to `target`; stops (closing every connection) when
/// dropped.
pub struct Relay {
    /// Where to connect instead of the target.
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    stop: CancellationToken,
}

impl Relay {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<Relay, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, target, watching, stop.clone()));
        Ok(Relay {
            address,
            cut,
            stop,
        })
    }

    /// From now on nothing passes, and nothing is closed.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwards again; what was held while cut is closed.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    cut: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // A failed accept (out of descriptors) is the client's failure to connect; the
        // relay goes on.
        if let Ok((client, _)) = accepted {
            tokio::spawn(forward(client, target, cut.clone(), stop.clone()));
        }
    }
}

/// Carries one connection until either side closes it, the relay stops, or a cut ends
/// it (held silent until healed, then closed).
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    if *cut.borrow_and_update() {
        hold(&mut cut, &stop).await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        // The target is gone: the client sees its connection closed, as it would have.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut from_client, mut to_client) = client.split();
    let (mut from_upstream, mut to_upstream) = upstream.split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
                if *cut.borrow_and_update() {
                    hold(&mut cut, &stop).await;
                    return;
                }
            }
            read = from_client.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to_upstream.write_all(&up[..n]).await.is_err() { return },
            },
            read = from_upstream.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to_client.write_all(&down[..n]).await.is_err() { return },
            },
        }
    }
}

/// Waits, carrying nothing, until the relay is healed or stops.
async fn hold(cut: &mut watch::Receiver<bool>, stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = cut.wait_for(|cut| !*cut) => {}
    }
}
