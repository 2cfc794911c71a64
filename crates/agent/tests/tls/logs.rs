//! The manager reads a task's logs from its agent's port over TLS, trusting only the CA
//! that agent registered: nothing readable crosses the network, what answers at an
//! agent's address without its CA hears nothing (and is tried again, following, once the
//! worker registers another CA), and a worker without a CA away from this host is not
//! sent its token in the clear. The agent's port keeps plain HTTP for probes, and
//! answers its tasks' logs over plain HTTP to this host only.

use std::net::SocketAddr;
use std::time::Duration;

use mycluster_agent::AgentConfig;
use mycluster_client::Client;
use mycluster_core::wire::{LogsQuery, Registration, ServiceRequest, TaskReport};
use mycluster_core::TaskState;

use super::{
    beats, config, free_port, join_token, none_in_the_clear, run_agent, wait_for, Manager, Recorder,
};

#[tokio::test]
async fn logs_are_read_over_the_agents_tls_from_the_ca_it_registered_only() {
    let manager = Manager::start("127.0.0.1:0", true).await;
    let token = join_token(&manager);
    let url = format!("https://{}", manager.running.addr);
    // w1's port behind the recorder, whose address w1 registers: the manager reads w1's
    // logs through it.
    let port = free_port();
    let recorder = Recorder::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let w1 = run_agent(AgentConfig {
        listen: format!("127.0.0.1:{port}"),
        advertise: Some(recorder.addr.to_string()),
        ..config("w1", &url, &token)
    });
    // w2 registers w1's address as its own, with its own CA: what answers there is not
    // the agent that registered, and must hear nothing.
    let w2 = run_agent(AgentConfig {
        advertise: Some(recorder.addr.to_string()),
        ..config("w2", &url, &token)
    });
    wait_for("both agents to register and beat", || async {
        beats(&manager, "w1").await && beats(&manager, "w2").await
    })
    .await;
    // Each registered the CA of its start, which the manager keeps.
    let state = manager.running.cluster.snapshot().state.clone();
    let ca = |name: &str| {
        let worker = state.workers.get(name).expect("registered");
        worker.agent_ca_sha256.clone().expect("an agent CA")
    };
    assert_ne!(ca("w1"), ca("w2"), "one CA per agent start");
    assert_eq!(ca("w1").len(), 64);

    // One replica on each (spread), on the sim driver, which keeps no logs: its agent
    // says so, which is an answer it gives only past TLS and the token.
    let api = manager.api();
    let request = mycluster_core::wire::ServiceRequest {
        service: "talk".into(),
        replicas: 2,
        command: Some(vec!["talk".into()]),
        ..Default::default()
    };
    api.submit_service(&request).await.expect("created");
    wait_for("a replica running on each worker", || async {
        let tasks = manager.api().tasks(Some("talk"), None).await;
        let running_on = |worker: &str| {
            tasks.as_ref().is_ok_and(|tasks| {
                tasks.iter().any(|t| {
                    t.worker.as_deref() == Some(worker)
                        && t.state == mycluster_core::TaskState::Running
                })
            })
        };
        running_on("w1") && running_on("w2")
    })
    .await;
    let mut logs = api
        .service_logs("talk", &Default::default())
        .await
        .expect("the logs answer");
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await.expect("the stream reads") {
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).expect("text");
    let line_of = |worker: &str| {
        text.lines()
            .find(|l| l.starts_with("talk.") && l.contains(&format!("@{worker} | ")))
            .unwrap_or_else(|| panic!("a line of {worker}'s replica in:\n{text}"))
            .to_string()
    };
    let w1_line = line_of("w1");
    assert!(
        w1_line.contains("keeps no logs"),
        "w1's agent answered: {w1_line}"
    );
    let w2_line = line_of("w2");
    assert!(
        w2_line.contains("is not trusted") && w2_line.contains(&ca("w2")),
        "w2's address answers with another CA: {w2_line}"
    );
    w1.cancel();
    w2.cancel();

    // Both reads crossed the recorder, and nothing of them was readable: not the
    // credential's hash (nor that there was one), the request or w1's answer.
    assert!(recorder.connections() >= 2, "both reads went through it");
    let captured = recorder.captured();
    none_in_the_clear(
        &captured,
        &[
            "Bearer",
            "authorization",
            "/tasks/",
            "keeps no logs",
            "HTTP/1.1",
        ],
    );
}

#[tokio::test]
async fn an_agents_port_serves_plain_http_beside_tls() {
    // The monitor's probe, Docker healthchecks and Prometheus scrapes speak plain HTTP.
    let manager = Manager::start("127.0.0.1:0", true).await;
    let port = free_port();
    let token = join_token(&manager);
    let stop = run_agent(AgentConfig {
        listen: format!("0.0.0.0:{port}"),
        ..config("w1", &format!("https://{}", manager.running.addr), &token)
    });
    wait_for("the agent to register and beat", || beats(&manager, "w1")).await;
    let http = mycluster_client::reqwest_builder()
        .build()
        .expect("a client");
    for path in ["/healthz", "/metrics"] {
        let answer = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("plain HTTP answers");
        assert_eq!(answer.status(), 200, "{path}");
    }
    // Its tasks' logs are another matter: plain HTTP from another host gets the 403
    // before its token is looked at; from this host it reaches the token check.
    let outside = super::outside_address();
    let answer = http
        .get(format!("http://{outside}:{port}/tasks/t1/logs"))
        .bearer_auth("anything")
        .send()
        .await
        .expect("plain HTTP answers");
    assert_eq!(answer.status(), 403);
    let text = answer.text().await.expect("a body");
    assert!(text.contains("over TLS only"), "{text}");
    let answer = http
        .get(format!("http://127.0.0.1:{port}/tasks/t1/logs"))
        .send()
        .await
        .expect("plain HTTP answers");
    assert_eq!(answer.status(), 401, "loopback reaches the token check");
    stop.cancel();
}

