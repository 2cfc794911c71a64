//! Real agents on the process driver against a real manager: services become real OS
//! processes, spread over the workers, replaced when killed, scaled, removed, and never
//! duplicated when an agent dies and comes back.

mod common;

use std::collections::BTreeMap;

use common::{eventually, ready_workers, unique_mark, workloads, Agent, Api, Manager, BIN};
use serde_json::{json, Value};

fn hello_service(mark: &str, replicas: u32) -> Value {
    json!({
        "service": "web",
        "command": [BIN, "hello", "--port", "0"],
        "env": {"TEST_MARK": mark},
        "replicas": replicas
    })
}

/// Waits until exactly `n` workload processes run and the manager reports `n` running.
async fn settle(api: &Api, mark: &str, n: usize) -> Vec<common::Workload> {
    eventually(&format!("{n} running processes"), || async {
        let procs = workloads(mark);
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let running = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (procs.len() == n && running == n).then_some(procs)
    })
    .await
}

fn per_worker(procs: &[common::Workload]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in procs {
        *counts.entry(p.worker.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_runs_as_real_processes_spread_replaced_scaled_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "workers");
    let api = manager.api();
    let _agents: Vec<Agent> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| Agent::start(&manager.url, name, "process", &[]))
        .collect();
    ready_workers(&api, 3).await;
    let mark = unique_mark("spread");

    // The POST answers once the replicas run, as the original's did.
    let reply = api.post("/api/v1/service", &hello_service(&mark, 5)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let procs = settle(&api, &mark, 5).await;
    let counts = per_worker(&procs);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [2, 2, 1],
        "{counts:?}"
    );
    let state = api.ok("/api/v1/state").await;
    let running: Vec<u64> = state["cluster.workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["serviceInstances"][0]["numOfRunningContainers"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(running, [2, 2, 1]);
    assert_eq!(
        api.ok("/api/v1/stats").await["services.totalOfContainers"],
        5
    );

    // A killed workload is reported and replaced.
    let victim = procs[0].clone();
    kill9(victim.pid);
    eventually("the killed process to be gone", || async {
        workloads(&mark)
            .iter()
            .all(|p| p.pid != victim.pid)
            .then_some(())
    })
    .await;
    let after = settle(&api, &mark, 5).await;
    assert!(after.iter().all(|p| p.pid != victim.pid));
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    let dead = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == victim.task.as_str())
        .expect("the killed task is kept in the history");
    assert_eq!(dead["state"], "failed", "{dead}");
    assert_eq!(dead["exit_code"], 137, "{dead}");

    // Scale to 2: three stop.
    let reply = api
        .send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 2}))
        .await;
    assert_eq!(reply.status, 200);
    settle(&api, &mark, 2).await;

    // Delete: all stop.
    assert_eq!(
        api.raw("DELETE", "/api/v1/service/web", None, None)
            .await
            .status,
        200
    );
    eventually("no processes left", || async {
        workloads(&mark).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_and_restarted_leaves_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "workers");
    let api = manager.api();
    let mut agents: Vec<Agent> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| Agent::start(&manager.url, name, "process", &[]))
        .collect();
    ready_workers(&api, 3).await;
    let mark = unique_mark("restart");
    assert_eq!(
        api.post("/api/v1/service", &hello_service(&mark, 3))
            .await
            .status,
        201
    );
    let before = settle(&api, &mark, 3).await;
    assert_eq!(per_worker(&before).len(), 3);

    // kill -9 the agent of w1: its workload dies with it, as on a lost node.
    agents.remove(0).kill9();
    let on_w1 = before.iter().find(|p| p.worker == "w1").unwrap().pid;
    eventually("w1's workload to die with its agent", || async {
        workloads(&mark)
            .iter()
            .all(|p| p.pid != on_w1)
            .then_some(())
    })
    .await;

    // The agent comes back: the slot runs again, exactly once.
    agents.push(Agent::start(&manager.url, "w1", "process", &[]));
    let after = settle(&api, &mark, 3).await;
    let mut tasks: Vec<&str> = after.iter().map(|p| p.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 3, "one process per task: {after:?}");
    // And it stays that way.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(workloads(&mark).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_only_service_waits_with_a_reason_on_process_workers() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "workers");
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;
    let body = json!({"service": "img", "image": "crccheck/hello-world", "replicas": 1});
    assert_eq!(api.post("/api/v1/service", &body).await.status, 201);
    let tasks = api.ok("/api/v1/tasks?service=img").await;
    let message = tasks[0]["message"].as_str().unwrap();
    assert_eq!(tasks[0]["state"], "pending");
    assert!(
        message.contains("process driver needs a command"),
        "{message}"
    );
}

/// SIGKILL, as the kernel's OOM killer or an operator would.
fn kill9(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}
