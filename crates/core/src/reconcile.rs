//! Reconcile: compare what services want with the tasks that exist, and say which tasks
//! to create, which to stop, and which are lost. Level-triggered: it looks only at the
//! current state, so running it again after a missed event repairs the difference.

use std::borrow::Cow;
use std::collections::HashMap;

pub(crate) mod moves;

use crate::rollout;
use crate::service::{AfterExit, Health, Mount, OnDisconnect, UpdateOrder};
use crate::task::TaskPort;
use crate::{
    Change, ClusterState, DesiredState, IdSource, Millis, Service, Task, TaskState, WorkerStatus,
};

/// Finished tasks kept per slot, so `GET /tasks` shows what happened recently.
pub const HISTORY_PER_SLOT: usize = 3;

/// A task that ran at least this long before failing resets its slot's backoff.
pub const HEALTHY_RUN: Millis = 30_000;

/// The longest a crash-looping slot waits before its next try.
pub const MAX_RESTART_DELAY: Millis = 60_000;

/// The wait before replacing the `n`th consecutive failure of a slot. The first (its
/// first ever, or the first after a healthy run) is replaced at once: one crash is not a
/// crash loop, and its replacement should run as soon as the agent reports it. From the
/// second in a row on, `delay` (the restart policy's, 1 s by default), doubled each
/// time: 0, 1 s, 2 s, 4 s, … 60 s (as Kubernetes' CrashLoopBackOff, whose first restart
/// is immediate too).
pub fn restart_delay(failures: u32, delay: Millis) -> Millis {
    match failures {
        0 | 1 => 0,
        n => delay
            .saturating_mul(1u64 << (n - 2).min(16))
            .min(MAX_RESTART_DELAY.max(delay)),
    }
}

/// Reconciles every service, and every service name that still has tasks. `rebalance`:
/// even out every service's spread on its own (the manager's `--rebalance`).
pub fn reconcile(
    state: &ClusterState,
    now: Millis,
    ids: &mut dyn IdSource,
    rebalance: bool,
) -> Vec<Change> {
    let mut names: Vec<&String> = state.services.keys().collect();
    names.extend(
        state
            .services_with_tasks()
            .filter(|name| !state.services.contains_key(*name)),
    );
    reconcile_services(
        state,
        names.into_iter().map(String::as_str),
        now,
        ids,
        rebalance,
    )
}

/// Reconciles only the named services: what the manager runs after a change that touched
/// just those.
pub fn reconcile_services<'a>(
    state: &ClusterState,
    names: impl IntoIterator<Item = &'a str>,
    now: Millis,
    ids: &mut dyn IdSource,
    rebalance: bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut relocated = 0;
    for name in names {
        relocated += reconcile_service(state, name, now, ids, rebalance, &mut changes);
    }
    if relocated > 0 {
        let mut counters = state.counters;
        counters.containers_relocated += relocated;
        changes.push(Change::PutCounters(counters));
    }
    changes
}

