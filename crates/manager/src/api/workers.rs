//! The worker endpoints: what operators read, and what agents call — register,
//! heartbeat, long-poll for their tasks, report what really runs. An agent's call
//! speaks for one worker: the handler checks, on the state, that the caller's secret
//! may speak for it (`identity::check_caller`: its own credential, the API token, or
//! the join token for a worker without a credential) before anything else.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use mycluster_client::credential;
use mycluster_core::commands::CommandError;
use mycluster_core::identity::{self, Caller};
use mycluster_core::step::{DeclareDown, Register, Registered, Report, Verdict, WorkerBack};
use mycluster_core::worker::MIN_HEARTBEAT_INTERVAL;
use mycluster_core::{ClusterState, Worker, WorkerStatus};

use super::body::JsonBody;
use super::query::Params;
use super::{json_response, ApiError, AppState};
use mycluster_core::wire::{
    AssignedView, DownDoc, DownManyDoc, DownRequest, HeartbeatDoc, Registration, RelocationDoc,
    ReportDoc, StatusReport, SuspicionReason, TaskView, WorkerDoc,
};

/// `GET /api/v1/workers[?suspected_after=N&wait=250ms]`. With `suspected_after`, a
/// blocking query for the monitor: it answers at once if some worker has a suspicion
/// (its agent left, its connection dropped) of an index above `N` (the highest the
/// monitor saw in its last answer), otherwise when a new one is noted or `wait` runs
/// out (default 30 s). A restarted manager counts from 0 again: the monitor waits at
/// most `wait` then.
pub async fn list(
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Vec<WorkerDoc>>, ApiError> {
    let params = Params::parse(query, &["suspected_after", "wait"])?;
    let wait = params
        .duration("wait")?
        .unwrap_or(Duration::from_secs(30))
        .min(app.config.max_wait);
    if let Some(after) = params.u64("suspected_after")? {
        // Subscribed before looking, so a suspicion noted in between wakes the wait.
        let mut watch = app.cluster.watch_suspicions();
        watch.borrow_and_update();
        if app.cluster.latest_suspicion() <= after {
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = app.stop.cancelled() => {}
            }
        }
    } else if params.get("wait").is_some() {
        return Err(ApiError::bad_request(
            "query parameter 'wait' needs 'suspected_after'",
        ));
    }
    let snapshot = app.cluster.snapshot();
    let state = &snapshot.state;
    Ok(Json(
        state
            .workers
            .values()
            .map(|w| worker_doc(&app, w, state))
            .collect(),
    ))
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
pub(super) fn worker_doc(app: &AppState, worker: &Worker, state: &ClusterState) -> WorkerDoc {
    let heard = app.cluster.heard(&worker.name);
    WorkerDoc::new(
        worker,
        state,
        heard.map(|h| h.at.elapsed()),
        heard.map_or(MIN_HEARTBEAT_INTERVAL, |h| h.interval),
        heard.and_then(|h| h.suspected),
    )
}

/// `POST /api/v1/workers` with `{"name", "address", "labels"?, "capacity"?, "driver"?,
/// "instance"?, "resources"?, "host"?, "agent_ca_sha256"?}`: an agent joins (or rejoins after a restart). The name of a worker live
/// under another agent instance is refused with 409, and who may register which name
/// (the join token a new one, a worker's credential its own) is `identity::admit`
/// (403; 401 for a credential that names no worker); a new name past `--max-workers` is
/// refused with 409. A registration that gives the worker a credential answers it, once,
/// in `credential`.
pub async fn register(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonBody,
) -> Result<(StatusCode, Json<WorkerDoc>), ApiError> {
    let registration: Registration = body.decode()?;
    let instance = registration.instance.clone();
    let address = registration.address.clone();
    // Made for every registration that may get one; kept only if the core says so.
    let secret = (caller != Caller::Open).then(credential::generate);
    let command = Register {
        registration,
        by: caller,
        fresh_credential: secret.as_deref().map(credential::hash),
    };
    let (
        Registered {
            worker,
            before,
            issued,
        },
        snapshot,
    ) = match app.cluster.apply(command).await {
        Ok(registered) => registered,
        Err(e) => {
            let e = ApiError::from(e);
            if matches!(
                e.status,
                StatusCode::CONFLICT | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
            ) {
                tracing::warn!(
                    "refused the registration of agent instance '{instance}' at {address}: {}",
                    e.message
                );
            }
            return Err(e);
        }
    };
    let name = &worker.name;
    match before {
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
    let mut doc = worker_doc(&app, &worker, &snapshot.state);
    if issued {
        doc.credential = secret;
    }
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
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HeartbeatDoc>, ApiError> {
    let Path(name) = name?;
    let instance = instance_of(&Params::parse(query, &["instance"])?)?;
    let snapshot = app.cluster.snapshot();
    identity::check_caller(&snapshot.state, &name, &caller)?;
    let worker = snapshot
        .state
        .workers
        .get(&name)
        .ok_or_else(|| CommandError::WorkerNotFound(name.clone()))?;
    identity::check_holder(worker, &instance)?;
    let status = worker.status;
    let interval = app.cluster.heartbeat_interval(&snapshot.state);
    app.cluster.note_heartbeat(&name, Some(interval));
    let mut epoch = worker.epoch;
    let status = if status == WorkerStatus::Down {
        let command = WorkerBack {
            worker: name.clone(),
            instance,
        };
        let (worker, _) = app.cluster.apply(command).await?;
        tracing::info!("worker {name} is back");
        epoch = worker.epoch;
        worker.status
    } else {
        status
    };
    Ok(Json(HeartbeatDoc {
        worker: name,
        status,
        index: app.cluster.snapshot().index,
        heartbeat_interval: interval.as_secs_f64(),
        epoch,
        lease: app.cluster.limits.lease.as_secs_f64(),
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
/// it over during the wait). The answer also names the volumes of the worker's host that
/// were asked to be removed and that no task uses (`remove_volumes`): a change of those
/// wakes the long-poll too.
pub async fn assigned_tasks(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    let snapshot = app.cluster.snapshot();
    identity::check_caller(&snapshot.state, &name, &caller)?;
    check_holder(&snapshot.state, &name, &instance)?;
    drop(snapshot);
    // Dropped before it answers, the poll's connection closed under it: the agent's
    // process or host may have died (see `ProbeOnDrop`).
    let mut dropped = ProbeOnDrop {
        app: &app,
        worker: &name,
        armed: index.is_some(),
    };
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
    dropped.armed = false;
    let snapshot = app.cluster.snapshot();
    check_holder(&snapshot.state, &name, &instance)?;
    let list = AssignedView {
        index: snapshot.index,
        epoch: snapshot.state.workers.get(&name).map_or(0, |w| w.epoch),
        lease: app.cluster.limits.lease.as_secs_f64(),
        tasks: snapshot
            .state
            .tasks_on_worker(&name)
            .filter(|t| t.is_live())
            .map(TaskView::new)
            .collect(),
        remove_volumes: super::volumes::to_remove(&snapshot.state, &name),
    };
    json_response(&list)
}

/// Notes a suspicion that a worker died if a long-poll of its agent is dropped before it
/// answers: hyper drops a request's future when its connection closes, which is how the
/// manager hears at once that an agent's process or host died (the kernel closes its
/// sockets) instead of after missed heartbeats. The monitor then probes the worker.
struct ProbeOnDrop<'a> {
    app: &'a AppState,
    worker: &'a str,
    armed: bool,
}

impl Drop for ProbeOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && !self.app.stop.is_cancelled() {
            self.app
                .cluster
                .suspect(self.worker, SuspicionReason::Disconnected);
        }
    }
}

/// `POST /api/v1/workers/<name>/leave[?instance=ID]`: the agent is stopping (it was sent
/// SIGTERM). The monitor, woken at once, declares the worker down without waiting for
/// missed heartbeats, and its tasks are replaced (`on_disconnect: "stop"` ones once their
/// lease runs out, as for any worker declared down). Only the agent instance that holds
/// the worker may say so (409 otherwise).
pub async fn leave(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<WorkerDoc>, ApiError> {
    let Path(name) = name?;
    let instance = instance_of(&Params::parse(query, &["instance"])?)?;
    let snapshot = app.cluster.snapshot();
    identity::check_caller(&snapshot.state, &name, &caller)?;
    check_holder(&snapshot.state, &name, &instance)?;
    app.cluster.suspect(&name, SuspicionReason::Left);
    tracing::info!("worker {name}: its agent is leaving");
    let worker = snapshot
        .state
        .workers
        .get(&name)
        .ok_or_else(|| CommandError::WorkerNotFound(name.clone()))?;
    Ok(Json(worker_doc(&app, worker, &snapshot.state)))
}

/// The most task reports one request may carry.
const MAX_REPORTS: usize = 10_000;

/// `POST /api/v1/workers/<name>/status[?instance=ID]` with `{"tasks": [{"id", "state",
/// ...}], "removed_volumes"?: [names]}`: what the agent observes, and the volumes it
/// removed as its task list asked (their records go). Reports that cannot apply are returned under
/// `ignored`; a report from an agent instance that does not hold the worker is refused
/// whole (409).
pub async fn report_status(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: JsonBody,
) -> Result<Json<ReportDoc>, ApiError> {
    let Path(name) = name?;
    let instance = instance_of(&Params::parse(query, &["instance"])?)?;
    identity::check_caller(&app.cluster.snapshot().state, &name, &caller)?;
    let report: StatusReport = body.decode()?;
    if report.tasks.len() > MAX_REPORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_REPORTS} task reports per request"
        )));
    }
    if report.removed_volumes.len() > MAX_REPORTS {
        return Err(ApiError::bad_request(format!(
            "field 'removed_volumes' must name at most {MAX_REPORTS} volumes"
        )));
    }
    let command = Report {
        worker: name,
        instance,
        tasks: report.tasks,
        removed_volumes: report.removed_volumes,
    };
    let (ignored, snapshot) = app.cluster.apply(command).await?;
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
    if let Some(skipped) = verdict.skipped.pop() {
        return Err(CommandError::Conflict(skipped.message).into());
    }
    let (worker, relocated) = verdict
        .down
        .pop()
        .map(|d| (d.worker, d.relocated))
        .unwrap_or_default();
    Ok(Json(down_doc(worker, relocated)))
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
        .map(|d| down_doc(d.worker, d.relocated))
        .collect();
    Ok(Json(DownManyDoc {
        down,
        skipped: verdict.skipped,
    }))
}

/// Declares `names` down in one commit (see `declare_many`), and logs each worker that
/// was not down already.
async fn declare(
    app: &AppState,
    names: Vec<String>,
    silent_for: Option<Duration>,
) -> Result<Verdict, ApiError> {
    let command = DeclareDown {
        workers: names,
        silent_for,
    };
    let (verdict, _) = app.cluster.apply(command).await?;
    for downed in verdict.down.iter().filter(|d| !d.was_down) {
        tracing::warn!(
            "worker {} declared down: {} tasks relocated",
            downed.worker,
            downed.relocated.len()
        );
    }
    Ok(verdict)
}
