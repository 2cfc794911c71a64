//! The worker agent: registers with the manager, heartbeats, long-polls for the tasks
//! assigned to its worker, and makes its container runtime match them — starting what is
//! wanted, removing what is not, and reporting what really runs. When the manager is
//! unreachable it leaves its containers alone (but for its lease, below), retries, and
//! re-syncs when the manager answers again. It is one worker's only agent: if the manager
//! says another agent holds the worker's name, it ends (see `join`). It joins with the
//! join token, and from its first registration on speaks only with the worker's own
//! credential (see `credential`); when the manager refuses that credential for good
//! (the worker was removed), it ends too.
//!
//! Leases and fencing (`fence` holds the rules, `fencing` and `heartbeat` act on them):
//! - Every heartbeat (and registration) the manager acknowledges renews the worker's
//!   lease (`lease` seconds, 5 by default, counted from the heartbeat's sending).
//!   Heartbeats give up after a second at most and, while they fail, are sent again every
//!   250 ms, so the lease is renewed the moment the manager is reachable: a manager
//!   restart shorter than the lease stops nothing.
//! - Lease expiry: a timer of its own fires at the very moment; the worker's
//!   `on_disconnect: "stop"` tasks leave the list the plan sees, their containers are
//!   stopped with their own grace period and no deregister delay, and each is reported
//!   `failed` (`"stopped: the worker's lease expired (…)"`) once gone, whenever the
//!   manager answers again. No `stop` task starts again until a task list fetched after
//!   a renewal arrives. `replace` tasks are not touched.
//! - A newer epoch: a heartbeat answer naming an epoch newer than the agent's task list
//!   (the worker was declared down while cut off, its tasks replaced elsewhere) holds
//!   the sync pass off — nothing started, nothing reported — until the agent has fetched
//!   its list and killed (no grace, no delay) every container the list does not hold.
//!
//! Leaving (`leave`): when `stop` is given (SIGTERM or SIGINT in `mycluster agent`; not
//! when superseded, nor in `mycluster dev`), the agent ends its loops, tells the manager
//! it is leaving (its worker is declared down at once and its `replace` tasks replaced),
//! then stops its `stop` tasks within their grace (the manager replaces them once the
//! lease, their grace and a margin have passed); `replace` containers are left as they
//! are.
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
//! Logs: the health port also serves each task's logs to the manager, behind the
//! agent's token (see `logs`), over TLS with a CA the agent makes at each start and
//! registers (see `health`).
//!
//! Where to start reading: `run` below (five loops: `heartbeat`, the lease timer in
//! `fencing`, the long-poll in `longpoll`, the sync pass below, and `exits`, which wakes
//! the sync pass the moment the runtime says a container ended), then `plan` (the
//! pure diff of wanted tasks against containers found), then `fence`, `join`, and
//! `probers`.

mod act;
mod config;
mod credential;
mod exits;
pub mod fence;
mod fencing;
#[cfg(test)]
mod fixtures;
mod health;
mod heartbeat;
mod join;
mod leave;
mod logs;
mod longpoll;
pub mod metrics;
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

use mycluster_background::{Loop, LoopControl};
use mycluster_client::{Client, ClientError};
use mycluster_core::service::{Amount, Bytes, Cpus, Health};
use mycluster_core::wire::{StatusReport, TaskDoc, TaskReport};
use mycluster_core::TaskState;
use mycluster_runtime::ContainerRuntime;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

pub use config::ConfigError;
use fence::Fencing;
pub use join::new_instance;
use join::{ends_agent, register_until_done, Ending};
/// This host's name: the agent's advertised address, and the demo workload's
/// `X-Served-By`.
pub use mycluster_runtime::hostname;
use plan::{announces, plan, report, Action};
use ports::Ports;
use probers::Probers;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub manager: String,
    /// The join token (or the API token) presented to the manager until the agent
    /// holds its worker's credential. A join token of the MCJT1 form also pins the
    /// cluster's CA.
    pub token: Option<String>,
    /// The cluster CA an `https://` manager must be certified by, when the token does
    /// not name it.
    pub pin: Option<mycluster_tls::Pin>,
    /// Where the worker's credential is kept (`<data-dir>/credential`): read at start,
    /// written when the manager hands one out. `None`: kept in memory only.
    pub credential_file: Option<std::path::PathBuf>,
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
    /// Tell the manager the worker is leaving when `stop` is given, and stop its
    /// `on_disconnect: "stop"` tasks (see `leave`); not in `mycluster dev`, whose
    /// manager stops with its agents.
    pub leave_on_stop: bool,
}

