//! The manager on the Redis store, against a real redis-server: an outage is 503 on
//! writes and memory for reads, then recovery with nothing lost; `kill -9` keeps every
//! acknowledged service; a manager started before Redis waits for it.

mod common;
#[path = "../../store/tests/support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;

use common::{eventually, Manager};
use redis_server::RedisServer;
use serde_json::json;

fn service(name: &str) -> serde_json::Value {
    json!({"service": name, "image": "redis:alpine", "replicas": 1})
}

#[tokio::test]
async fn an_outage_is_503_on_writes_then_recovery_loses_nothing() {
    let Some(mut redis) =
        RedisServer::start("an_outage_is_503_on_writes_then_recovery_loses_nothing")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let api = manager.api();
    assert_eq!(
        api.post("/api/v1/service", &service("before")).await.status,
        201
    );
    assert_eq!(api.ok("/healthz").await["status"], "ok");

    redis.kill();
    // Reads are served from memory.
    assert_eq!(api.ok("/api/v1/service/before").await["service"], "before");
    assert_eq!(
        api.ok("/api/v1/state").await["cluster.servicesDef"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Writes say why they failed, and change nothing.
    let reply = api.post("/api/v1/service", &service("during")).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["code"], 503);
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("not saved") && message.contains("redis"),
        "{message}"
    );
    assert_eq!(api.get("/api/v1/service/during").await.status, 404);
    let health = api.get("/healthz").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["status"], "degraded");

    // Redis returns: writes resume.
    redis.restart();
    eventually("writes to work again", || async {
        (api.post("/api/v1/service", &service("after")).await.status == 201).then_some(())
    })
    .await;
    assert_eq!(api.ok("/healthz").await["status"], "ok");

    // And a restarted manager finds exactly what was acknowledged.
    assert!(manager.terminate());
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let names: BTreeSet<String> = manager
        .api()
        .ok("/api/v1/services")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["after".to_string(), "before".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_the_redis_store_keeps_every_acknowledged_service() {
    let Some(redis) =
        RedisServer::start("kill_9_on_the_redis_store_keeps_every_acknowledged_service")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let acked = common::burst_then_kill9(manager, 8, 100).await;
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
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
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(
        stats["services.totalOfRequests"].as_u64().unwrap(),
        services.len() as u64
    );
}

#[tokio::test]
async fn a_manager_started_before_redis_waits_for_it() {
    let Some(mut redis) = RedisServer::start("a_manager_started_before_redis_waits_for_it") else {
        return;
    };
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let manager = std::thread::spawn(move || {
        let dir = dir;
        let manager = Manager::start(dir.path(), &["--store", &url]);
        (manager, dir)
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    redis.restart();
    let (manager, _dir) = manager
        .join()
        .expect("the manager started once Redis answered");
    assert!(
        manager.log_text().contains("waiting for the store"),
        "{}",
        manager.log_text()
    );
    assert_eq!(manager.api().ok("/healthz").await["status"], "ok");
}

#[tokio::test]
async fn store_copy_moves_a_cluster_from_the_embedded_store_to_redis() {
    let Some(redis) =
        RedisServer::start("store_copy_moves_a_cluster_from_the_embedded_store_to_redis")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    for name in ["web", "db"] {
        assert_eq!(
            manager
                .api()
                .post("/api/v1/service?wait=0", &service(name))
                .await
                .status,
            201
        );
    }
    let before = manager.api().ok("/api/v1/services").await;
    let stats = manager.api().ok("/api/v1/stats").await;
    assert!(manager.terminate());

    let from = format!("embedded:{}", dir.path().display());
    let to = redis.url();
    let copy = |extra: &[&str]| {
        let mut args = vec![
            "store", "copy", "--from", &from, "--to", &to, "--name", "test",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(common::BIN)
            .args(&args)
            .output()
            .unwrap()
    };
    let out = copy(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 services"));
    // A second copy onto a target that holds the cluster is refused without --force.
    let again = copy(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let other = tempfile::tempdir().unwrap();
    let manager = Manager::start(other.path(), &["--store", &redis.url()]);
    assert_eq!(manager.api().ok("/api/v1/services").await, before);
    let copied = manager.api().ok("/api/v1/stats").await;
    assert_eq!(
        copied["services.totalOfRequests"],
        stats["services.totalOfRequests"]
    );
}
