//! The agent's logs endpoint, `GET /tasks/<task id>/logs?follow=&tail=&since=` on its
//! health port: the lines of the task's container (running or exited, while this
//! worker keeps it) as newline-delimited `LogLineDoc`s, for the manager to merge (see
//! the manager's `api/logs.rs`). It shows what workloads print, so it is closed: the
//! caller presents the SHA-256 of the worker's credential (`Authorization: Bearer`),
//! which the manager keeps and nothing else opens; an agent that holds no credential
//! takes the token it joined with instead. Only an agent that joined without either (a
//! cluster without authentication) serves it to anyone. To another host it answers over
//! TLS only (the manager reads it so, pinned to the CA this agent registered): a plain
//! request from elsewhere gets a 403 before its token is even looked at. The health
//! endpoint beside it stays open.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mycluster_core::logs::LogRequest;
use mycluster_core::wire::{ErrorDoc, LogLineDoc, LogSource, LogsQuery};
use mycluster_http::{OverTls, Peer};
use mycluster_runtime::{ContainerRuntime, LogOptions, OutputStream, RuntimeError};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// What the endpoint needs.
#[derive(Clone)]
pub struct LogsState {
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The token a caller must present while the agent holds no credential; `None`: the
    /// agent joined without one.
    pub token: Option<String>,
    /// The worker's credential once the agent holds one: the caller must present its
    /// hash.
    pub credential: Arc<std::sync::Mutex<Option<String>>>,
    /// Ends open streams when the agent stops.
    pub stop: CancellationToken,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (
        status,
        Json(ErrorDoc {
            message: message.into(),
            code: status.as_u16(),
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Whether the request carries the token (compared in constant time).
fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes())))
}

pub async fn task_logs(
    State(state): State<LogsState>,
    Path(task): Path<String>,
    Query(query): Query<LogsQuery>,
    peer: Option<Extension<Peer>>,
    over_tls: Option<Extension<OverTls>>,
    headers: HeaderMap,
) -> Response {
    // What workloads print does not cross a network readable. (Absent: a router called
    // in-process, with no connection.)
    if let (Some(Extension(peer)), Some(Extension(OverTls(false)))) = (peer, over_tls) {
        if !peer.is_loopback() {
            return refuse(
                StatusCode::FORBIDDEN,
                "this agent serves its tasks' logs to other hosts over TLS only: read them through the manager (`mycluster logs SERVICE`), which does",
            );
        }
    }
    let held = state
        .credential
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
        .map(mycluster_client::credential::hash);
    if !authorized(held.as_deref().or(state.token.as_deref()), &headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: send 'Authorization: Bearer <hash of the worker's credential>' (the manager presents it), or the join token for an agent without a credential",
        );
    }
    let request = match LogRequest::read(&query, now()) {
        Ok(request) => request,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let containers = match state.runtime.list().await {
        Ok(containers) => containers,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let Some(container) = containers.into_iter().find(|c| c.task_id == task) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("this worker keeps no container of task {task}"),
        );
    };
    let options = LogOptions {
        follow: request.follow,
        tail: request.tail,
        since: request.since,
    };
    let lines = match state.runtime.logs(&container, &options).await {
        Ok(lines) => lines,
        Err(RuntimeError::NotFound(why)) => return refuse(StatusCode::NOT_FOUND, why),
        Err(RuntimeError::Unsupported(why)) => return refuse(StatusCode::NOT_IMPLEMENTED, why),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    // One JSON document per line; a failure of the driver is the last line, from the
    // agent, saying so. The stream ends with the container's (when following), or when
    // the agent stops.
    let body = futures_util::stream::unfold(
        (lines, state.stop.clone(), false),
        |(mut lines, stop, done)| async move {
            if done {
                return None;
            }
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                next = lines.recv() => next?,
            };
            let (doc, last) = match next {
                Ok(line) => (
                    LogLineDoc {
                        stream: match line.stream {
                            OutputStream::Stdout => LogSource::Stdout,
                            OutputStream::Stderr => LogSource::Stderr,
                        },
                        time: line.time,
                        text: line.text,
                    },
                    false,
                ),
                Err(e) => (
                    LogLineDoc {
                        stream: LogSource::Agent,
                        time: now(),
                        text: format!("cannot read its logs any further: {e}"),
                    },
                    true,
                ),
            };
            let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
            bytes.push(b'\n');
            Some((
                Ok::<Bytes, std::convert::Infallible>(Bytes::from(bytes)),
                (lines, stop, last),
            ))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Now, in nanoseconds since the Unix epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_joined_token_opens_the_logs() {
        let mut headers = HeaderMap::new();
        assert!(authorized(None, &headers));
        assert!(!authorized(Some("secret-token-0123456789"), &headers));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer secret-token-0123456789".parse().expect("header"),
        );
        assert!(authorized(Some("secret-token-0123456789"), &headers));
        assert!(!authorized(Some("another-token-0123456789"), &headers));
    }
}
