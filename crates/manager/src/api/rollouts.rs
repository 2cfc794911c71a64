//! Versions and rollouts of a service: `GET /api/v1/service/<name>/versions` and
//! `.../rollout` (read from the snapshot), `POST .../rollback` and `.../restart` (each a
//! step command, answered with the rollout it started). The rules are the core's
//! (`rollout`, `step::RollbackService`, `step::RestartService`): these only parse, apply
//! and render.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use mycluster_core::step::{RestartService, RollbackService};
use mycluster_core::wire::{RolloutDoc, VersionsDoc};
use mycluster_core::{rollout, ClusterState, Service, Task};

use super::{known, ApiError, AppState};
use crate::cluster::now_millis;

/// `GET /api/v1/service/<name>/versions`: the kept versions, newest first.
pub async fn versions(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<VersionsDoc>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let service = known(&snapshot.state, &name)?;
    Ok(Json(VersionsDoc::new(service)))
}

/// `GET /api/v1/service/<name>/rollout`: where its latest rollout stands.
pub async fn get(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutDoc>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let service = known(&snapshot.state, &name)?;
    Ok(Json(document(&snapshot.state, service)))
}

/// `POST /api/v1/service/<name>/rollback`: the previous version, rolled out again. 409
/// when there is none.
pub async fn rollback(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutDoc>, ApiError> {
    let Path(name) = name?;
    let (service, snapshot) = app.cluster.apply(RollbackService(name.clone())).await?;
    tracing::info!("service {name} rolled back to its previous version");
    Ok(Json(document(&snapshot.state, &service)))
}

/// `POST /api/v1/service/<name>/restart`: every task replaced by a rollout of the same
/// spec.
pub async fn restart(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutDoc>, ApiError> {
    let Path(name) = name?;
    let (service, snapshot) = app.cluster.apply(RestartService(name.clone())).await?;
    tracing::info!("service {name} restarted");
    Ok(Json(document(&snapshot.state, &service)))
}

/// The rollout document of `service`, its `updated` planned on `state`'s tasks with the
/// manager's clock, as reconcile plans them. The service is the one the command answered
/// (the snapshot may already hold a later change): its record is the rollout it started.
fn document(state: &ClusterState, service: &Service) -> RolloutDoc {
    let tasks: Vec<&Task> = state.tasks_of_service(service.name()).collect();
    let done = rollout::plan(service, &tasks, now_millis()).done;
    RolloutDoc::new(service, done)
}
