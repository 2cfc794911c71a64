//! The service endpoints: the original's `POST /service` and `GET /service/<name>`, and
//! list, partial update and delete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use mycluster_core::service::ServicePatch;
use mycluster_core::service::ServicePost;
use mycluster_core::step::{DeleteService, PatchService, PostService};

use super::body::JsonBody;
use super::query::Params;
use super::{known, ApiError, AppState};
use crate::cluster::Snapshot;
use mycluster_core::wire::{ServiceDoc, StateDoc};

/// `POST /api/v1/service[?wait=5s]`: create, or update in place when the name exists.
/// Answers 201 with the state document once the change is durable and — as the original,
/// which answered once its containers had started — once the new tasks run on live
/// workers, or `wait` has passed, or they cannot make progress (none can be placed, one
/// failed). `?wait=0` answers at once. With `Prefer: return=minimal` (RFC 7240) the answer
/// is the service document alone: the state document of a large cluster is megabytes,
/// and a tool submitting many services does not read it.
pub async fn create(
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: JsonBody,
) -> Result<(StatusCode, axum::response::Response), ApiError> {
    let body = body.value()?;
    let params = Params::parse(query, &["wait"])?;
    let wait = params
        .duration("wait")?
        .unwrap_or(DEFAULT_CONVERGE_WAIT)
        .min(app.config.max_wait);
    let post = ServicePost::from_json(&body, &app.cluster.limits)?;
    let name = post.spec.name.clone();
    let (created, snapshot) = app.cluster.apply(PostService(post)).await?;
    tracing::info!(
        "service {name} {}",
        if created { "created" } else { "updated" }
    );
    let snapshot = converge(&app, &name, snapshot, wait).await;
    let minimal = headers
        .get_all(axum::http::header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"));
    let service = snapshot.state.services.get(&name);
    let answer = match (minimal, service) {
        (true, Some(service)) => {
            let mut answer = Json(ServiceDoc::new(service)).into_response();
            answer.headers_mut().insert(
                axum::http::header::HeaderName::from_static("preference-applied"),
                axum::http::HeaderValue::from_static("return=minimal"),
            );
            answer
        }
        _ => Json(StateDoc::new(&app.cluster.name, &snapshot.state)).into_response(),
    };
    Ok((StatusCode::CREATED, answer))
}

const DEFAULT_CONVERGE_WAIT: Duration = Duration::from_secs(5);

/// Waits until the service's wanted tasks run, or cannot progress, or `wait` is over.
async fn converge(
    app: &AppState,
    name: &str,
    mut snapshot: Arc<Snapshot>,
    wait: Duration,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = app.cluster.watch_commits();
    loop {
        let waiting = snapshot
            .state
            .tasks_of_service(name)
            .any(|t| t.is_starting(|w| app.cluster.is_live(w)));
        if !waiting {
            return snapshot;
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return snapshot },
            _ = tokio::time::sleep_until(deadline) => return app.cluster.snapshot(),
            _ = app.stop.cancelled() => return snapshot,
        }
        snapshot = app.cluster.snapshot();
    }
}

/// `GET /api/v1/service/<name>`.
pub async fn get(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceDoc>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let service = known(&snapshot.state, &name)?;
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
    body: JsonBody,
) -> Result<Json<ServiceDoc>, ApiError> {
    let body = body.value()?;
    let Path(name) = name?;
    let patch = ServicePatch::from_json(&body, &app.cluster.limits)?;
    let command = PatchService {
        name: name.clone(),
        patch,
    };
    let (service, _) = app.cluster.apply(command).await?;
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
    let command = DeleteService {
        name: name.clone(),
        volumes: false,
    };
    let (deleted, _) = app.cluster.apply(command).await?;
    tracing::info!("service {name} removed");
    Ok(Json(ServiceDoc::new(&deleted.service)))
}
