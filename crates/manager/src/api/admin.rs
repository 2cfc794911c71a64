//! An operator's endpoints for workers and the spread: drain a worker (its tasks move
//! elsewhere, start-first), activate it again, remove it, set its labels; and rebalance
//! a service (or all) whose replicas are spread unevenly. Each parses the request into a
//! core command and renders the answer: the rules are the core's.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use mycluster_core::rebalance::Move;
use mycluster_core::step::{LabelWorker, Rebalance, RemoveWorker, SetDrain};
use mycluster_core::wire::{LabelRequest, MoveDoc, RebalanceDoc, WorkerDoc};

use super::body::JsonBody;
use super::query::Params;
use super::workers::worker_doc;
use super::{known, ApiError, AppState};

/// `POST /api/v1/workers/<name>/drain`: the worker takes no new task and its tasks move
/// elsewhere, one slot at a time, each replacement running (and healthy) before the old
/// task stops. It stays drained (also across a restart of its agent) until activated.
pub async fn drain(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerDoc>, ApiError> {
    set_drain(app, name, true).await
}

/// `POST /api/v1/workers/<name>/activate`: the worker takes tasks again.
pub async fn activate(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerDoc>, ApiError> {
    set_drain(app, name, false).await
}

async fn set_drain(
    app: AppState,
    name: Result<Path<String>, PathRejection>,
    drain: bool,
) -> Result<Json<WorkerDoc>, ApiError> {
    let Path(name) = name?;
    let command = SetDrain {
        worker: name.clone(),
        drain,
    };
    let (worker, snapshot) = app.cluster.apply(command).await?;
    tracing::info!(
        "worker {name} {}",
        if drain { "drained" } else { "activated" }
    );
    Ok(Json(worker_doc(&app, &worker, &snapshot.state)))
}

/// `DELETE /api/v1/workers/<name>`: forgets a worker that is down, or drained and
/// holding no live task (409 otherwise, saying which); answers it as it was.
pub async fn remove(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkerDoc>, ApiError> {
    let Path(name) = name?;
    // Read before: the answer shows the worker as it was, with what it held.
    let before = app.cluster.snapshot();
    let (worker, _) = app.cluster.apply(RemoveWorker(name.clone())).await?;
    app.cluster.forget_worker(&name);
    tracing::info!("worker {name} removed");
    Ok(Json(worker_doc(&app, &worker, &before.state)))
}

/// `PATCH /api/v1/workers/<name>/labels` with `{"set": {"K": "V"}, "remove": ["K"]}`:
/// an operator's labels, laid over the ones its agent registers with and kept when it
/// registers again. Answers the worker after the change.
pub async fn labels(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: JsonBody,
) -> Result<Json<WorkerDoc>, ApiError> {
    let Path(name) = name?;
    let request = LabelRequest::from_json(&body.value()?).map_err(ApiError::bad_request)?;
    if request.set.is_empty() && request.remove.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to change: give labels to 'set' ({\"K\": \"V\"}) and/or keys to 'remove' ([\"K\"])",
        ));
    }
    let command = LabelWorker {
        worker: name.clone(),
        set: request.set,
        remove: request.remove,
    };
    let (worker, snapshot) = app.cluster.apply(command).await?;
    tracing::info!("worker {name} labels changed");
    Ok(Json(worker_doc(&app, &worker, &snapshot.state)))
}

/// `POST /api/v1/service/<name>/rebalance[?dry_run=true]`: evens out the service's
/// spread, one move at a time (see `rebalance_all`).
pub async fn rebalance_service(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<RebalanceDoc>, ApiError> {
    let Path(name) = name?;
    let dry_run = dry_run(query)?;
    known(&app.cluster.snapshot().state, &name)?;
    rebalance(&app, Some(name), dry_run).await
}

/// `POST /api/v1/rebalance[?dry_run=true]`: evens out every service's spread. Without
/// `dry_run` the services are marked to be rebalanced: moves go on, start-first and one
/// per service at a time, until each differs by at most one between eligible workers;
/// the answer lists the first moves. With it nothing changes: the answer lists the moves
/// that would be made now.
pub async fn rebalance_all(
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<RebalanceDoc>, ApiError> {
    let dry_run = dry_run(query)?;
    rebalance(&app, None, dry_run).await
}

fn dry_run(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<bool, ApiError> {
    Ok(Params::parse(query, &["dry_run"])?
        .bool("dry_run")?
        .unwrap_or(false))
}

async fn rebalance(
    app: &AppState,
    service: Option<String>,
    dry_run: bool,
) -> Result<Json<RebalanceDoc>, ApiError> {
    let command = Rebalance {
        service: service.clone(),
        dry_run,
    };
    let (moves, _) = app.cluster.apply(command).await?;
    if !dry_run {
        tracing::info!(
            "rebalance of {} asked: {} moves now",
            service.as_deref().unwrap_or("every service"),
            moves.len()
        );
    }
    Ok(Json(RebalanceDoc {
        dry_run,
        moves: moves.iter().map(move_doc).collect(),
    }))
}

fn move_doc(m: &Move) -> MoveDoc {
    MoveDoc {
        service: m.service.clone(),
        slot: m.slot,
        task: m.task.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        why: m.why.clone(),
    }
}
