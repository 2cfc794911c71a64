//! A TCP relay that a test or a benchmark can cut and heal: a network split between two
//! processes of this host with no privileges (no iptables, no network namespaces). The
//! failover benchmark, the agent's lease tests and the partition tests all split their
//! agents with it.
//!
//! A `Relay` listens on `127.0.0.1:0` and forwards each connection to its target.
//! - `cut()` makes it a black hole: the connections already open stay open, but no byte
//!   passes either way (nor an end of stream: the far side never hears that the near side
//!   hung up), and new connections are accepted and hang, as a SYN into a dead link would.
//!   Neither side sees a connection close: as across a real split, only timeouts and
//!   missed heartbeats tell.
//! - `heal()` forwards new connections again and closes every connection that was open
//!   across the cut (the ones accepted during it included): whatever they carried was
//!   lost, and TCP would have timed them out in the end. Closing them at once is the
//!   fast end of what a real network does.
//! - `point_at()` sends new connections to another target (a manager restarted on
//!   another port).
//!
//! Plain threads, not tokio: the relay keeps forwarding whatever the caller's runtime is
//! doing (a test's tasks, a starved executor), it serves sync and async callers alike, and
//! a blocking socket per direction is the simplest faithful copy. Dropping the relay
//! closes every connection and its listener.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a blocked read waits before it looks at the relay's state again: how soon a
/// cut stops a connection that is idle at that moment (bytes that arrive later are
/// checked against the state anyway).
const POLL: Duration = Duration::from_millis(20);
/// A connect to the target that takes longer than this fails the connection (the target
/// is on this host: it answers at once or not at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Relay {
    /// Where the relay listens: what a client is given instead of the target.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: Mutex<SocketAddr>,
    state: Mutex<State>,
    stopping: AtomicBool,
}

struct State {
    cut: bool,
    /// Moves on at every heal: a connection of an earlier generation was open across a
    /// cut, and is closed.
    generation: u64,
    next_id: u64,
    /// Every connection still open: its generation and its sockets (clones, so a heal or
    /// the drop can shut them while their threads block in a read).
    open: HashMap<u64, Link>,
    /// Connections closed by heals so far (for a test's report).
    closed_by_heals: u64,
}

