//! The endpoints agents use, driven by hand against the real manager: register,
//! heartbeat, long-poll for assigned tasks, report what runs; and what the original's
//! state document shows as a result.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Manager};
use serde_json::{json, Value};

async fn register(api: &Api, name: &str) {
    let body = json!({"name": name, "address": format!("127.0.0.1:{}", 7000)});
    let reply = api.post("/api/v1/workers", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

async fn poll(api: &Api, worker: &str, query: &str) -> Value {
    api.ok(&format!("/api/v1/workers/{worker}/tasks{query}"))
        .await
}

/// Reports every task of the list in `state`, as an agent would.
async fn report_all(api: &Api, worker: &str, state: &str) -> Value {
    let list = poll(api, worker, "").await;
    let reports: Vec<Value> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"id": t["id"], "state": state, "container_id": format!("c-{}", t["id"].as_str().unwrap())}))
        .collect();
    let reply = api
        .post(
            &format!("/api/v1/workers/{worker}/status"),
            &json!({"tasks": reports}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

fn running_per_worker(state: &Value) -> Vec<(String, u64)> {
    state["cluster.workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let n = w["serviceInstances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["numOfRunningContainers"].as_u64().unwrap())
                .sum();
            (w["worker"].as_str().unwrap().to_string(), n)
        })
        .collect()
}

#[tokio::test]
async fn replicas_spread_and_running_counts_what_agents_report() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    for worker in ["test_worker_3", "test_worker_1", "test_worker_2"] {
        register(&api, worker).await;
    }
    let body = json!({"service": "web", "image": "mycluster/hello-world", "replicas": 5});
    let reply = api.post("/api/v1/service?wait=0", &body).await;
    assert_eq!(reply.status, 201);
    // Placed but not yet reported running: nothing counts as running.
    assert_eq!(reply.body["cluster.numOfWorkers"], 3);
    let names: Vec<&str> = reply.body["cluster.workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["test_worker_1", "test_worker_2", "test_worker_3"],
        "workers in name order"
    );
    assert!(running_per_worker(&reply.body).iter().all(|(_, n)| *n == 0));

    // Spread: 2/2/1, ties broken by name.
    let mut assigned = Vec::new();
    for worker in ["test_worker_1", "test_worker_2", "test_worker_3"] {
        let list = poll(&api, worker, "").await;
        assigned.push(list["tasks"].as_array().unwrap().len());
        assert!(list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "assigned"));
    }
    assert_eq!(assigned, [2, 2, 1]);

    for worker in ["test_worker_1", "test_worker_2", "test_worker_3"] {
        let reply = report_all(&api, worker, "running").await;
        assert_eq!(reply["ignored"], json!([]));
    }
    let state = api.ok("/api/v1/state").await;
    assert_eq!(
        running_per_worker(&state),
        [
            ("test_worker_1".to_string(), 2),
            ("test_worker_2".to_string(), 2),
            ("test_worker_3".to_string(), 1)
        ]
    );
    let instance = &state["cluster.workers"][0]["serviceInstances"][0];
    assert_eq!(instance["image"], "mycluster/hello-world");
    assert_eq!(instance["numOfRunningContainers"], 2);
    assert_eq!(
        api.ok("/api/v1/stats").await["services.totalOfContainers"],
        5
    );

    // Reporting running twice does not count twice.
    report_all(&api, "test_worker_1", "running").await;
    assert_eq!(
        api.ok("/api/v1/stats").await["services.totalOfContainers"],
        5
    );

    let tasks = api.ok("/api/v1/tasks?service=web").await;
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["state"], "running");
        assert_eq!(task["desired_state"], "running");
        assert!(task["container_id"].as_str().unwrap().starts_with("c-"));
        assert!(task["worker"].as_str().unwrap().starts_with("test_worker_"));
    }
    let workers = api.ok("/api/v1/workers").await;
    assert_eq!(workers.as_array().unwrap().len(), 3);
    assert_eq!(workers[0]["worker"], "test_worker_1");
    assert_eq!(workers[0]["status"], "ready");
    assert_eq!(workers[0]["running"], 2);
}

#[tokio::test]
async fn a_new_worker_takes_pending_tasks_with_their_reason_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let body = json!({"service": "web", "image": "redis", "replicas": 2});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["state"], "pending");
        assert!(
            task["message"].as_str().unwrap().contains("no worker"),
            "{task}"
        );
    }
    register(&api, "w1").await;
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    for task in tasks.as_array().unwrap() {
        assert_eq!(task["state"], "assigned", "{task}");
        assert_eq!(task["worker"], "w1");
    }
}

