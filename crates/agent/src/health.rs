//! The agent's health endpoint: what the monitor probes to confirm a worker is alive
//! before declaring it dead (open); beside it on the same port, its metrics (`GET
//! /metrics`, the Prometheus text format, see `metrics`; open like `/healthz`: they say
//! how many containers run and how its starts and checks go, nothing of what they run)
//! and its tasks' logs (authenticated: see `logs`).

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mycluster_core::wire::{AgentHealthDoc, ErrorDoc, HealthStatus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::logs::{task_logs, LogsState};
use crate::{lock, metrics, AgentConfig, AgentError, Shared};

/// Binds the health listener; returns it with the address to advertise.
pub async fn bind(config: &AgentConfig) -> Result<(TcpListener, String), AgentError> {
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| AgentError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let address = match &config.advertise {
        Some(address) => address.clone(),
        None if bound.ip().is_unspecified() => format!(
            "{}:{}",
            mycluster_runtime::hostname().unwrap_or_else(|| "localhost".into()),
            bound.port()
        ),
        None => bound.to_string(),
    };
    Ok((listener, address))
}

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    logs: LogsState,
    stop: CancellationToken,
) {
    let worker = shared.config.name.clone();
    let driver = shared.runtime.driver();
    let logs = Router::new()
        .route("/tasks/{task}/logs", get(task_logs))
        .with_state(logs);
    let app = Router::new()
        .merge(logs)
        .route(
            "/healthz",
            get(move || {
                let worker = worker.clone();
                async move {
                    Json(AgentHealthDoc {
                        driver,
                        status: HealthStatus::Ok,
                        worker,
                    })
                }
            }),
        )
        .route("/metrics", get(move || metrics(shared.clone())));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!("health endpoint failed: {e}");
    }
}

/// `GET /metrics`: the agent's metrics, and its lease as of now.
async fn metrics(shared: Arc<Shared>) -> Response {
    let lease = {
        let fencing = lock(&shared.fencing);
        fencing
            .lease_age(Instant::now())
            .map(|age| (age, fencing.lease()))
    };
    match shared.metrics.render(lease) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(ErrorDoc {
                message: format!("cannot write the metrics: {e}"),
                code: 500,
            }),
        )
            .into_response(),
    }
}
