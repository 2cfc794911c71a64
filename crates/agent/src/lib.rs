//! The worker agent: registers with the manager, heartbeats, long-polls for the tasks
//! assigned to its worker, and makes its container runtime match them — starting what is
//! wanted, removing what is not, and reporting what really runs. When the manager is
//! unreachable it leaves its containers alone, retries with backoff, and re-syncs when
//! the manager answers again. It is one worker's only agent: if the manager says another
//! agent holds the worker's name, it ends (see `join`).
//!
//! Health checks: the sync pass keeps one prober per running container whose task has a
//! `healthcheck` (`probers`, running `probe`s, judged by `verdict`); the plan reports
//! each change of health, and replaces an unhealthy container as it would a crashed one
//! (one with ports once the manager took it out of the route table: see `plan`).
//!
//! Ports: a task is run with its `workload` environment (who it is, and the ports it
//! listens on: each target itself on the docker driver, free ports of the host that
//! `ports` holds for it on the process driver), and reported `running` with where it is
//! reached (its address and ports), which puts it in the ingress's route table. A task
//! the manager stops while it may be in that table is signalled only after
//! `DEREGISTER_DELAY`, and every stop gives the task its own grace period (see `plan`).
//!
//! Capacity and host: the agent registers what its worker offers to tasks' reservations
//! (the host's CPUs and memory as its runtime sees them, or `--capacity-cpus` and
//! `--capacity-memory`) and which host it is on (workers of one host share its volumes).
//! Volumes the manager asks this host to remove are removed, and said removed in the
//! next status report (see `volumes`).
//!
//! Where to start reading: `run` below (three loops: heartbeat, watch, sync), then
//! `plan` (the pure diff of wanted tasks against containers found), then `join`, then
//! `probers`.

mod act;
mod config;
mod exits;
#[cfg(test)]
mod fixtures;
mod health;
mod join;
pub mod plan;
pub mod ports;
mod probe;
mod probers;
mod stop;
pub mod verdict;
mod volumes;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mycluster_background::{run_loop, Loop, LoopControl};
use mycluster_client::{Client, ClientError};
use mycluster_core::service::{Amount, Bytes, Cpus, Health};
use mycluster_core::wire::{StatusReport, TaskDoc, TaskReport};
use mycluster_core::TaskState;
use mycluster_runtime::ContainerRuntime;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

pub use config::ConfigError;
pub use health::hostname;
pub use join::new_instance;
use join::{held_elsewhere, register_until_done, rejoin, superseded};
use plan::{announces, plan, report, Action};
use ports::Ports;
use probers::Probers;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manager: String,
    /// The join token (or the API token) presented to the manager.
    pub token: Option<String>,
    /// Talk to the manager over one HTTP/2 connection instead of HTTP/1.1 ones.
    pub http2: bool,
    pub name: String,
    /// This agent's instance id, named in every call (see `join`): new at every start.
    pub instance: String,
    /// How long a registration refused because another live agent holds the name is
    /// tried again before the agent gives up (a crashed predecessor's name frees within
    /// the liveness window: 3 s at one heartbeat a second).
    pub takeover_wait: Duration,
    /// Where the health endpoint listens (the monitor probes it).
    pub listen: String,
    /// The host:port the monitor should probe; default: the bound address, with an
    /// unspecified IP replaced by this host's name.
    pub advertise: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: Option<u32>,
    /// The CPUs and memory the worker offers to tasks' reservations; `None`: the host's,
    /// as the runtime tells them.
    pub capacity_cpus: Option<Cpus>,
    pub capacity_memory: Option<Bytes>,
    pub heartbeat: Duration,
    /// How often the runtime is checked even when no assignment changed (exits, crashes).
    pub sync_period: Duration,
    /// How long one long-poll may wait.
    pub poll_wait: Duration,
    /// Remove every container of this worker when stopping (`mycluster dev`).
    pub remove_on_stop: bool,
}

