//! One agent per worker name (issue 13). Against the real binary on the process driver: a
//! second agent started under a live worker's name is refused and exits, naming the
//! worker and the address of the agent that holds it, and starts nothing — the first
//! keeps its workloads and its heartbeats. Once the first is gone, a new agent takes the
//! name over and runs the worker's replicas, once. And the same rules driven by hand:
//! who may register, and which agent instance's heartbeats, long-polls and reports count.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{eventually, ready_workers, unique_mark, workloads, Agent, Api, Manager, DEADLINE};
use serde_json::{json, Value};

fn sleepers(mark: &str, replicas: u32) -> Value {
    json!({
        "service": "sleepy",
        "command": ["sleep", "86399"],
        "env": {"TEST_MARK": mark},
        "replicas": replicas
    })
}

/// The pids of the workload processes, once exactly `n` run and the manager reports `n`
/// of the service's tasks running.
async fn settled(api: &Api, mark: &str, n: usize) -> BTreeSet<i32> {
    eventually(&format!("{n} running processes"), || async {
        let procs = workloads(mark);
        let tasks = api.ok("/api/v1/tasks?service=sleepy").await;
        let running = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .count();
        (procs.len() == n && running == n).then(|| procs.iter().map(|p| p.pid).collect())
    })
    .await
}

fn pids(mark: &str) -> BTreeSet<i32> {
    workloads(mark).iter().map(|p| p.pid).collect()
}