struct Link {
    generation: u64,
    sockets: Vec<TcpStream>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Relay {
    /// A relay to `target`, listening on a free loopback port.
    pub fn start(target: impl ToSocketAddrs) -> io::Result<Relay> {
        let target = resolve(target)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            state: Mutex::new(State {
                cut: false,
                generation: 0,
                next_id: 0,
                open: HashMap::new(),
                closed_by_heals: 0,
            }),
            stopping: AtomicBool::new(false),
        });
        let accept = std::thread::Builder::new()
            .name(format!("relay {addr}"))
            .spawn({
                let shared = shared.clone();
                move || accept_loop(listener, shared)
            })?;
        Ok(Relay {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// A relay to the `host:port` of a URL (`http://host:port`, as a manager's).
    pub fn to_url(url: &str) -> io::Result<Relay> {
        let authority = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        Relay::start(authority)
    }

    /// New connections go to `target` from now on (a restarted manager's new address);
    /// open ones stay where they are.
    pub fn point_at(&self, target: impl ToSocketAddrs) -> io::Result<()> {
        let target = resolve(target)?;
        *self.shared.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
        Ok(())
    }

    /// `http://<addr>`: the relay as a manager URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Black hole from now on (see the module's comment). Cutting a cut relay changes
    /// nothing.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.cut = true;
    }

    /// Forwards again; every connection open across the cut is closed first. Healing a
    /// relay that is not cut changes nothing.
    pub fn heal(&self) {
        let mut state = self.shared.lock();
        if !state.cut {
            return;
        }
        let old = state.generation;
        let across: Vec<u64> = state
            .open
            .iter()
            .filter(|(_, link)| link.generation <= old)
            .map(|(id, _)| *id)
            .collect();
        for id in across {
            if let Some(link) = state.open.remove(&id) {
                for socket in &link.sockets {
                    let _ = socket.shutdown(Shutdown::Both);
                }
                state.closed_by_heals += 1;
            }
        }
        state.generation = old + 1;
        state.cut = false;
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Connections open now, and closed by heals so far.
    pub fn connections(&self) -> (usize, u64) {
        let state = self.shared.lock();
        (state.open.len(), state.closed_by_heals)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees it is stopping (joined only then: a
        // loop that was not woken must not hang the drop).
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        {
            let mut state = self.shared.lock();
            for (_, link) in state.open.drain() {
                for socket in &link.sockets {
                    let _ = socket.shutdown(Shutdown::Both);
                }
            }
        }
        if let Some(accept) = self.accept.take().filter(|_| woken) {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let _ = client.set_nodelay(true);
        let mut state = shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        if state.cut {
            // Accepted, and left hanging until the heal closes it.
            let generation = state.generation;
            state.open.insert(
                id,
                Link {
                    generation,
                    sockets: vec![client],
                },
            );
            continue;
        }
        drop(state);
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name(format!("relay conn {id}"))
            .spawn(move || connect(id, client, shared));
    }
}

/// Opens the connection's other half and copies both ways until either side ends it,
/// a heal closes it, or the relay is dropped.
fn connect(id: u64, client: TcpStream, shared: Arc<Shared>) {
    // The generation is the one the connection was accepted in: a cut during the connect
    // to the target counts as a cut across it.
    let generation = shared.lock().generation;
    let target = *shared.target.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        // As the target itself would have: refused (the client sees its connection end).
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let clones = (|| {
        Some((
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
            client.try_clone().ok()?,
            upstream.try_clone().ok()?,
        ))
    })();
    let Some((client_back, upstream_back, client_kept, upstream_kept)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut state = shared.lock();
        if state.generation != generation || shared.stopping.load(Ordering::SeqCst) {
            // Healed (or dropped) while connecting: it was open across a cut.
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        state.open.insert(
            id,
            Link {
                generation,
                sockets: vec![client_kept, upstream_kept],
            },
        );
    }
    let pumps = Arc::new(AtomicUsize::new(2));
    let back = std::thread::Builder::new()
        .name(format!("relay conn {id} back"))
        .spawn({
            let (shared, pumps) = (shared.clone(), pumps.clone());
            move || pump(id, generation, upstream_back, client_back, &shared, &pumps)
        });
    if back.is_err() {
        pumps.fetch_sub(1, Ordering::SeqCst);
    }
    pump(id, generation, client, upstream, &shared, &pumps);
}

/// Copies `from` to `to` while the relay forwards; once a cut is seen nothing more
/// passes, and the thread waits for the heal (which closes the connection) to end.
fn pump(
    id: u64,
    generation: u64,
    mut from: TcpStream,
    mut to: TcpStream,
    shared: &Shared,
    pumps: &AtomicUsize,
) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    // Whether this direction was cut: from then on it carries nothing, whatever comes.
    let mut silenced = false;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (cut, moved_on) = {
            let state = shared.lock();
            (state.cut, state.generation != generation)
        };
        if moved_on {
            // The heal closed it.
            break;
        }
        silenced |= cut;
        if silenced {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                // The end of this direction passes, unless a cut came first.
                let state = shared.lock();
                if state.cut || state.generation != generation {
                    silenced = true;
                    continue;
                }
                drop(state);
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) => {
                {
                    let state = shared.lock();
                    if state.cut || state.generation != generation {
                        // Read as the cut came: lost on the dead link.
                        silenced = true;
                        continue;
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                let state = shared.lock();
                if state.cut || state.generation != generation {
                    silenced = true;
                    continue;
                }
                drop(state);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
        }
    }
    // The last of the two directions to end forgets the connection (its sockets close
    // when the last clone drops).
    if pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.lock().open.remove(&id);
    }
}

/// A port free on 127.0.0.1 at this moment (for a listener whose address must be known
/// before it starts).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first address `target` names.
fn resolve(target: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    target.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            "the relay's target names no address",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1:0 (threads; lives as long as the test process).
    fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 1024];
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// What `stream` reads within `wait`: the bytes, `Some(empty)` at the end of the stream
    /// (or an error: closed), `None` if nothing came.
    fn read_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 1024];
        match stream.read(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => Some(Vec::new()),
        }
    }

    #[test]
    fn the_relay_forwards_until_cut_and_closes_what_the_cut_crossed() {
        let relay = Relay::start(echo_server().as_str()).unwrap();
        let mut before = TcpStream::connect(relay.addr).unwrap();
        let mut closing = TcpStream::connect(relay.addr).unwrap();
        before.write_all(b"one").unwrap();
        assert_eq!(
            read_within(&mut before, Duration::from_secs(5)),
            Some(b"one".to_vec())
        );
        closing.write_all(b"x").unwrap();
        assert_eq!(
            read_within(&mut closing, Duration::from_secs(5)),
            Some(b"x".to_vec())
        );

        relay.cut();
        // Open connections stay open, but no byte passes, nor the end of a stream.
        before.write_all(b"two").unwrap();
        assert_eq!(read_within(&mut before, Duration::from_millis(500)), None);
        closing.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            read_within(&mut closing, Duration::from_millis(300)),
            None,
            "the echo server heard the end of the stream through a cut relay"
        );
        // A new connection is accepted and hangs.
        let mut during = TcpStream::connect(relay.addr).unwrap();
        during.write_all(b"three").unwrap();
        assert_eq!(read_within(&mut during, Duration::from_millis(300)), None);

        relay.heal();
        // What was open across the cut is closed, its bytes lost.
        for (name, stream) in [
            ("before", &mut before),
            ("during", &mut during),
            ("closing", &mut closing),
        ] {
            assert_eq!(
                read_within(stream, Duration::from_secs(5)),
                Some(Vec::new()),
                "the connection opened {name} the cut still open after the heal"
            );
        }
        // New connections are forwarded again.
        let mut after = TcpStream::connect(relay.addr).unwrap();
        after.write_all(b"four").unwrap();
        assert_eq!(
            read_within(&mut after, Duration::from_secs(5)),
            Some(b"four".to_vec())
        );
        let (open, closed) = relay.connections();
        assert_eq!(closed, 3, "{open} open");
    }

