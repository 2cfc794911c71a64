//! The command line client against a real manager: tables by default, the raw document
//! with `--json`, and one clear line plus a non-zero exit on any failure — including a
//! service whose replicas cannot run, and an address that is not a manager at all.

mod common;

use common::{cli, ready_workers, Agent, Manager};
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
        // No worker here: nothing would run.
        "--wait",
        "0",
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

    let (code, out, _) = run(vec!["service", "scale", "web", "5", "--wait", "0"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("scaled to 5"), "{out}");
    assert_eq!(manager.api().ok("/api/v1/service/web").await["replicas"], 5);

    let (code, _, _) = run(vec![
        "service", "update", "web", "--image", "redis:7", "--wait", "0",
    ])
    .await;
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

/// Runs the CLI off the async workers.
async fn run_cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&url, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_scale_and_update_say_what_runs_and_fail_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "clirun");
    let url = manager.url.clone();
    let _w1 = Agent::start(&url, "cli_worker_1", "process", &[]);
    let _w2 = Agent::start(&url, "cli_worker_2", "process", &[]);
    ready_workers(&manager.api(), 2).await;

    // What runs is said, and a success is exit 0.
    let (code, out, err) = run_cli(
        &url,
        &[
            "service",
            "create",
            "ok",
            "--replicas",
            "2",
            "--",
            "sleep",
            "3600",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Service ok deployed: sleep 3600 x 2 (2 of 2 running)"),
        "{out}"
    );
    let (code, out, err) = run_cli(&url, &["service", "scale", "ok", "3"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Service ok scaled to 3 (3 of 3 running)"),
        "{out}"
    );

    // A command that cannot run: exit 1 as soon as its replicas failed (not when a
    // 10-minute wait runs out), one line, with the replicas' reason.
    let started = std::time::Instant::now();
    let (code, out, err) = run_cli(
        &url,
        &[
            "service",
            "create",
            "broken",
            "--replicas",
            "2",
            "--wait",
            "600",
            "--",
            "/no/such/binary",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "a failed create said: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("service broken cannot make progress: 0 of 2 running"),
        "{err}"
    );
    assert!(err.contains("cannot run '/no/such/binary'"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(300),
        "it waited {:?} for replicas that had failed",
        started.elapsed()
    );

    // An image on process workers cannot be placed: said, exit 1.
    let (code, _, err) = run_cli(&url, &["service", "create", "imaged", "--image", "redis"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no worker can take it"), "{err}");

    // An update is a rollout, followed until it completes (the service keeps its command:
    // process workers run it), and the failures of other services are not its business.
    let (code, out, err) = run_cli(&url, &["service", "update", "ok", "--image", "redis"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Service ok updated to redis (3/3 updated)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_service_without_image_or_command_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let (code, out, err) = run_cli(&manager.url, &["service", "create", "x"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--image IMAGE") && err.contains("after `--`"),
        "{err}"
    );
    // The API says it too.
    let reply = manager
        .api()
        .post(
            "/api/v1/service",
            &serde_json::json!({"service": "x", "replicas": 1}),
        )
        .await;
    assert_eq!(reply.status, 400);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("'image'") && message.contains("'command'"),
        "{message}"
    );
}

/// An HTTP server that is not a manager: every request gets `status` with an HTML page.
fn web_server(status: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = "<html><head><title>Oops</title></head><body><h1>Not here</h1>\
                        <p>a long page of a web server that is not MyCluster</p></body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[tokio::test]
async fn an_address_that_is_not_a_manager_is_named_in_one_line() {
    for (status, code) in [("404 Not Found", 404), ("200 OK", 200)] {
        let url = web_server(status);
        for args in [&["state"][..], &["service", "ls"], &["stats"]] {
            let (exit, out, err) = run_cli(&url, args).await;
            assert_eq!(exit, 1, "{args:?}: {out}{err}");
            assert_eq!(
                err.trim(),
                format!(
                    "error: {url} does not look like a MyCluster manager (HTTP {code}, text/html)"
                ),
                "{args:?}"
            );
        }
    }
}
