//! Endpoints: where a service's replicas are reached, read off the cluster state. The
//! ingress balances each published port over its route's endpoints (`GET
//! /api/v1/endpoints`, long-polled); `GET /api/v1/service/<name>/endpoints` lists one
//! service's for discovery.
//!
//! A task is an endpoint while it is wanted, runs, is healthy (see [`serves`]) and its
//! agent said where it is reached. The table is a pure function
//! of the state, so a task the manager decides to stop (scale-down, rolling update,
//! drain, delete) leaves the table in the same commit that tells its agent to stop it:
//! the agent then waits [`DEREGISTER_DELAY`] before signalling it, so every ingress has
//! stopped sending it new connections by then.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::service::Protocol;
use crate::{ClusterState, DesiredState, Millis, Service, Task};

/// How long an agent waits, after a task with ports is asked to stop, before it signals
/// it: the time the ingresses have to take it out of their tables (they hear of it by
/// long-poll, within milliseconds on a healthy network).
pub const DEREGISTER_DELAY: Millis = 1_000;

/// One replica's address for one of its ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    pub task: String,
    pub slot: u32,
    pub worker: String,
    pub address: IpAddr,
    /// Where `target` is reached at `address` (the target itself, except on the process
    /// driver, whose agent gives each task a free port).
    pub port: u16,
    pub target: u16,
    /// Whether this replica expects a PROXY protocol v2 header (what its service asked
    /// when it was made: during a rollout that turns the header on or off, old and new
    /// replicas differ).
    pub proxy_protocol: bool,
}

/// What the ingress does with one published port: the service it reaches and the
/// replicas it balances over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    pub published: u16,
    pub protocol: Protocol,
    pub service: String,
    pub target: u16,
    /// Whether the service asks for a PROXY protocol v2 header now (each endpoint says
    /// whether its replica expects one: that is what the ingress follows).
    pub proxy_protocol: bool,
    /// The healthy replicas, by slot.
    pub endpoints: Vec<Endpoint>,
}

/// Whether `task` should get new connections: wanted, running, healthy, and its agent
/// said where it is reached. Healthy is the rollout planner's own judgement (a health
/// check's probes passed; without a check, it ran for the update policy's `monitor`),
/// so the planner's promise — a start-first rollout stops a healthy replica only once
/// another healthy task serves its slot — is the route table's: a rollout never leaves a
/// published service without an endpoint. A new replica without a check is routed to
/// once it has run for `monitor` (5 s by default).
pub fn serves(task: &Task) -> bool {
    task.desired == DesiredState::Running && task.is_healthy() && task.address.is_some()
}

/// `task`'s endpoint for `target`, if it serves and listens on it.
fn endpoint(task: &Task, target: u16) -> Option<Endpoint> {
    if !serves(task) {
        return None;
    }
    let port = task.ports.iter().find(|p| p.target == target)?;
    Some(Endpoint {
        task: task.id.clone(),
        slot: task.slot,
        worker: task.worker.clone()?,
        address: task.address?,
        port: port.port.unwrap_or(target),
        target,
        proxy_protocol: task.proxy_protocol,
    })
}

/// `task`'s endpoint for the published port `published`, whose target is `target` now:
/// a task made before a rollout that moved the port to another target is reached on the
/// target it was made with, so it keeps serving until it is replaced.
fn published_endpoint(task: &Task, published: u16, target: u16) -> Option<Endpoint> {
    endpoint(task, target).or_else(|| {
        let own = *task.published.get(&published)?;
        (own != target).then(|| endpoint(task, own)).flatten()
    })
}

/// `service`'s tasks in the order endpoints are listed: by slot, then id.
fn by_slot<'a>(state: &'a ClusterState, service: &Service) -> Vec<&'a Task> {
    // A task on a down worker is not reached (an `on_disconnect: "stop"` task waits there
    // for its lease to run out before it is replaced: see `lease`).
    let reached = |t: &&Task| {
        t.worker.as_ref().is_none_or(|w| {
            state
                .workers
                .get(w)
                .is_some_and(|w| w.status != crate::WorkerStatus::Down)
        })
    };
    let mut tasks: Vec<&Task> = state
        .tasks_of_service(&service.spec.name)
        .filter(reached)
        .collect();
    tasks.sort_by(|a, b| (a.slot, &a.id).cmp(&(b.slot, &b.id)));
    tasks
}

/// The endpoints of `service` for each of its targets, by target then slot.
pub fn of_service(state: &ClusterState, service: &Service) -> Vec<Endpoint> {
    let tasks = by_slot(state, service);
    service
        .spec
        .targets()
        .into_iter()
        .flat_map(|target| tasks.iter().filter_map(move |t| endpoint(t, target)))
        .collect()
}

/// Every published port's route, by port. Should two services claim one port (a
/// failed rollout's automatic rollback can bring an old claim back), the service
/// created first keeps it.
pub fn routes(state: &ClusterState) -> Vec<Route> {
    let mut services: Vec<&Service> = state
        .services
        .values()
        .filter(|s| s.spec.published().next().is_some())
        .collect();
    services.sort_by(|a, b| (a.created_at, &a.spec.name).cmp(&(b.created_at, &b.spec.name)));
    let mut routes: Vec<Route> = Vec::new();
    for service in services {
        let tasks = by_slot(state, service);
        for port in &service.spec.ports {
            let Some(published) = port.published else {
                continue;
            };
            if routes.iter().any(|r| r.published == published) {
                continue;
            }
            routes.push(Route {
                published,
                protocol: port.protocol,
                service: service.spec.name.clone(),
                target: port.target,
                proxy_protocol: service.spec.proxy_protocol,
                endpoints: tasks
                    .iter()
                    .filter_map(|t| published_endpoint(t, published, port.target))
                    .collect(),
            });
        }
    }
    routes.sort_by_key(|r| r.published);
    routes
}

/// A short fingerprint of a route table (FNV-1a over its JSON): what an ingress passes
/// back to wait for the next change, whatever the manager's commit index did meanwhile
/// (a restarted manager gives the same table the same version).
pub fn version(routes: &[Route]) -> String {
    let bytes = serde_json::to_vec(routes).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
