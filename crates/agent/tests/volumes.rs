//! The agent against a stand-in manager (a few routes of the real API, typed with the
//! wire types): it registers its worker's capacity (its flags over what the runtime says
//! the host has) and host; it removes the volumes a task list names, tries one still in
//! use again with the next list, and names the removed ones in its status reports until
//! the manager took them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use mycluster_agent::AgentConfig;
use mycluster_core::service::{Amount, Bytes, Cpus};
use mycluster_core::wire::{
    AssignedTasks, HeartbeatDoc, Registration, ReportDoc, StatusReport, WorkerDoc,
};
use mycluster_core::WorkerStatus;
use mycluster_runtime::{
    Container, ContainerRuntime, ExecOutcome, HostFacts, Identity, RuntimeError, SimRuntime,
    TaskSpec,
};
use tokio_util::sync::CancellationToken;

/// What the stand-in manager heard, and the volumes it asks removed.
#[derive(Default)]
struct Heard {
    registrations: Vec<Registration>,
    reports: Vec<StatusReport>,
    remove: Vec<String>,
    index: u64,
}

type Shared = Arc<Mutex<Heard>>;

async fn register(State(heard): State<Shared>, Json(r): Json<Registration>) -> Json<WorkerDoc> {
    let doc = WorkerDoc {
        worker: r.name.clone(),
        address: r.address.clone(),
        status: WorkerStatus::Ready,
        labels: r.labels.clone(),
        capacity: r.capacity,
        driver: None,
        tasks: 0,
        running: 0,
        last_heartbeat_age: None,
        heartbeat_interval: 1.0,
        registered_at: 0.0,
        instance: r.instance.clone(),
        resources: r.resources,
        reserved: Amount::default(),
        host: r.host.clone(),
        drain: false,
        epoch: 0,
        suspected: None,
        credential: None,
    };
    heard.lock().unwrap().registrations.push(r);
    Json(doc)
}

async fn heartbeat(Path(worker): Path<String>) -> Json<HeartbeatDoc> {
    Json(HeartbeatDoc {
        worker,
        status: WorkerStatus::Ready,
        index: 1,
        heartbeat_interval: 1.0,
        epoch: 0,
        lease: 5.0,
    })
}

/// A new list every 200 ms: a long-poll that ran out, as far as the agent can tell.
async fn tasks(State(heard): State<Shared>) -> Json<AssignedTasks> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut heard = heard.lock().unwrap();
    heard.index += 1;
    Json(AssignedTasks {
        index: heard.index,
        tasks: Vec::new(),
        remove_volumes: heard.remove.clone(),
        epoch: 0,
        lease: 5.0,
    })
}

/// Takes the report; a volume reported removed leaves the list, as its record goes.
async fn status(State(heard): State<Shared>, Json(report): Json<StatusReport>) -> Json<ReportDoc> {
    let mut heard = heard.lock().unwrap();
    heard.remove.retain(|v| !report.removed_volumes.contains(v));
    heard.reports.push(report);
    Json(ReportDoc {
        index: heard.index,
        ignored: Vec::new(),
    })
}

/// The sim driver, on a host it describes, whose volume `busy` is in use for its first
/// two removals.
struct Host {
    sim: SimRuntime,
    removals: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl ContainerRuntime for Host {
    fn driver(&self) -> mycluster_core::Driver {
        self.sim.driver()
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        self.sim.check(spec)
    }

    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        self.sim.start(spec).await
    }

    async fn remove(
        &self,
        container: &Container,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        self.sim.remove(container, grace).await
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.sim.list().await
    }

    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        self.sim.address(container).await
    }

    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.sim.exec(container, argv, timeout).await
    }

    async fn host(&self) -> Result<HostFacts, RuntimeError> {
        Ok(HostFacts {
            id: "host-1".into(),
            cpus: Some(Cpus(8000)),
            memory: Some(Bytes(16 << 30)),
        })
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut removals = self.removals.lock().unwrap();
        removals.push(name.to_string());
        let tries = removals.iter().filter(|v| *v == name).count();
        if name == "busy" && tries <= 2 {
            return Err(RuntimeError::InUse(format!("the volume {name} is in use")));
        }
        Ok(())
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_host_and_volume_removals_reach_the_manager() {
    let heard: Shared = Arc::new(Mutex::new(Heard {
        remove: vec!["web-data-0".into(), "busy".into()],
        ..Heard::default()
    }));
    let app = Router::new()
        .route("/api/v1/workers", post(register))
        .route("/api/v1/workers/{worker}/heartbeat", post(heartbeat))
        .route("/api/v1/workers/{worker}/tasks", get(tasks))
        .route("/api/v1/workers/{worker}/status", post(status))
        .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    let runtime = Arc::new(Host {
        sim: SimRuntime::new(Identity {
            cluster: "c".into(),
            worker: "w1".into(),
        }),
        removals: Mutex::new(Vec::new()),
    });
    let config = AgentConfig {
        listen: "127.0.0.1:0".into(),
        // Its own word on memory; the host's CPUs.
        capacity_memory: Some(Bytes(4 << 30)),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        ..AgentConfig::new(&url, "w1")
    };
    let agent = tokio::spawn(mycluster_agent::run(config, runtime.clone(), stop.clone()));

    let registration = eventually("the registration", || {
        heard.lock().unwrap().registrations.first().cloned()
    })
    .await;
    assert_eq!(
        registration.resources,
        Amount {
            cpus: Some(Cpus(8000)),
            memory: Some(Bytes(4 << 30)),
        }
    );
    assert_eq!(registration.host, "host-1");

    // Both removed in the end (the busy one at its third list), each reported.
    eventually("both volumes removed and reported", || {
        let heard = heard.lock().unwrap();
        heard.remove.is_empty().then_some(())
    })
    .await;
    stop.cancel();
    let _ = agent.await;
    let _ = server.await;
    let heard = heard.lock().unwrap();
    let reported: Vec<&String> = heard
        .reports
        .iter()
        .flat_map(|r| &r.removed_volumes)
        .collect();
    // A list sent before a report was taken may name a volume once more: removing it
    // again is harmless (gone already is fine), so only the order of the first counts.
    let first = |name: &str| reported.iter().position(|v| *v == name);
    match (first("web-data-0"), first("busy")) {
        (Some(free), Some(busy)) => assert!(free < busy, "{reported:?}"),
        _ => panic!("both must be reported removed: {reported:?}"),
    }
    // In use for two removals: tried again with the next lists, then removed.
    let removals = runtime.removals.lock().unwrap();
    assert!(
        removals.iter().filter(|v| *v == "busy").count() >= 3,
        "{removals:?}"
    );
}