/// Appends the changes one service needs; returns how many of its tasks were lost with
/// their worker and are being replaced. Tasks are only borrowed, and copied when one
/// changes: a worker's death reconciles every service it held, and copying each of
/// their tasks made that cost seconds at a million tasks.
fn reconcile_service(
    state: &ClusterState,
    name: &str,
    now: Millis,
    ids: &mut dyn IdSource,
    rebalance: bool,
    changes: &mut Vec<Change>,
) -> u64 {
    let first_change = changes.len();
    let service = state.services.get(name);
    let mut relocated = 0;
    let mut tasks: Vec<Cow<'_, Task>> = state.tasks_of_service(name).map(Cow::Borrowed).collect();

    // 1. Each live task: lost with its worker, or no longer wanted.
    for task in tasks.iter_mut().filter(|t| !t.state.is_terminal()) {
        let lost = match cut_off(state, task, now) {
            CutOff::No => None,
            CutOff::Lost(why) => Some(why),
            // Its agent stops it when its lease ends; until it may be replaced, it
            // holds its slot (said once on the task).
            CutOff::Waiting(why) => {
                if task.message != why {
                    let mut next = Task::clone(task);
                    next.message = why;
                    next.updated_at = now;
                    changes.push(Change::PutTask(next.clone()));
                    *task = Cow::Owned(next);
                }
                continue;
            }
        };
        let unwanted = match (&lost, task.desired) {
            (None, DesiredState::Running) => unwanted_because(service, task),
            _ => None,
        };
        let stopped_unplaced =
            task.desired == DesiredState::Shutdown && task.state == TaskState::Pending;
        if lost.is_none() && unwanted.is_none() && !stopped_unplaced {
            continue;
        }
        let mut next = Task::clone(task);
        if let Some(why) = lost {
            next.state = TaskState::Lost;
            next.message = why;
            if task.desired == DesiredState::Running && wants(service, task) {
                relocated += 1;
            }
        } else if let Some(why) = unwanted {
            next.desired = DesiredState::Shutdown;
            next.message = why;
        }
        // Never placed: nothing to stop, so it is over at once.
        if next.desired == DesiredState::Shutdown && next.state == TaskState::Pending {
            next.state = TaskState::Shutdown;
        }
        if next != **task {
            next.updated_at = now;
            changes.push(Change::PutTask(next.clone()));
            *task = Cow::Owned(next);
        }
    }

    // 2. The rollout: which old tasks stop, which slots get a new task beside their old
    //    one, and where the rollout stands (see `rollout::plan`).
    let mut service: Option<Cow<'_, Service>> = service.map(Cow::Borrowed);
    let mut starts: Vec<u32> = Vec::new();
    if let Some(current) = service.as_deref() {
        let borrowed: Vec<&Task> = tasks.iter().map(|t| t.as_ref()).collect();
        let mut plan = rollout::plan(current, &borrowed, now);
        if matches!(plan.verdict, rollout::Verdict::Rollback(_)) {
            // The spec changes back: moves planned for the failed version would stop
            // and start the wrong tasks. The next pass plans the rollback itself.
            plan.stop.clear();
            plan.start.clear();
        }
        // What the plan does to existing tasks: healthy by the manager's judgement, or
        // stopped.
        enum Edit<'a> {
            Healthy(Millis),
            Stop(&'a str),
        }
        let mut edits: HashMap<&str, Edit> = HashMap::new();
        for (id, since) in &plan.healthy {
            edits.insert(id.as_str(), Edit::Healthy(*since));
        }
        for stop in &plan.stop {
            edits.insert(stop.task.as_str(), Edit::Stop(&stop.why));
        }
        for task in tasks.iter_mut() {
            if let Some(edit) = edits.get(task.id.as_str()) {
                let mut next = Task::clone(task);
                match edit {
                    Edit::Healthy(since) => {
                        next.health = Some(Health::Healthy);
                        next.healthy_at.get_or_insert(*since);
                    }
                    Edit::Stop(why) => {
                        next.desired = DesiredState::Shutdown;
                        next.message = why.to_string();
                    }
                }
                if next.desired == DesiredState::Shutdown && next.state == TaskState::Pending {
                    next.state = TaskState::Shutdown;
                }
                if next != **task {
                    next.updated_at = now;
                    changes.push(Change::PutTask(next.clone()));
                    *task = Cow::Owned(next);
                }
            }
        }
        if let Some(mut next) = rollout::settle(current, &plan, now) {
            if matches!(plan.verdict, rollout::Verdict::Rollback(_)) {
                release_taken_ports(state, &mut next);
            }
            changes.push(Change::PutService(next.clone()));
            service = Some(Cow::Owned(next));
        }
        starts = plan.start;
    }

    // 2b. Moves: replicas leaving a draining worker, or moved by a rebalance, go
    //     start-first, one slot of the service at a time (see `moves`).
    if let Some(current) = service.as_deref() {
        let untouched = changes.len() == first_change;
        if let Some(next) = moves::plan(
            state,
            current,
            &mut tasks,
            &mut starts,
            (rebalance || current.rebalance) && untouched,
            now,
            changes,
        ) {
            service = Some(Cow::Owned(next));
        }
    }
    let service = service.as_deref();

    // Finished tasks by slot, the most recent first; active ones by slot.
    let mut finished: Vec<&Task> = tasks
        .iter()
        .map(|t| t.as_ref())
        .filter(|t| t.state.is_terminal())
        .collect();
    finished.sort_by_key(|t| (t.slot, std::cmp::Reverse((t.updated_at, t.created_at))));
    let mut active: Vec<&Task> = tasks
        .iter()
        .map(|t| t.as_ref())
        .filter(|t| t.is_active())
        .collect();
    active.sort_by_key(|t| t.slot);

    // 3. One active task of the current template per wanted slot (two while a rollout
    //    replaces the slot start-first).
    if let Some(service) = service {
        // The most recent finished task of each slot decides when its next one starts.
        let latest: HashMap<u32, &Task> = finished
            .chunk_by(|a, b| a.slot == b.slot)
            .map(|done| (done[0].slot, done[0]))
            .collect();
        // Slots whose old task is still stopping, stop-first: the new one waits for it.
        let stopping: std::collections::HashSet<u32> = tasks
            .iter()
            .filter(|t| t.desired == DesiredState::Shutdown && t.is_live())
            .map(|t| t.slot)
            .collect();
        let stop_first = service.spec.replace_order() == UpdateOrder::StopFirst;
        let mut by_slot = active.chunk_by_mut(|a, b| a.slot == b.slot).peekable();
        for slot in 0..service.spec.replicas {
            while by_slot.next_if(|group| group[0].slot < slot).is_some() {}
            let group = by_slot.next_if(|group| group[0].slot == slot);
            let make = match &group {
                None => !(stop_first && stopping.contains(&slot)),
                Some(_) => starts.contains(&slot),
            };
            if make {
                let last = latest.get(&slot).copied();
                let next = match &group {
                    None => replacement(last, service, now),
                    // A start beside a task that serves the slot (a rollout's, a move's):
                    // the restart policy is not asked (the slot is served), and only the
                    // failures of earlier starts beside it set the backoff, not the
                    // slot's history from before.
                    Some(active) => {
                        let oldest = active.iter().map(|t| t.created_at).min().unwrap_or(0);
                        match last.filter(|t| t.created_at >= oldest) {
                            Some(failed) if failed.state == TaskState::Failed => {
                                backoff(failed, service, now)
                            }
                            _ => Replacement::Now(0),
                        }
                    }
                };
                match next {
                    Replacement::Done { task, message } => {
                        // Nothing more is wanted of the slot: its last task says so.
                        if task.message != message || task.desired != DesiredState::Shutdown {
                            let mut noted = task.clone();
                            noted.message = message;
                            noted.desired = DesiredState::Shutdown;
                            // Not its `updated_at`: that is when it ended, which the
                            // failure count reads.
                            changes.push(Change::PutTask(noted));
                        }
                    }
                    Replacement::Now(failures) => {
                        let mut task = new_task(service, slot, ids.next_id(), now);
                        task.failures = failures;
                        changes.push(Change::PutTask(task));
                    }
                    Replacement::After { failed, message } => {
                        if failed.message != message {
                            let mut noted = failed.clone();
                            noted.message = message;
                            changes.push(Change::PutTask(noted));
                        }
                    }
                }
            }
            let Some(group) = group else { continue };
            // A slot being moved has its old task and its replacement: both wanted.
            if group.iter().any(|t| moves::leaving(state, t)) {
                continue;
            }
            let mut current: Vec<&mut &Task> =
                group.iter_mut().filter(|t| t.runs(service)).collect();
            if current.len() > 1 {
                // Should not happen; if it does, keep the one furthest along.
                current.sort_by_key(|t| (std::cmp::Reverse(t.state), t.created_at));
                for extra in current.iter().skip(1) {
                    let mut next = Task::clone(extra);
                    next.desired = DesiredState::Shutdown;
                    next.message = format!("duplicate of another task for slot {slot}");
                    if next.state == TaskState::Pending {
                        next.state = TaskState::Shutdown;
                    }
                    next.updated_at = now;
                    changes.push(Change::PutTask(next));
                }
            }
        }
    }

    // 4. Forget finished tasks beyond the history kept for a slot still wanted.
    for done in finished.chunk_by(|a, b| a.slot == b.slot) {
        let keep = match service {
            Some(s) if done[0].slot < s.spec.replicas => HISTORY_PER_SLOT,
            _ => 0,
        };
        for task in done.iter().skip(keep) {
            changes.push(Change::DeleteTask(task.id.clone()));
        }
    }
    relocated
}

