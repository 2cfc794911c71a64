//! The commands the API carries out, as pure functions over a transaction: each checks
//! its preconditions against the state, then records the changes. The manager commits
//! them; an error leaves the transaction untouched.

pub use crate::error::CommandError;
use crate::identity;
use crate::service::{Health, ServicePatch};
use crate::wire::{Ignored, Registration, TaskReport};
use crate::worker::LastHeard;
use crate::{
    Change, DesiredState, Limits, Millis, Service, ServiceSpec, Task, TaskState, Txn, Worker,
    WorkerStatus,
};

/// Creates a service or updates the one of the same name (`POST /api/v1/service`).
/// Returns whether it was created.
pub fn put_service(
    txn: &mut Txn,
    spec: ServiceSpec,
    now: Millis,
    limits: &Limits,
) -> Result<bool, CommandError> {
    check_limits(txn, &spec, limits)?;
    check_ports(txn, &spec)?;
    check_volumes(txn, &spec)?;
    let old = txn.state.services.get(&spec.name).cloned();
    let service = Service::updated(old.as_ref(), spec, now);
    txn.push(Change::PutService(service));
    count_request(txn);
    Ok(old.is_none())
}

/// Refuses a spec that would take the cluster past its number of services or of
/// replicas in all (a single service's replicas are checked with its spec).
fn check_limits(txn: &Txn, spec: &ServiceSpec, limits: &Limits) -> Result<(), CommandError> {
    let existing = txn.state.services.get(&spec.name);
    if existing.is_none() && txn.state.services.len() >= limits.max_services {
        return Err(CommandError::Limit(format!(
            "the cluster already has {} services, its limit (--max-services): delete one first",
            limits.max_services
        )));
    }
    let others: u64 = txn
        .state
        .services
        .values()
        .filter(|s| s.spec.name != spec.name)
        .map(|s| u64::from(s.spec.replicas))
        .sum();
    let total = others + u64::from(spec.replicas);
    let current = others + existing.map_or(0, |s| u64::from(s.spec.replicas));
    // A change that does not add replicas is always allowed: a cluster over a lowered
    // limit must still be able to shrink or change images.
    if total > limits.max_total_replicas && total > current {
        return Err(CommandError::Limit(format!(
            "{} replicas would make {total} in the cluster, more than its limit of {} (--max-total-replicas)",
            spec.replicas, limits.max_total_replicas
        )));
    }
    Ok(())
}

