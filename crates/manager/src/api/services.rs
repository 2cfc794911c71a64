//! The service endpoints: the original's `POST /service` and `GET /service/<name>`, and
//! list, partial update and delete.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use mycluster_core::commands::{self, CommandError};
use mycluster_core::service::ServicePatch;
use mycluster_core::ServiceSpec;

use super::body::JsonBody;
use super::{ApiError, AppState};
use crate::cluster::Follow;
use mycluster_core::docs::{ServiceDoc, StateDoc};

/// `POST /api/v1/service`: create, or update in place when the name exists. Answers 201
/// with the state document, as the original did, once the change is durable.
pub async fn create(
    State(app): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<StateDoc>), ApiError> {
    let spec = ServiceSpec::from_json(&body, &app.cluster.limits)?;
    let name = spec.name.clone();
    let (created, snapshot) = app
        .cluster
        .mutate(|txn, now| {
            let created = commands::put_service(txn, spec, now);
            Ok::<_, CommandError>((created, Follow::Services(vec![name.clone()])))
        })
        .await?;
    tracing::info!(
        "service {name} {}",
        if created { "created" } else { "updated" }
    );
    Ok((
        StatusCode::CREATED,
        Json(StateDoc::new(&app.cluster.name, &snapshot.state)),
    ))
}

/// `GET /api/v1/service/<name>`.
pub async fn get(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceDoc>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let service = snapshot
        .state
        .services
        .get(&name)
        .ok_or(CommandError::ServiceNotFound(name))?;
    Ok(Json(ServiceDoc::new(service)))
}

/// `GET /api/v1/services`: every service, by name.
pub async fn list(State(app): State<AppState>) -> Json<Vec<ServiceDoc>> {
    let snapshot = app.cluster.snapshot();
    Json(
        snapshot
            .state
            .services
            .values()
            .map(ServiceDoc::new)
            .collect(),
    )
}

/// `PATCH /api/v1/service/<name>` with `{"replicas": N}` and/or `{"image": I}`: changes
/// only what is given, so scaling cannot undo a concurrent image update.
pub async fn patch(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody,
) -> Result<Json<ServiceDoc>, ApiError> {
    let Path(name) = name?;
    let patch = ServicePatch::from_json(&body, &app.cluster.limits)?;
    let (service, _) = app
        .cluster
        .mutate(|txn, now| {
            let service = commands::patch_service(txn, &name, &patch, now)?;
            Ok::<_, CommandError>((service, Follow::Services(vec![name.clone()])))
        })
        .await?;
    tracing::info!("service {name} updated");
    Ok(Json(ServiceDoc::new(&service)))
}

/// `DELETE /api/v1/service/<name>`: removes it and stops its tasks; answers with the
/// service as it was.
pub async fn delete(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceDoc>, ApiError> {
    let Path(name) = name?;
    let (service, _) = app
        .cluster
        .mutate(|txn, _now| {
            let service = commands::delete_service(txn, &name)?;
            Ok::<_, CommandError>((service, Follow::Services(vec![name.clone()])))
        })
        .await?;
    tracing::info!("service {name} removed");
    Ok(Json(ServiceDoc::new(&service)))
}
