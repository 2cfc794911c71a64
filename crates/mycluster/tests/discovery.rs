//! Reaching a service's replicas, end to end with real agents: each running task is
//! reported with where it is reached, so `GET /api/v1/service/<name>/endpoints` lists
//! addresses that answer; on the docker driver a service's name resolves to its replicas
//! from any container on the cluster network (`mycluster resolve`); on the process
//! driver each replica gets a port of its own (`$PORT`), so many run on one host.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::docker::{engine_or_skip, test_image, Cleanup};
use common::{eventually, ready_workers, Agent, Api, Manager, BIN};
use serde_json::{json, Value};

fn docker(args: &[&str]) -> (bool, String) {
    let output = Command::new("docker").args(args).output().expect("docker");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

/// A test's own network, removed when dropped: declare it before the `Cleanup` of its
/// containers, which must go first.
struct Network(String);

impl Network {
    fn create(name: &str, cluster: &str) -> Network {
        let (ok, _) = docker(&[
            "network",
            "create",
            "--label",
            &format!("mycluster.cluster={cluster}"),
            name,
        ]);
        assert!(ok, "docker network create {name}");
        Network(name.to_string())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        docker(&["network", "rm", &self.0]);
    }
}

/// The service's endpoints once `n` are listed.
async fn endpoints(api: &Api, service: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} endpoints of {service}"), || async {
        let reply = api
            .get(&format!("/api/v1/service/{service}/endpoints"))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let listed = reply.body["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (listed.len() == n).then_some(listed)
    })
    .await
}

/// Waits until `address:port` answers a plain GET with "Hello World".
async fn answers_hello(address: &str, port: u64) {
    let url = format!("http://{address}:{port}/");
    let http = mycluster_client::reqwest_builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("client");
    eventually(&format!("{url} to answer"), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http.get(&url).send().await.ok()?;
            let body = response.text().await.ok()?;
            body.contains("Hello World").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_replicas_are_reached_at_their_address_and_by_the_services_name() {
    if !engine_or_skip("docker_replicas_are_reached_at_their_address_and_by_the_services_name") {
        return;
    }
    let image = test_image();
    let cluster = format!("discovery{}", std::process::id());
    let network = Network::create(&format!("{cluster}_net"), &cluster);
    let _cleanup = Cleanup::new(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_named(dir.path(), &cluster);
    let api = manager.api();
    let agents: Vec<Agent> = ["w1", "w2"]
        .iter()
        .map(|name| Agent::start(&manager.url, name, "docker", &["--network", &network.0]))
        .collect();
    ready_workers(&api, 2).await;

    let body = json!({"service": "web", "image": image, "replicas": 2,
                      "ports": [{"target": 8000}], "stop_grace_period": "2s"});
    let created = api.post("/api/v1/service", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);

    // Each running task is listed where its agent said it is reached: its own address on
    // the network, at the target port itself.
    let listed = endpoints(&api, "web", 2).await;
    let mut addresses = BTreeSet::new();
    for endpoint in &listed {
        assert_eq!(endpoint["target"], 8000, "{endpoint}");
        assert_eq!(endpoint["port"], 8000, "{endpoint}");
        let address = endpoint["address"]
            .as_str()
            .expect("an address")
            .to_string();
        answers_hello(&address, 8000).await;
        addresses.insert(address);
    }
    assert_eq!(addresses.len(), 2, "one address per replica: {listed:?}");
    let tasks = api.ok("/api/v1/tasks?service=web").await;
    for task in tasks.as_array().unwrap() {
        assert_eq!(
            task["ports"],
            json!([{"target": 8000, "port": 8000}]),
            "{task}"
        );
        assert!(
            addresses.contains(task["address"].as_str().unwrap()),
            "{task}"
        );
    }

    // From another container on the network, the service's name is its replicas.
    let client = format!("{cluster}-client");
    let (ok, _) = docker(&[
        "run",
        "-d",
        "--name",
        &client,
        "--label",
        &format!("mycluster.cluster={cluster}"),
        "--network",
        &network.0,
        image,
    ]);
    assert!(ok, "docker run {client}");
    eventually("'web' to resolve to both replicas", || async {
        let (ok, out) = docker(&["exec", &client, "/mycluster", "resolve", "web"]);
        let resolved: BTreeSet<String> = out.lines().map(str::to_owned).collect();
        (ok && resolved == addresses).then_some(())
    })
    .await;
    let (ok, _) = docker(&["exec", &client, "/mycluster", "resolve", "no-such-service"]);
    assert!(!ok, "an unknown name does not resolve");

    // Scaled down: the replica leaves the table first, and is stopped after it left.
    let scaled = api
        .send_json("PATCH", "/api/v1/service/web", &json!({"replicas": 1}))
        .await;
    assert_eq!(scaled.status, 200, "{}", scaled.body);
    endpoints(&api, "web", 1).await;
    eventually("the stop to wait for the route table", || async {
        agents
            .iter()
            .any(|a| {
                a.log_text()
                    .contains("left the route table; stopping it in 1s")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_replicas_on_one_host_each_get_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "ports");
    let api = manager.api();
    let _agent = Agent::start(&manager.url, "w1", "process", &[]);
    ready_workers(&api, 1).await;

    let body = json!({"service": "web", "replicas": 3,
                      "command": [BIN, "hello", "--port", "$PORT"],
                      "env": {"GREETING": "hi"},
                      "ports": [{"published": 18080, "target": 8000}]});
    let created = api.post("/api/v1/service", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);

    let listed = endpoints(&api, "web", 3).await;
    let mut ports = BTreeSet::new();
    for endpoint in &listed {
        assert_eq!(endpoint["address"], "127.0.0.1", "{endpoint}");
        assert_eq!(endpoint["target"], 8000, "{endpoint}");
        let port = endpoint["port"].as_u64().expect("a port");
        assert_ne!(port, 8000, "a port of its own, not the target: {endpoint}");
        answers_hello("127.0.0.1", port).await;
        ports.insert(port);
    }
    assert_eq!(ports.len(), 3, "a distinct port per replica: {listed:?}");

    // The route table the ingress follows holds the same three.
    let table = api.ok("/api/v1/endpoints").await;
    let route = &table["routes"][0];
    assert_eq!(route["published"], 18080, "{table}");
    let routed: BTreeSet<u64> = route["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["port"].as_u64())
        .collect();
    assert_eq!(routed, ports, "{table}");

    // What the agent added to run it is not the task's environment.
    for task in api
        .ok("/api/v1/tasks?service=web")
        .await
        .as_array()
        .unwrap()
    {
        assert_eq!(task["env"], json!({"GREETING": "hi"}), "{task}");
    }
}
