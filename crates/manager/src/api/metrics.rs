//! `GET /metrics` (the Prometheus text format; the API token or the read-only metrics
//! token), and the middleware that counts and times every API request by its route
//! pattern.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::metrics::figures::Figures;
use crate::metrics::{Scraped, CONTENT_TYPE, UNMATCHED};

/// `GET /metrics`: what the manager recorded, and the state's figures as of now.
pub async fn metrics(State(app): State<AppState>) -> Result<Response, ApiError> {
    let cluster = &app.cluster;
    let snapshot = cluster.snapshot();
    let scraped = Scraped {
        figures: Figures::of(&snapshot.state, |worker| cluster.is_live(worker)),
        long_polls_open: app.long_polls.open(),
        uptime: cluster.uptime(),
    };
    let text = cluster.metrics().render(scraped).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the metrics: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Counts and times each request under its route's pattern (`/api/v1/service/{name}`,
/// never the names in it), or `unmatched`. Outside the guard, so refusals count too.
pub async fn track(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let began = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    app.cluster
        .metrics()
        .observe_request(&route, &method, response.status(), began.elapsed());
    response
}
