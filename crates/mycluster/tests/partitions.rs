//! Network splits on the process driver (issue 18): a manager, its monitor and 4 agents,
//! each agent's traffic to the manager and the monitor's probes of it through relays a
//! test can cut (`common::relay`). Twenty seeded random splits of 1–15 s, while a sampler
//! reads the copies that really run every 50 ms (`common::copies`):
//! - an `on_disconnect: "stop"` service never has two copies of a slot;
//! - a `"replace"` service's cut-off copy, replaced meanwhile, is gone within 1 s of the
//!   heal;
//! - after each round of splits every service is back to exactly `replicas` running, and
//!   no service changed (`common::split`).
//!
//! The seed is printed; `PARTITION_SEED=<seed>` replays it. First, the relay's own
//! promises on plain sockets.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use common::copies::{Processes, Sampler, PERIOD};
use common::relay::{Relay, RelayedAgent};
use common::split::{self, Links, Run, REPLACE, REPLICAS, STOP};
use common::{ready_workers, unique_mark, Manager, Monitor};
use serde_json::{json, Value};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const PARTITIONS: usize = 20;
/// Up to three workers cut off at once: 20 splits in about ten rounds.
const TOGETHER: usize = 3;

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
    let relay = Relay::start(&echo_server());
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

fn service(name: &str, policy: &str, mark: &str) -> Value {
    json!({
        "service": name,
        "command": ["sleep", "100000"],
        "env": {"TEST_MARK": mark},
        "replicas": REPLICAS,
        "on_disconnect": policy,
        // `sleep` ends at SIGTERM; a short grace keeps the manager's wait for a cut-off
        // `stop` task (lease + grace + margin) within the splits' lengths.
        "stop_grace_period": "1s"
    })
}

struct Relayed(BTreeMap<String, RelayedAgent>);

impl Links for Relayed {
    fn cut(&mut self, worker: &str) {
        self.0[worker].cut();
    }

    fn heal(&mut self, worker: &str) {
        self.0[worker].heal();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_random_splits_keep_one_copy_per_slot_and_end_the_cut_off_copies() {
    let seed = split::seed();
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "part");
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut links = Relayed(
        WORKERS
            .iter()
            .map(|w| (w.to_string(), RelayedAgent::start(&manager.url, w, &[])))
            .collect(),
    );
    ready_workers(&api, WORKERS.len()).await;
    let mark = unique_mark("partitions");
    for (name, policy) in [(STOP, "stop"), (REPLACE, "replace")] {
        let reply = api
            .post("/api/v1/service", &service(name, policy, &mark))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let sampler = Sampler::start(Processes { mark }, PERIOD);
    let run = Run {
        api: &api,
        sampler: &sampler,
        seed,
        workers: WORKERS.iter().map(|w| w.to_string()).collect(),
    };
    run.settle("at the start").await;

    let rounds = split::plan(seed, WORKERS.len(), PARTITIONS, TOGETHER);
    let report = run.splits(&mut links, &rounds).await;
    drop(sampler);
    report.check(PERIOD);
}