impl AgentConfig {
    pub fn new(manager: &str, name: &str) -> AgentConfig {
        AgentConfig {
            manager: manager.into(),
            token: None,
            http2: false,
            name: name.into(),
            instance: new_instance(),
            takeover_wait: Duration::from_secs(30),
            listen: "0.0.0.0:7000".into(),
            advertise: None,
            labels: BTreeMap::new(),
            capacity: None,
            capacity_cpus: None,
            capacity_memory: None,
            heartbeat: Duration::from_secs(1),
            sync_period: Duration::from_secs(1),
            poll_wait: Duration::from_secs(30),
            remove_on_stop: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid manager URL: {0}")]
    Client(#[from] ClientError),
    #[error("cannot listen on {addr} for the health endpoint: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// Another live agent held the worker's name for all of `takeover_wait`.
    #[error("the manager refused this agent for {waited:?}: {message}")]
    NameHeld { message: String, waited: Duration },
    /// Another agent took the worker over; this one ended, its containers left as they
    /// are.
    #[error("{0}")]
    Superseded(String),
    /// The configuration was refused (see `AgentConfig::check`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the HTTP client of health checks: {0}")]
    ProbeClient(reqwest::Error),
}

/// Shared by the agent's loops.
struct Shared {
    config: AgentConfig,
    client: Client,
    runtime: Arc<dyn ContainerRuntime>,
    address: String,
    /// Ends every loop: cancelled with the caller's `stop`, or when the manager says
    /// another agent took this worker over.
    quit: CancellationToken,
    /// The manager's word that this agent was superseded, once it said so.
    superseded: std::sync::Mutex<Option<String>>,
    /// The manager's latest task list for this worker; `None` until the first arrives,
    /// so a restarted agent removes nothing before it knows what is wanted.
    /// Shared, not copied, by each pass: a pass runs every second on every agent.
    wanted: watch::Sender<Option<Arc<Vec<TaskDoc>>>>,
    /// Starts and removals under way (by task or container), so none is launched twice.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Reports of finished actions, for the next pass to send.
    finished: std::sync::Mutex<Vec<TaskReport>>,
    /// Wakes the sync loop: a new list arrived, or an action finished.
    poke: tokio::sync::Notify,
    /// Turns for starts, and apart from them for stops: a stop may wait out a task's
    /// whole grace period (up to an hour), and stops that do must not hold up the
    /// starts — replacements among them — behind them.
    start_permits: Arc<Semaphore>,
    stop_permits: Arc<Semaphore>,
    /// The health checks of running containers.
    probers: Probers,
    /// The ports handed to this worker's tasks.
    ports: Ports,
    /// The containers this agent reported running since it started, with where they
    /// are reached when their task has ports (see `plan`).
    announced: std::sync::Mutex<BTreeSet<String>>,
    /// The running containers whose address the runtime could not tell, each warned
    /// about once (a task with ports is out of the route table until it can; see `act`).
    unroutable: std::sync::Mutex<BTreeSet<String>>,
    /// This host's name, as workloads are told it (`MYCLUSTER_SERVED_BY`).
    host: String,
    /// What the worker offers to tasks' reservations, as registered.
    resources: Amount,
    /// Which host it is on, as registered (its engine's id, or the machine's).
    machine: String,
    /// The volumes the manager asked this host to remove, and what became of them.
    volumes: std::sync::Mutex<volumes::Removals>,
}

/// Runs the agent until `stop` is cancelled; returns once every loop has ended.
pub async fn run(
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    // Checked here too, so an agent started by `dev`, a bench or a test is held to the
    // same rules as one started from flags.
    config.check()?;
    let client = if config.http2 {
        Client::new_http2(&config.manager, Duration::from_secs(10))?
    } else {
        Client::new(&config.manager, Duration::from_secs(10))?
    }
    .with_token(config.token.clone());
    let probers = Probers::new().map_err(AgentError::ProbeClient)?;
    let (listener, address) = health::bind(&config).await?;
    let (wanted, _) = watch::channel(None);
    let quit = stop.child_token();
    let facts = match runtime.host().await {
        Ok(facts) => facts,
        Err(e) => {
            tracing::warn!(
                "agent {}: cannot tell what this host has ({e}): registering no capacity \
                 besides --capacity-cpus and --capacity-memory",
                config.name
            );
            mycluster_runtime::HostFacts::default()
        }
    };
    let resources = Amount {
        cpus: config.capacity_cpus.or(facts.cpus),
        memory: config.capacity_memory.or(facts.memory),
    };
    let shared = Arc::new(Shared {
        config,
        client,
        runtime,
        address,
        quit: quit.clone(),
        superseded: Default::default(),
        wanted,
        in_flight: Default::default(),
        finished: Default::default(),
        poke: tokio::sync::Notify::new(),
        start_permits: Arc::new(Semaphore::new(PARALLEL_STARTS)),
        stop_permits: Arc::new(Semaphore::new(PARALLEL_STOPS)),
        probers,
        ports: Ports::default(),
        announced: Default::default(),
        unroutable: Default::default(),
        host: hostname().unwrap_or_else(|| "localhost".into()),
        resources,
        machine: facts.id,
        volumes: Default::default(),
    });
    tracing::info!(
        "agent {} ({} driver) for {}, health on {}, {} on host {}",
        shared.config.name,
        shared.runtime.driver(),
        shared.config.manager,
        shared.address,
        describe_capacity(&shared.resources),
        if shared.machine.is_empty() {
            "unknown"
        } else {
            &shared.machine
        }
    );
    let health = tokio::spawn(health::serve(
        listener,
        shared.config.name.clone(),
        shared.runtime.driver(),
        quit.clone(),
    ));
    if let Err(e) = register_until_done(&shared, &quit).await {
        quit.cancel();
        let _ = health.await;
        return Err(e);
    }
    let loops = [
        tokio::spawn(heartbeat_loop(shared.clone(), quit.clone())),
        tokio::spawn(watch_loop(shared.clone(), quit.clone())),
        tokio::spawn(sync_loop(shared.clone(), quit.clone())),
        tokio::spawn(exits::follow(shared.clone(), quit.clone())),
    ];
    for handle in loops {
        let _ = handle.await;
    }
    // Cancelled with `quit` already; this drops their handles too.
    shared.probers.stop_all();
    let _ = health.await;
    // Superseded: its containers are left as they are (see `join`).
    if let Some(why) = lock(&shared.superseded).take() {
        return Err(AgentError::Superseded(why));
    }
    if shared.config.remove_on_stop {
        remove_everything(&*shared.runtime).await;
    }
    tracing::info!("agent {} stopped", shared.config.name);
    Ok(())
}

/// The longest heartbeat interval an agent accepts from its manager, in seconds.
const MAX_HEARTBEAT_INTERVAL: f64 = 60.0;

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let name = format!("agent {} heartbeat", shared.config.name);
    run_loop(&name, shared.config.heartbeat, stop, || {
        let shared = shared.clone();
        async move {
            let beat = shared
                .client
                .heartbeat(&shared.config.name, &shared.config.instance)
                .await;
            match beat {
                // A large cluster asks its agents to beat less often.
                Ok(answer) => Ok(match answer.heartbeat_interval {
                    secs if secs.is_finite() && secs > 0.0 => LoopControl::After(
                        Duration::from_secs_f64(secs.min(MAX_HEARTBEAT_INTERVAL))
                            .max(shared.config.heartbeat),
                    ),
                    _ => LoopControl::Continue,
                }),
                Err(e) => {
                    if let Some(message) = held_elsewhere(&e) {
                        superseded(&shared, message);
                        return Ok(LoopControl::Stop);
                    }
                    // The manager does not know us (it lost its state): join again.
                    if e.status() == Some(404) {
                        rejoin(&shared).await?;
                        return Ok(LoopControl::Continue);
                    }
                    Err(e.to_string())
                }
            }
        }
    })
    .await;
}

/// Long-polls the manager for this worker's tasks and publishes each new list. A poll
/// that answered is the wait: the next one starts at once.
async fn watch_loop(shared: Arc<Shared>, stop: CancellationToken) {
    // The index of the list last received, for the next poll to wait for a newer one.
    let mut index: Option<u64> = None;
    let name = format!("agent {}", shared.config.name);
    Loop::new(name, WATCH_RETRY, stop.clone())
        .on_recovery("the manager answers again")
        .run_with(&mut index, |index| {
            let (shared, stop) = (shared.clone(), stop.clone());
            Box::pin(async move {
                let poll = shared.client.assigned_tasks(
                    &shared.config.name,
                    &shared.config.instance,
                    *index,
                    shared.config.poll_wait,
                );
                // A poll waits up to `poll_wait`: the stop does not wait for it.
                let result = tokio::select! {
                    _ = stop.cancelled() => return Ok(LoopControl::Stop),
                    result = poll => result,
                };
                match result {
                    Ok(list) => {
                        *index = Some(list.index);
                        lock(&shared.volumes).asked(list.remove_volumes);
                        shared.wanted.send_replace(Some(Arc::new(list.tasks)));
                        shared.poke.notify_one();
                        Ok(LoopControl::Now)
                    }
                    Err(e) => {
                        if let Some(message) = held_elsewhere(&e) {
                            superseded(&shared, message);
                            return Ok(LoopControl::Stop);
                        }
                        if e.status() == Some(404) {
                            let _ = rejoin(&shared).await;
                        }
                        // Keep the last list: the containers keep running as they are.
                        *index = None;
                        Err(format!("cannot get tasks: {e}"))
                    }
                }
            })
        })
        .await;
}

/// The first wait after a failed poll (doubled at each next failure).
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Makes the runtime match the wanted tasks: every sync period (to notice containers
/// that exited), and at once when woken — by a new list, or an action that finished.
async fn sync_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let name = format!("agent {}", shared.config.name);
    Loop::new(name, shared.config.sync_period, stop.clone())
        .woken_by(&shared.poke)
        // A pass that works again says nothing: its reports are the news.
        .quiet_recovery()
        .run(|| {
            let (shared, stop) = (shared.clone(), stop.clone());
            async move {
                let list = shared.wanted.borrow().clone();
                let Some(tasks) = list else {
                    return Ok(LoopControl::Continue);
                };
                match sync_once(&shared, tasks).await {
                    Ok(()) => Ok(LoopControl::Continue),
                    // Failed because the agent is stopping (superseded, say): no line.
                    Err(_) if stop.is_cancelled() => Ok(LoopControl::Stop),
                    Err(e) => Err(format!("sync: {e}")),
                }
            }
        })
        .await;
}

/// How many containers the agent starts at once.
const PARALLEL_STARTS: usize = 16;

/// How many containers the agent stops and removes at once, besides its starts.
const PARALLEL_STOPS: usize = 16;

/// One pass: compare, launch what must change, and report. Actions run in the
/// background and report through `finished` when done, so a slow image pull holds up
/// neither the other tasks nor exit reports; an action already under way is not
/// launched twice.
async fn sync_once(shared: &Arc<Shared>, tasks: Arc<Vec<TaskDoc>>) -> Result<(), String> {
    // What was under way when the list began: listing can take seconds on a busy engine,
    // and a start that finished meanwhile may show in it half-done (created, not yet
    // running). Such a task is left to the next pass, which sees it as it is.
    let under_way_before = lock(&shared.in_flight).clone();
    let containers = shared.runtime.list().await.map_err(|e| e.to_string())?;
    // A task's ports are held while it has a process here, or a start under way.
    let present: HashSet<&str> = containers.iter().map(|c| c.task_id.as_str()).collect();
    shared.ports.retain(|task| {
        present.contains(task) || under_way_before.contains(&format!("task:{task}"))
    });
    let announced = {
        let ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        lock(&shared.unroutable).retain(|id| ids.contains(id.as_str()));
        let mut announced = lock(&shared.announced);
        announced.retain(|id| ids.contains(id.as_str()));
        announced.clone()
    };
    let verdicts = Probers::sync(shared, &tasks, &containers);
    let (actions, mut reports) = plan(&tasks, &containers, &verdicts, &announced);
    act::add_where_reached(shared, &tasks, &containers, &mut reports).await;
    for action in actions {
        let key = match &action {
            Action::Start(task) => format!("task:{}", task.id),
            Action::Remove { container, .. } => format!("container:{}", container.id),
        };
        {
            let mut in_flight = lock(&shared.in_flight);
            // A container seen between its create and its start belongs to a start
            // under way (or one that ended during the list): not a leftover to remove.
            let task_key = match &action {
                Action::Start(task) => format!("task:{}", task.id),
                Action::Remove { container, .. } => format!("task:{}", container.task_id),
            };
            let starting = in_flight.contains(&task_key) || under_way_before.contains(&task_key);
            if starting || !in_flight.insert(key.clone()) {
                continue;
            }
        }
        if let Action::Start(task) = &action {
            // Seen at once in GET /tasks, however long the pull takes.
            reports.push(report(task, TaskState::Starting, None));
        }
        act::launch(shared.clone(), action, key);
    }
    reports.append(&mut lock(&shared.finished));
    let removed_volumes = volumes::remove_due(shared).await;
    if reports.is_empty() && removed_volumes.is_empty() {
        return Ok(());
    }
    let status = StatusReport {
        tasks: reports,
        removed_volumes,
    };
    let sent = shared
        .client
        .report_status(&shared.config.name, &shared.config.instance, &status)
        .await;
    let StatusReport {
        tasks: reports,
        removed_volumes,
    } = status;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(message) = held_elsewhere(&e) {
                superseded(shared, message);
                return Err(format!("report refused: {message}"));
            }
            // Keep what only an action knew (its container id, its error) for the next
            // pass; what the plan derives from the lists it will derive again.
            let count = reports.len();
            lock(&shared.finished).extend(
                reports
                    .into_iter()
                    .filter(|r| r.container_id.is_some() || r.error.is_some()),
            );
            return Err(format!("cannot report {count} task states: {e}"));
        }
    };
    lock(&shared.volumes).reported(&removed_volumes);
    // What was accepted is known now: note it, so the next pass does not repeat it
    // before the manager's new list arrives.
    let ignored: Vec<&str> = answer.ignored.iter().map(|i| i.id.as_str()).collect();
    let accepted = || reports.iter().filter(|r| !ignored.contains(&r.id.as_str()));
    {
        let mut announced = lock(&shared.announced);
        for r in accepted().filter(|r| announces(r, tasks.iter().find(|t| t.id == r.id))) {
            if let Some(id) = &r.container_id {
                announced.insert(id.clone());
            }
        }
    }
    shared.wanted.send_if_modified(|list| {
        let Some(list) = list else { return false };
        let list = Arc::make_mut(list);
        for r in accepted() {
            if let Some(task) = list.iter_mut().find(|t| t.id == r.id) {
                task.state = r.state;
                if r.health.is_some() {
                    task.health = r.health;
                    task.health_message = r.health_message.clone();
                }
                if r.address.is_some() {
                    task.address = r.address;
                }
            }
        }
        // Not a new assignment: do not wake the sync loop for it.
        false
    });
    // A replica that just said it is unhealthy is out of the route table now: the next
    // pass starts its stop (and the deregister delay before it) at once, not a sync
    // period later.
    if accepted().any(|r| r.state == TaskState::Running && r.health == Some(Health::Unhealthy)) {
        shared.poke.notify_one();
    }
    Ok(())
}

/// "capacity 2 CPUs, 23.5 GiB", for the start line.
fn describe_capacity(resources: &Amount) -> String {
    let cpus = resources
        .cpus
        .map_or("unknown".to_string(), |c| c.to_string());
    let memory = resources
        .memory
        .map_or("unknown".to_string(), |m| m.to_string());
    format!("capacity {cpus} CPUs, {memory}")
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn remove_everything(runtime: &dyn ContainerRuntime) {
    match runtime.list().await {
        Ok(containers) => {
            for container in containers {
                if let Err(e) = runtime.remove(&container, None).await {
                    tracing::warn!("cannot remove {}: {e}", container.name);
                }
            }
        }
        Err(e) => tracing::warn!("cannot list containers to remove them: {e}"),
    }
}