impl AgentConfig {
    pub fn new(manager: &str, name: &str) -> AgentConfig {
        AgentConfig {
            manager: manager.into(),
            token: None,
            pin: None,
            credential_file: None,
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
            leave_on_stop: true,
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
    /// The manager refused the worker's credential for good (the worker was removed, or
    /// the manager's state reset), or said it does not speak for the worker: the agent
    /// ended, its containers left as they are.
    #[error("{0}")]
    Revoked(String),
    /// The credential file cannot be used.
    #[error(transparent)]
    Credential(#[from] credential::CredentialError),
    /// The configuration was refused (see `AgentConfig::check`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the HTTP client of health checks: {0}")]
    ProbeClient(reqwest::Error),
    /// This start's CA or certificate for the health port could not be made.
    #[error("cannot make the health port's TLS certificate: {0}")]
    Tls(mycluster_tls::TlsError),
}

/// Shared by the agent's loops.
struct Shared {
    config: AgentConfig,
    /// Presents the join token until the worker's credential arrives, then that (see
    /// `adopt_credential`): take a copy per call with `client()`.
    client: std::sync::Mutex<Client>,
    /// The worker's credential, once the manager gave one (or the file held one); the
    /// logs endpoint checks the manager's calls against its hash.
    credential: Arc<std::sync::Mutex<Option<String>>>,
    runtime: Arc<dyn ContainerRuntime>,
    address: String,
    /// The SHA-256 of the CA of this start's health port (see `health`), registered.
    agent_ca: mycluster_tls::Pin,
    /// Ends every loop: cancelled with the caller's `stop`, or when the manager says
    /// another agent took this worker over.
    quit: CancellationToken,
    /// The manager's word that this agent must stop (superseded, revoked), once it
    /// said so.
    ended: std::sync::Mutex<Option<Ending>>,
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
    /// The lease and the epoch (see `fence`). `wanted` is replaced under this lock, so a
    /// pass reads a list and its generation together.
    fencing: std::sync::Mutex<Fencing>,
    /// Wakes the lease timer: the lease was renewed (or its length changed).
    renewals: tokio::sync::Notify,
    /// Starts the long-poll over: a list was fetched meanwhile, or the manager answers
    /// again after an outage.
    rewatch: tokio::sync::Notify,
    /// What `GET /metrics` on the health port serves.
    metrics: metrics::AgentMetrics,
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
    // A credential kept from an earlier run speaks for the worker; the join token never
    // again (see `credential`).
    let held = credential::load(config.credential_file.as_deref())?;
    let client = if config.http2 {
        Client::new_http2(&config.manager, Duration::from_secs(10))?
    } else {
        Client::new(&config.manager, Duration::from_secs(10))?
    }
    .with_pin(config.pin)?
    // An MCJT1 join token pins the CA it names; the pin stays when the credential is
    // presented instead (kept from an earlier run, or once the manager gives one).
    .with_token(config.token.clone());
    let client = match &held {
        Some(credential) => client.with_token(Some(credential.clone())),
        None => client,
    };
    let probers = Probers::new().map_err(AgentError::ProbeClient)?;
    let endpoint = health::bind(&config).await?;
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
    let metrics = metrics::AgentMetrics::new(&config.name, runtime.driver());
    let shared = Arc::new(Shared {
        metrics,
        config,
        client: std::sync::Mutex::new(client),
        credential: Arc::new(std::sync::Mutex::new(held)),
        runtime,
        address: endpoint.address.clone(),
        agent_ca: endpoint.ca,
        quit: quit.clone(),
        ended: Default::default(),
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
        fencing: Default::default(),
        renewals: tokio::sync::Notify::new(),
        rewatch: tokio::sync::Notify::new(),
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
    let logs = logs::LogsState {
        runtime: shared.runtime.clone(),
        token: shared.config.token.clone().filter(|t| !t.is_empty()),
        credential: shared.credential.clone(),
        stop: quit.clone(),
    };
    let health = tokio::spawn(health::serve(endpoint, shared.clone(), logs, quit.clone()));
    if let Err(e) = register_until_done(&shared, &quit).await {
        quit.cancel();
        let _ = health.await;
        return Err(e);
    }
    let loops = [
        tokio::spawn(heartbeat::heartbeat_loop(shared.clone(), quit.clone())),
        tokio::spawn(fencing::lease_loop(shared.clone(), quit.clone())),
        tokio::spawn(longpoll::watch_loop(shared.clone(), quit.clone())),
        tokio::spawn(sync_loop(shared.clone(), quit.clone())),
        tokio::spawn(exits::follow(shared.clone(), quit.clone())),
    ];
    for handle in loops {
        let _ = handle.await;
    }
    // Cancelled with `quit` already; this drops their handles too.
    shared.probers.stop_all();
    let _ = health.await;
    // Superseded or revoked: its containers are left as they are (see `join`).
    match lock(&shared.ended).take() {
        Some(Ending::Superseded(why)) => return Err(AgentError::Superseded(why)),
        Some(Ending::Revoked(why)) => return Err(shared.revoked(&why)),
        None => {}
    }
    // Stopped before it ever registered: nothing to leave.
    let registered = lock(&shared.fencing).known();
    if stop.is_cancelled() && shared.config.leave_on_stop && registered {
        leave::leave(&shared).await;
    }
    if shared.config.remove_on_stop {
        remove_everything(&*shared.runtime).await;
    }
    tracing::info!("agent {} stopped", shared.config.name);
    Ok(())
}

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
                // The list and its generation together (see `Shared::fencing`); nothing
                // at all while the list is of an older epoch than the manager's.
                let list = {
                    let fencing = lock(&shared.fencing);
                    let list = shared.wanted.borrow().clone();
                    list.filter(|_| !fencing.holds_off())
                        .map(|tasks| (tasks, fencing.generation()))
                };
                let Some((tasks, generation)) = list else {
                    return Ok(LoopControl::Continue);
                };
                match sync_once(&shared, tasks, generation).await {
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
/// launched twice. `generation` is the list's (see `fence`): a start is launched only
/// while it is current and the fence allows it.
async fn sync_once(
    shared: &Arc<Shared>,
    tasks: Arc<Vec<TaskDoc>>,
    generation: u64,
) -> Result<(), String> {
    // What was under way when the list began: listing can take seconds on a busy engine,
    // and a start that finished meanwhile may show in it half-done (created, not yet
    // running). Such a task is left to the next pass, which sees it as it is.
    let under_way_before = lock(&shared.in_flight).clone();
    let containers = shared.runtime.list().await.map_err(|e| e.to_string())?;
    shared.metrics.containers_seen(&containers);
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
    // Containers of tasks the lease cut off are the fence's to stop, with their own grace.
    let cut = fencing::sweep(shared, &containers);
    for action in actions {
        match &action {
            Action::Remove { container, .. } if cut.contains(&container.id) => continue,
            // The list may have changed since the plan (a newer epoch, an expiry).
            Action::Start(task) if !lock(&shared.fencing).may_start(task, generation) => continue,
            _ => {}
        }
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
    // A newer epoch heard meanwhile: nothing is reported before its kills (the plan's
    // reports are derived again; the actions' wait in `finished`).
    if lock(&shared.fencing).holds_off() {
        return Ok(());
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
        .client()
        .report_status(&shared.config.name, &shared.config.instance, &status)
        .await;
    let StatusReport {
        tasks: reports,
        removed_volumes,
    } = status;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            if ends_agent(shared, &e) {
                return Err(format!("report refused: {e}"));
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

impl Shared {
    /// The client as it is now (with the credential once the agent holds one).
    fn client(&self) -> Client {
        lock(&self.client).clone()
    }

    fn holds_credential(&self) -> bool {
        lock(&self.credential).is_some()
    }

    /// Takes the credential the manager just gave the worker: kept in the credential
    /// file (if the agent has one) and presented from now on instead of the join token.
    fn adopt_credential(&self, secret: &str) {
        let name = &self.config.name;
        match &self.config.credential_file {
            Some(path) => match credential::save(path, secret) {
                Ok(()) => tracing::info!(
                    "agent {name}: the worker's credential is kept in {}",
                    path.display()
                ),
                // It still works for this process; a restart would need the join token,
                // which the manager refuses for this name: say so now.
                Err(e) => tracing::error!(
                    "agent {name}: cannot keep the worker's credential in {} ({e}): it is \
                     held in memory only, and a restarted agent cannot register {name} \
                     again (`mycluster worker rm {name}` would be needed)",
                    path.display()
                ),
            },
            None => tracing::info!(
                "agent {name}: holds the worker's credential in memory (no data dir)"
            ),
        }
        *lock(&self.credential) = Some(secret.to_string());
        let mut client = lock(&self.client);
        *client = client.clone().with_token(Some(secret.to_string()));
    }

    /// The error an agent ends with when its credential is refused for good: the
    /// manager's message, and what to remove.
    fn revoked(&self, message: &str) -> AgentError {
        AgentError::Revoked(match &self.config.credential_file {
            Some(path) => format!("{message} (this agent's credential: {})", path.display()),
            None => message.to_string(),
        })
    }
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
