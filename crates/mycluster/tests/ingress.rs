//! Reaching services on the topology users get: a `setup` cluster of 4 workers on the
//! real Docker engine, its `<name>_ingress_1` container on the host network. A service
//! of 3 `mycluster/hello-world` replicas published on a port answers `curl
//! localhost:<port>` from the host, spread over all 3; under a steady load of new
//! connections (≥ 50/s) a start-first rolling update and a scale-down 3 → 1 fail no
//! request, and a `docker stop` of a worker holding a replica fails at most 1%; a second
//! service cannot publish the same port (409) until the first is deleted, when the port
//! is free at once; and from inside one workload another service's name resolves to its
//! replicas.

mod common;

use mycluster_relay::free_port;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::docker::{docker, engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{eventually, Api};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.0 GET on a new connection: the replica that served it (`X-Served-By`).
async fn get(port: u16) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if !answer.starts_with("HTTP/1.0 200") && !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {:?}", answer.lines().next()));
        }
        if !answer.contains("Hello World") {
            return Err("no Hello World".into());
        }
        answer
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-served-by:")
                    .map(|v| v.trim().to_string())
            })
            .ok_or_else(|| "no X-Served-By".to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// A client opening a new connection every 10 ms (100 requests/s) until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Result<String, String>>>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let driver = tokio::spawn({
            let stop = stop.clone();
            let results = results.clone();
            async move {
                let mut requests = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let results = results.clone();
                    requests.push(tokio::spawn(async move {
                        let result = get(port).await;
                        results.lock().unwrap().push(result);
                    }));
                }
                for request in requests {
                    let _ = request.await;
                }
            }
        });
        Load {
            stop,
            results,
            driver,
        }
    }

    /// Stops, waits for requests under way, and answers (requests, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.driver.await.expect("load driver");
        let results = self.results.lock().unwrap();
        let failures = results
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        (results.len(), failures)
    }
}

/// The service's endpoints once it has `n`, each running what the service asks now.
async fn endpoints(api: &Api, service: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} endpoints of {service}"), || async {
        let listed = api
            .ok(&format!("/api/v1/service/{service}/endpoints"))
            .await;
        let endpoints = listed["endpoints"].as_array()?.clone();
        let tasks = api.ok(&format!("/api/v1/tasks?service={service}")).await;
        let live = tasks
            .as_array()?
            .iter()
            .filter(|t| {
                !["shutdown", "failed", "lost", "complete"]
                    .contains(&t["state"].as_str().unwrap_or(""))
            })
            .count();
        (endpoints.len() == n && live == n).then_some(endpoints)
    })
    .await
}

