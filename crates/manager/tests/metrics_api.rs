//! `GET /metrics` through the real router: who may read it (the API token, the read-only
//! metrics token; nobody without a token), that the metrics token opens nothing else,
//! and that requests are labelled by route pattern, never by the names in a path.

mod support;

use axum::body::Body;
use axum::http::{Method, Request};
use mycluster_manager::api::auth::Token;
use mycluster_manager::api::ApiConfig;
use tower::ServiceExt;

const API: &str = "metrics-test-api-token-0123456789";
const JOIN: &str = "metrics-test-join-token-0123456789";
const METRICS: &str = "metrics-test-metrics-token-0123456789";

async fn app() -> (axum::Router, tempfile::TempDir) {
    let config = ApiConfig {
        metrics_token: Some(Token::parse(METRICS, "metrics").unwrap()),
        ..support::locked(API, Some(JOIN))
    };
    support::app(config).await
}

/// Status, Content-Type and body.
async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(Body::from(body.unwrap_or("").to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn the_metrics_token_reads_metrics_and_nothing_else() {
    let (app, _dir) = app().await;
    let (status, content_type, text) =
        call(&app, Method::GET, "/metrics", Some(METRICS), None).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(text.contains("# TYPE mycluster_tasks gauge"), "{text}");

    let (status, _, body) = call(&app, Method::GET, "/api/v1/state", Some(METRICS), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("metrics token"), "{body}");
    for (method, path) in [
        (Method::POST, "/api/v1/workers"),
        (Method::GET, "/api/v1/endpoints"),
        (Method::GET, "/api/v1/stats"),
    ] {
        let (status, _, body) = call(&app, method.clone(), path, Some(METRICS), None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }

    let (status, _, body) = call(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = call(
        &app,
        Method::GET,
        "/metrics",
        Some("not-the-token-0123456789"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // The API token reads it too; the join token does not.
    let (status, _, _) = call(&app, Method::GET, "/metrics", Some(API), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(&app, Method::GET, "/metrics", Some(JOIN), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_and_services_by_name() {
    let (app, _dir) = app().await;
    let created = call(
        &app,
        Method::POST,
        "/api/v1/service",
        Some(API),
        Some(r#"{"service": "web", "image": "redis:alpine", "replicas": 2}"#),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.2);
    for name in ["secret-name-1", "secret-name-2"] {
        let (status, _, _) = call(
            &app,
            Method::GET,
            &format!("/api/v1/service/{name}"),
            Some(API),
            None,
        )
        .await;
        assert_eq!(status, 404);
    }
    let (status, _, _) = call(&app, Method::GET, "/no/such/thing", Some(API), None).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&app, Method::GET, "/api/v1/state", None, None).await;
    assert_eq!(status, 401);

    let (_, _, text) = call(&app, Method::GET, "/metrics", Some(METRICS), None).await;
    for line in [
        "mycluster_api_requests_total{route=\"/api/v1/service/{name}\",method=\"GET\",status=\"404\"} 2",
        "mycluster_api_requests_total{route=\"/api/v1/service\",method=\"POST\",status=\"201\"} 1",
        "mycluster_api_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "mycluster_api_requests_total{route=\"/api/v1/state\",method=\"GET\",status=\"401\"} 1",
        "mycluster_api_request_duration_seconds_count{route=\"/api/v1/service/{name}\",method=\"GET\"} 2",
        "mycluster_service_replicas_desired{service=\"web\"} 2",
        "mycluster_service_replicas_running{service=\"web\"} 0",
        "mycluster_tasks{state=\"pending\"} 2",
        "mycluster_tasks{state=\"running\"} 0",
        "mycluster_workers{status=\"ready\"} 0",
        "mycluster_service_requests_total 1",
        "mycluster_store_commit_batch_size_count ",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("secret-name"),
        "a raw path leaked into a label:\n{text}"
    );
}
