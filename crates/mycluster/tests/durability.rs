//! What the manager promises about its store: an acknowledged write survives a clean
//! restart and a `kill -9`, and a data dir is never shared by accident.

mod common;

use std::collections::BTreeSet;

use common::{Api, Manager};
use serde_json::{json, Value};

/// The state and counters, without the clock and the per-process heartbeat ages.
async fn durable_view(api: &Api) -> Value {
    let mut stats = api.ok("/api/v1/stats").await;
    stats.as_object_mut().unwrap().remove("cluster.upTime");
    let mut workers = api.ok("/api/v1/workers").await;
    for worker in workers.as_array_mut().unwrap() {
        worker.as_object_mut().unwrap().remove("last_heartbeat_age");
    }
    json!({
        "state": api.ok("/api/v1/state").await,
        "services": api.ok("/api/v1/services").await,
        "tasks": api.ok("/api/v1/tasks").await,
        "workers": workers,
        "stats": stats,
    })
}

#[tokio::test]
async fn a_restart_keeps_services_tasks_workers_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    for name in ["w1", "w2"] {
        let reply = api
            .post(
                "/api/v1/workers",
                &json!({"name": name, "address": "127.0.0.1:7001"}),
            )
            .await;
        assert_eq!(reply.status, 201);
    }
    for (name, replicas) in [("web", 3), ("db", 1)] {
        let body = json!({"service": name, "image": "redis:alpine", "replicas": replicas});
        assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    }
    let list = api.ok("/api/v1/workers/w1/tasks").await;
    let reports: Vec<Value> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"id": t["id"], "state": "running", "container_id": "abc"}))
        .collect();
    api.post("/api/v1/workers/w1/status", &json!({"tasks": reports}))
        .await;
    let before = durable_view(&api).await;
    assert_eq!(before["stats"]["services.totalOfRequests"], 2);
    assert_eq!(before["stats"]["services.totalOfContainers"], 2);
    assert!(manager.terminate(), "the manager stops cleanly on SIGTERM");

    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    assert_eq!(durable_view(&api).await, before);
    // The uptime is this process's, not the store's.
    let uptime = api.ok("/api/v1/stats").await["cluster.upTime"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(uptime.starts_with("0:00:"), "{uptime}");
    // The task index keeps growing across restarts, so agents' long-polls stay right.
    let index = api.ok("/api/v1/workers/w1/tasks").await["index"]
        .as_u64()
        .unwrap();
    assert!(index >= list["index"].as_u64().unwrap());
}

#[tokio::test]
async fn kill_9_after_a_burst_of_creates_keeps_every_acknowledged_service() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    // Killed in the middle of the burst, with requests in flight.
    let acked = common::burst_then_kill9(manager, 16, 150).await;
    assert!(acked.len() >= 150);

    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let services: BTreeSet<String> = api
        .ok("/api/v1/services")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = acked.difference(&services).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after kill -9: {lost:?}"
    );
    // A create, its tasks and its counter are one commit: whatever made it is whole.
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(
        stats["services.totalOfRequests"].as_u64().unwrap(),
        services.len() as u64
    );
    let tasks = api.ok("/api/v1/tasks").await;
    assert_eq!(tasks.as_array().unwrap().len(), services.len() * 2);
}

#[tokio::test]
async fn a_data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let body = json!({"service": "web", "image": "redis", "replicas": 1});
    assert_eq!(
        manager.api().post("/api/v1/service", &body).await.status,
        201
    );
    assert!(manager.terminate());

    let output = std::process::Command::new(common::BIN)
        .args([
            "manager",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "prod",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to cluster 'test', not 'prod'"),
        "{stderr}"
    );

    // The data is untouched.
    let manager = Manager::start(dir.path(), &[]);
    assert_eq!(
        manager
            .api()
            .ok("/api/v1/services")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _manager = Manager::start(dir.path(), &[]);
    let second = Manager::try_start(dir.path(), &[]);
    let log = second
        .err()
        .expect("a second manager on the same data dir must not start");
    assert!(log.contains("already open"), "{log}");
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let addr = manager.url.trim_start_matches("http://").to_string();
    let other = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(common::BIN)
        .args(["manager", "--listen", &addr, "--data-dir"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
