//! The agent against a runtime that is slow or fails, end to end: a real manager process,
//! and a real agent loop in this process over the `sim` driver, wrapped so a test can
//! hold its removes (as stops that wait out a long grace period do), fail its address
//! lookups, and fail its exec health checks. The manager's API shows what a user would
//! see; the agents' log lines are captured to count their warnings.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{eventually, ready_workers, Api, Manager, TEST_JOIN_TOKEN};
use mycluster_agent::AgentConfig;
use mycluster_core::endpoints::DEREGISTER_DELAY;
use mycluster_runtime::{
    Container, ContainerRuntime, ExecOutcome, Identity, RuntimeError, SimRuntime, TaskSpec,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The sim driver, with the faults a test turns on.
struct Faulty {
    sim: SimRuntime,
    /// Removes wait while this holds false.
    removes_open: watch::Sender<bool>,
    /// Removes called so far, waiting or done.
    removes: AtomicUsize,
    first_remove: Mutex<Option<Instant>>,
    /// How many address lookups fail before they answer.
    address_failures: AtomicUsize,
    /// Whether exec health checks pass.
    healthy: AtomicBool,
    first_failed_check: Mutex<Option<Instant>>,
}

impl Faulty {
    fn new(cluster: &str, worker: &str) -> Arc<Faulty> {
        Arc::new(Faulty {
            sim: SimRuntime::new(Identity {
                cluster: cluster.into(),
                worker: worker.into(),
            }),
            removes_open: watch::channel(true).0,
            removes: AtomicUsize::new(0),
            first_remove: Mutex::new(None),
            address_failures: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            first_failed_check: Mutex::new(None),
        })
    }

    fn hold_removes(&self, held: bool) {
        self.removes_open.send_replace(!held);
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Faulty {
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
        self.removes.fetch_add(1, SeqCst);
        self.first_remove
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let mut open = self.removes_open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        self.sim.remove(container, grace).await
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        self.sim.list().await
    }

    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        let fails = self
            .address_failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fails {
            return Err(RuntimeError::Engine(
                "the engine did not answer (the test's fault)".into(),
            ));
        }
        self.sim.address(container).await
    }

    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        if self.healthy.load(SeqCst) {
            return self.sim.exec(container, argv, timeout).await;
        }
        self.first_failed_check
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        Ok(ExecOutcome {
            code: 1,
            output: "sick".into(),
        })
    }
}

/// An agent loop of this process, stopped when dropped.
struct InProcessAgent(CancellationToken);