    #[test]
    fn a_dropped_relay_closes_its_connections() {
        let relay = Relay::start(echo_server().as_str()).unwrap();
        let mut open = TcpStream::connect(relay.addr).unwrap();
        open.write_all(b"hello").unwrap();
        assert_eq!(
            read_within(&mut open, Duration::from_secs(5)),
            Some(b"hello".to_vec())
        );
        drop(relay);
        assert_eq!(
            read_within(&mut open, Duration::from_secs(60)),
            Some(Vec::new())
        );
    }

    #[test]
    fn a_relay_pointed_elsewhere_sends_new_connections_there() {
        let relay = Relay::to_url(&format!("http://{}/", echo_server())).unwrap();
        let mut before = TcpStream::connect(relay.addr).unwrap();
        before.write_all(b"one").unwrap();
        assert_eq!(
            read_within(&mut before, Duration::from_secs(5)),
            Some(b"one".to_vec())
        );
        // A listener that only accepts: a connection that reaches it gets no echo.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        relay.point_at(silent.local_addr().unwrap()).unwrap();
        let mut after = TcpStream::connect(relay.addr).unwrap();
        after.write_all(b"two").unwrap();
        let (_accepted, _) = silent.accept().unwrap();
        assert_eq!(read_within(&mut after, Duration::from_millis(300)), None);
        // The connection made before still reaches the first target.
        before.write_all(b"three").unwrap();
        assert_eq!(
            read_within(&mut before, Duration::from_secs(5)),
            Some(b"three".to_vec())
        );
    }

    #[test]
    fn a_target_that_names_no_address_is_an_error() {
        assert!(Relay::start("no-such-host.invalid:1").is_err());
        assert!(free_port().is_ok());
    }
}