/// The registration of a worker by hand: `name` at `address`, saying `ca`.
fn by_hand(name: &str, address: &str, ca: Option<String>) -> Registration {
    Registration {
        name: name.into(),
        address: address.into(),
        labels: Default::default(),
        capacity: None,
        driver: Default::default(),
        instance: String::new(),
        resources: Default::default(),
        host: String::new(),
        agent_ca_sha256: ca,
    }
}

/// A worker registered by hand (no agent behind it) at `address`, saying `ca` as its
/// agent's CA; the client that speaks for it (its credential).
async fn hand_worker(manager: &Manager, name: &str, address: &str, ca: Option<String>) -> Client {
    let url = format!("https://{}", manager.running.addr);
    let join = Client::new(&url, Duration::from_secs(10))
        .expect("a client")
        .with_token(Some(join_token(manager)));
    let registered = join
        .register(&by_hand(name, address, ca))
        .await
        .expect("registered");
    join.with_token(registered.credential)
}

/// Creates `service` (one replica) and reports it running on the hand-driven `worker`,
/// the only worker when it is called.
async fn run_one_by_hand(manager: &Manager, worker: &Client, name: &str, service: &str) {
    let request = ServiceRequest {
        service: service.into(),
        image: Some("mycluster/hello-world".into()),
        replicas: 1,
        ..ServiceRequest::default()
    };
    manager
        .api()
        .submit_service(&request)
        .await
        .expect("created");
    let deadline = std::time::Instant::now() + super::DEADLINE;
    let assigned = loop {
        let list = worker.assigned_tasks(name, "", None, Duration::ZERO).await;
        match list.map(|list| list.tasks) {
            Ok(tasks) if !tasks.is_empty() => break tasks,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the replica to be assigned to {name}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reports: Vec<TaskReport> = assigned
        .iter()
        .map(|task| TaskReport::new(task.id.clone(), TaskState::Running))
        .collect();
    worker.report(name, "", &reports).await.expect("reported");
}

/// The service's logs, not following: the whole text.
async fn logs_of(manager: &Manager, service: &str) -> String {
    let mut logs = manager
        .api()
        .service_logs(service, &LogsQuery::default())
        .await
        .expect("the logs answer");
    let mut text = Vec::new();
    while let Some(chunk) = logs.next().await.expect("the stream reads") {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).expect("text")
}

#[tokio::test]
async fn a_worker_without_an_agent_ca_away_from_this_host_is_not_sent_its_token() {
    let manager = Manager::start("127.0.0.1:0", true).await;
    // An address of another host (TEST-NET-1): reading it over plain HTTP would send
    // the worker's credential hash across the network.
    let worker = hand_worker(&manager, "old", "192.0.2.1:7000", None).await;
    run_one_by_hand(&manager, &worker, "old", "solo").await;
    let text = logs_of(&manager, "solo").await;
    let line = text
        .lines()
        .find(|l| l.starts_with("solo.") && l.contains("@old | "))
        .unwrap_or_else(|| panic!("a line of the replica in:\n{text}"));
    assert!(
        line.contains("registered no CA") && line.contains("in the clear"),
        "{line}"
    );
}

#[tokio::test]
async fn a_followed_replica_whose_agent_was_not_trusted_is_opened_again_when_its_worker_registers_another_ca(
) {
    let manager = Manager::start("127.0.0.1:0", true).await;
    let url = format!("https://{}", manager.running.addr);
    // The hand-driven worker says a CA no agent has, at the address of a real agent's
    // port (w1's): what answers there is not trusted.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let wrong = "ab".repeat(32);
    let worker = hand_worker(&manager, "hand", &address, Some(wrong.clone())).await;
    run_one_by_hand(&manager, &worker, "hand", "solo").await;
    let w1 = run_agent(AgentConfig {
        listen: address.clone(),
        ..config("w1", &url, &join_token(&manager))
    });
    wait_for("w1 to register and beat", || beats(&manager, "w1")).await;

    let follow = LogsQuery {
        follow: Some("true".into()),
        ..LogsQuery::default()
    };
    let mut logs = manager
        .api()
        .service_logs("solo", &follow)
        .await
        .expect("the logs answer");
    let mut text = String::new();
    // Reads the followed stream until `done` holds of what came so far.
    async fn until(
        logs: &mut mycluster_client::ServiceLogs,
        text: &mut String,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + super::DEADLINE;
        while !done(text) {
            let chunk = tokio::time::timeout_at(deadline, logs.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what} in:\n{text}"))
                .expect("the stream reads")
                .unwrap_or_else(|| panic!("the stream ended before {what}:\n{text}"));
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    until(&mut logs, &mut text, "the not-trusted line", |t| {
        t.contains("is not trusted")
    })
    .await;
    assert!(text.contains(&wrong), "{text}");

    // The worker registers again, now with the CA of what answers at its address: the
    // followed stream opens the replica again, and the agent there answers this time
    // (past TLS: it refuses the credential of a worker that is not its own).
    let w1_ca = manager
        .running
        .cluster
        .snapshot()
        .state
        .workers
        .get("w1")
        .and_then(|w| w.agent_ca_sha256.clone())
        .expect("w1 registered its CA");
    worker
        .register(&by_hand("hand", &address, Some(w1_ca)))
        .await
        .expect("registered again");
    until(&mut logs, &mut text, "a second line of the replica", |t| {
        t.lines().filter(|l| l.contains("@hand | ")).count() >= 2
    })
    .await;
    let second = text
        .lines()
        .filter(|l| l.contains("@hand | "))
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(!second.contains("is not trusted"), "{text}");
    w1.cancel();
}