enum Replacement<'a> {
    /// Make it now, with this many failures behind it.
    Now(u32),
    /// Not yet: the slot is crash-looping. Say so on the failed task.
    After { failed: &'a Task, message: String },
    /// Never: the restart policy leaves the slot done (say so on its last task).
    Done { task: &'a Task, message: String },
}

/// How many tasks of a slot failed in a row, counting `last` (failed): a long healthy
/// run before the failure starts the count again.
fn failures_in_a_row(last: &Task) -> u32 {
    let ran = last.updated_at.saturating_sub(last.created_at);
    // A long run resets the count only if it was a healthy one: a task that never passed
    // its health check was crash-looping slowly, not working.
    let healthy_run = last.healthcheck.is_none() || last.healthy_at.is_some();
    if ran >= HEALTHY_RUN && healthy_run {
        1
    } else {
        last.failures + 1
    }
}

/// Why the restart policy leaves a slot done with its latest finished task, if it does:
/// the task ran the current template and completed (`on-failure`, `none`), failed
/// (`none`), or failed once too often (`max_attempts`). A lost task is always replaced:
/// it did not finish, its worker did.
pub fn finished_slot(service: &Service, latest: Option<&Task>) -> Option<String> {
    let last = latest?;
    if !last.runs(service) || !matches!(last.state, TaskState::Complete | TaskState::Failed) {
        return None;
    }
    let failures = if last.state == TaskState::Failed {
        failures_in_a_row(last)
    } else {
        0
    };
    match service.spec.restart.after_exit(last, failures) {
        AfterExit::Done(why) => Some(why),
        AfterExit::Replace => None,
    }
}

/// When a slot whose last task ended gets its next one: at once after a lost, stopped or
/// completed task, or after a failure that ran long enough; otherwise after a delay that
/// doubles with each failure in a row, so a crash-looping image does not spin. Never,
/// when the restart policy says the slot is done.
fn replacement<'a>(latest: Option<&'a Task>, service: &Service, now: Millis) -> Replacement<'a> {
    if let (Some(last), Some(why)) = (latest, finished_slot(service, latest)) {
        let condition = service.spec.restart.condition.as_str();
        let message = if last.state == TaskState::Complete {
            format!("{why}; not restarted (restart condition {condition})")
        } else {
            why
        };
        return Replacement::Done {
            task: last,
            message,
        };
    }
    match latest.filter(|t| t.state == TaskState::Failed) {
        Some(last) => backoff(last, service, now),
        None => Replacement::Now(0),
    }
}

