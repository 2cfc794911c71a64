//! The command line client against a real manager: tables by default, the raw document
//! with `--json`, and one clear line plus a non-zero exit on any failure.

mod common;

use common::{cli, Manager};
use serde_json::Value;

#[tokio::test]
async fn service_lifecycle_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.clone();
    let run = move |args: Vec<&'static str>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || cli(&url, &args))
                .await
                .unwrap()
        }
    };

    let (code, out, err) = run(vec![
        "service",
        "create",
        "web",
        "--image",
        "redis:alpine",
        "--replicas",
        "3",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Service web deployed"), "{out}");

    let (code, out, _) = run(vec!["service", "ls"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("web") && out.contains("redis:alpine") && out.contains("REPLICAS"),
        "{out}"
    );

    let (code, out, _) = run(vec!["service", "get", "web", "--json"]).await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(doc["service"], "web");
    assert_eq!(doc["replicas"], 3);

    let (code, out, _) = run(vec!["service", "scale", "web", "5"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("scaled to 5"), "{out}");
    assert_eq!(manager.api().ok("/api/v1/service/web").await["replicas"], 5);

    let (code, _, _) = run(vec!["service", "update", "web", "--image", "redis:7"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        manager.api().ok("/api/v1/service/web").await["image"],
        "redis:7"
    );

    let (code, out, _) = run(vec!["state", "--json"]).await;
    assert_eq!(code, 0);
    let state: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["cluster.name"], "test");
    assert_eq!(state["cluster.servicesDef"][0]["service"], "web");

    let (code, out, _) = run(vec!["stats"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("services.totalOfRequests") && out.contains("cluster.upTime"),
        "{out}"
    );

    let (code, out, _) = run(vec!["workers"]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = run(vec!["tasks", "--service", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("pending"), "{out}");

    let (code, out, _) = run(vec!["service", "rm", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("removed"), "{out}");
    let (code, _, err) = run(vec!["service", "get", "web"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        "error: Service web was not registered for this cluster. (HTTP 404)"
    );
}

#[tokio::test]
async fn api_errors_are_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        cli(&url, &["service", "create", "Bad_Name", "--image", "redis"])
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("invalid service name"), "{err}");
}

#[test]
fn an_unreachable_manager_is_one_line_and_a_nonzero_exit() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [&["state"][..], &["stats"], &["service", "ls"], &["workers"]] {
        let (code, out, err) = cli(&url, args);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("cannot reach the manager at {url}")),
            "{err}"
        );
    }
    let (code, _, err) = cli("not-a-url", &["state"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid manager URL"), "{err}");
}
