//! Health checks end to end: real agents run each task's probe (exec, HTTP, TCP) against
//! its process or container, and the manager's task list shows what they found. A task
//! whose check fails is replaced like a crashed one, and says why.

mod common;

use common::docker::{engine_or_skip, test_image, Cleanup};
use common::{eventually, ready_workers, unique_mark, Agent, Api, Manager, BIN};
use mycluster_relay::free_port;
use serde_json::{json, Value};

/// The service's tasks in GET /api/v1/tasks.
async fn tasks(api: &Api, service: &str) -> Vec<Value> {
    api.ok(&format!("/api/v1/tasks?service={service}"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until one of the service's tasks satisfies `check`; returns it.
async fn task_where(api: &Api, service: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{service}: {what}"), || async {
        tasks(api, service).await.into_iter().find(|t| check(t))
    })
    .await
}

fn is_running_and(health: &'static str) -> impl Fn(&Value) -> bool {
    move |t: &Value| t["state"] == "running" && t["health"] == health
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_check_makes_tasks_healthy_and_replaces_the_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "health-exec");
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;

    // The check passes while this file exists.
    let flag = dir.path().join(format!("{}.ok", unique_mark("flag")));
    std::fs::write(&flag, b"").unwrap();
    let test = format!("test -f {}", flag.display());
    let body = json!({
        "service": "web",
        "command": [BIN, "hello", "--port", "0"],
        "replicas": 1,
        "healthcheck": {"exec": ["sh", "-c", test], "interval": "300ms", "retries": 2}
    });
    let reply = api.post("/api/v1/service", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let healthy = task_where(&api, "web", "a healthy task", is_running_and("healthy")).await;

    // The check fails from now on: the task turns unhealthy, is failed with the reason,
    // and replaced.
    std::fs::remove_file(&flag).unwrap();
    let id = healthy["id"].as_str().unwrap().to_string();
    let failed = task_where(&api, "web", "the unhealthy task failed", |t| {
        t["id"] == id.as_str() && t["state"] == "failed"
    })
    .await;
    assert_eq!(failed["health"], "unhealthy", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("unhealthy: exec exited 1"), "{failed}");
    assert!(
        failed["health_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("exec exited 1")),
        "{failed}"
    );

    // Its replacement becomes healthy once the check passes again.
    std::fs::write(&flag, b"").unwrap();
    task_where(&api, "web", "a healthy replacement", |t| {
        t["id"] != id.as_str() && is_running_and("healthy")(t)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_checks_probe_the_process_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "health-http");
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;
    let port = free_port().expect("a free port");
    let closed = free_port().expect("a free port");
    let hello = json!([BIN, "hello", "--port", port.to_string()]);
    for (service, check) in [
        ("web", json!({"http": {"port": port, "path": "/"}})),
        ("tcp", json!({"tcp": {"port": port}, "interval": "5s"})),
        (
            "broken",
            json!({"http": {"port": closed, "path": "/"}, "interval": "200ms", "retries": 2}),
        ),
    ] {
        // One hello serves `port`; the others run something that listens nowhere.
        let command = if service == "web" {
            hello.clone()
        } else {
            json!(["sleep", "300"])
        };
        let body = json!({
            "service": service,
            "command": command,
            "replicas": 1,
            "healthcheck": check
        });
        let reply = api.post("/api/v1/service", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    task_where(&api, "web", "a healthy task", is_running_and("healthy")).await;
    // A 5 s interval: the first probe still comes at once, and passes.
    task_where(&api, "tcp", "a healthy task", is_running_and("healthy")).await;
    let failed = task_where(&api, "broken", "an unhealthy task", |t| {
        t["state"] == "failed" && t["health"] == "unhealthy"
    })
    .await;
    assert_eq!(
        failed["error"],
        format!("unhealthy: GET http://127.0.0.1:{closed}/: connection refused"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_tasks_are_probed_at_their_container_address() {
    if !engine_or_skip("docker_tasks_are_probed_at_their_container_address") {
        return;
    }
    let image = test_image();
    let cluster = format!("healthtest{}", std::process::id());
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "docker", &[]);
    ready_workers(&api, 1).await;
    // The image serves HTTP on 8000; nothing listens on 8001.
    for (service, check) in [
        ("web", json!({"http": {"port": 8000, "path": "/"}})),
        (
            "broken",
            json!({"tcp": {"port": 8001}, "interval": "200ms", "retries": 2}),
        ),
    ] {
        let body = json!({"service": service, "image": image, "replicas": 1, "healthcheck": check});
        let reply = api.post("/api/v1/service", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    task_where(&api, "web", "a healthy task", is_running_and("healthy")).await;
    let failed = task_where(&api, "broken", "an unhealthy task", |t| {
        t["state"] == "failed" && t["health"] == "unhealthy"
    })
    .await;
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("unhealthy: TCP ") && error.ends_with(":8001: connection refused"),
        "{failed}"
    );
}
