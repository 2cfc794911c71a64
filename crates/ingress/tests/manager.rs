//! The ingress fed by a real manager (in-process, authentication on, an embedded store in
//! a temporary dir), presenting the join token as `setup`'s ingress container does: a
//! service published on a port is served over the replicas its (hand-driven) agent
//! reports running, deleting it frees the port at once, and a manager that goes away
//! leaves the last table in force.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mycluster_client::Client;
use mycluster_core::service::PortSpec;
use mycluster_core::service::{Health, HealthCheck, Probe};
use mycluster_core::task::TaskPort;
use mycluster_core::wire::{Registration, ServiceRequest, TaskReport};
use mycluster_core::TaskState;
use mycluster_ingress::{Ingress, IngressConfig, ManagerSource};
use mycluster_manager::api::auth::{Auth, Token};
use mycluster_manager::{ApiConfig, ManagerConfig, RunningManager};
use tokio_util::sync::CancellationToken;

const API_TOKEN: &str = "ingress-test-api-token-0123456789";
const JOIN_TOKEN: &str = "ingress-test-join-token-0123456789";

async fn manager(dir: &std::path::Path, stop: CancellationToken) -> RunningManager {
    let auth = Auth::On {
        api: Token::parse(API_TOKEN, "the API token").expect("a token"),
        join: Some(Token::parse(JOIN_TOKEN, "the join token").expect("a token")).into(),
    };
    RunningManager::start(
        ManagerConfig {
            api: ApiConfig {
                auth,
                ..ApiConfig::default()
            },
            ..ManagerConfig::local(dir, "ingress-test")
        },
        stop,
    )
    .await
    .expect("the manager starts")
}

/// Creates `service` with `backends.len()` replicas published on `port`, and reports
/// them running as worker `w1`'s agent would: the replicas by slot at the backends in
/// order.
async fn run_service(
    api: &Client,
    agent: &Client,
    service: &str,
    port: u16,
    backends: &[&Backend],
) {
    let request = ServiceRequest {
        service: service.into(),
        image: Some("mycluster/hello-world".into()),
        replicas: backends.len() as u32,
        command: None,
        env: None,
        // Its replicas report themselves healthy at once: routed without waiting for
        // the update policy's monitor.
        healthcheck: Some(HealthCheck::new(Probe::Tcp { port: 8000 })),
        update: None,
        ports: Some(vec![PortSpec {
            published: Some(port),
            target: 8000,
            protocol: Default::default(),
        }]),
        stop_grace_period: None,
        proxy_protocol: None,
        ..ServiceRequest::default()
    };
    api.submit_service(&request).await.expect("created");
    let tasks = eventually("the replicas to be assigned", || async {
        let list = agent
            .assigned_tasks("w1", "", None, Duration::ZERO)
            .await
            .ok()?;
        let tasks: Vec<_> = list
            .tasks
            .into_iter()
            .filter(|t| t.service == service)
            .collect();
        (tasks.len() == backends.len()).then_some(tasks)
    })
    .await;
    let mut tasks = tasks;
    tasks.sort_by_key(|t| t.slot);
    let reports: Vec<TaskReport> = tasks
        .iter()
        .zip(backends)
        .map(|(task, backend)| TaskReport {
            address: Some(backend.addr.ip()),
            ports: vec![TaskPort {
                target: 8000,
                port: Some(backend.addr.port()),
            }],
            health: Some(Health::Healthy),
            ..TaskReport::new(task.id.clone(), TaskState::Running)
        })
        .collect();
    agent.report("w1", "", &reports).await.expect("reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_what_the_manager_publishes_and_keeps_it_while_the_manager_is_away() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let manager_stop = CancellationToken::new();
    let _manager_guard = manager_stop.clone().drop_guard();
    let manager = manager(dir.path(), manager_stop.clone()).await;
    let url = format!("http://{}", manager.addr);
    let api = Client::new(&url, Duration::from_secs(10))
        .expect("a client")
        .with_token(Some(API_TOKEN.into()));
    let agent = Client::new(&url, Duration::from_secs(10))
        .expect("a client")
        .with_token(Some(JOIN_TOKEN.into()));
    let registered = agent
        .register(&Registration {
            name: "w1".into(),
            address: "127.0.0.1:7000".into(),
            labels: Default::default(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
            agent_ca_sha256: None,
        })
        .await
        .expect("registered");
    // From then on the worker's agent speaks with the credential its registration gave.
    let agent = agent.with_token(registered.credential.clone());

    // The ingress, with the join token, as `setup` runs it.
    let config = IngressConfig {
        token: Some(JOIN_TOKEN.into()),
        listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..IngressConfig::new(&url)
    };
    let source = ManagerSource::new(&config.manager, config.token.clone(), None).expect("a source");
    let ingress_stop = CancellationToken::new();
    let _ingress_guard = ingress_stop.clone().drop_guard();
    let ingress = Ingress::start(&config, Arc::new(source), ingress_stop.clone()).expect("starts");
    let mut ports = ingress.ports();

    let (a, b) = (
        Backend::start("a", false).await,
        Backend::start("b", false).await,
    );
    let port = free_port().await;
    run_service(&api, &agent, "web", port, &[&a, &b]).await;
    ports_until(&mut ports, "the published port to open", |p| {
        p.get(&port).map(String::as_str) == Some("web")
    })
    .await;
    // Both replicas are in the table once the report is: every new connection after
    // the first that reaches b alternates.
    eventually("both replicas to serve", || async {
        (try_ask(port).await?.line == "b").then_some(())
    })
    .await;
    let answers: Vec<String> = [
        ask(port).await,
        ask(port).await,
        ask(port).await,
        ask(port).await,
    ]
    .into();
    assert_eq!(answers, ["a", "b", "a", "b"]);

    // Deleted: the port is free again at once.
    api.delete_service("web").await.expect("deleted");
    ports_until(&mut ports, "the port to close", |p| !p.contains_key(&port)).await;
    let taken = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the deleted service's port is free");
    drop(taken);

    // Published again by another service; then the manager goes away.
    let c = Backend::start("c", false).await;
    run_service(&api, &agent, "api", port, &[&c]).await;
    ports_until(&mut ports, "the port to reopen", |p| {
        p.get(&port).map(String::as_str) == Some("api")
    })
    .await;
    eventually("the new service to serve", || async {
        (try_ask(port).await?.line == "c").then_some(())
    })
    .await;
    // Connections made while the table was still filling (the `eventually`s above) may
    // have found no replica yet; none made from here on may fail.
    let failed_before = ingress.stats().failed;
    manager_stop.cancel();
    manager.wait().await.expect("the manager stops");
    // The last table stays in force: the replicas still run, and are still reached.
    for _ in 0..3 {
        assert_eq!(ask(port).await, "c");
    }
    assert_eq!(ports.borrow().get(&port).map(String::as_str), Some("api"));
    assert_eq!(
        ingress.stats().failed,
        failed_before,
        "no connection failed once the manager had gone"
    );

    ingress_stop.cancel();
    ingress.wait().await.expect("the ingress stops");
    // Stopped: every port closed.
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free after the ingress stops");
}