/// The last line an agent that exited printed: the one-line `error: ...` it ends with
/// (waited for, since its output is read on another thread).
async fn last_line(agent: &Agent) -> String {
    eventually("the agent's closing error line", || async {
        let log = agent.log_text();
        log.lines()
            .last()
            .filter(|line| line.starts_with("error: "))
            .map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_a_live_workers_name_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "identity");
    let api = manager.api();
    let mut first = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;
    let held_at = api.ok("/api/v1/workers/w1").await["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mark = unique_mark("identity");
    let reply = api.post("/api/v1/service", &sleepers(&mark, 4)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let first_pids = settled(&api, &mark, 4).await;
    assert!(workloads(&mark).iter().all(|p| p.worker == "w1"));

    // A second agent under the same name: refused until it gives up, and all the while
    // exactly the first agent's four processes run.
    let mut second = Agent::start(&manager.url, "w1", "process", &[]);
    let started = Instant::now();
    let status = loop {
        let now = pids(&mark);
        assert_eq!(
            now,
            first_pids,
            "only the first agent's 4 processes may run while the second tries to join; \
             second agent's log:\n{}",
            second.log_text()
        );
        let worker = api.ok("/api/v1/workers/w1").await;
        assert_eq!(worker["address"], held_at.as_str(), "{worker}");
        if let Some(status) = second.exit_status() {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the second agent did not give up within {DEADLINE:?}:\n{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}: {}", second.log_text());
    let last = last_line(&second).await;
    assert!(
        last.starts_with("error: ") && last.contains("w1") && last.contains(&held_at),
        "the agent's last line names the worker and the address holding it: {}",
        second.log_text()
    );

    // After: the first agent is untouched and still beats.
    assert_eq!(pids(&mark), first_pids);
    assert!(first.exit_status().is_none(), "{}", first.log_text());
    eventually("a heartbeat from the first agent", || async {
        let worker = api.ok("/api/v1/workers/w1").await;
        (worker["status"] == "ready"
            && worker["address"] == held_at.as_str()
            && worker["last_heartbeat_age"]
                .as_f64()
                .is_some_and(|age| age < 0.5))
        .then_some(())
    })
    .await;
    assert!(
        !first.log_text().contains("superseded"),
        "{}",
        first.log_text()
    );

    // The first agent dies (and its processes with it); a new one takes the name over
    // once the first has gone silent, and runs the four replicas itself.
    first.kill9();
    eventually("the first agent's processes to die with it", || async {
        pids(&mark).is_disjoint(&first_pids).then_some(())
    })
    .await;
    let mut third = Agent::start(&manager.url, "w1", "process", &[]);
    let taken_over = settled(&api, &mark, 4).await;
    assert!(taken_over.is_disjoint(&first_pids));
    assert!(workloads(&mark).iter().all(|p| p.worker == "w1"));
    let address = eventually("the new agent's address", || async {
        third.health_address()
    })
    .await;
    let worker = api.ok("/api/v1/workers/w1").await;
    assert_eq!(worker["address"], address.as_str(), "{worker}");
    assert_ne!(address, held_at);
    assert_eq!(worker["status"], "ready", "{worker}");
    assert!(third.exit_status().is_none(), "{}", third.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_taken_over_while_silent_exits_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "identity");
    let api = manager.api();
    let mut first = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;
    let mark = unique_mark("superseded");
    let reply = api.post("/api/v1/service", &sleepers(&mark, 2)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let first_pids = settled(&api, &mark, 2).await;

    // The first agent freezes (as over a network partition) until the manager takes it
    // for gone; a new agent takes the name over and runs the replicas itself.
    first.signal("STOP");
    eventually("w1 to fall silent", || async {
        let worker = api.ok("/api/v1/workers/w1").await;
        worker["last_heartbeat_age"]
            .as_f64()
            .is_some_and(|age| age > 3.5)
            .then_some(())
    })
    .await;
    let mut second = Agent::start(&manager.url, "w1", "process", &[]);
    let address = eventually("the new agent's address", || async {
        second.health_address()
    })
    .await;
    eventually("the new agent to hold w1", || async {
        let worker = api.ok("/api/v1/workers/w1").await;
        (worker["address"] == address.as_str()).then_some(())
    })
    .await;
    let taken_over = settled(&api, &mark, 2).await;
    assert!(taken_over.is_disjoint(&first_pids));

    // The first wakes: it is told it was superseded and exits, and starts nothing.
    first.signal("CONT");
    let status = eventually("the superseded agent to exit", || {
        let status = first.exit_status();
        async move { status }
    })
    .await;
    assert!(!status.success(), "{status}: {}", first.log_text());
    let last = last_line(&first).await;
    assert!(
        last.starts_with("error: superseded: worker w1") && last.contains(&address),
        "the agent's last line says who holds w1 now: {}",
        first.log_text()
    );
    assert_eq!(pids(&mark), taken_over);
    let worker = api.ok("/api/v1/workers/w1").await;
    assert_eq!(worker["address"], address.as_str(), "{worker}");
    assert_eq!(worker["status"], "ready", "{worker}");
    assert!(second.exit_status().is_none(), "{}", second.log_text());
}

/// The registration an agent instance sends.
fn registration(instance: Option<&str>, port: u16) -> Value {
    let mut body = json!({"name": "w1", "address": format!("127.0.0.1:{port}"), "driver": "sim"});
    if let Some(instance) = instance {
        body["instance"] = json!(instance);
    }
    body
}

async fn status_of(api: &Api, method: &str, path: &str) -> (u16, Value) {
    let reply = match method {
        "POST" if path.contains("/status") => api.post(path, &json!({"tasks": []})).await,
        _ => api.raw(method, path, None, None).await,
    };
    (reply.status, reply.body)
}

#[tokio::test]
async fn a_name_is_held_by_one_agent_instance_until_it_is_down_or_silent() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let reply = api
        .post("/api/v1/workers", &registration(Some("aaaa1111"), 7001))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["instance"], "aaaa1111");

    // Live: another instance, or a registration naming none, is refused with where the
    // name is held; the holder itself may register again (as after a 404).
    for other in [Some("bbbb2222"), None] {
        let reply = api
            .post("/api/v1/workers", &registration(other, 7002))
            .await;
        assert_eq!(reply.status, 409, "{}", reply.body);
        assert_eq!(reply.body["code"], 409);
        let message = reply.body["message"].as_str().unwrap();
        assert!(
            message.contains("w1") && message.contains("127.0.0.1:7001"),
            "{message}"
        );
    }
    let again = api
        .post("/api/v1/workers", &registration(Some("aaaa1111"), 7001))
        .await;
    assert_eq!(again.status, 201, "{}", again.body);

    // Only the holder's heartbeats, long-polls and reports count.
    let calls = [
        ("POST", "/api/v1/workers/w1/heartbeat"),
        ("GET", "/api/v1/workers/w1/tasks"),
        ("POST", "/api/v1/workers/w1/status"),
    ];
    for (method, path) in calls {
        let (status, body) = status_of(&api, method, &format!("{path}?instance=aaaa1111")).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        for query in ["?instance=bbbb2222", ""] {
            let (status, body) = status_of(&api, method, &format!("{path}{query}")).await;
            assert_eq!(status, 409, "{method} {path}{query}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("aaaa1111"), "{message}");
        }
        let (status, body) = status_of(&api, method, &format!("{path}?instance=no%20way")).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
    }

    // Down: another instance takes the name over, and the old one is superseded.
    let down = api.raw("POST", "/api/v1/workers/w1/down", None, None).await;
    assert_eq!(down.status, 200, "{}", down.body);
    let reply = api
        .post("/api/v1/workers", &registration(Some("bbbb2222"), 7002))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["status"], "ready");
    assert_eq!(reply.body["address"], "127.0.0.1:7002");
    for (method, path) in calls {
        let (status, body) = status_of(&api, method, &format!("{path}?instance=aaaa1111")).await;
        assert_eq!(status, 409, "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("superseded")
                && message.contains("bbbb2222")
                && message.contains("127.0.0.1:7002"),
            "{message}"
        );
    }
    let worker = api.ok("/api/v1/workers/w1").await;
    assert_eq!(worker["instance"], "bbbb2222", "{worker}");
    assert_eq!(worker["address"], "127.0.0.1:7002", "{worker}");

    // Silent past the liveness window (3 s at one heartbeat a second): taken over too.
    eventually("w1 to fall silent", || async {
        let worker = api.ok("/api/v1/workers/w1").await;
        worker["last_heartbeat_age"]
            .as_f64()
            .is_some_and(|age| age > 3.5)
            .then_some(())
    })
    .await;
    let reply = api
        .post("/api/v1/workers", &registration(Some("cccc3333"), 7003))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["instance"], "cccc3333");
}
