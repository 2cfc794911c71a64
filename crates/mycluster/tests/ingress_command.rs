//! `mycluster ingress` exactly as `setup`'s ingress container runs it (`--manager URL`,
//! the join token in `MYCLUSTER_JOIN_TOKEN`), in front of two `mycluster hello
//! --proxy-protocol` replicas that a hand-driven agent reports running: it balances
//! them, each sees the client's address, and a deleted service's port is free again at
//! once. And `mycluster dev`'s in-process ingress, fed by dev's own manager.

mod common;

use mycluster_relay::free_port;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, spawn_logged, Api, Manager, BIN, DEADLINE, TEST_JOIN_TOKEN};
use serde_json::{json, Value};

/// A process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM (or SIGINT) and wait for the exit; whether it exited 0.
    fn signal_and_wait(&mut self, signal: &str) -> bool {
        let _ = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn log_has(log: &Arc<Mutex<Vec<String>>>, text: &str) -> bool {
    log.lock().unwrap().iter().any(|line| line.contains(text))
}

/// One GET on a new connection: (X-Served-By, X-Client-Address).
async fn get(port: u16) -> Option<(String, String)> {
    let client = mycluster_client::reqwest_builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let response = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .ok()?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let answer = (header("x-served-by"), header("x-client-address"));
    (response.text().await.ok()? == "Hello World\n").then_some(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_command_balances_replicas_and_passes_the_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let agent = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));

    // Two replicas, told apart as the process driver tells them apart.
    let replica_ports = [
        free_port().expect("a free port"),
        free_port().expect("a free port"),
    ];
    let _replicas: Vec<Proc> = replica_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Proc(
                Command::new(BIN)
                    .args(["hello", "--port", &port.to_string(), "--proxy-protocol"])
                    .env("MYCLUSTER_SERVED_BY", format!("web.{}", i + 1))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run mycluster hello"),
            )
        })
        .collect();

    // The ingress as `setup` runs it: the manager's URL, and the join token only.
    let mut command = Command::new(BIN);
    command
        .args(["ingress", "--manager", &manager.url])
        .env("MYCLUSTER_JOIN_TOKEN", TEST_JOIN_TOKEN)
        .env_remove("MYCLUSTER_TOKEN")
        .env("MYCLUSTER_CONFIG_DIR", config.path());
    let (child, log) = spawn_logged(command, |_| {});
    let mut ingress = Proc(child);
    eventually("the ingress's first line", || async {
        log_has(
            &log,
            &format!(
                "ingress: serving the published ports of the cluster at {}",
                manager.url
            ),
        )
        .then_some(())
    })
    .await;

    // A worker, driven by hand as an agent would: it runs the service's two replicas.
    let reply = agent
        .post(
            "/api/v1/workers",
            &json!({"name": "w1", "address": "127.0.0.1:7000"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    // From now on the worker's agent speaks with the credential it got.
    let credential = reply.body["credential"].as_str().expect("a credential");
    let agent = Api::with_token(&manager.url, Some(credential));
    let published = free_port().expect("a free port");
    let reply = api
        .post(
            "/api/v1/service?wait=0",
            &json!({"service": "web", "image": "mycluster/hello-world", "replicas": 2,
                    "ports": [{"published": published, "target": 8000}],
                    "proxy_protocol": true}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let mut tasks: Vec<Value> = eventually("two assigned replicas", || async {
        let list = agent.ok("/api/v1/workers/w1/tasks").await;
        let tasks = list["tasks"].as_array().cloned().unwrap_or_default();
        (tasks.len() == 2).then_some(tasks)
    })
    .await;
    tasks.sort_by_key(|t| t["slot"].as_u64());
    let reports: Vec<Value> = tasks
        .iter()
        .zip(replica_ports)
        .map(|(task, port)| {
            json!({"id": task["id"], "state": "running", "address": "127.0.0.1",
                   "ports": [{"target": 8000, "port": port}]})
        })
        .collect();
    let reply = agent
        .post("/api/v1/workers/w1/status", &json!({"tasks": reports}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    eventually("the ingress to listen on the published port", || async {
        log_has(
            &log,
            &format!("ingress: listening on :{published} for service web (target 8000"),
        )
        .then_some(())
    })
    .await;
    // Both replicas are in the table once the ingress has the report: after the first
    // answer from web.2, new connections alternate.
    eventually("web.2 to answer", || async {
        get(published)
            .await
            .filter(|(served_by, _)| served_by == "web.2")
    })
    .await;
    let mut served = Vec::new();
    for _ in 0..4 {
        let (served_by, client) = get(published).await.expect("an answer");
        // The replica saw the client's address, not the ingress's connection to it.
        assert!(client.starts_with("127.0.0.1:"), "{client}");
        served.push(served_by);
    }
    assert_eq!(served, ["web.1", "web.2", "web.1", "web.2"]);

    // Deleted: the port is closed, and free again at once.
    let reply = api.raw("DELETE", "/api/v1/service/web", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    eventually("the port to close", || async {
        log_has(
            &log,
            &format!("ingress: port {published} closed (service web removed)"),
        )
        .then_some(())
    })
    .await;
    std::net::TcpListener::bind(("0.0.0.0", published))
        .expect("the deleted service's port is free again");

    assert!(
        ingress.signal_and_wait("-TERM"),
        "the ingress stops cleanly on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_published_ports_in_process() {
    let config = tempfile::tempdir().unwrap();
    let name = format!("devingress{}", std::process::id());
    let mut dev = Proc(
        Command::new(BIN)
            .env("MYCLUSTER_CONFIG_DIR", config.path())
            .env("RUST_LOG", "info")
            .args([
                "dev",
                "--driver",
                "sim",
                "--workers",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--name",
                &name,
                "--insecure-no-auth",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mycluster dev"),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(dev.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(dev.0.stderr.take().unwrap()),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let url = eventually("dev's API address", || async {
        let log = log.lock().unwrap();
        log.iter()
            .find_map(|line| line.strip_prefix("API: "))
            .map(|url| url.trim().to_string())
    })
    .await;
    assert!(log_has(&log, "Published ports: served on this host"));
    eventually("dev's ingress to start", || async {
        log_has(
            &log,
            "ingress: serving the published ports of the cluster at http://127.0.0.1:",
        )
        .then_some(())
    })
    .await;

    let published = free_port().expect("a free port");
    let reply = Api::with_token(&url, None)
        .post(
            "/api/v1/service?wait=0",
            &json!({"service": "web", "image": "mycluster/hello-world", "replicas": 1,
                    "ports": [{"published": published, "target": 8000}]}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    eventually("dev's ingress to listen on the published port", || async {
        log_has(
            &log,
            &format!("ingress: listening on :{published} for service web"),
        )
        .then_some(())
    })
    .await;

    assert!(dev.signal_and_wait("-INT"), "dev stops cleanly on SIGINT");
    assert!(log_has(&log, "ingress: stopped"));
}