impl InProcessAgent {
    fn start(manager: &Manager, name: &str, runtime: Arc<Faulty>) -> InProcessAgent {
        captured();
        let config = AgentConfig {
            listen: "127.0.0.1:0".into(),
            token: Some(TEST_JOIN_TOKEN.into()),
            ..AgentConfig::new(&manager.url, name)
        };
        let stop = CancellationToken::new();
        tokio::spawn(mycluster_agent::run(config, runtime, stop.clone()));
        InProcessAgent(stop)
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What this process logged, from the first agent started on.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let into = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Capture(into.clone()))
            .try_init();
        log
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many captured lines contain every one of `parts`.
fn lines_with(parts: &[&str]) -> usize {
    let log = captured().lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .count()
}

async fn tasks(api: &Api, service: &str) -> Vec<Value> {
    api.ok(&format!("/api/v1/tasks?service={service}"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn the_task(api: &Api, service: &str, id: &str) -> Value {
    let tasks = tasks(api, service).await;
    let found = tasks.iter().find(|t| t["id"] == id);
    found
        .cloned()
        .unwrap_or_else(|| panic!("no task {id}: {tasks:?}"))
}

async fn create(api: &Api, body: Value) {
    let reply = api.post("/api/v1/service?wait=0", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// Waits until `n` of the service's tasks run; returns them.
async fn running(api: &Api, service: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} running tasks of {service}"), || async {
        let running: Vec<Value> = tasks(api, service)
            .await
            .into_iter()
            .filter(|t| t["state"] == "running")
            .collect();
        (running.len() == n).then_some(running)
    })
    .await
}

/// The service's endpoints once `n` are listed.
async fn endpoints(api: &Api, service: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} endpoints of {service}"), || async {
        let listed = api
            .ok(&format!("/api/v1/service/{service}/endpoints"))
            .await["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (listed.len() == n).then_some(listed)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_go_on_while_stops_wait_out_their_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "permits");
    let api = manager.api();
    let runtime = Faulty::new(&manager.name, "permits1");
    let _agent = InProcessAgent::start(&manager, "permits1", runtime.clone());
    ready_workers(&api, 1).await;
    let body = json!({"service": "slow", "image": "img", "replicas": 20,
                      "stop_grace_period": "60s"});
    create(&api, body).await;
    running(&api, "slow", 20).await;

    // Scaled down, and every stop waits out its grace period (an application that
    // ignores SIGTERM): more stops than the agent runs at once.
    runtime.hold_removes(true);
    let scaled = api
        .send_json("PATCH", "/api/v1/service/slow", &json!({"replicas": 0}))
        .await;
    assert_eq!(scaled.status, 200, "{}", scaled.body);
    // All the agent's 16 turns for stops taken, 4 stops waiting for one.
    eventually("16 stops under way", || async {
        (runtime.removes.load(SeqCst) >= 16).then_some(())
    })
    .await;

    // A start meanwhile (a replacement, say) waits for none of them.
    create(
        &api,
        json!({"service": "fresh", "image": "img", "replicas": 1}),
    )
    .await;
    running(&api, "fresh", 1).await;
    let slow = tasks(&api, "slow").await;
    assert!(
        slow.iter().all(|t| t["state"] == "running"),
        "the stops were still waiting: {slow:?}"
    );

    // Once they end, every stopped task is reported so (and, stopped, left out of the
    // list).
    runtime.hold_removes(false);
    eventually("the 20 stops to end", || async {
        let slow = tasks(&api, "slow").await;
        slow.iter().all(|t| t["state"] != "running").then_some(())
    })
    .await;
    let left = runtime.sim.list().await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_address_was_not_found_is_routed_once_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "address");
    let api = manager.api();
    let runtime = Faulty::new(&manager.name, "address1");
    // The start's lookup fails, and the next two passes' too.
    runtime.address_failures.store(3, SeqCst);
    let _agent = InProcessAgent::start(&manager, "address1", runtime.clone());
    ready_workers(&api, 1).await;
    let body = json!({"service": "web", "image": "img", "replicas": 1,
                      "ports": [{"published": 18081, "target": 8000}],
                      "healthcheck": {"exec": ["check"], "interval": "300ms"}});
    create(&api, body).await;

    let listed = endpoints(&api, "web", 1).await;
    assert_eq!(listed[0]["address"], "127.0.0.1", "{listed:?}");
    assert_eq!(runtime.address_failures.load(SeqCst), 0);
    // Said once, not at every pass that tried; and said again when found.
    let agent = "agent address1: web.0.";
    assert_eq!(lines_with(&[agent, "cannot be routed"]), 1);
    assert_eq!(lines_with(&[agent, "can be routed now"]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_replica_leaves_the_route_table_before_it_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "unhealthy");
    let api = manager.api();
    let runtime = Faulty::new(&manager.name, "unhealthy1");
    let _agent = InProcessAgent::start(&manager, "unhealthy1", runtime.clone());
    ready_workers(&api, 1).await;
    let body = json!({"service": "web", "image": "img", "replicas": 1,
                      "ports": [{"published": 18082, "target": 8000}],
                      "healthcheck": {"exec": ["check"], "interval": "300ms", "retries": 1}});
    create(&api, body).await;
    let listed = endpoints(&api, "web", 1).await;
    let id = listed[0]["task"].as_str().unwrap().to_string();

    // Its check fails: the replica is taken out of the table, then stopped.
    runtime.hold_removes(true);
    runtime.healthy.store(false, SeqCst);
    eventually("its stop", || async {
        (runtime.removes.load(SeqCst) > 0).then_some(())
    })
    .await;
    // While it stops, the manager holds it unhealthy (what its agent said first), so no
    // ingress routes to it.
    let task = the_task(&api, "web", &id).await;
    assert_eq!(
        (&task["state"], &task["health"]),
        (&json!("running"), &json!("unhealthy")),
        "{task}"
    );
    let listed = api.ok("/api/v1/service/web/endpoints").await;
    assert_eq!(listed["endpoints"], json!([]), "{listed}");
    // And it was stopped only once the ingresses had time to hear.
    let failed_at = runtime.first_failed_check.lock().unwrap().expect("a check");
    let stopped_at = runtime.first_remove.lock().unwrap().expect("a stop");
    assert!(
        stopped_at - failed_at >= Duration::from_millis(DEREGISTER_DELAY),
        "stopped {:?} after its check failed",
        stopped_at - failed_at
    );

    // Gone: failed, and why.
    runtime.hold_removes(false);
    let failed = eventually("the unhealthy task to fail", || async {
        let task = the_task(&api, "web", &id).await;
        (task["state"] == "failed").then_some(task)
    })
    .await;
    assert_eq!(failed["health"], "unhealthy", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("unhealthy: exec exited 1"), "{failed}");
}
