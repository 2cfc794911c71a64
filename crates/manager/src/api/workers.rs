//! The worker endpoints: what operators read, and what agents call — register,
//! heartbeat, long-poll for their tasks, report what really runs.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use mycluster_core::commands::{self, CommandError};
use mycluster_core::identity;
use mycluster_core::worker::{heartbeat_interval, MIN_HEARTBEAT_INTERVAL};
use mycluster_core::{ClusterState, Task, TaskState, Worker, WorkerStatus};

use super::body::JsonBody;
use super::query::Params;
use super::{json_response, ApiError, AppState};
use crate::cluster::Follow;
use mycluster_core::wire::{
    AssignedView, DownDoc, DownManyDoc, DownRequest, HeartbeatDoc, Registration, RelocationDoc,
    ReportDoc, SkippedDoc, StatusReport, TaskView, WorkerDoc,
};

/// `GET /api/v1/workers`.
pub async fn list(State(app): State<AppState>) -> Json<Vec<WorkerDoc>> {
    let snapshot = app.cluster.snapshot();
    let state = &snapshot.state;
    Json(
        state
            .workers
            .values()
            .map(|w| worker_doc(&app, w, state))
            .collect(),
    )
}

/// `GET /api/v1/workers/<name>`.
pub async fn get_one(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerDoc>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let state = &snapshot.state;
    let worker = state
        .workers
        .get(&name)
        .ok_or_else(|| CommandError::WorkerNotFound(name.clone()))?;
    Ok(Json(worker_doc(&app, worker, state)))
}

/// A worker as the API shows it, with what the manager heard from it.
fn worker_doc(app: &AppState, worker: &Worker, state: &ClusterState) -> WorkerDoc {
    let heard = app.cluster.heard(&worker.name);
    WorkerDoc::new(
        worker,
        state,
        heard.map(|h| h.at.elapsed()),
        heard.map_or(MIN_HEARTBEAT_INTERVAL, |h| h.interval),
    )
}

/// The heartbeat interval agents are asked for now: once a second, unless the cluster
/// is so large that this would pass `--max-heartbeats-per-second`.
fn interval_for(app: &AppState, state: &ClusterState) -> Duration {
    heartbeat_interval(state.workers.len(), app.config.max_heartbeats_per_second)
}

/// `POST /api/v1/workers` with `{"name", "address", "labels"?, "capacity"?, "driver"?,
/// "instance"?}`: an agent joins (or rejoins after a restart). The name of a worker live
/// under another agent instance is refused with 409 (see `identity`).
pub async fn register(
    State(app): State<AppState>,
    body: JsonBody,
) -> Result<(StatusCode, Json<WorkerDoc>), ApiError> {
    let registration: Registration = body.decode()?;
    let name = registration.name.clone();
    let instance = registration.instance.clone();
    let address = registration.address.clone();
    let cluster = app.cluster.clone();
    let per_second = app.config.max_heartbeats_per_second;
    let mut noted = None;
    let registered = app
        .cluster
        .mutate(|txn, now| {
            let old = txn.state.workers.get(&registration.name).cloned();
            let heard = cluster.heard(&registration.name).map(|h| h.as_of_now());
            let worker = commands::register_worker(txn, registration, heard, now)?;
            // Heard now, before the commit: a second agent's registration queued behind
            // this one must find the name held. Taken back below if the commit fails.
            noted = Some(cluster.note_heartbeat(
                &worker.name,
                Some(heartbeat_interval(txn.state.workers.len(), per_second)),
            ));
            let follow = match &old {
                Some(old) if old.status == WorkerStatus::Down => Follow::All,
                _ => Follow::Schedule,
            };
            Ok::<_, CommandError>(((worker, old), follow))
        })
        .await;
    let ((worker, old), snapshot) = match registered {
        Ok(registered) => registered,
        Err(e) => {
            if let Some((before, now)) = noted {
                app.cluster.unnote_heartbeat(&name, now, before);
            }
            let e = ApiError::from(e);
            if e.status == StatusCode::CONFLICT {
                tracing::warn!(
                    "refused the registration of agent instance '{instance}' at {address}: {}",
                    e.message
                );
            }
            return Err(e);
        }
    };
    match old {
        Some(old) if old.instance != worker.instance => tracing::warn!(
            "worker {name} taken over by agent instance '{}' at {} (it was held by instance '{}' at {}, {})",
            worker.instance,
            worker.address,
            old.instance,
            old.address,
            if old.status == WorkerStatus::Down { "down" } else { "silent" }
        ),
        _ => tracing::info!("worker {name} registered at {}", worker.address),
    }
    let doc = worker_doc(&app, &worker, &snapshot.state);
    Ok((StatusCode::CREATED, Json(doc)))
}