async fn rollout_completed(api: &Api, service: &str) {
    eventually(&format!("the rollout of {service} to complete"), || async {
        let rollout = api.ok(&format!("/api/v1/service/{service}/rollout")).await;
        (rollout["state"] == "completed").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_service_is_reached_through_the_ingress_and_keeps_answering() {
    if !engine_or_skip("a_published_service_is_reached_through_the_ingress_and_keeps_answering") {
        return;
    }
    let cluster = format!("ingress{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let printed = env.ok(&["setup", "--name", &cluster, "--workers", "4"]);
    assert!(printed.contains("ready, 4 workers"), "{printed}");
    let ingress = format!("{cluster}_ingress_1");
    let network_mode = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{.State.Running}}",
        &ingress,
    ]);
    assert_eq!(network_mode, "host true", "{ingress}");
    let api = env.api(&cluster);

    // 3 replicas published: curl localhost:<port> from the host reaches all 3.
    let port = free_port().expect("a free port");
    let publish = format!("{port}:8000");
    env.ok(&[
        "service",
        "create",
        "web",
        "--image",
        "mycluster/hello-world",
        "--replicas",
        "3",
        "--publish",
        &publish,
    ]);
    let listed = env.ok(&["service", "ls"]);
    assert!(listed.contains(&format!("{port}->8000/tcp")), "{listed}");
    endpoints(&api, "web", 3).await;
    eventually("the ingress to answer", || async { get(port).await.ok() }).await;
    let mut served = BTreeSet::new();
    for _ in 0..30 {
        served.insert(get(port).await.expect("served"));
    }
    assert_eq!(served.len(), 3, "30 requests over 3 replicas: {served:?}");

    // A start-first rolling update under load: no request fails.
    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.ok(&[
        "service",
        "update",
        "web",
        "--env",
        "RELEASE=2",
        "--update-order",
        "start-first",
    ]);
    rollout_completed(&api, "web").await;
    endpoints(&api, "web", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (requests, failures) = load.finish().await;
    assert!(requests >= 100, "{requests} requests");
    assert!(
        failures.is_empty(),
        "rolling update: {} of {requests} failed: {failures:?}",
        failures.len()
    );
    eprintln!("rolling update: 0 of {requests} requests failed");

    // Scale 3 -> 1 under load: no request fails.
    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.ok(&["service", "scale", "web", "1"]);
    endpoints(&api, "web", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (requests, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "scale 3 -> 1: {} of {requests} failed: {failures:?}",
        failures.len()
    );
    eprintln!("scale 3 -> 1: 0 of {requests} requests failed");

    // Back to 3, then `docker stop` of a worker holding a replica under load: at most 1%.
    env.ok(&["service", "scale", "web", "3"]);
    let before = endpoints(&api, "web", 3).await;
    let worker = before[0]["worker"].as_str().unwrap().to_string();
    let load = Load::start(port);
    tokio::time::sleep(Duration::from_secs(1)).await;
    docker(&["stop", &worker]);
    eventually("the replica replaced on another worker", || async {
        let listed = api.ok("/api/v1/service/web/endpoints").await;
        let endpoints = listed["endpoints"].as_array()?.clone();
        (endpoints.len() == 3 && endpoints.iter().all(|e| e["worker"] != worker.as_str()))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (requests, failures) = load.finish().await;
    assert!(
        failures.len() * 100 <= requests,
        "worker failover: {} of {requests} failed: {failures:?}",
        failures.len()
    );
    eprintln!(
        "worker failover: {} of {requests} requests failed",
        failures.len()
    );

    // A second service cannot publish the same port.
    let other = json!({"service": "other", "image": "mycluster/hello-world", "replicas": 2,
        "ports": [{"published": port, "target": 8000}]});
    let reply = api.post("/api/v1/service", &other).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("already published by service web"),
        "{}",
        reply.body
    );
    let refused = env.mycluster(&[
        "service",
        "create",
        "other",
        "--image",
        "mycluster/hello-world",
        "--publish",
        &publish,
    ]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("already published by service web"), "{said}");

    // Discovery: `web` and `other` (discovery only) resolve from inside a workload.
    let discovery = json!({"service": "other", "image": "mycluster/hello-world",
        "replicas": 2, "ports": [{"target": 8000}]});
    let reply = api.post("/api/v1/service", &discovery).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let others = endpoints(&api, "other", 2).await;
    let web = endpoints(&api, "web", 3).await;
    let container = eventually("a task of web with a container", || async {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        tasks
            .as_array()?
            .iter()
            .find(|t| t["state"] == "running")
            .and_then(|t| t["container_id"].as_str().map(str::to_owned))
    })
    .await;
    let addresses = |endpoints: &[Value]| -> BTreeSet<String> {
        endpoints
            .iter()
            .map(|e| e["address"].as_str().unwrap().to_string())
            .collect()
    };
    let resolved = |name: &str| -> BTreeSet<String> {
        docker(&["exec", &container, "/mycluster", "resolve", name])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(resolved("other"), addresses(&others));
    assert_eq!(resolved("web"), addresses(&web));

    // Deleted, web's port is free at once: `other` publishes it and the ingress serves it.
    let reply = api.raw("DELETE", "/api/v1/service/web", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = api.post("/api/v1/service", &other).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    eventually("the port to reach the other service", || async {
        let tasks = api.ok("/api/v1/tasks?service=other").await;
        let containers: Vec<String> = tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .filter_map(|t| t["container_id"].as_str().map(str::to_owned))
            .collect();
        let served = get(port).await.ok()?;
        // A container's hostname is the start of its id.
        containers
            .iter()
            .any(|id| id.starts_with(&served))
            .then_some(())
    })
    .await;

    // `manage -c rm` removes the ingress with the rest.
    env.ok(&["manage", "--command", "rm", "--name", &cluster]);
    assert!(
        docker(&["ps", "-aq", "--filter", &format!("name=^{ingress}$")]).is_empty(),
        "the ingress container is left"
    );
}
