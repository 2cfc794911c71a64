//! The monitor against real agents on the process driver: a dead worker's replicas move
//! to the others within a deadline, the stats count it, the log says it in the original's
//! words, and a worker that comes back causes no duplicate.

mod common;

use std::collections::BTreeMap;

use common::{
    eventually, unique_mark, workloads, Agent, Api, Manager, Monitor, BIN, TEST_JOIN_TOKEN,
};
use serde_json::{json, Value};

fn service(mark: &str, replicas: u32) -> Value {
    json!({
        "service": "web",
        "command": [BIN, "hello", "--port", "0"],
        "env": {"TEST_MARK": mark},
        "replicas": replicas
    })
}

async fn statuses(api: &Api) -> BTreeMap<String, String> {
    api.ok("/api/v1/workers")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker"].as_str().unwrap().to_string(),
                w["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn ready(api: &Api, names: &[&str]) {
    eventually(&format!("{names:?} ready"), || async {
        let all = statuses(api).await;
        names
            .iter()
            .all(|n| all.get(*n).map(String::as_str) == Some("ready"))
            .then_some(())
    })
    .await;
}

/// Exactly `n` workload processes, all reported running, none on `not_on`.
async fn running_elsewhere(api: &Api, mark: &str, n: usize, not_on: &str) -> Vec<common::Workload> {
    eventually(&format!("{n} running, none on {not_on}"), || async {
        let procs = workloads(mark);
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let reported = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (procs.len() == n && reported == n && procs.iter().all(|p| p.worker != not_on))
            .then_some(procs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_is_found_and_its_replicas_run_elsewhere_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "monitor");
    let api = manager.api();
    let monitor = Monitor::start(&manager.url);
    let mut agents: BTreeMap<&str, Agent> = ["w1", "w2", "w3", "w4"]
        .into_iter()
        .map(|n| (n, Agent::start(&manager.url, n, "process", &[])))
        .collect();
    ready(&api, &["w1", "w2", "w3", "w4"]).await;
    let mark = unique_mark("failover");
    assert_eq!(
        api.post("/api/v1/service", &service(&mark, 3)).await.status,
        201
    );
    let before = running_elsewhere(&api, &mark, 3, "w4").await;
    assert!(before.iter().any(|p| p.worker == "w1"), "{before:?}");

    // w1 dies (its agent and, with it, its workload).
    agents.remove("w1").unwrap().kill9();
    let after = running_elsewhere(&api, &mark, 3, "w1").await;
    assert!(
        after.iter().any(|p| p.worker == "w4"),
        "the spread puts it on the idle w4: {after:?}"
    );
    assert_eq!(statuses(&api).await["w1"], "down");
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 1);
    assert_eq!(stats["containers.relocated"], 1);
    let log = eventually("the monitor's log", || async {
        let log = monitor.log_text();
        log.contains("will be deployed to w4").then_some(log)
    })
    .await;
    assert!(
        log.contains("{monitor} INFO - Starting monitor agent"),
        "{log}"
    );
    assert!(
        log.contains("{monitor} ERROR - Worker w1 was not found... relocating its services"),
        "{log}"
    );
    assert!(
        log.contains("{monitor} INFO - New web container of service web will be deployed to w4"),
        "{log}"
    );

    // w1 comes back: ready again, and still exactly three replicas.
    agents.insert("w1", Agent::start(&manager.url, "w1", "process", &[]));
    ready(&api, &["w1"]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let settled = running_elsewhere(&api, &mark, 3, "nobody").await;
    let mut tasks: Vec<&str> = settled.iter().map(|p| p.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 3, "no duplicates: {settled:?}");
    assert!(monitor.log_text().contains("Worker w1 is back and ready"));
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_worker_dead_tasks_wait_and_the_first_to_return_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "monitor");
    let api = manager.api();
    let monitor = Monitor::start(&manager.url);
    let agents: Vec<Agent> = ["w1", "w2"]
        .into_iter()
        .map(|n| Agent::start(&manager.url, n, "process", &[]))
        .collect();
    ready(&api, &["w1", "w2"]).await;
    let mark = unique_mark("alldead");
    assert_eq!(
        api.post("/api/v1/service", &service(&mark, 3)).await.status,
        201
    );
    running_elsewhere(&api, &mark, 3, "nobody").await;

    for agent in agents {
        agent.kill9();
    }
    let pending = eventually("every task pending with a reason", || async {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let active: Vec<Value> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["desired_state"] == "running" && t["state"] != "lost" && t["state"] != "failed"
            })
            .cloned()
            .collect();
        (active.len() == 3 && active.iter().all(|t| t["state"] == "pending")).then_some(active)
    })
    .await;
    for task in &pending {
        assert_eq!(
            task["message"], "no worker can take it: 2 are down",
            "{task}"
        );
    }
    assert!(workloads(&mark).is_empty());
    eventually("the monitor to say no worker is left", || async {
        monitor
            .log_text()
            .contains("No healthy worker left for service web")
            .then_some(())
    })
    .await;

    // The manager restarts meanwhile: nothing is lost.
    drop(monitor);
    let name = manager.name.clone();
    manager.kill9();
    let manager = Manager::start_named(dir.path(), &name);
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    assert_eq!(
        statuses(&api).await.values().collect::<Vec<_>>(),
        ["down", "down"]
    );

    let _back = Agent::start(&manager.url, "w2", "process", &[]);
    let procs = running_elsewhere(&api, &mark, 3, "w1").await;
    assert!(procs.iter().all(|p| p.worker == "w2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_dead_at_once_are_both_declared_and_relocated() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "rack");
    let api = manager.api();
    let monitor = Monitor::start(&manager.url);
    let names = ["w1", "w2", "w3", "w4"];
    let mut agents: BTreeMap<&str, Agent> = names
        .into_iter()
        .map(|n| (n, Agent::start(&manager.url, n, "process", &[])))
        .collect();
    ready(&api, &names).await;
    let mark = unique_mark("rack");
    assert_eq!(
        api.post("/api/v1/service", &service(&mark, 4)).await.status,
        201
    );
    running_elsewhere(&api, &mark, 4, "nobody").await;

    // A rack goes: w1 and w2 together.
    agents.remove("w1").unwrap().kill9();
    agents.remove("w2").unwrap().kill9();
    let after = eventually("4 running on w3 and w4", || async {
        let procs = workloads(&mark);
        let running = api
            .ok("/api/v1/tasks?service=web")
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (procs.len() == 4
            && running == 4
            && procs.iter().all(|p| p.worker == "w3" || p.worker == "w4"))
        .then_some(procs)
    })
    .await;
    assert_eq!(after.len(), 4, "{after:?}");
    let all = statuses(&api).await;
    assert_eq!((all["w1"].as_str(), all["w2"].as_str()), ("down", "down"));
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 2);
    // Declared in one verdict, each worker relocates its own task. The monitor may also
    // see one silent a beat before the other (their heartbeats need not be in step):
    // then the first one's replacement can land on the second (still ready, first by
    // name), which relocates it again.
    let relocated = stats["containers.relocated"].as_u64().unwrap();
    assert!(relocated == 2 || relocated == 3, "{stats}");
    let total_from = |log: &str, worker: &str| -> Option<u64> {
        let line = log
            .lines()
            .find(|l| l.ends_with(&format!("containers relocated from {worker}")))?;
        line.split("Total of ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    };
    let log = eventually("both verdicts in the monitor's log", || async {
        let log = monitor.log_text();
        let totals = (total_from(&log, "w1")?, total_from(&log, "w2")?);
        (totals.0 + totals.1 == relocated).then_some(log)
    })
    .await;
    for worker in ["w1", "w2"] {
        assert!(
            log.contains(&format!(
                "{{monitor}} ERROR - Worker {worker} was not found... relocating its services"
            )),
            "{log}"
        );
    }
}

/// Registers a worker the way an agent does, without an agent behind it; answers the
/// worker's credential, with which its agent speaks from then on.
async fn register(manager: &Manager, name: &str) -> String {
    let agent = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    let body = json!({"name": name, "address": "127.0.0.1:9", "driver": "sim"});
    let reply = agent.post("/api/v1/workers", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["credential"]
        .as_str()
        .expect("a credential")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_are_declared_down_in_one_request_and_bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One heartbeat a second in all: three workers are asked to beat every 3 s.
    let manager = Manager::start(dir.path(), &["--max-heartbeats-per-second", "1"]);
    let api = manager.api();
    let mut credentials = Vec::new();
    for name in ["a", "b", "c"] {
        credentials.push(register(&manager, name).await);
    }
    let agent = Api::with_token(&manager.url, Some(&credentials[0]));
    let beat = agent.post("/api/v1/workers/a/heartbeat", &json!({})).await;
    assert_eq!(beat.status, 200, "{}", beat.body);
    assert_eq!(beat.body["heartbeat_interval"], 3.0);
    let worker = api.ok("/api/v1/workers/a").await;
    assert_eq!(worker["heartbeat_interval"], 3.0);

    let spec = json!({"service": "web", "image": "img", "replicas": 6});
    let created = api.post("/api/v1/service?wait=0", &spec).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let before = api.ok("/api/v1/tasks").await;

    // Refused as a whole: nothing changes.
    for (body, status) in [
        (json!({"workers": ["a", "nobody"]}), 404),
        (json!({"workers": []}), 400),
        (json!({"workers": "a"}), 400),
        (json!({"names": ["a"]}), 400),
    ] {
        let reply = api.post("/api/v1/workers/_down", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.body["code"], status, "{}", reply.body);
    }
    assert_eq!(api.ok("/api/v1/tasks").await, before);
    assert_eq!(api.ok("/api/v1/stats").await["workers.failures"], 0);

    // a just beat: with a long silence required it is skipped, b and c go down.
    let reply = api
        .post(
            "/api/v1/workers/_down?silent_for=60s",
            &json!({"workers": ["a", "b", "c", "b"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["skipped"][0]["worker"], "a", "{}", reply.body);
    // Registered moments ago, b and c were heard from too.
    assert_eq!(reply.body["skipped"].as_array().unwrap().len(), 3);
    assert_eq!(reply.body["down"], json!([]));

    let reply = api
        .post(
            "/api/v1/workers/_down",
            &json!({"workers": ["b", "c", "b"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let down = reply.body["down"].as_array().unwrap();
    assert_eq!(down.len(), 2, "{}", reply.body);
    let mut moved = 0;
    for verdict in down {
        assert_eq!(verdict["status"], "down");
        for relocation in verdict["relocated"].as_array().unwrap() {
            assert_eq!(relocation["worker"], "a", "{relocation}");
            assert!(relocation["replacement"].is_string(), "{relocation}");
            moved += 1;
        }
    }
    assert_eq!(moved, 4, "b and c held 4 of the 6: {}", reply.body);
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["workers.failures"], 2);
    assert_eq!(stats["containers.relocated"], 4);
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    let on_a = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "running" && t["worker"] == "a")
        .count();
    assert_eq!(on_a, 6);
}
