//! The manager on the Redis store, against a real redis-server: an outage is 503 on
//! writes and memory for reads, then recovery with nothing lost; `kill -9` keeps every
//! acknowledged service; a manager started before Redis waits for it. And what a hostile
//! but realistic operator does to it (issue 13): a FLUSHALL, a restart without
//! persistence, an evicting policy, a second manager with the same name — none loses an
//! acknowledged change silently.

mod common;
#[path = "../../store/tests/support/redis_server.rs"]
mod redis_server;

use std::collections::BTreeSet;

use common::{eventually, Api, Manager};
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

/// The names of the services the manager holds.
async fn names(api: &Api) -> BTreeSet<String> {
    api.ok("/api/v1/services")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect()
}

/// Creates `name`; whether it was acknowledged (201), panicking on anything but 201/503.
async fn create(api: &Api, name: &str) -> bool {
    let reply = api.post("/api/v1/service?wait=0", &service(name)).await;
    match reply.status {
        201 => true,
        503 => false,
        other => panic!("create {name}: {other} {}", reply.body),
    }
}

/// Waits until `/healthz` says degraded because of `why`; returns its message. (While
/// Redis restarts it says first that the store does not answer.)
async fn degraded(api: &Api, why: &str) -> String {
    eventually(&format!("/healthz to say degraded: {why}"), || async {
        let health = api.get("/healthz").await;
        let message = health.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (health.status == 503 && health.body["status"] == "degraded" && message.contains(why))
            .then_some(message)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_under_a_running_manager_is_reported_and_reseeded_without_loss() {
    let Some(redis) = RedisServer::start("a_flushall_under_a_running_manager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let api = manager.api();
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        assert!(create(&api, &format!("before-{i}")).await);
        acked.insert(format!("before-{i}"));
    }
    redis.cli(&["FLUSHALL"]);
    let why = degraded(&api, "no longer holds this manager's history").await;
    assert!(why.contains("mycluster store reseed"), "{why}");
    // Not one write is acknowledged on top of the emptied store.
    let reply = api.post("/api/v1/service?wait=0", &service("during")).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("not saved"),
        "{}",
        reply.body
    );
    // Only the lease, which the manager keeps while it waits for an operator.
    assert_eq!(redis.cli(&["KEYS", "*"]), "mycluster:test:lease");
    // Reads still come from memory.
    assert_eq!(names(&api).await, acked);

    // The operator writes the manager's state back.
    let (code, out, err) = common::cli(&manager.url, &["store", "reseed"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Reseeded") && out.contains("5 services"),
        "{out}"
    );
    assert_eq!(api.ok("/healthz").await["status"], "ok");
    assert!(create(&api, "after").await);
    acked.insert("after".into());

    // A restarted manager finds exactly what was acknowledged.
    assert!(manager.terminate());
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    assert_eq!(names(&manager.api()).await, acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_is_never_taken_for_the_cluster_silently() {
    let Some(mut redis) = RedisServer::start("a_redis_restarted_empty") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let api = manager.api();
    for i in 0..5 {
        assert!(create(&api, &format!("s{i}")).await);
    }
    // `redis-cli shutdown nosave`, and back on the same port with nothing.
    redis.restart_empty();
    degraded(&api, "the store holds nothing for this cluster").await;
    assert!(
        !create(&api, "during").await,
        "a write was acknowledged on an emptied store"
    );
    // Only the lease, which the manager keeps while it waits for an operator.
    assert_eq!(redis.cli(&["KEYS", "*"]), "mycluster:test:lease");

    // Restarted now, the manager would take the empty store as the cluster: it refuses,
    // since its data dir says the cluster lived there.
    manager.kill9();
    let (code, stderr) = common::manager_refused(dir.path(), &["--store", &redis.url()]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains("holds nothing for cluster 'test'"),
        "{stderr}"
    );
    assert!(stderr.contains("--init"), "{stderr}");
    // Asked for explicitly, an empty cluster starts.
    let manager = Manager::start(dir.path(), &["--store", &redis.url(), "--init"]);
    assert!(names(&manager.api()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_at_start_and_stops_a_running_manager_writing() {
    let Some(redis) = RedisServer::start("an_evicting_redis_is_refused") else {
        return;
    };
    redis.cli(&["CONFIG", "SET", "maxmemory", "3mb"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = common::manager_refused(dir.path(), &["--store", &redis.url()]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("maxmemory-policy allkeys-lru"), "{stderr}");
    assert!(stderr.contains("noeviction"), "{stderr}");

    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let api = manager.api();
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        assert!(create(&api, &format!("before-{i}")).await);
        acked.insert(format!("before-{i}"));
    }
    // Someone sets an evicting policy under the running manager: of 100 creates, none
    // may be acknowledged and then lost.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    for i in 0..100 {
        let name = format!("lru-{i}");
        if create(&api, &name).await {
            acked.insert(name);
        }
    }
    degraded(&api, "maxmemory-policy allkeys-lru").await;
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let (code, out, err) = common::cli(&manager.url, &["store", "reseed"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(manager.terminate());
    let manager = Manager::start(dir.path(), &["--store", &redis.url()]);
    let kept = names(&manager.api()).await;
    let lost: Vec<&String> = acked.difference(&kept).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_manager_with_the_same_name_on_one_redis_is_refused() {
    let Some(redis) = RedisServer::start("a_second_manager_on_one_redis") else {
        return;
    };
    let first_dir = tempfile::tempdir().unwrap();
    let first = Manager::start(first_dir.path(), &["--store", &redis.url()]);
    let api = first.api();
    assert!(create(&api, "web").await);
    let second_dir = tempfile::tempdir().unwrap();
    let (code, stderr) = common::manager_refused(second_dir.path(), &["--store", &redis.url()]);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains("is held by a manager on host")
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
    assert!(stderr.contains("--name test"), "{stderr}");
    // The first manager goes on, its cluster whole.
    assert!(create(&api, "db").await);
    assert_eq!(
        names(&api).await,
        BTreeSet::from(["db".to_string(), "web".to_string()])
    );
    assert_eq!(api.ok("/healthz").await["status"], "ok");
}
