//! A network partition for process agents, with no privileges: a TCP relay between an
//! agent and what it talks to, which a test can cut and heal.
//!
//! A `Relay` listens on `127.0.0.1:0` and forwards each connection to its target.
//! - `cut()` makes it a black hole: the connections already open stay open, but no byte
//!   passes either way (nor an end of stream: the far side never hears that the near side
//!   hung up), and new connections are accepted and hang, as a SYN into a dead link would.
//! - `heal()` forwards new connections again and closes every connection that was open
//!   across the cut (the ones accepted during it included): whatever they carried was
//!   lost, and TCP would have timed them out in the end. Closing them at once is the
//!   fast end of what a real network does.
//!
//! A `RelayedAgent` is a process agent whose traffic goes through two relays: its
//! manager is `http://<relay>` and its health endpoint is advertised at a second relay,
//! so a cut silences it *and* fails the monitor's probe, as a real split does. The agent
//! is killed when the handle drops (its workloads with it), the relays closed.
//!
//! Plain threads, not the test's tokio runtime: the relay keeps forwarding whatever the
//! test's own tasks are doing, and a blocking socket per direction is the simplest
//! faithful copy.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{spawn_logged, Agent, BIN, TEST_JOIN_TOKEN};

/// How long a blocked read waits before it looks at the relay's state again: how soon a
/// cut stops a connection that is idle at that moment (bytes that arrive later are
/// checked against the state anyway).
const POLL: Duration = Duration::from_millis(20);
/// A connect to the target that takes longer than this fails the connection (the target
/// is on this host: it answers at once or not at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Relay {
    /// Where the relay listens: what the agent is given instead of its target.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
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
    /// Cuts and heals so far, and connections closed by heals (for the test's report).
    cuts: u64,
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
    /// A relay to `target` (`host:port`, or a URL `http://host:port`).
    pub fn start(target: &str) -> Relay {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("relay target {target}: not host:port"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State {
                cut: false,
                generation: 0,
                next_id: 0,
                open: HashMap::new(),
                cuts: 0,
                closed_by_heals: 0,
            }),
            stopping: AtomicBool::new(false),
        });
        let accept = std::thread::Builder::new()
            .name(format!("relay {addr}"))
            .spawn({
                let shared = shared.clone();
                move || accept_loop(listener, shared)
            })
            .expect("spawn the relay");
        Relay {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://<addr>`: the relay as a manager URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Black hole from now on (see the module's comment). Cutting a cut relay changes
    /// nothing.
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        if !state.cut {
            state.cut = true;
            state.cuts += 1;
        }
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
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A process agent whose traffic passes through relays: to its manager, and from the
/// monitor to its health endpoint. `cut` and `heal` split it from the cluster and join
/// it again.
pub struct RelayedAgent {
    pub agent: Agent,
    /// Between the agent and the manager.
    pub to_manager: Relay,
    /// Between the monitor (anyone probing the advertised address) and the agent.
    pub to_health: Relay,
}

impl RelayedAgent {
    /// `mycluster agent --name NAME --driver process` reaching `manager_url` through a
    /// relay, its health endpoint on a fixed local port advertised through another.
    pub fn start(manager_url: &str, name: &str, extra: &[&str]) -> RelayedAgent {
        let to_manager = Relay::start(manager_url);
        // The health endpoint's port must be known before the agent starts (its log
        // names the advertised address, not the bound one). A port taken in between
        // makes the agent exit: tried again with another.
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let to_health = Relay::start(&listen);
            let advertise = to_health.addr.to_string();
            let mut command = Command::new(BIN);
            command
                .args([
                    "agent",
                    "--name",
                    name,
                    "--driver",
                    "process",
                    "--listen",
                    &listen,
                    "--advertise",
                    &advertise,
                ])
                .args(extra)
                .env("MYCLUSTER_MANAGER", to_manager.url())
                .env("MYCLUSTER_JOIN_TOKEN", TEST_JOIN_TOKEN);
            let (child, log) = spawn_logged(command, |_| {});
            let mut agent = Agent {
                child,
                name: name.to_string(),
                log,
            };
            // Up once it says where its health endpoint is; gone if the port was taken.
            let started = Instant::now();
            while started.elapsed() < super::DEADLINE {
                if agent.health_address().is_some() {
                    return RelayedAgent {
                        agent,
                        to_manager,
                        to_health,
                    };
                }
                if agent.exit_status().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                agent.exit_status().is_some(),
                "agent {name} did not start within {:?}:\n{}",
                super::DEADLINE,
                agent.log_text()
            );
            eprintln!(
                "agent {name} exited at start (port {port} taken?), again:\n{}",
                agent.log_text()
            );
        }
        panic!("agent {name} could not start behind its relays");
    }

    /// Splits the worker from the cluster: neither its traffic to the manager nor the
    /// monitor's probes pass.
    pub fn cut(&self) {
        self.to_manager.cut();
        self.to_health.cut();
    }

    /// Joins it again. The probe's path first, so a monitor that probes the moment the
    /// manager notices the agent's closed connections finds it answering.
    pub fn heal(&self) {
        self.to_health.heal();
        self.to_manager.heal();
    }

    pub fn is_cut(&self) -> bool {
        self.to_manager.is_cut()
    }
}
