//! The REST API: the original's endpoints (`/api/v1/stats`, `/state`, `/service`), the
//! additions an operator needs, and the endpoints agents talk to.

mod body;
mod error;
mod query;
mod services;
mod status;
mod workers;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
pub use error::ApiError;

/// Limits and settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub max_body_bytes: usize,
    /// The longest an agent's long-poll may wait.
    pub max_wait: std::time::Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 1024 * 1024,
            max_wait: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub config: Arc<ApiConfig>,
    /// Cancelled at shutdown, so long-polls answer at once instead of holding it up.
    pub stop: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/api/v1/stats", get(status::stats))
        .route("/api/v1/state", get(status::state))
        .route("/api/v1/service", post(services::create))
        .route(
            "/api/v1/service/{name}",
            get(services::get)
                .patch(services::patch)
                .delete(services::delete),
        )
        .route("/api/v1/services", get(services::list))
        .route("/api/v1/tasks", get(status::tasks))
        .route(
            "/api/v1/workers",
            get(workers::list).post(workers::register),
        )
        .route("/api/v1/workers/{name}", get(workers::get_one))
        .route("/api/v1/workers/{name}/heartbeat", post(workers::heartbeat))
        .route("/api/v1/workers/{name}/tasks", get(workers::assigned_tasks))
        .route(
            "/api/v1/workers/{name}/status",
            post(workers::report_status),
        )
        .route("/api/v1/workers/{name}/down", post(workers::declare_down))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
