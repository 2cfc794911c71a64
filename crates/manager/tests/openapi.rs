//! The OpenAPI document and the router agree: every documented operation is routed and
//! answers with a documented status, no other method is routed on a documented path, and
//! every route in the router's source is documented.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request};
use mycluster_manager::api::OPENAPI;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "openapi-test-token-0123456789";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// Documented operations: path → methods (lowercase).
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc = document();
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("path item")
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// The routes in the router's source: `.route("path", get(..).post(..))`.
fn routed_in_source() -> BTreeMap<String, BTreeSet<String>> {
    let source = include_str!("../src/api/mod.rs");
    let mut routes = BTreeMap::new();
    for chunk in source.split(".route(").skip(1) {
        let Some(rest) = chunk.trim_start().strip_prefix('"') else {
            continue;
        };
        let (path, handlers) = rest.split_once('"').expect("a quoted path");
        // The handlers run to the next `.route(`, `.fallback(` or `.layer(`.
        let handlers = handlers
            .split(".fallback(")
            .next()
            .unwrap_or("")
            .split(".layer(")
            .next()
            .unwrap_or("");
        let methods = METHODS
            .iter()
            .filter(|m| calls(handlers, m))
            .map(|m| m.to_string())
            .collect();
        routes.insert(path.to_string(), methods);
    }
    routes
}

/// Whether `text` calls the method router `name(` (not `x::name(` or `other_name(`).
fn calls(text: &str, name: &str) -> bool {
    let needle = format!("{name}(");
    text.match_indices(&needle).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

async fn app() -> (axum::Router, tempfile::TempDir) {
    support::app(support::locked(TOKEN, None)).await
}

async fn call(app: &axum::Router, method: &str, path: &str) -> (u16, Value) {
    let concrete = path.replace("{name}", "nobody");
    let request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(format!("{concrete}?wait=0"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .body(Body::from("{}"))
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

#[test]
fn every_route_in_the_source_is_documented() {
    let routed = routed_in_source();
    assert!(routed.len() >= 10, "the source parser found {routed:?}");
    assert_eq!(
        routed,
        documented(),
        "router (left) and OpenAPI paths (right)"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else() {
    let (app, _dir) = app().await;
    let doc = document();
    for (path, methods) in documented() {
        for method in METHODS {
            let (status, body) = call(&app, method, &path).await;
            let fell_through = status == 404
                && body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no such endpoint"));
            if methods.contains(method) {
                assert!(
                    !fell_through && status != 405,
                    "{method} {path} is documented but not routed: {status} {body}"
                );
                let responses = &doc["paths"][&path][method]["responses"];
                assert!(
                    responses.get(status.to_string()).is_some()
                        || responses.get("default").is_some(),
                    "{method} {path} answered {status}, which its document does not list"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is routed but not documented: {body}"
                );
            }
        }
    }
}

#[test]
fn the_document_is_openapi_3_with_bearer_security() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([])
    );
}
