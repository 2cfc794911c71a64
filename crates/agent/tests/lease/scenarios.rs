//! The scenarios, and what they share: a manager that can be restarted on its store,
//! agents of this process on the process driver, and the sampler of running copies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mycluster_agent::{AgentConfig, AgentError};
use mycluster_client::Client;
use mycluster_core::lease::{DEFAULT_LEASE, LEASE_MARGIN};
use mycluster_core::service::OnDisconnect;
use mycluster_core::span::Span;
use mycluster_core::wire::{ServiceRequest, SuspicionReason, TaskDoc};
use mycluster_core::TaskState;
use mycluster_manager::{ManagerConfig, RunningManager};
use mycluster_runtime::{
    Container, ContainerRuntime, ContainerState, Identity, ProcessRuntime, Supervisor,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use mycluster_relay::Relay;

/// The `stop` service's grace period.
const GRACE: Duration = Duration::from_secs(1);

/// The longest any one wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// A manager in this process, on an embedded store in a temporary dir that outlives its
/// restarts.
struct Manager {
    dir: tempfile::TempDir,
    cluster: String,
    running: Option<(RunningManager, CancellationToken)>,
}

impl Manager {
    async fn start(cluster: &str) -> Manager {
        let mut manager = Manager {
            dir: tempfile::tempdir().expect("a temporary dir"),
            cluster: cluster.into(),
            running: None,
        };
        manager.up().await;
        manager
    }

    async fn up(&mut self) {
        let stop = CancellationToken::new();
        let config = ManagerConfig::local(self.dir.path(), &self.cluster);
        let running = RunningManager::start(config, stop.clone())
            .await
            .expect("the manager starts");
        self.running = Some((running, stop));
    }

    async fn down(&mut self) {
        if let Some((running, stop)) = self.running.take() {
            stop.cancel();
            running.wait().await.expect("the manager stops");
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running.as_ref().expect("the manager runs").0.addr
    }

    fn api(&self) -> Client {
        Client::new(&format!("http://{}", self.addr()), Duration::from_secs(10)).expect("client")
    }
}

/// An agent of this process on the process driver (its supervisor: this program).
struct Agent {
    runtime: Arc<ProcessRuntime>,
    stop: CancellationToken,
    handle: Option<JoinHandle<Result<(), AgentError>>>,
}

impl Agent {
    /// Started; `remove_on_stop`: it removes its containers when it ends.
    fn start(cluster: &str, name: &str, manager: &str, remove_on_stop: bool) -> Agent {
        let exe = std::env::current_exe().expect("this program");
        let runtime = Arc::new(ProcessRuntime::new(
            Identity {
                cluster: cluster.into(),
                worker: name.into(),
            },
            Supervisor::new(exe, ["supervise"]),
        ));
        let config = AgentConfig {
            listen: "127.0.0.1:0".into(),
            remove_on_stop,
            ..AgentConfig::new(manager, name)
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(mycluster_agent::run(config, runtime.clone(), stop.clone()));
        Agent {
            runtime,
            stop,
            handle: Some(handle),
        }
    }

    /// Its running containers of `service`.
    async fn running(&self, service: &str) -> Vec<Container> {
        running_of(&*self.runtime, service).await
    }

    /// Removes whatever it left running.
    async fn clean_up(&self) {
        for c in self.runtime.list().await.unwrap_or_default() {
            let _ = self.runtime.remove(&c, Some(Duration::ZERO)).await;
        }
    }

    /// Stops it (as SIGTERM does) and waits until it ended.
    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn running_of(runtime: &dyn ContainerRuntime, service: &str) -> Vec<Container> {
    let prefix = format!("{service}.");
    runtime
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.state == ContainerState::Running && c.name.starts_with(&prefix))
        .collect()
}

/// Every 50 ms, the running containers of each agent, by service.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// Container names, by service (`single`, `many`).
    running: BTreeMap<String, Vec<String>>,
}

impl Sample {
    fn count(&self, service: &str) -> usize {
        self.running.get(service).map_or(0, Vec::len)
    }
}

impl Sampler {
    fn start(runtimes: Vec<Arc<ProcessRuntime>>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (into, until) = (samples.clone(), stop.clone());
        tokio::spawn(async move {
            while !until.is_cancelled() {
                let at = Instant::now();
                let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for runtime in &runtimes {
                    for c in runtime.list().await.unwrap_or_default() {
                        if c.state != ContainerState::Running {
                            continue;
                        }
                        let service = c.name.split('.').next().unwrap_or_default().to_string();
                        running.entry(service).or_default().push(c.name.clone());
                    }
                }
                into.lock().unwrap().push(Sample { at, running });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler { samples, stop }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until `check` finds what it looks for, for up to `DEADLINE`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A unique cluster name for this run (the process driver kills leftovers by name).
fn cluster(scenario: &str) -> String {
    format!("lease{}{scenario}", std::process::id())
}

/// `single` (`on_disconnect: "stop"`) and `many` (`replace`), one replica each, running
/// `sleep`.
async fn create_services(api: &Client) {
    for (service, policy) in [
        ("single", OnDisconnect::Stop),
        ("many", OnDisconnect::Replace),
    ] {
        let request = ServiceRequest {
            service: service.into(),
            replicas: 1,
            command: Some(vec!["sleep".into(), "300".into()]),
            stop_grace_period: Some(Span::secs(GRACE.as_secs())),
            on_disconnect: Some(policy),
            ..ServiceRequest::default()
        };
        api.submit_service(&request).await.expect("created");
    }
}

/// The manager's tasks of `service`.
async fn tasks(api: &Client, service: &str) -> Vec<TaskDoc> {
    api.tasks(Some(service), None).await.unwrap_or_default()
}

/// The one running task of `service` on `worker`, per the manager, once its agent runs
/// it too.
async fn running_task(api: &Client, agent: &Agent, service: &str, worker: &str) -> TaskDoc {
    eventually(&format!("{service} running on {worker}"), || async {
        let task = tasks(api, service)
            .await
            .into_iter()
            .find(|t| t.state == TaskState::Running && t.worker.as_deref() == Some(worker))?;
        let running = agent.running(service).await;
        running.iter().any(|c| c.task_id == task.id).then_some(task)
    })
    .await
}

/// The agent of a cut-off worker stops its `stop` task once its lease ran out (not
/// before), keeps its `replace` task, and reports the stop when the link heals; the
/// manager then replaces it.
pub async fn cut_off_agent_stops_its_stop_task_after_the_lease() {
    let cluster = cluster("a");
    let manager = Manager::start(&cluster).await;
    let relay = Relay::start(manager.addr()).expect("relay");
    let api = manager.api();
    let mut agent = Agent::start(&cluster, "w1", &format!("http://{}", relay.addr), true);
    create_services(&api).await;
    let single = running_task(&api, &agent, "single", "w1").await;
    let many = running_task(&api, &agent, "many", "w1").await;
    let sampler = Sampler::start(vec![agent.runtime.clone()]);

    let cut = Instant::now();
    relay.cut();
    eventually("the stop task to be stopped", || async {
        agent.running("single").await.is_empty().then_some(())
    })
    .await;
    let stopped_after = cut.elapsed();
    eprintln!(
        "  the stop task stopped {stopped_after:.2?} after the cut (lease {DEFAULT_LEASE:?})"
    );
    // Cut off for a while longer: the replace task runs on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.heal();
    let healed = Instant::now();

    // Its last renewal was sent at most a heartbeat (1 s) and a timeout (1 s) before the
    // cut: not stopped earlier than that, however slow the machine.
    let samples = sampler.samples();
    let early = cut + DEFAULT_LEASE - Duration::from_secs(2);
    assert!(
        samples
            .iter()
            .filter(|s| s.at < early)
            .all(|s| s.count("single") == 1),
        "the stop task was stopped before its lease could have run out"
    );
    assert!(
        samples
            .iter()
            .filter(|s| s.at >= cut)
            .all(|s| s.count("many") == 1),
        "the replace task must run on while its worker is cut off"
    );

    // Reported failed, why, once the manager hears the agent again; then replaced.
    let failed = eventually("the stop task reported failed", || async {
        let task = tasks(&api, "single")
            .await
            .into_iter()
            .find(|t| t.id == single.id)?;
        (task.state == TaskState::Failed).then_some(task)
    })
    .await;
    let error = failed.error.unwrap_or_default();
    assert!(
        error.starts_with("stopped: the worker's lease expired (no answer from the manager for"),
        "{error}"
    );
    eprintln!(
        "  reported {:.2?} after the link healed: {error}",
        healed.elapsed()
    );
    let replacement = running_task(&api, &agent, "single", "w1").await;
    assert_ne!(replacement.id, single.id);
    // The replace task is the same one, never stopped.
    let now = running_task(&api, &agent, "many", "w1").await;
    assert_eq!(now.id, many.id);
    assert!(
        sampler.samples().iter().all(|s| s.count("many") == 1),
        "the replace task never stopped"
    );
    drop(sampler);
    agent.stop().await;
    let mut manager = manager;
    manager.down().await;
}

/// A manager restart shorter than the lease stops nothing; then the agent is stopped
/// (SIGTERM): it tells the manager it leaves, stops its `stop` task and reports it.
pub async fn manager_restart_stops_nothing_and_sigterm_leaves() {
    let cluster = cluster("b");
    let mut manager = Manager::start(&cluster).await;
    let relay = Relay::start(manager.addr()).expect("relay");
    let api = manager.api();
    // Its containers left as they are when it ends, as `mycluster agent`'s.
    let mut agent = Agent::start(&cluster, "w1", &format!("http://{}", relay.addr), false);
    create_services(&api).await;
    let single = running_task(&api, &agent, "single", "w1").await;
    let many = running_task(&api, &agent, "many", "w1").await;
    let sampler = Sampler::start(vec![agent.runtime.clone()]);

    let restart = Instant::now();
    manager.down().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    manager.up().await;
    relay.point_at(manager.addr()).expect("point the relay");
    let downtime = restart.elapsed();
    eprintln!("  the manager was away for {downtime:.2?} (lease {DEFAULT_LEASE:?})");
    assert!(
        downtime < DEFAULT_LEASE - Duration::from_secs(2),
        "the premise: a restart well within the lease (it took {downtime:?})"
    );
    // Well past the moment the lease would have run out without a renewal.
    tokio::time::sleep(DEFAULT_LEASE + Duration::from_secs(3)).await;
    let samples = sampler.samples();
    assert!(
        samples
            .iter()
            .all(|s| s.count("single") == 1 && s.count("many") == 1),
        "a manager restart within the lease stopped a task"
    );
    let api = manager.api();
    assert_eq!(
        running_task(&api, &agent, "single", "w1").await.id,
        single.id
    );
    assert_eq!(running_task(&api, &agent, "many", "w1").await.id, many.id);
    drop(sampler);

    // SIGTERM: it leaves, and stops its stop task before it ends (not its replace task).
    let stopping = Instant::now();
    agent.stop().await;
    eprintln!(
        "  the agent ended {:.2?} after its stop",
        stopping.elapsed()
    );
    let worker = api
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .find(|w| w.worker == "w1")
        .expect("w1");
    assert_eq!(
        worker.suspected.map(|s| s.reason),
        Some(SuspicionReason::Left),
        "the manager heard that w1 leaves"
    );
    assert!(
        agent.running("single").await.is_empty(),
        "the stop task stopped"
    );
    assert_eq!(
        agent.running("many").await.len(),
        1,
        "the replace task left as it is"
    );
    agent.clean_up().await;
    manager.down().await;
}

/// A worker declared down while cut off: its `replace` task runs elsewhere at once and
/// the cut-off copy is killed as soon as the link heals; its `stop` task is stopped by
/// its agent before the manager replaces it, so it never has two copies.
pub async fn declared_down_while_cut_off() {
    let cluster = cluster("c");
    let mut manager = Manager::start(&cluster).await;
    let relay = Relay::start(manager.addr()).expect("relay");
    let api = manager.api();
    let direct = format!("http://{}", manager.addr());
    let mut w1 = Agent::start(&cluster, "w1", &format!("http://{}", relay.addr), true);
    create_services(&api).await;
    let single = running_task(&api, &w1, "single", "w1").await;
    let many = running_task(&api, &w1, "many", "w1").await;
    // A second worker, for the replacements.
    let mut w2 = Agent::start(&cluster, "w2", &direct, true);
    eventually("w2 ready", || async {
        let workers = api.workers().await.ok()?;
        workers
            .iter()
            .any(|w| w.worker == "w2" && w.status == mycluster_core::WorkerStatus::Ready)
            .then_some(())
    })
    .await;
    let sampler = Sampler::start(vec![w1.runtime.clone(), w2.runtime.clone()]);

    relay.cut();
    // The monitor's verdict, once w1 has been silent for a second.
    eventually("w1 declared down", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let down = api.declare_down("w1", Duration::from_secs(1)).await.ok()?;
        (down.status == mycluster_core::WorkerStatus::Down).then_some(())
    })
    .await;
    let many_elsewhere = running_task(&api, &w2, "many", "w2").await;
    assert_ne!(many_elsewhere.id, many.id);
    // The stop task is replaced only after the lease, its grace and the margin.
    let single_elsewhere = running_task(&api, &w2, "single", "w2").await;
    assert_ne!(single_elsewhere.id, single.id);
    assert!(
        w1.running("single").await.is_empty(),
        "the stop task was replaced while its cut-off copy still ran"
    );
    // The cut-off replace copy runs on until the link heals.
    assert_eq!(w1.running("many").await.len(), 1);

    relay.heal();
    let healed = Instant::now();
    eventually("the cut-off replace copy gone", || async {
        w1.running("many").await.is_empty().then_some(())
    })
    .await;
    let gone_after = healed.elapsed();
    eprintln!("  the cut-off replace copy was gone {gone_after:.2?} after the link healed");
    // Back to one copy of each, for good.
    tokio::time::sleep(DEFAULT_LEASE + LEASE_MARGIN).await;
    assert!(w1.running("single").await.is_empty());
    assert!(w1.running("many").await.is_empty());
    assert_eq!(w2.running("single").await.len(), 1);
    assert_eq!(w2.running("many").await.len(), 1);

    let samples = sampler.samples();
    let doubled: Vec<&Sample> = samples.iter().filter(|s| s.count("single") > 1).collect();
    assert!(
        doubled.is_empty(),
        "two copies of the stop task ran at once: {:?}",
        doubled.first()
    );
    let both = samples.iter().filter(|s| s.count("many") > 1).count();
    eprintln!(
        "  {} samples, {both} with both copies of the replace task (the split)",
        samples.len()
    );
    drop(sampler);
    w1.stop().await;
    w2.stop().await;
    manager.down().await;
}
