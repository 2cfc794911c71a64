//! The REST API: the original's endpoints (`/api/v1/stats`, `/state`, `/service`), the
//! additions an operator needs, and the endpoints agents talk to.

mod admin;
pub mod auth;
mod body;
mod endpoints;
mod error;
mod events;
pub mod guard;
mod join;
mod logs;
mod metrics;
mod query;
mod rollouts;
mod services;
mod status;
mod store;
pub mod ui;
pub(crate) mod volumes;
mod workers;

use std::sync::Arc;

use std::time::Duration;

use axum::routing::{delete, get, patch, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
pub use error::ApiError;

/// Limits and settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub auth: auth::Auth,
    pub max_body_bytes: usize,
    /// The request line and headers together.
    pub max_header_bytes: usize,
    /// The longest an agent's long-poll (or a POST's `?wait=`) may wait.
    pub max_wait: Duration,
    /// The longest any request may take beyond what it asked to wait.
    pub request_timeout: Duration,
    /// Long-polls one client address may have waiting at once.
    pub long_polls_per_client: usize,
    /// Long-polls the manager holds at once.
    pub max_long_polls: usize,
    /// Heartbeats all agents together should send per second; past it, each agent is
    /// asked to beat less often than once a second. Read by `RunningManager::start`,
    /// which gives it to the `Cluster` (`Cluster::set_heartbeat_rate`): a router built on
    /// a `Cluster` of its own keeps that cluster's rate.
    pub max_heartbeats_per_second: u32,
    /// Events the manager keeps for `GET /api/v1/events` (`--event-history`).
    pub event_history: usize,
    /// A token that reads `GET /metrics` and nothing else (`--metrics-token-file`), for a
    /// Prometheus that should not hold the keys to the cluster.
    pub metrics_token: Option<auth::Token>,
    /// The cluster CA's public half when the manager serves TLS: its digest goes into
    /// join tokens, its certificate to `GET /api/v1/cluster/ca`. `None`: no TLS.
    pub ca: Option<CaPublic>,
}

/// The cluster CA as anyone may know it.
#[derive(Clone, Debug)]
pub struct CaPublic {
    pub pin: mycluster_tls::Pin,
    pub pem: std::sync::Arc<str>,
}

impl Default for ApiConfig {
    /// Limits for a real cluster, and authentication off: callers that serve on a real
    /// address set `auth`.
    fn default() -> Self {
        ApiConfig {
            auth: auth::Auth::Off,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            long_polls_per_client: 64,
            max_long_polls: 50_000,
            max_heartbeats_per_second: crate::cluster::DEFAULT_HEARTBEAT_RATE,
            event_history: crate::events::DEFAULT_HISTORY,
            metrics_token: None,
            ca: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub config: Arc<ApiConfig>,
    pub long_polls: Arc<guard::LongPolls>,
    /// Cancelled at shutdown, so long-polls answer at once instead of holding it up.
    pub stop: CancellationToken,
}

impl AppState {
    pub fn new(cluster: Arc<Cluster>, config: ApiConfig, stop: CancellationToken) -> AppState {
        AppState {
            cluster,
            long_polls: guard::LongPolls::new(config.long_polls_per_client, config.max_long_polls),
            config: Arc::new(config),
            stop,
        }
    }
}

/// A JSON answer written at once: for documents that borrow from the snapshot they are
/// read from (a task list is written from the tasks themselves, not from copies).
fn json_response(document: &impl serde::Serialize) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body = serde_json::to_vec(document).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the answer: {e}"),
        )
    })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The service named `name` in `state`, or the 404 that says it is not there.
fn known<'a>(
    state: &'a mycluster_core::ClusterState,
    name: &str,
) -> Result<&'a mycluster_core::Service, ApiError> {
    state.services.get(name).ok_or_else(|| {
        mycluster_core::commands::CommandError::ServiceNotFound(name.to_string()).into()
    })
}

/// The OpenAPI 3 document of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(status::openapi))
        .route("/healthz", get(status::healthz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(ui::to_dashboard))
        .route("/ui", get(ui::to_dashboard))
        .route("/ui/", get(ui::index))
        .route("/ui/{name}", get(ui::file))
        .route("/api/v1/stats", get(status::stats))
        .route("/api/v1/state", get(status::state))
        .route("/api/v1/service", post(services::create))
        .route(
            "/api/v1/service/{name}",
            get(services::get)
                .patch(services::patch)
                .delete(services::delete),
        )
        .route("/api/v1/service/{name}/versions", get(rollouts::versions))
        .route(
            "/api/v1/service/{name}/endpoints",
            get(endpoints::of_service),
        )
        .route("/api/v1/endpoints", get(endpoints::table))
        .route("/api/v1/service/{name}/logs", get(logs::service_logs))
        .route("/api/v1/service/{name}/rollout", get(rollouts::get))
        .route("/api/v1/service/{name}/rollback", post(rollouts::rollback))
        .route("/api/v1/service/{name}/restart", post(rollouts::restart))
        .route(
            "/api/v1/service/{name}/rebalance",
            post(admin::rebalance_service),
        )
        .route("/api/v1/rebalance", post(admin::rebalance_all))
        .route("/api/v1/volumes", get(volumes::list))
        .route("/api/v1/volumes/{name}", delete(volumes::remove))
        .route("/api/v1/services", get(services::list))
        .route("/api/v1/tasks", get(status::tasks))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/store/reseed", post(store::reseed))
        .route("/api/v1/cluster/join-token", get(join::get))
        .route("/api/v1/cluster/join-token/rotate", post(join::rotate))
        .route("/api/v1/cluster/ca", get(join::ca))
        .route(
            "/api/v1/workers",
            get(workers::list).post(workers::register),
        )
        .route(
            "/api/v1/workers/{name}",
            get(workers::get_one).delete(admin::remove),
        )
        .route("/api/v1/workers/{name}/drain", post(admin::drain))
        .route("/api/v1/workers/{name}/activate", post(admin::activate))
        .route("/api/v1/workers/{name}/labels", patch(admin::labels))
        .route("/api/v1/workers/{name}/heartbeat", post(workers::heartbeat))
        .route("/api/v1/workers/{name}/leave", post(workers::leave))
        .route("/api/v1/workers/{name}/tasks", get(workers::assigned_tasks))
        .route(
            "/api/v1/workers/{name}/status",
            post(workers::report_status),
        )
        .route("/api/v1/workers/{name}/down", post(workers::declare_down))
        .route("/api/v1/workers/_down", post(workers::declare_many))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}
