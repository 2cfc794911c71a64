//! Read-only views of the cluster: the original's stats and state, the task list, and the
//! health check.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::query::Params;
use super::{json_response, ApiError, AppState};
use mycluster_core::docs::{StateDoc, StatsDoc, TaskView};
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

/// `GET /healthz`: 200 when the manager can reach its store, 503 otherwise.
pub async fn healthz(State(app): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = app.cluster.store().describe();
    match app.cluster.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "cluster": app.cluster.name, "store": store})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "degraded",
                "cluster": app.cluster.name,
                "store": store,
                "message": e.to_string(),
                "code": 503
            })),
        ),
    }
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3 document of this API.
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::OPENAPI,
    )
}
