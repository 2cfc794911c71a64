//! A TCP relay between an agent and its manager that a test can cut — a silent network
//! split: nothing gets through either way, and no connection is closed — and heal (the
//! connections held through the split are then dropped, as a long split times them out),
//! and point at another address (a restarted manager).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Relay {
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    upstream: Mutex<SocketAddr>,
    /// Whether the link is cut.
    cut: watch::Sender<bool>,
    /// Ends every connection and the listener (the relay was dropped).
    closed: CancellationToken,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(State {
            upstream: Mutex::new(upstream),
            cut: watch::channel(false).0,
            closed: CancellationToken::new(),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = accepting.closed.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                if let Ok((client, _)) = accepted {
                    tokio::spawn(pipe(client, accepting.clone()));
                }
            }
        });
        Relay { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cut(&self) {
        self.state.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.state.cut.send_replace(false);
    }

    pub fn point_at(&self, upstream: SocketAddr) {
        *self.state.upstream.lock().unwrap() = upstream;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.closed.cancel();
    }
}

async fn pipe(mut client: TcpStream, state: Arc<State>) {
    let healed = |state: &Arc<State>| {
        let mut cut = state.cut.subscribe();
        let closed = state.closed.clone();
        async move {
            tokio::select! {
                _ = cut.wait_for(|cut| !*cut) => {}
                _ = closed.cancelled() => {}
            }
        }
    };
    if *state.cut.borrow() {
        // A connection made during the split: accepted, never answered.
        healed(&state).await;
        return;
    }
    let upstream = *state.upstream.lock().unwrap();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut cut = state.cut.subscribe();
    let split = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
        _ = cut.wait_for(|cut| *cut) => true,
        _ = state.closed.cancelled() => false,
    };
    if split {
        // Both ends held open, nothing passed, until the link heals.
        healed(&state).await;
    }
}