#[tokio::test]
async fn long_poll_waits_for_a_change_and_returns_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    register(&api, "w1").await;
    let first = poll(&api, "w1", "").await;
    let index = first["index"].as_u64().unwrap();
    assert_eq!(first["tasks"], json!([]));

    // Nothing changes: the poll holds until `wait` runs out, then answers the same list.
    let started = Instant::now();
    let same = poll(&api, "w1", &format!("?index={index}&wait=300ms")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(same["tasks"], json!([]));

    // A change for this worker wakes the poll before its wait runs out.
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move { poll(&api, "w1", &format!("?index={index}&wait=60s")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = json!({"service": "web", "image": "redis", "replicas": 1});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    let woken = tokio::time::timeout(Duration::from_secs(50), waiting)
        .await
        .expect("the poll answered on the change, not after 60 s")
        .unwrap();
    assert!(woken["index"].as_u64().unwrap() > index);
    assert_eq!(woken["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(woken["tasks"][0]["desired_state"], "running");
}

#[tokio::test]
async fn scale_down_and_delete_reach_the_agent_as_desired_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    register(&api, "w1").await;
    let body = json!({"service": "web", "image": "redis", "replicas": 3});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    report_all(&api, "w1", "running").await;

    let reply = api
        .send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 1}))
        .await;
    assert_eq!(reply.status, 200);
    let list = poll(&api, "w1", "").await;
    let mut desired: Vec<(u64, String)> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["slot"].as_u64().unwrap(),
                t["desired_state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    desired.sort();
    assert_eq!(
        desired,
        [
            (0, "running".into()),
            (1, "shutdown".into()),
            (2, "shutdown".into())
        ]
    );
    // The agent stops them; they leave its list.
    let stopped: Vec<Value> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "shutdown")
        .map(|t| json!({"id": t["id"], "state": "shutdown"}))
        .collect();
    api.post("/api/v1/workers/w1/status", &json!({"tasks": stopped}))
        .await;
    assert_eq!(
        poll(&api, "w1", "").await["tasks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        api.raw("DELETE", "/api/v1/service/web", None, None)
            .await
            .status,
        200
    );
    let list = poll(&api, "w1", "").await;
    assert_eq!(list["tasks"][0]["desired_state"], "shutdown");
}

#[tokio::test]
async fn a_failed_task_is_replaced_and_backward_reports_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    register(&api, "w1").await;
    let body = json!({"service": "web", "image": "redis", "replicas": 1});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    report_all(&api, "w1", "running").await;
    let first = poll(&api, "w1", "").await["tasks"][0]["id"].clone();

    let crash =
        json!({"tasks": [{"id": first, "state": "failed", "exit_code": 137, "error": "killed"}]});
    let reply = api.post("/api/v1/workers/w1/status", &crash).await;
    assert_eq!(reply.body["ignored"], json!([]));
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    let failed = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == first)
        .unwrap();
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["exit_code"], 137);
    assert_eq!(failed["error"], "killed");
    // A first crash is replaced at once (the backoff starts at the second in a row).
    let live = common::eventually("the replacement", || async {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let live: Vec<Value> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["desired_state"] == "running" && t["state"] != "failed")
            .cloned()
            .collect();
        (live.len() == 1).then_some(live)
    })
    .await;
    assert_ne!(live[0]["id"], first);
    // Crash-loop backoff: the second crash in a row says when the slot restarts.
    let second = live[0]["id"].clone();
    let crash =
        json!({"tasks": [{"id": second, "state": "failed", "exit_code": 137, "error": "killed"}]});
    api.post("/api/v1/workers/w1/status", &crash).await;
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    let failed = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == second)
        .unwrap();
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("killed; restarts 1s after the failure (failure 2 in a row)"),
        "{message}"
    );

    // A finished task cannot come back to life, and unknown ids are ignored with a reason.
    let backwards = json!({"tasks": [
        {"id": first, "state": "running"},
        {"id": "nope", "state": "running"}
    ]});
    let reply = api.post("/api/v1/workers/w1/status", &backwards).await;
    let ignored = reply.body["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 2, "{}", reply.body);
    assert!(ignored
        .iter()
        .all(|i| !i["why"].as_str().unwrap().is_empty()));
}

#[tokio::test]
async fn heartbeats_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    register(&api, "w1").await;
    let reply = api
        .raw("POST", "/api/v1/workers/w1/heartbeat", None, None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["status"], "ready");
    let worker = api.ok("/api/v1/workers/w1").await;
    assert!(worker["last_heartbeat_age"].as_f64().unwrap() < 30.0);
}
