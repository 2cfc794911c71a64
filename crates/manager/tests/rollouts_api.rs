//! The versions and rollout endpoints, in-process on a real `Cluster` (an embedded store
//! in a temporary dir): what each answers, and the error codes.

mod support;

use axum::body::Body;
use axum::http::Request;
use mycluster_manager::api::ApiConfig;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn app() -> (axum::Router, tempfile::TempDir) {
    support::app(ApiConfig::default()).await
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
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

#[tokio::test]
async fn versions_rollout_rollback_and_restart() {
    let (app, _dir) = app().await;
    let create = json!({"service": "web", "image": "nginx:1", "replicas": 2,
        "healthcheck": {"http": {"port": 80}}, "update": {"order": "stop-first"}});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(create)).await;
    assert_eq!(status, 201, "{body}");

    // No previous version yet: nothing to roll back to.
    let (status, body) = call(&app, "POST", "/api/v1/service/web/rollback", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no previous version"),
        "{body}"
    );

    let (status, rollout) = call(&app, "GET", "/api/v1/service/web/rollout", None).await;
    assert_eq!(status, 200, "{rollout}");
    assert_eq!(
        (
            &rollout["kind"],
            &rollout["state"],
            &rollout["version"],
            &rollout["total"]
        ),
        (
            &json!("create"),
            &json!("in_progress"),
            &json!(1),
            &json!(2)
        )
    );
    assert_eq!(rollout["updated"], 0, "no worker: nothing runs");
    assert_eq!(rollout["from_version"], Value::Null);

    // The service document shows what is set, and only that.
    let (_, service) = call(&app, "GET", "/api/v1/service/web", None).await;
    assert_eq!(
        service["healthcheck"]["http"],
        json!({"port": 80, "path": "/"})
    );
    assert_eq!(service["update"]["order"], "stop-first");

    let patch = json!({"image": "nginx:2"});
    let (status, _) = call(&app, "PATCH", "/api/v1/service/web", Some(patch)).await;
    assert_eq!(status, 200);
    let (_, rollout) = call(&app, "GET", "/api/v1/service/web/rollout", None).await;
    assert_eq!(
        (
            &rollout["kind"],
            &rollout["version"],
            &rollout["from_version"]
        ),
        (&json!("update"), &json!(2), &json!(1))
    );

    let (status, back) = call(&app, "POST", "/api/v1/service/web/rollback", None).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(
        (
            &back["kind"],
            &back["version"],
            &back["from_version"],
            &back["state"]
        ),
        (
            &json!("rollback"),
            &json!(3),
            &json!(2),
            &json!("in_progress")
        )
    );
    let (_, service) = call(&app, "GET", "/api/v1/service/web", None).await;
    assert_eq!(service["image"], "nginx:1");

    let (status, restart) = call(&app, "POST", "/api/v1/service/web/restart", None).await;
    assert_eq!(status, 200, "{restart}");
    assert_eq!(
        (&restart["kind"], &restart["version"]),
        (&json!("restart"), &json!(4))
    );

    let (status, versions) = call(&app, "GET", "/api/v1/service/web/versions", None).await;
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions["current"], 4);
    let listed: Vec<(u64, String, String)> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["cause"].as_str().unwrap().to_string(),
                v["spec"]["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (4, "restart".to_string(), "nginx:1".to_string()),
            (
                3,
                "rollback to version 1".to_string(),
                "nginx:1".to_string()
            ),
            (2, "updated".to_string(), "nginx:2".to_string()),
            (1, "created".to_string(), "nginx:1".to_string()),
        ]
    );
    // A version's spec is a body the API takes back as it is.
    let spec = versions["versions"][0]["spec"].clone();
    assert_eq!(spec["update"]["order"], "stop-first");
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(spec)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn an_unknown_service_is_a_404_everywhere() {
    let (app, _dir) = app().await;
    for (method, path) in [
        ("GET", "/api/v1/service/nobody/versions"),
        ("GET", "/api/v1/service/nobody/rollout"),
        ("POST", "/api/v1/service/nobody/rollback"),
        ("POST", "/api/v1/service/nobody/restart"),
    ] {
        let (status, body) = call(&app, method, path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], 404);
        assert_eq!(
            body["message"], "Service nobody was not registered for this cluster.",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn bad_health_checks_and_policies_are_refused_naming_the_field() {
    let (app, _dir) = app().await;
    for (extra, expected) in [
        (
            json!({"healthcheck": {"http": {"port": 0}}}),
            "healthcheck.http.port",
        ),
        (json!({"update": {"order": "sideways"}}), "update.order"),
        (json!({"update": {"monitor": "soon"}}), "update.monitor"),
    ] {
        let mut body = json!({"service": "web", "image": "nginx:1", "replicas": 1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = call(&app, "POST", "/api/v1/service?wait=0", Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    let (_, services) = call(&app, "GET", "/api/v1/services", None).await;
    assert_eq!(services, json!([]), "a refused request changes nothing");
}

/// The original's re-POST (service, image, replicas) keeps the health check and policy
/// it knows nothing of; given as null, they are removed / back to the defaults.
#[tokio::test]
async fn a_repost_keeps_the_health_check_and_policy_it_leaves_out() {
    let (app, _dir) = app().await;
    let create = json!({"service": "web", "image": "nginx:1", "replicas": 2,
        "healthcheck": {"tcp": {"port": 80}}, "update": {"order": "stop-first"}});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(create)).await;
    assert_eq!(status, 201, "{body}");

    let original = json!({"service": "web", "image": "nginx:2", "replicas": 3});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(original)).await;
    assert_eq!(status, 201, "{body}");
    let (_, service) = call(&app, "GET", "/api/v1/service/web", None).await;
    assert_eq!(
        (&service["image"], &service["replicas"]),
        (&json!("nginx:2"), &json!(3))
    );
    assert_eq!(
        service["healthcheck"]["tcp"],
        json!({"port": 80}),
        "{service}"
    );
    assert_eq!(service["update"]["order"], "stop-first", "{service}");

    let cleared = json!({"service": "web", "image": "nginx:2", "replicas": 3,
        "healthcheck": null, "update": null});
    let (status, body) = call(&app, "POST", "/api/v1/service?wait=0", Some(cleared)).await;
    assert_eq!(status, 201, "{body}");
    let (_, service) = call(&app, "GET", "/api/v1/service/web", None).await;
    assert!(service.get("healthcheck").is_none(), "{service}");
    assert!(
        service.get("update").is_none(),
        "defaults are not shown: {service}"
    );
}
