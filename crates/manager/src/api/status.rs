//! Read-only views of the cluster: the original's stats and state, the task list, and the
//! health check.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::query::Params;
use super::{json_response, ApiError, AppState};
use crate::cluster::StoreHealth;
use mycluster_core::wire::{HealthDoc, HealthStatus, StateDoc, StatsDoc, TaskView};
use mycluster_core::Task;

/// `GET /api/v1/stats`.
pub async fn stats(State(app): State<AppState>) -> Json<StatsDoc> {
    let snapshot = app.cluster.snapshot();
    Json(StatsDoc::new(
        app.cluster.uptime(),
        &snapshot.state.counters,
    ))
}

/// `GET /api/v1/state`.
pub async fn state(State(app): State<AppState>) -> Json<StateDoc> {
    let snapshot = app.cluster.snapshot();
    Json(StateDoc::new(&app.cluster.name, &snapshot.state))
}

/// `GET /api/v1/tasks[?service=NAME][&worker=NAME]`: tasks with their desired and
/// observed state, newest history included.
pub async fn tasks(
    State(app): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(query, &["service", "worker"])?;
    let snapshot = app.cluster.snapshot();
    let state = &snapshot.state;
    let mut tasks: Vec<&Task> = match (params.get("service"), params.get("worker")) {
        (Some(service), worker) => state
            .tasks_of_service(service)
            .filter(|t| worker.is_none() || t.worker.as_deref() == worker)
            .collect(),
        (None, Some(worker)) => state.tasks_on_worker(worker).collect(),
        (None, None) => state.tasks.values().map(|t| t.as_ref()).collect(),
    };
    tasks.sort_by(|a, b| {
        (&a.service, a.slot, a.created_at).cmp(&(&b.service, b.slot, b.created_at))
    });
    let tasks: Vec<TaskView> = tasks.into_iter().map(TaskView::new).collect();
    json_response(&tasks)
}

/// `GET /healthz`: 200 when the manager can write its store; 503 (`degraded`, with why)
/// when the store does not answer, cannot write, or no longer holds this manager's
/// history. The same document either way, so a probe reads the cluster's name from it.
pub async fn healthz(State(app): State<AppState>) -> (StatusCode, Json<HealthDoc>) {
    let store = app.cluster.store();
    let problem = match app.cluster.health() {
        StoreHealth::Ok => store.ping().await.err().map(|e| e.to_string()),
        StoreHealth::Unavailable(why) => Some(format!("store unavailable: {why}")),
        StoreHealth::Refusing(why) => Some(why),
    };
    let status = match problem {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let doc = HealthDoc {
        status: match problem {
            None => HealthStatus::Ok,
            Some(_) => HealthStatus::Degraded,
        },
        cluster: app.cluster.name.clone(),
        store: store.describe(),
        index: app.cluster.snapshot().index,
        code: problem.as_ref().map(|_| status.as_u16()),
        message: problem,
    };
    (status, Json(doc))
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API.
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
}