/// The agent instance an agent's call names (`?instance=`; absent or empty: none).
fn instance_of(params: &Params) -> Result<String, ApiError> {
    let instance = params.get("instance").unwrap_or_default();
    identity::validate_instance(instance)?;
    Ok(instance.to_string())
}

/// `POST /api/v1/workers/<name>/heartbeat[?instance=ID]`: the agent is alive. A worker
/// that was declared down and beats again is ready again. The answer tells the agent when
/// to beat next (`heartbeat_interval`, seconds). A heartbeat from an agent instance that
/// does not hold the worker is refused (409) and not counted.
pub async fn heartbeat(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HeartbeatDoc>, ApiError> {
    let Path(name) = name?;
    let instance = instance_of(&Params::parse(query, &["instance"])?)?;
    let snapshot = app.cluster.snapshot();
    let worker = snapshot
        .state
        .workers
        .get(&name)
        .ok_or_else(|| CommandError::WorkerNotFound(name.clone()))?;
    identity::check_holder(worker, &instance)?;
    let status = worker.status;
    let interval = interval_for(&app, &snapshot.state);
    app.cluster.record_heartbeat(&name, Some(interval));
    let status = if status == WorkerStatus::Down {
        let (worker, _) = app
            .cluster
            .mutate(|txn, now| {
                // Again on the tip: another agent may have taken the worker over since.
                let worker = txn
                    .state
                    .workers
                    .get(&name)
                    .ok_or_else(|| CommandError::WorkerNotFound(name.clone()))?;
                identity::check_holder(worker, &instance)?;
                let worker = commands::set_worker_status(txn, &name, WorkerStatus::Ready, now)?;
                Ok::<_, CommandError>((worker, Follow::All))
            })
            .await?;
        tracing::info!("worker {name} is back");
        worker.status
    } else {
        status
    };
    Ok(Json(HeartbeatDoc {
        worker: name,
        status,
        index: app.cluster.snapshot().index,
        heartbeat_interval: interval.as_secs_f64(),
    }))
}

/// Refuses a call for `name` from an agent instance that does not hold it (or an unknown
/// worker), as of `state`.
fn check_holder(state: &ClusterState, name: &str, instance: &str) -> Result<(), ApiError> {
    let worker = state
        .workers
        .get(name)
        .ok_or_else(|| CommandError::WorkerNotFound(name.to_string()))?;
    Ok(identity::check_holder(worker, instance)?)
}

/// `GET /api/v1/workers/<name>/tasks?index=N&wait=30s[&instance=ID]`: a blocking query,
/// as Nomad's. It answers at once if the worker's tasks changed after `index` (or no index
/// is given), otherwise when they change, or when `wait` runs out. Only the agent
/// instance that holds the worker gets its tasks (409 otherwise, also when another took
/// it over during the wait).
pub async fn assigned_tasks(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let params = Params::parse(query, &["index", "wait", "instance"])?;
    let index = params.u64("index")?;
    let wait = params
        .duration("wait")?
        .unwrap_or(Duration::from_secs(30))
        .min(app.config.max_wait);
    let instance = instance_of(&params)?;
    check_holder(&app.cluster.snapshot().state, &name, &instance)?;
    if let Some(index) = index {
        let mut watch = app.cluster.watch_worker(&name);
        let current = app.cluster.snapshot().index;
        // An index from the future (a manager that lost its state) answers at once.
        if *watch.borrow_and_update() <= index && index <= current {
            let changed = async {
                while *watch.borrow_and_update() <= index {
                    if watch.changed().await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(wait) => {}
                _ = app.stop.cancelled() => {}
            }
        }
    }
    let snapshot = app.cluster.snapshot();
    check_holder(&snapshot.state, &name, &instance)?;
    let list = AssignedView {
        index: snapshot.index,
        tasks: snapshot
            .state
            .tasks_on_worker(&name)
            .filter(|t| t.is_live())
            .map(TaskView::new)
            .collect(),
    };
    json_response(&list)
}

/// The most task reports one request may carry.
const MAX_REPORTS: usize = 10_000;

/// `POST /api/v1/workers/<name>/status[?instance=ID]` with `{"tasks": [{"id", "state",
/// ...}]}`: what the agent observes. Reports that cannot apply are returned under
/// `ignored`; a report from an agent instance that does not hold the worker is refused
/// whole (409).
pub async fn report_status(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: JsonBody,
) -> Result<Json<ReportDoc>, ApiError> {
    let Path(name) = name?;
    let instance = instance_of(&Params::parse(query, &["instance"])?)?;
    let report: StatusReport = body.decode()?;
    if report.tasks.len() > MAX_REPORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_REPORTS} task reports per request"
        )));
    }
    let (ignored, snapshot) = app
        .cluster
        .mutate(|txn, now| {
            let (touched, ignored) =
                commands::report_tasks(txn, &name, &instance, report.tasks, now)?;
            Ok::<_, CommandError>((ignored, Follow::Services(touched)))
        })
        .await?;
    // Only now: an unknown worker was refused above, and must leave no trace.
    app.cluster.record_heartbeat(&name, None);
    Ok(Json(ReportDoc {
        index: snapshot.index,
        ignored,
    }))
}

