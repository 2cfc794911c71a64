//! The ingress on real sockets, fed a scripted route table: round robin over real
//! backends, replicas that refuse or do not answer skipped without failing a client,
//! ports opened, moved and closed as the table says (open connections finish), a port
//! held by someone else retried, and the PROXY protocol header a backend receives.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mycluster_core::wire::RouteTable;
use mycluster_ingress::{Ingress, IngressConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// An ingress on 127.0.0.1 serving `first`, the sender to script its next tables, and
/// its stop (cancelled when the test ends, however it ends).
struct Scripted {
    ingress: Ingress,
    tables: watch::Sender<RouteTable>,
    _stop: tokio_util::sync::DropGuard,
}

fn config(cooling: Duration) -> IngressConfig {
    IngressConfig {
        listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
        cooling,
        ..IngressConfig::new("http://unused")
    }
}

fn scripted(first: RouteTable, config: IngressConfig) -> Scripted {
    let (tables, source) = watch::channel(first);
    let stop = CancellationToken::new();
    let ingress = Ingress::start(&config, Arc::new(source), stop.clone()).expect("starts");
    Scripted {
        ingress,
        tables,
        _stop: stop.drop_guard(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_three_backends() {
    let backends = [
        Backend::start("a", false).await,
        Backend::start("b", false).await,
        Backend::start("c", false).await,
    ];
    let port = free_port().await;
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let s = scripted(
        table(vec![route(port, "web", &addrs)]),
        config(Duration::from_secs(3)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the port to open", |p| {
        p.get(&port).map(String::as_str) == Some("web")
    })
    .await;
    let mut answers = Vec::new();
    for _ in 0..9 {
        answers.push(ask(port).await);
    }
    assert_eq!(answers, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    let stats = s.ingress.stats();
    assert_eq!((stats.accepted, stats.relayed, stats.failed), (9, 9, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_costs_no_failed_connection() {
    let a = Backend::start("a", false).await;
    let b = Backend::start("b", false).await;
    let refusing = refusing().await;
    let port = free_port().await;
    // Long cooling: the refusing one is tried once, whatever the machine's pace.
    let s = scripted(
        table(vec![route(port, "web", &[refusing, a.addr, b.addr])]),
        config(Duration::from_secs(600)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the port to open", |p| p.contains_key(&port)).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(ask(port).await);
    }
    // The first connection found the refusing one and went on to a; then a and b.
    assert_eq!(answers, ["a", "b", "a", "b", "a", "b"]);
    let stats = s.ingress.stats();
    assert_eq!(
        (stats.relayed, stats.failed, stats.connect_failures),
        (6, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_is_skipped_within_the_connect_timeout() {
    let a = Backend::start("a", false).await;
    let b = Backend::start("b", false).await;
    let silent = Silent::start().await;
    let port = free_port().await;
    let s = scripted(
        table(vec![route(port, "web", &[silent.addr, a.addr, b.addr])]),
        config(Duration::from_secs(600)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the port to open", |p| p.contains_key(&port)).await;
    let started = Instant::now();
    assert_eq!(ask(port).await, "a");
    let first = started.elapsed();
    // It waited out the connect timeout (250 ms), not the kernel's (minutes).
    assert!(first >= Duration::from_millis(250), "{first:?}");
    assert!(first < Duration::from_secs(10), "{first:?}");
    // Then the silent one cools: the next connections do not wait for it.
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(ask(port).await);
    }
    assert_eq!(answers, ["b", "a", "b", "a"]);
    let stats = s.ingress.stats();
    assert_eq!(
        (stats.relayed, stats.failed, stats.connect_failures),
        (5, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_closes_the_client_connection() {
    let refusing = refusing().await;
    let port = free_port().await;
    let s = scripted(
        table(vec![
            route(port, "web", &[refusing]),
            route(free_port().await, "none", &[]),
        ]),
        config(Duration::from_secs(3)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the ports to open", |p| p.len() == 2).await;
    assert!(try_ask(port).await.is_none(), "no replica answers");
    let empty = *ports.borrow().keys().find(|&&p| p != port).expect("second");
    assert!(try_ask(empty).await.is_none(), "no replica at all");
    let stats = s.ingress.stats();
    assert_eq!((stats.relayed, stats.failed), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_port_is_free_at_once_and_open_connections_finish() {
    let a = Backend::start("a", false).await;
    let b = Backend::start("b", false).await;
    let port = free_port().await;
    let s = scripted(
        table(vec![route(port, "web", &[a.addr])]),
        config(Duration::from_secs(3)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the port to open", |p| p.contains_key(&port)).await;
    let mut open = try_ask(port).await.expect("an answer");
    assert_eq!(open.line, "a");

    // The replica is replaced (a rolling update): new connections go to b, the open one
    // to a goes on.
    s.tables
        .send_replace(table(vec![route(port, "web", &[b.addr])]));
    eventually("new connections to reach b", || async {
        (ask(port).await == "b").then_some(())
    })
    .await;
    assert_eq!(open.echo("still a").await, "still a");

    // The service is deleted: the port closes, and someone else can bind it at once.
    s.tables.send_replace(table(Vec::new()));
    ports_until(&mut ports, "the port to close", |p| p.is_empty()).await;
    let taken = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free again at once");
    // The connection opened before goes on to its end.
    assert_eq!(open.echo("after the close").await, "after the close");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_someone_else_is_retried_and_the_others_work() {
    let a = Backend::start("a", false).await;
    let b = Backend::start("b", false).await;
    let held = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let busy = held.local_addr().expect("address").port();
    let port = free_port().await;
    let s = scripted(
        table(vec![
            route(port, "web", &[a.addr]),
            route(busy, "api", &[b.addr]),
        ]),
        config(Duration::from_secs(3)),
    );
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the free port to open", |p| {
        p.contains_key(&port)
    })
    .await;
    assert_eq!(ask(port).await, "a");
    assert!(!ports.borrow().contains_key(&busy));
    // Its holder lets it go: the ingress takes it within a retry or two.
    drop(held);
    ports_until(&mut ports, "the freed port to open", |p| {
        p.contains_key(&busy)
    })
    .await;
    assert_eq!(ask(busy).await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_header_carries_the_client_address() {
    // Two replicas of one route, as during a rollout that turns the header on: only the
    // one that expects it gets it.
    let backend = Backend::start("pp", true).await;
    let plain = Backend::start("plain", false).await;
    let port = free_port().await;
    let mut web = route(port, "web", &[backend.addr, plain.addr]);
    web.proxy_protocol = true;
    web.endpoints[0].proxy_protocol = true;
    let s = scripted(table(vec![web]), config(Duration::from_secs(3)));
    let mut ports = s.ingress.ports();
    ports_until(&mut ports, "the port to open", |p| p.contains_key(&port)).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut asked = try_ask(port).await.expect("an answer");
        if asked.line == "plain" {
            answers.push("plain".to_string());
            continue;
        }
        let client = asked
            .stream
            .get_ref()
            .local_addr()
            .expect("the client's address");
        assert_eq!(asked.line, format!("pp {client}"));
        // The header came first, and only once: the rest is the client's own bytes.
        assert_eq!(asked.echo("hello").await, "hello");
        answers.push("pp".to_string());
    }
    answers.sort();
    assert_eq!(answers, ["plain", "pp"]);
}
