//! The event stream end to end, on a cluster of process agents with a monitor: one client
//! follows without a break while services are created and scaled and a worker is killed
//! (`kill -9` of its agent; the monitor declares it down); another hangs up after an
//! arbitrary number of lines (mid-commit too) and resumes by index each time. Both must
//! have read exactly the history the manager holds — nothing missed, nothing repeated —
//! with one `task_relocated` per count of `containers.relocated`. Also: Server-Sent
//! Events resume from `Last-Event-ID`, a bad topic is 400, an index older than the
//! history is 410, and `mycluster events --index N` prints what follows N and exits 0.

mod common;

use std::sync::{Arc, Mutex};

use common::{cli, eventually, Agent, Api, Manager, Monitor, BIN, TEST_JOIN_TOKEN, TEST_TOKEN};
use mycluster_client::{Client, EventQuery};
use mycluster_core::events::Event;
use mycluster_core::wire::EventDoc;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

type Got = Arc<Mutex<Vec<EventDoc>>>;

fn client(url: &str) -> Client {
    Client::new(url, std::time::Duration::from_secs(30))
        .expect("client")
        .with_token(Some(TEST_TOKEN.into()))
}

fn service(name: &str, replicas: u32) -> Value {
    json!({
        "service": name,
        "command": [BIN, "hello", "--port", "0"],
        "replicas": replicas
    })
}