/// After the failure of `last`: now if the backoff ran out, else the wait (said on it).
fn backoff<'a>(last: &'a Task, service: &Service, now: Millis) -> Replacement<'a> {
    let failures = failures_in_a_row(last);
    let delay = restart_delay(failures, service.spec.restart.delay.millis());
    let due = last.updated_at + delay;
    if now >= due {
        return Replacement::Now(failures);
    }
    let reason = last
        .error
        .clone()
        .or_else(|| last.exit_code.map(|c| format!("exited with code {c}")))
        .unwrap_or_else(|| "failed".into());
    Replacement::After {
        failed: last,
        // The delay, not a countdown: the message is stored, and must not change (and
        // be committed) on every pass while the slot waits.
        message: format!(
            "{reason}; restarts {} after the failure (failure {failures} in a row)",
            crate::span::Span(delay)
        ),
    }
}

pub(crate) fn wants(service: Option<&Service>, task: &Task) -> bool {
    service.is_some_and(|s| task.slot < s.spec.replicas)
}

/// What its worker's state makes of a live task.
enum CutOff {
    /// Its worker is up.
    No,
    /// Lost with its worker (down or gone), to be replaced: why.
    Lost(String),
    /// Its worker is down, but the task is `on_disconnect: "stop"` and its agent may
    /// still be stopping it: it may be replaced only later (see `lease`). Why, for people.
    Waiting(String),
}

