//! The agent's health endpoint: what the monitor probes to confirm a worker is alive
//! before declaring it dead (open); beside it on the same port, its metrics (`GET
//! /metrics`, the Prometheus text format, see `metrics`; open like `/healthz`: they say
//! how many containers run and how its starts and checks go, nothing of what they run)
//! and its tasks' logs (authenticated: see `logs`).
//!
//! The port serves TLS and plain HTTP on one port (`mycluster_http::serve`, told apart
//! by the first byte, as the manager's). The TLS is the agent's own: at each start it
//! makes a CA in memory, never saved (a new one per start is enough: the agent registers
//! at each start, and the manager pins the digest it registered), and a certificate
//! signed by it. The manager reads logs over TLS, trusting that CA only, so the token it
//! presents and the lines it reads do not cross the network readable. Plain HTTP stays
//! open to anyone: the monitor's probe, Docker healthchecks and Prometheus scrapes speak
//! it, and carry no secret.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mycluster_core::wire::{AgentHealthDoc, ErrorDoc, HealthStatus};
use mycluster_http::{Plain, ServerLimits, Transport};
use mycluster_tls::{ClusterCa, Pin, TlsAcceptor};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::logs::{task_logs, LogsState};
use crate::{lock, metrics, AgentConfig, AgentError, Shared};

/// The agent's port, bound, with its TLS for this start.
pub struct Endpoint {
    pub listener: TcpListener,
    /// The host:port the agent registers (the monitor probes it, the manager reads logs
    /// there).
    pub address: String,
    pub tls: TlsAcceptor,
    /// The SHA-256 of this start's CA, which the agent registers.
    pub ca: Pin,
}

/// Binds the health listener, and makes this start's CA and certificate.
pub async fn bind(config: &AgentConfig) -> Result<Endpoint, AgentError> {
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
    let ca = ClusterCa::generate().map_err(AgentError::Tls)?;
    let tls = ca
        .server_config("MyCluster agent", &certificate_names(&address))
        .map_err(AgentError::Tls)?;
    Ok(Endpoint {
        listener,
        address,
        tls: TlsAcceptor::from(tls),
        ca: ca.pin(),
    })
}

/// What the certificate names: localhost and the host the agent registers. Only a
/// client that checks names (`curl --cacert`, given the CA) reads them: the manager
/// checks the CA instead, as it reaches the agent by whatever address it registered.
fn certificate_names(address: &str) -> Vec<String> {
    let host = mycluster_client::host_of(address).to_string();
    let mut names = vec!["localhost".to_string()];
    // A certificate names ASCII hosts only (rcgen refuses others): a host whose name is
    // not is left out, which only `curl --cacert` would notice.
    if !host.is_empty() && host != "localhost" && host.is_ascii() {
        names.push(host);
    }
    names
}

pub async fn serve(
    endpoint: Endpoint,
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
    let transport = Transport {
        tls: Some(endpoint.tls),
        plain: Plain::Anyone,
    };
    let limits = ServerLimits::default();
    mycluster_http::serve(endpoint.listener, app, &limits, transport, stop).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_localhost_and_the_registered_host() {
        assert_eq!(certificate_names("node1:7000"), ["localhost", "node1"]);
        assert_eq!(
            certificate_names("10.0.0.7:7000"),
            ["localhost", "10.0.0.7"]
        );
        assert_eq!(certificate_names("[::1]:7000"), ["localhost", "::1"]);
        assert_eq!(certificate_names("localhost:7000"), ["localhost"]);
        assert_eq!(certificate_names("hôte:7000"), ["localhost"]);
    }
}