/// Follows from the start of the history, never hanging up.
async fn follow(client: Client, got: Got, stop: CancellationToken) {
    let query = EventQuery {
        index: None,
        topics: Vec::new(),
        follow: true,
    };
    let mut stream = client.events(&query).await.expect("the stream opens");
    loop {
        tokio::select! {
            next = stream.next() => match next.expect("the stream goes on") {
                Some(event) => got.lock().unwrap().push(event),
                None => return,
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Follows, hanging up after 1 to 5 lines each time and resuming after the last index
/// read.
async fn follow_and_hang_up(client: Client, got: Got, stop: CancellationToken) -> usize {
    let mut index = None;
    let mut connections = 0;
    while !stop.is_cancelled() {
        let query = EventQuery {
            index,
            topics: Vec::new(),
            follow: true,
        };
        let mut stream = client.events(&query).await.expect("the stream opens");
        connections += 1;
        let lines = 1 + rand::random::<u32>() % 5;
        for _ in 0..lines {
            tokio::select! {
                next = stream.next() => match next.expect("the stream goes on") {
                    Some(event) => {
                        index = Some(event.index);
                        got.lock().unwrap().push(event);
                    }
                    None => break,
                },
                _ = stop.cancelled() => return connections,
            }
        }
        // Dropped here: the connection closes wherever the manager was in its answer.
    }
    connections
}

/// The whole history the manager holds now (`follow=false`).
async fn history(client: &Client, index: Option<u64>) -> Vec<EventDoc> {
    let query = EventQuery {
        index,
        topics: Vec::new(),
        follow: false,
    };
    let mut stream = client.events(&query).await.expect("the history");
    let mut out = Vec::new();
    while let Some(event) = stream.next().await.expect("the history reads") {
        out.push(event);
    }
    out
}

async fn running(api: &Api, service: &str, n: usize, not_on: Option<&str>) {
    eventually(&format!("{n} running of {service}"), || async {
        let tasks = api.ok(&format!("/api/v1/tasks?service={service}")).await;
        let live: Vec<&Value> = tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
            .collect();
        (live.len() == n && live.iter().all(|t| not_on.is_none_or(|w| t["worker"] != w)))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_miss_nothing_and_repeat_nothing_across_hang_ups_and_a_lost_worker() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "events");
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut agents: Vec<Agent> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|n| Agent::start(&manager.url, n, "process", &[]))
        .collect();
    common::ready_workers(&api, 3).await;

    let stop = CancellationToken::new();
    let steady: Got = Arc::default();
    let hanging: Got = Arc::default();
    let steady_reader = tokio::spawn(follow(client(&manager.url), steady.clone(), stop.clone()));
    let hanging_reader = tokio::spawn(follow_and_hang_up(
        client(&manager.url),
        hanging.clone(),
        stop.clone(),
    ));

    assert_eq!(
        api.post("/api/v1/service", &service("web", 3)).await.status,
        201
    );
    running(&api, "web", 3, None).await;
    let scaled = api
        .send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 5}))
        .await;
    assert_eq!(scaled.status, 200, "{}", scaled.body);
    running(&api, "web", 5, None).await;

    // w1 dies; the monitor declares it down and its replicas run elsewhere.
    let w1 = agents.remove(0);
    assert_eq!(w1.name, "w1");
    w1.kill9();
    running(&api, "web", 5, Some("w1")).await;
    assert_eq!(
        api.post("/api/v1/service", &service("api", 2)).await.status,
        201
    );
    running(&api, "api", 2, None).await;

    let stats = api.ok("/api/v1/stats").await;
    let relocated = stats["containers.relocated"].as_u64().expect("a count");
    assert!(relocated >= 1, "{stats}");

    // Both readers catch up with the history held now, and have read exactly it.
    let all = history(&client(&manager.url), None).await;
    let last = all.last().expect("events").index;
    for (name, got) in [("steady", &steady), ("hanging", &hanging)] {
        eventually(&format!("the {name} reader at {last}"), || async {
            let got = got.lock().unwrap();
            got.last().is_some_and(|e| e.index >= last).then_some(())
        })
        .await;
        let got: Vec<EventDoc> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.index <= last)
            .cloned()
            .collect();
        assert_eq!(got.len(), all.len(), "{name}: as many events as held");
        assert!(got == all, "{name}: the same events, in order");
    }
    stop.cancel();
    steady_reader.await.unwrap();
    let connections = hanging_reader.await.unwrap();
    assert!(
        connections > 5,
        "it hung up and resumed ({connections} connections)"
    );

    // What the stream said: both services, the scale, w1 down, every relocation.
    let says = |f: &dyn Fn(&Event) -> bool| all.iter().filter(|e| f(&e.event)).count();
    assert_eq!(
        says(&|e| matches!(e, Event::ServiceCreated { .. })),
        2,
        "{all:#?}"
    );
    assert!(
        says(&|e| matches!(
            e,
            Event::ServiceUpdated {
                previous_replicas: Some(3),
                replicas: 5,
                ..
            }
        )) == 1
    );
    assert_eq!(
        says(&|e| matches!(
            e,
            Event::WorkerStatus { worker, status, .. }
                if worker == "w1" && status.as_str() == "down"
        )),
        1
    );
    let relocations: Vec<&EventDoc> = all
        .iter()
        .filter(|e| matches!(e.event, Event::TaskRelocated { .. }))
        .collect();
    assert_eq!(relocations.len() as u64, relocated, "{relocations:#?}");
    for doc in &relocations {
        let Event::TaskRelocated {
            from, replacement, ..
        } = &doc.event
        else {
            unreachable!()
        };
        assert_eq!(from.as_deref(), Some("w1"));
        assert!(replacement.is_some(), "{doc:?}");
    }
    let mut indexes: Vec<u64> = all.iter().map(|e| e.index).collect();
    indexes.dedup();
    assert_eq!(indexes.len(), all.len(), "indexes are unique");
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "and increasing");

    // Server-Sent Events, resumed from Last-Event-ID (which wins over ?index).
    let from = all[all.len() / 2].index;
    let sse = mycluster_client::reqwest_builder()
        .build()
        .unwrap()
        .get(format!(
            "{}/api/v1/events?follow=false&index=0",
            manager.url
        ))
        .bearer_auth(TEST_TOKEN)
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", from.to_string())
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    assert!(sse.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = sse.text().await.expect("sse body");
    let expected: Vec<&EventDoc> = all.iter().filter(|e| e.index > from).collect();
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .collect();
    assert!(frames.len() >= expected.len(), "{text}");
    for (frame, doc) in frames.iter().zip(&expected) {
        let lines: Vec<&str> = frame.lines().collect();
        assert_eq!(lines[0], format!("id: {}", doc.index));
        assert_eq!(lines[1], format!("event: {}", doc.topic.as_str()));
        let data: EventDoc =
            serde_json::from_str(lines[2].strip_prefix("data: ").expect("data")).unwrap();
        assert_eq!(&data, *doc);
    }

    // A topic that does not exist.
    let bad = api.get("/api/v1/events?topic=task,nonsense").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["message"]
            .as_str()
            .unwrap()
            .contains("known topics: service, task, worker, rollout"),
        "{}",
        bad.body
    );

    // The CLI prints what follows an index and ends.
    let (code, out, err) = cli(&manager.url, &["events", "--index", &from.to_string()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= expected.len(), "{out}");
    assert!(lines[0].contains(expected[0].topic.as_str()), "{out}");
    let (code, out, err) = cli(
        &manager.url,
        &["events", "--json", "--topic", "worker", "--index", "0"],
    );
    assert_eq!(code, 0, "{err}");
    let workers: Vec<EventDoc> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("an EventDoc line"))
        .collect();
    let held_workers: Vec<EventDoc> = all
        .iter()
        .filter(|e| e.topic.as_str() == "worker")
        .cloned()
        .collect();
    assert!(workers.starts_with(&held_workers), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_older_than_the_history_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--event-history", "3"]);
    let join = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    for name in ["a", "b", "c", "d", "e"] {
        let worker = json!({"name": name, "address": format!("{name}:7001")});
        assert_eq!(join.post("/api/v1/workers", &worker).await.status, 201);
    }
    let held = history(&client(&manager.url), None).await;
    assert_eq!(held.len(), 3, "{held:?}");
    let gone = manager.api().get("/api/v1/events?index=0").await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    let message = gone.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("events after 0 are no longer kept (the oldest kept is "),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "read the state again (GET /api/v1/state) and follow from index {}",
            held[2].index
        )),
        "{message}"
    );
    // From the index it names, a reader goes on.
    let from = held[2].index;
    assert!(history(&client(&manager.url), Some(from)).await.is_empty());

    // The CLI says what the manager said, and fails.
    let (code, _, err) = cli(&manager.url, &["events", "--index", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("no longer kept"), "{err}");
    let (code, _, err) = cli(&manager.url, &["events", "-f", "--index", "0"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no longer kept") && err.contains("410"),
        "{err}"
    );
}