fn cut_off(state: &ClusterState, task: &Task, now: Millis) -> CutOff {
    let Some(worker_name) = task.worker.as_ref() else {
        return CutOff::No;
    };
    let Some(worker) = state.workers.get(worker_name) else {
        return CutOff::Lost(format!("worker {worker_name} is gone"));
    };
    if worker.status != WorkerStatus::Down {
        return CutOff::No;
    }
    match worker.stop_tasks_replaceable_at(task.stop_grace_period) {
        Some(at) if task.on_disconnect == OnDisconnect::Stop && now < at => {
            CutOff::Waiting(format!(
                "worker {worker_name} is down: its agent stops this task once its lease of {} runs out; replaced {} after the last renewal",
                crate::span::Span(worker.lease.millis()),
                crate::span::Span(at.saturating_sub(worker.renewed_at)),
            ))
        }
        _ => CutOff::Lost(format!("worker {worker_name} is down")),
    }
}

fn unwanted_because(service: Option<&Service>, task: &Task) -> Option<String> {
    let Some(service) = service else {
        return Some("service removed".into());
    };
    if task.slot >= service.spec.replicas {
        return Some(format!("scaled down to {}", service.spec.replicas));
    }
    // A task on a draining worker moves start-first (`moves`), not here.
    None
}

/// An automatic rollback brings back the ports of the version it restores; one that
/// another service has published since (it was free after the failed update moved away
/// from it) is not taken back: it stays the other service's, and the rollback's reason
/// says so. (An operator's rollback onto a taken port is refused with 409 instead.)
fn release_taken_ports(state: &ClusterState, service: &mut Service) {
    let name = service.spec.name.clone();
    let taken = |port: u16| {
        state
            .services
            .values()
            .find(|s| s.spec.name != name && s.spec.published().any(|p| p == port))
            .map(|s| s.spec.name.clone())
    };
    let mut released = Vec::new();
    for port in &mut service.spec.ports {
        if let Some(owner) = port.published.and_then(taken) {
            released.push(format!(
                "port {} is not published again: service {owner} publishes it now",
                port.published.unwrap_or_default()
            ));
            port.published = None;
        }
    }
    if released.is_empty() {
        return;
    }
    if let Some(version) = service.history.last_mut() {
        version.spec.ports = service.spec.ports.clone();
    }
    if let Some(rollout) = service.rollout.as_mut() {
        let reason = rollout.reason.take().unwrap_or_default();
        rollout.reason = Some(format!("{reason}; {}", released.join("; ")));
    }
}

fn new_task(service: &Service, slot: u32, id: String, now: Millis) -> Task {
    Task {
        id,
        service: service.spec.name.clone(),
        slot,
        spec_version: service.version,
        image: service.spec.image.clone(),
        command: service.spec.command.clone(),
        env: service.spec.env.clone(),
        worker: None,
        desired: DesiredState::Running,
        state: TaskState::Pending,
        message: "waiting to be scheduled".into(),
        container_id: None,
        exit_code: None,
        error: None,
        failures: 0,
        healthcheck: service.spec.healthcheck.clone(),
        generation: service.generation,
        health: None,
        health_message: None,
        started_at: None,
        healthy_at: None,
        ports: service
            .spec
            .targets()
            .into_iter()
            .map(|target| TaskPort { target, port: None })
            .collect(),
        address: None,
        stop_grace_period: service.spec.stop_grace_period,
        published: service
            .spec
            .ports
            .iter()
            .filter_map(|p| Some((p.published?, p.target)))
            .collect(),
        proxy_protocol: service.spec.proxy_protocol,
        constraints: service.spec.constraints.clone(),
        resources: service.spec.resources,
        mounts: Mount::for_slot(&service.spec.name, slot, &service.spec.volumes),
        moving: None,
        on_disconnect: service.spec.on_disconnect,
        created_at: now,
        updated_at: now,
    }
}
