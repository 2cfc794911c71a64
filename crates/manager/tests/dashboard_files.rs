//! The dashboard's files as the manager serves them: open without a token (they hold no
//! data) while the API stays locked, each with its content type, a strict
//! Content-Security-Policy, an ETag honoured with a 304, and `no-cache`; `/` and `/ui`
//! redirect to `/ui/`; an unknown file is the error document.

mod support;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "dashboard-test-token-0123456789";

async fn app() -> (axum::Router, tempfile::TempDir) {
    support::app(support::locked(TOKEN, None)).await
}

async fn call(app: &axum::Router, method: Method, path: &str, etag: Option<&str>) -> Response {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn header_of(response: &Response, name: header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn body(response: Response) -> Vec<u8> {
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_files_are_served_open_with_their_types_and_a_strict_policy() {
    let (app, _dir) = app().await;
    for (path, content_type, contains) in [
        (
            "/ui/",
            "text/html",
            "<script type=\"module\" src=\"/ui/app.js\">",
        ),
        ("/ui/index.html", "text/html", "id=\"signin-form\""),
        ("/ui/app.js", "text/javascript", "signIn"),
        ("/ui/api.js", "text/javascript", "sessionStorage"),
        ("/ui/live.js", "text/javascript", "/api/v1/events"),
        ("/ui/app.css", "text/css", "@media"),
        ("/ui/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = call(&app, Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            header_of(&response, header::CONTENT_TYPE).starts_with(content_type),
            "{path}"
        );
        let policy = header_of(&response, header::CONTENT_SECURITY_POLICY);
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache");
        let etag = header_of(&response, header::ETAG);
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: {etag}");
        let text = String::from_utf8(body(response).await).unwrap();
        assert!(text.contains(contains), "{path} lacks {contains}");

        // The browser's copy is current: 304, no body.
        let again = call(&app, Method::GET, path, Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(body(again).await.is_empty());
        let stale = call(&app, Method::GET, path, Some("\"0\"")).await;
        assert_eq!(stale.status(), StatusCode::OK, "{path}");
    }
    // HEAD works as GET does.
    let head = call(&app, Method::HEAD, "/ui/app.js", None).await;
    assert_eq!(head.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_root_leads_to_the_dashboard_and_the_api_stays_locked() {
    let (app, _dir) = app().await;
    for path in ["/", "/ui"] {
        let response = call(&app, Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(header_of(&response, header::LOCATION), "/ui/");
    }
    // Only reading is open: anything else on the dashboard's paths needs the token.
    let post = call(&app, Method::POST, "/ui/", None).await;
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    // The API behind it is as locked as ever.
    let stats = call(&app, Method::GET, "/api/v1/stats", None).await;
    assert_eq!(stats.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unknown_file_is_the_error_document() {
    let (app, _dir) = app().await;
    for path in ["/ui/nothing.js", "/ui/..%2Fsecret", "/ui/a/b"] {
        let response = call(&app, Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(header_of(&response, header::CONTENT_TYPE).starts_with("application/json"));
        let doc: Value = serde_json::from_slice(&body(response).await).unwrap();
        assert_eq!(doc["code"], 404, "{path}: {doc}");
        assert!(doc["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}