/// `POST /api/v1/workers/<name>/down[?silent_for=2s]`: the monitor's verdict. The worker
/// is marked down, its tasks lost, and their replacements placed by the usual spread —
/// all in one commit. With `silent_for`, the verdict stands only if the worker is still
/// that silent when the commit is made (409 otherwise): a worker that beat again between
/// the monitor's look and its call is not declared dead. The answer says where each
/// replacement went (`worker` null: nowhere yet). A worker already down relocates nothing.
pub async fn declare_down(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<DownDoc>, ApiError> {
    let Path(name) = name?;
    let params = Params::parse(query, &["silent_for"])?;
    let silent_for = params.duration("silent_for")?;
    let mut verdict = declare(&app, vec![name], silent_for).await?;
    if let Some((_, why)) = verdict.skipped.pop() {
        return Err(CommandError::Conflict(why).into());
    }
    let (name, relocated) = verdict.down.pop().unwrap_or_default();
    Ok(Json(down_doc(name, relocated)))
}

/// A worker declared down, with where each of its tasks went.
fn down_doc(worker: String, relocated: Vec<RelocationDoc>) -> DownDoc {
    DownDoc {
        worker,
        status: WorkerStatus::Down,
        relocated,
    }
}

/// The most workers one `POST /api/v1/workers/_down` may name.
const MAX_DECLARED: usize = 10_000;

/// `POST /api/v1/workers/_down[?silent_for=2s]` with `{"workers": [names]}`: the verdict
/// on many workers in one commit, so losing a rack costs one reconcile instead of one
/// per machine. A worker heard from within `silent_for` is left as it is and listed under
/// `skipped`; an unknown name refuses the whole request (404), changing nothing.
pub async fn declare_many(
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: JsonBody,
) -> Result<Json<DownManyDoc>, ApiError> {
    let params = Params::parse(query, &["silent_for"])?;
    let silent_for = params.duration("silent_for")?;
    let request: DownRequest = body.decode()?;
    if request.workers.is_empty() || request.workers.len() > MAX_DECLARED {
        return Err(ApiError::bad_request(format!(
            "field 'workers' must name 1 to {MAX_DECLARED} workers"
        )));
    }
    let verdict = declare(&app, request.workers, silent_for).await?;
    let down = verdict
        .down
        .into_iter()
        .map(|(worker, relocated)| down_doc(worker, relocated))
        .collect();
    let skipped = verdict
        .skipped
        .into_iter()
        .map(|(worker, message)| SkippedDoc { worker, message })
        .collect();
    Ok(Json(DownManyDoc { down, skipped }))
}

/// What one verdict did: each worker declared down with its relocations, and each left
/// alone with why.
#[derive(Default)]
struct Verdict {
    down: Vec<(String, Vec<RelocationDoc>)>,
    skipped: Vec<(String, String)>,
}

/// Declares `names` down in one commit (see `declare_many`).
async fn declare(
    app: &AppState,
    mut names: Vec<String>,
    silent_for: Option<Duration>,
) -> Result<Verdict, ApiError> {
    names.sort();
    names.dedup();
    let cluster = app.cluster.clone();
    let ((before, mut verdict), after) = app
        .cluster
        .mutate(|txn, now| {
            let before = txn.state.clone();
            let mut verdict = Verdict::default();
            let mut affected = Vec::new();
            for name in names {
                if let (Some(silent_for), Some(age)) = (silent_for, cluster.heartbeat_age(&name)) {
                    if age < silent_for && txn.state.workers.contains_key(&name) {
                        let why = format!(
                            "Worker {name} was heard from {:.1}s ago: not declared down",
                            age.as_secs_f64()
                        );
                        verdict.skipped.push((name, why));
                        continue;
                    }
                }
                commands::set_worker_status(txn, &name, WorkerStatus::Down, now)?;
                // Only the services with tasks on these workers can change: reconciling
                // every service here made losing many workers at once quadratic.
                affected.extend(
                    txn.state
                        .tasks_on_worker(&name)
                        .filter(|t| t.is_live())
                        .map(|t| t.service.clone()),
                );
                verdict.down.push((name, Vec::new()));
            }
            affected.sort();
            affected.dedup();
            Ok::<_, CommandError>(((before, verdict), Follow::Services(affected)))
        })
        .await?;
    let mut replacements = Replacements::default();
    for (name, relocated) in &mut verdict.down {
        *relocated = replacements.of(&before, &after.state, name);
        if before.workers.get(name).map(|w| w.status) != Some(WorkerStatus::Down) {
            tracing::warn!(
                "worker {name} declared down: {} tasks relocated",
                relocated.len()
            );
        }
    }
    Ok(verdict)
}

/// The tasks that took lost tasks' slots, found once per service.
#[derive(Default)]
struct Replacements<'a> {
    by_service: HashMap<String, HashMap<u32, &'a Task>>,
}

