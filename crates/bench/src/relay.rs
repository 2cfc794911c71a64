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
        Ok(Relay { address, cut, stop })
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
        // Biased: a cut seen together with data wins, so nothing read after a cut passes.
        let (read, forward_up) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
                if *cut.borrow_and_update() {
                    hold(&mut cut, &stop).await;
                    return;
                }
                continue;
            }
            read = from_client.read(&mut up) => (read, true),
            read = from_upstream.read(&mut down) => (read, false),
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Cut while this was read: it is lost, as a packet in flight would be.
        if *cut.borrow() {
            hold(&mut cut, &stop).await;
            return;
        }
        let written = if forward_up {
            to_upstream.write_all(&up[..n]).await
        } else {
            to_client.write_all(&down[..n]).await
        };
        if written.is_err() {
            return;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        stream.write_all(text).await.expect("write");
        let mut answer = vec![0u8; text.len()];
        stream.read_exact(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_cut_relay_carries_nothing_and_closes_nothing_until_healed() {
        let relay = Relay::start(echo().await).await.expect("relay");
        let mut open = TcpStream::connect(relay.address).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"hello").await, b"hello");

        relay.cut();
        open.write_all(b"lost")
            .await
            .expect("a cut link still takes writes");
        let mut new = TcpStream::connect(relay.address)
            .await
            .expect("a cut relay still accepts");
        new.write_all(b"lost too").await.expect("write");
        let mut buffer = [0u8; 16];
        // Nothing comes back, and neither connection is closed: the reads wait.
        for stream in [&mut open, &mut new] {
            let read =
                tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await;
            assert!(read.is_err(), "a cut relay answered: {read:?}");
        }

        relay.heal();
        // What was held while cut is closed (end of stream, or reset).
        for stream in [&mut open, &mut new] {
            let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
                .await
                .expect("closed once healed");
            assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
        }
        let mut again = TcpStream::connect(relay.address).await.expect("connect");
        assert_eq!(round_trip(&mut again, b"back").await, b"back");
    }

    #[tokio::test]
    async fn a_dropped_relay_closes_its_connections() {
        let relay = Relay::start(echo().await).await.expect("relay");
        let mut open = TcpStream::connect(relay.address).await.expect("connect");
        assert_eq!(round_trip(&mut open, b"hello").await, b"hello");
        drop(relay);
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(60), open.read(&mut buffer))
            .await
            .expect("closed once dropped");
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
    }
}
