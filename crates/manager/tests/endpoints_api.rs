//! The endpoints API, in-process on a real `Cluster` (an embedded store in a temporary
//! dir): ports in a service, the 409 for a port another service publishes, the route
//! table's long-poll, one service's endpoints, and who may read them.

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

const API: &str = "api-token-0123456789abcdef";
const JOIN: &str = "join-token-0123456789abcdef";

async fn app() -> (axum::Router, tempfile::TempDir) {
    support::app(support::locked(API, Some(JOIN))).await
}

async fn call_as(
    app: &axum::Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(app, API, method, path, body).await
}

#[tokio::test]
async fn a_published_port_is_one_services_and_free_again_once_it_is_deleted() {
    let (app, _dir) = app().await;
    let web = json!({"service": "web", "image": "nginx:1", "replicas": 3,
        "ports": [{"published": 8080, "target": 8000}, {"target": 9000}],
        "stop_grace_period": "3s", "proxy_protocol": true});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;
    assert_eq!(status, 201, "{body}");
    let (_, shown) = call(&app, "GET", "/api/v1/service/web", None).await;
    assert_eq!(
        shown["ports"],
        json!([{"published": 8080, "target": 8000, "protocol": "tcp"},
               {"target": 9000, "protocol": "tcp"}])
    );
    assert_eq!(shown["stop_grace_period"], "3s");
    assert_eq!(shown["proxy_protocol"], true);

    let api = json!({"service": "api", "image": "nginx:1", "replicas": 1,
        "ports": [{"published": 8080, "target": 80}]});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(api.clone())).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], 409);
    assert_eq!(
        body["message"],
        "port 8080 is already published by service web: publish another port, or remove it from web first"
    );
    let (status, _) = call(&app, "GET", "/api/v1/service/api", None).await;
    assert_eq!(status, 404, "a refused create leaves nothing behind");

    // A bad port names its field.
    let bad = json!({"service": "bad", "image": "nginx:1", "replicas": 1,
        "ports": [{"published": 70000, "target": 80}]});
    let (status, body) = call(&app, "POST", "/api/v1/service", Some(bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("'ports[0].published' must be a port from 1 to 65535"),
        "{body}"
    );

    let (status, body) = call(&app, "DELETE", "/api/v1/service/web", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(api)).await;
    assert_eq!(status, 201, "8080 is free at once: {body}");
}

#[tokio::test]
async fn the_route_table_is_long_polled_by_version() {
    let (app, _dir) = app().await;
    let web = json!({"service": "web", "image": "nginx:1", "replicas": 2,
        "ports": [{"published": 8080, "target": 8000}]});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;
    assert_eq!(status, 201, "{body}");

    // The join token (an ingress beside an agent) reads the table.
    let (status, table) = call_as(&app, JOIN, "GET", "/api/v1/endpoints", None).await;
    assert_eq!(status, 200, "{table}");
    assert_eq!(
        table["routes"],
        json!([{"published": 8080, "protocol": "tcp", "service": "web", "target": 8000,
                "proxy_protocol": false, "endpoints": []}]),
        "no agent runs the tasks: no endpoint"
    );
    let version = table["version"].as_str().unwrap().to_string();

    // Unchanged: the poll waits its whole wait and answers the same table.
    let started = Instant::now();
    let path = format!("/api/v1/endpoints?version={version}&wait=300ms");
    let (status, same) = call_as(&app, JOIN, "GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(same["version"], version.as_str());
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A change of the published port wakes it with the new table.
    let path = format!("/api/v1/endpoints?version={version}&wait=30s");
    let poll = tokio::spawn({
        let app = app.clone();
        async move { call_as(&app, JOIN, "GET", &path, None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let patch = json!({"ports": [{"published": 8081, "target": 8000}]});
    let (status, body) = call(&app, "PATCH", "/api/v1/service/web", Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    let (status, changed) = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the poll answered on the change")
        .unwrap();
    assert_eq!(status, 200, "{changed}");
    assert_ne!(changed["version"], version.as_str());
    assert_eq!(changed["routes"][0]["published"], 8081);

    // The join token cannot read one service's endpoints (an operator's view).
    let (status, _) = call_as(&app, JOIN, "GET", "/api/v1/service/web/endpoints", None).await;
    assert_eq!(status, 403);
    let (status, listed) = call(&app, "GET", "/api/v1/service/web/endpoints", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed,
        json!({"service": "web", "ports": [{"published": 8081, "target": 8000, "protocol": "tcp"}],
               "endpoints": []})
    );
    let (status, body) = call(&app, "GET", "/api/v1/service/nope/endpoints", None).await;
    assert_eq!((status, &body["code"]), (404, &json!(404)), "{body}");
    for bad in [
        "/api/v1/endpoints?versoin=1",
        "/api/v1/endpoints?version=1&wait=soon",
    ] {
        let (status, body) = call(&app, "GET", bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