impl<'a> Replacements<'a> {
    /// The tasks `worker` lost between two states, each with the task that took its slot.
    fn of(
        &mut self,
        before: &ClusterState,
        after: &'a ClusterState,
        worker: &str,
    ) -> Vec<RelocationDoc> {
        let mut out = Vec::new();
        for old in before.tasks_on_worker(worker).filter(|t| t.is_active()) {
            let lost = after
                .tasks
                .get(&old.id)
                .is_some_and(|t| t.state == TaskState::Lost);
            if !lost {
                continue;
            }
            let new_ones = self
                .by_service
                .entry(old.service.clone())
                .or_insert_with(|| {
                    // The first new task of each slot, by id, as a search would find.
                    let mut first = HashMap::new();
                    for t in after
                        .tasks_of_service(&old.service)
                        .filter(|t| t.is_active() && !before.tasks.contains_key(&t.id))
                    {
                        first.entry(t.slot).or_insert(t);
                    }
                    first
                });
            let replacement = new_ones.get(&old.slot);
            out.push(RelocationDoc {
                task: old.id.clone(),
                service: old.service.clone(),
                slot: old.slot,
                image: old.image.clone(),
                replacement: replacement.map(|t| t.id.clone()),
                worker: replacement.and_then(|t| t.worker.clone()),
                message: replacement.map(|t| t.message.clone()).unwrap_or_default(),
            });
        }
        out
    }
}