/// Refuses a spec that publishes a port another service publishes: one port reaches one
/// service (409, naming the owner). A deleted service's ports are free at once.
///
/// Only ports the service does not publish already are checked: should two services
/// hold one port anyway (see `release_taken_ports`), neither is stuck with a 409 on
/// every change.
/// Refuses volumes that would be named like another service's. A slot's volume is
/// `<service>-<source>-<slot>`, and a service name may hold '-': service `a-b` with
/// source `c` and service `a` with source `b-c` would both mount `a-b-c-0`, and removing
/// one service's volumes would remove the other's data. A volume kept from a removed
/// service is another service's too.
pub(crate) fn check_volumes(txn: &Txn, spec: &ServiceSpec) -> Result<(), CommandError> {
    let stem = |service: &str, source: &str| format!("{service}-{source}");
    for volume in spec.volumes.iter().filter(|v| !v.is_bind()) {
        let mine = stem(&spec.name, &volume.source);
        for other in txn.state.services.values() {
            if other.spec.name == spec.name {
                continue;
            }
            let clash = other
                .spec
                .volumes
                .iter()
                .filter(|v| !v.is_bind())
                .find(|v| stem(&other.spec.name, &v.source) == mine);
            if let Some(theirs) = clash {
                return Err(CommandError::Conflict(format!(
                    "volume source '{}' would name this service's volumes {mine}-<slot>, as service {}'s source '{}' names its own: name the source differently",
                    volume.source, other.spec.name, theirs.source
                )));
            }
        }
        let kept = txn.state.volumes.values().find(|r| {
            r.service != spec.name && r.name.rsplit_once('-').map(|(s, _)| s) == Some(&mine)
        });
        if let Some(kept) = kept {
            return Err(CommandError::Conflict(format!(
                "volume {} holds the data of service {}, which was removed with its volumes kept: remove it first (`mycluster volume rm {}`), or name the source differently",
                kept.name, kept.service, kept.name
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_ports(txn: &Txn, spec: &ServiceSpec) -> Result<(), CommandError> {
    let old = txn.state.services.get(&spec.name);
    let held = |port: u16| old.is_some_and(|s| s.spec.published().any(|p| p == port));
    for port in spec.published().filter(|p| !held(*p)) {
        let owner = txn
            .state
            .services
            .values()
            .find(|s| s.spec.name != spec.name && s.spec.published().any(|p| p == port));
        if let Some(owner) = owner {
            let owner = &owner.spec.name;
            return Err(CommandError::Conflict(format!(
                "port {port} is already published by service {owner}: publish another port, or remove it from {owner} first"
            )));
        }
    }
    Ok(())
}

/// Changes some fields of an existing service (`PATCH /api/v1/service/<name>`).
pub fn patch_service(
    txn: &mut Txn,
    name: &str,
    patch: &ServicePatch,
    now: Millis,
    limits: &Limits,
) -> Result<Service, CommandError> {
    let old = existing_service(txn, name)?;
    let spec = patch.apply(&old.spec);
    check_limits(txn, &spec, limits)?;
    check_ports(txn, &spec)?;
    check_volumes(txn, &spec)?;
    let service = Service::updated(Some(&old), spec, now);
    txn.push(Change::PutService(service.clone()));
    count_request(txn);
    Ok(service)
}

/// Removes a service; reconcile then stops its tasks.
pub fn delete_service(txn: &mut Txn, name: &str) -> Result<Service, CommandError> {
    let old = existing_service(txn, name)?;
    txn.push(Change::DeleteService(name.to_string()));
    Ok(old)
}

pub(crate) fn existing_service(txn: &Txn, name: &str) -> Result<Service, CommandError> {
    txn.state
        .services
        .get(name)
        .cloned()
        .ok_or_else(|| CommandError::ServiceNotFound(name.to_string()))
}

pub(crate) fn existing_worker(txn: &Txn, name: &str) -> Result<Worker, CommandError> {
    txn.state
        .workers
        .get(name)
        .cloned()
        .ok_or_else(|| CommandError::WorkerNotFound(name.to_string()))
}

fn count_request(txn: &mut Txn) {
    let mut counters = txn.state.counters;
    counters.total_requests += 1;
    txn.push(Change::PutCounters(counters));
}

/// Worker names become container names: letters, digits, '_', '.', '-'.
pub fn validate_worker_name(name: &str) -> Result<(), CommandError> {
    validate_name("worker", name, 128)
}

/// Cluster names become key prefixes (`mycluster:<cluster>:` in Redis) and container
/// names: the same characters, shorter — no ':' that would make one cluster's keys look
/// like another's.
pub fn validate_cluster_name(name: &str) -> Result<(), CommandError> {
    validate_name("cluster", name, 64)
}

/// 1 to `max` of letters, digits, '_', '.', '-', starting with a letter or digit.
fn validate_name(kind: &str, name: &str, max: usize) -> Result<(), CommandError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(CommandError::Invalid(format!(
            "invalid {kind} name '{}': 1-{max} of letters, digits, '_', '.', '-', starting with a letter or digit",
            name.escape_debug()
        )))
    }
}

/// Registers a worker, or refreshes one that registers again (an agent restart). A
/// worker that was down comes back ready; a draining one stays draining. The name of a
/// worker live under another agent instance is refused (`identity::check_registration`:
/// `heard` is what the manager last heard from it); one down or silent is taken over.
pub fn register_worker(
    txn: &mut Txn,
    registration: Registration,
    heard: Option<LastHeard>,
    now: Millis,
    credential: Option<String>,
) -> Result<Worker, CommandError> {
    validate_worker_name(&registration.name)?;
    let driver = registration.driver.known().map_err(|name| {
        CommandError::Invalid(format!(
            "field 'driver' must be docker, process or sim, got '{}'",
            name.escape_debug()
        ))
    })?;
    if registration.address.is_empty() || registration.address.len() > 255 {
        return Err(CommandError::Invalid(
            "field 'address' must be a host:port of 1-255 characters".into(),
        ));
    }
    if registration.labels.len() > 64
        || registration
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 253 || v.len() > 253)
    {
        return Err(CommandError::Invalid(
            "labels: at most 64, keys of 1-253 and values of 0-253 characters".into(),
        ));
    }
    if let Some(key) = registration
        .labels
        .keys()
        .find(|k| !crate::service::valid_label_key(k))
    {
        return Err(CommandError::Invalid(format!(
            "label key '{}' must be 1-253 letters, digits, '.', '_', '-' or '/'",
            key.escape_debug()
        )));
    }
    if registration.host.len() > 255 {
        return Err(CommandError::Invalid(
            "field 'host' must be at most 255 characters".into(),
        ));
    }
    identity::validate_instance(&registration.instance)?;
    let agent_ca_sha256 = match registration.agent_ca_sha256.as_deref() {
        None => None,
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hex.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(CommandError::Invalid(
                "field 'agent_ca_sha256' must be 64 hex digits (the SHA-256 of the agent's CA certificate)".into(),
            ))
        }
    };
    let old = txn.state.workers.get(&registration.name).cloned();
    if let Some(old) = &old {
        identity::check_registration(old, &registration.instance, heard)?;
    }
    // An operator's drain and labels outlive the agent's restarts.
    let drain = old.as_ref().is_some_and(|w| w.drain);
    let label_overrides = old
        .as_ref()
        .map(|w| w.label_overrides.clone())
        .unwrap_or_default();
    // Another agent instance, or a worker that was down: what was assigned before is
    // void (see `Worker::epoch`).
    let epoch = match &old {
        Some(old) if old.instance != registration.instance || old.status == WorkerStatus::Down => {
            old.epoch + 1
        }
        Some(old) => old.epoch,
        None => 1,
    };
    let worker = Worker {
        name: registration.name,
        address: registration.address,
        labels: crate::worker::effective_labels(&registration.labels, &label_overrides),
        capacity: registration.capacity,
        driver,
        status: if drain {
            WorkerStatus::Draining
        } else {
            WorkerStatus::Ready
        },
        registered_at: old.as_ref().map_or(now, |w| w.registered_at),
        updated_at: now,
        instance: registration.instance,
        resources: registration.resources,
        host: registration.host,
        drain,
        label_overrides,
        epoch,
        renewed_at: old.as_ref().map_or(0, |w| w.renewed_at),
        lease: old.as_ref().map_or_else(Default::default, |w| w.lease),
        credential,
        agent_ca_sha256,
    };
    // A re-registration that changes nothing but the time is not worth a write.
    match old {
        Some(old)
            if Worker {
                updated_at: old.updated_at,
                ..worker.clone()
            } == old =>
        {
            Ok(old)
        }
        _ => {
            txn.push(Change::PutWorker(worker.clone()));
            Ok(worker)
        }
    }
}

/// Sets a worker's status (the monitor's verdict, or an operator's drain). A worker going
/// down counts as a failure; reconcile then marks its tasks lost and replaces them.
pub fn set_worker_status(
    txn: &mut Txn,
    name: &str,
    status: WorkerStatus,
    now: Millis,
) -> Result<Worker, CommandError> {
    let mut worker = existing_worker(txn, name)?;
    if worker.status == status {
        return Ok(worker);
    }
    if status == WorkerStatus::Down {
        // What it was assigned is void; an agent that comes back stops it first.
        worker.epoch += 1;
        let mut counters = txn.state.counters;
        counters.worker_failures += 1;
        txn.push(Change::PutCounters(counters));
    }
    worker.status = status;
    worker.updated_at = now;
    txn.push(Change::PutWorker(worker.clone()));
    Ok(worker)
}

/// Declares a worker down (see `set_worker_status`), noting the last renewal of its
/// lease the manager heard (`renewed_at`, wall-clock ms) and the lease in force, from
/// which its `on_disconnect: "stop"` tasks may be replaced (`Worker::renewed_at`). A
/// worker down already keeps what it had.
pub fn declare_down(
    txn: &mut Txn,
    name: &str,
    renewed_at: Millis,
    lease: std::time::Duration,
    now: Millis,
) -> Result<Worker, CommandError> {
    let was_down = existing_worker(txn, name)?.status == WorkerStatus::Down;
    let mut worker = set_worker_status(txn, name, WorkerStatus::Down, now)?;
    if !was_down {
        worker.renewed_at = renewed_at;
        worker.lease = crate::span::Span(lease.as_millis() as Millis);
        txn.push(Change::PutWorker(worker.clone()));
    }
    Ok(worker)
}

/// Records what agent `instance` observed. A report from an instance that does not hold
/// the worker (a superseded agent) is refused whole. Reports about tasks that are not the
/// worker's, or that would move a task backwards (a lost task "running" again on a
/// returning worker), are ignored: the task list the agent gets next tells it to stop
/// such containers. Returns the services whose tasks changed, for reconcile.
pub fn report_tasks(
    txn: &mut Txn,
    worker: &str,
    instance: &str,
    reports: Vec<TaskReport>,
    now: Millis,
) -> Result<(Vec<String>, Vec<Ignored>), CommandError> {
    let holder = txn
        .state
        .workers
        .get(worker)
        .ok_or_else(|| CommandError::WorkerNotFound(worker.to_string()))?;
    identity::check_holder(holder, instance)?;
    let mut touched = Vec::new();
    let mut ignored = Vec::new();
    let mut started = 0;
    for report in reports {
        let ignore = |why: &str| Ignored {
            id: report.id.clone(),
            why: why.to_string(),
        };
        let Some(task) = txn.state.tasks.get(&report.id) else {
            ignored.push(ignore("no such task"));
            continue;
        };
        if task.worker.as_deref() != Some(worker) {
            ignored.push(ignore("task is not assigned to this worker"));
            continue;
        }
        if matches!(
            report.state,
            TaskState::Pending | TaskState::Assigned | TaskState::Lost
        ) {
            ignored.push(ignore(
                "agents report starting, running, complete, failed or shutdown",
            ));
            continue;
        }
        if !task.state.can_become(report.state) {
            ignored.push(ignore(&format!(
                "task is {} and cannot become {}",
                task.state.as_str(),
                report.state.as_str()
            )));
            continue;
        }
        let mut next: Task = Task::clone(task);
        if report.state == TaskState::Running && task.state != TaskState::Running {
            started += 1;
        }
        next.state = report.state;
        if let Some(id) = &report.container_id {
            next.container_id = Some(bounded(id, 128));
        }
        next.exit_code = report.exit_code.or(next.exit_code);
        next.error = report
            .error
            .as_deref()
            .map(|e| bounded(e, 4096))
            .or(next.error);
        if let Some(message) = &report.message {
            next.message = bounded(message, 4096);
        } else if next.state != task.state {
            next.message = describe(&next, &task.message);
        }
        note_health(&mut next, &report, now);
        note_ports(&mut next, &report);
        if next != **task {
            next.updated_at = now;
            // A task that ended, started, or changed health may move a rollout on.
            if next.state != task.state || next.health != task.health {
                touched.push(next.service.clone());
            }
            txn.push(Change::PutTask(next));
        }
    }
    if started > 0 {
        let mut counters = txn.state.counters;
        counters.total_containers += started;
        txn.push(Change::PutCounters(counters));
    }
    touched.sort();
    touched.dedup();
    Ok((touched, ignored))
}

/// Records where a running task's ports are reached: its address, and the port of each
/// target its agent named (a target the task does not listen on is ignored). A report
/// without them (a restarted agent's) keeps what is known.
fn note_ports(task: &mut Task, report: &TaskReport) {
    if report.address.is_some() {
        task.address = report.address;
    }
    for reported in &report.ports {
        if let Some(port) = task.ports.iter_mut().find(|p| p.target == reported.target) {
            port.port = reported.port.or(port.port);
        }
    }
}

/// Records what a report says of a task's health. A task that starts running is
/// `starting` until its agent's probes (or, without a health check, the update's
/// `monitor`: see `rollout::plan`) say it is healthy.
fn note_health(task: &mut Task, report: &TaskReport, now: Millis) {
    if task.state == TaskState::Running && task.started_at.is_none() {
        task.started_at = Some(now);
        task.health.get_or_insert(Health::Starting);
    }
    if task.healthcheck.is_some() {
        if let Some(health) = report.health {
            task.health = Some(health);
            task.health_message = report.health_message.as_deref().map(|m| bounded(m, 1024));
        }
    }
    if task.health == Some(Health::Healthy) && task.healthy_at.is_none() {
        task.healthy_at = Some(now);
    }
    // A finished task's health says nothing any more, unless it is why it finished.
    if task.state.is_terminal() && task.health != Some(Health::Unhealthy) {
        task.health = None;
    }
}

/// At most `max` bytes of `text` (on a character boundary): what agents report is stored
/// and served with every task list, so it must stay small.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The message of a task that reached its state, given the one it had (a stopped task
/// keeps why it was stopped: "stopped: replaced by version 3 of the service").
fn describe(task: &Task, before: &str) -> String {
    let why_stopped = task.desired == DesiredState::Shutdown
        && !before.is_empty()
        && !matches!(before, "running" | "starting" | "stopped");
    match (task.state, task.desired) {
        (TaskState::Shutdown, DesiredState::Shutdown) if why_stopped => {
            format!("stopped: {before}")
        }
        (TaskState::Failed, _) => match (&task.error, task.exit_code) {
            (Some(error), _) => format!("failed: {error}"),
            (None, Some(code)) => format!("exited with code {code}"),
            (None, None) => "failed".into(),
        },
        (TaskState::Complete, _) => "exited with code 0".into(),
        (TaskState::Shutdown, DesiredState::Shutdown) => "stopped".into(),
        (state, _) => state.as_str().to_string(),
    }
}
