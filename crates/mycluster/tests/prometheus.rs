//! `GET /metrics` read by a real Prometheus (Debian's `prometheus`): it scrapes a real
//! manager (with the read-only metrics token, from a credentials file) and one of three
//! process agents every second; a worker is killed (`kill -9` of its agent); once its
//! replica is relocated, what Prometheus's own HTTP API answers for `mycluster_tasks` by
//! state and the relocation and failure counters must be what `/api/v1/tasks` and
//! `/api/v1/stats` report, and both targets must be up.
//!
//! Fails under `CI=true` when `prometheus` is not installed (`.ci/run` installs it);
//! skips elsewhere, saying so. The manager's command-line checks of the metrics token
//! are here too (they need the binary).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::docker::{engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{eventually, unique_mark, with_tokens, Agent, Api, Manager, Monitor, BIN, TEST_TOKEN};
use serde_json::{json, Value};

const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef";

/// Whether `prometheus` is installed. Under `CI=true` a missing one is a failure.
fn prometheus_or_skip(test: &str) -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{test}: `prometheus` is not installed, and CI=true: apt-get install prometheus"
            );
        }
        eprintln!("SKIP {test}: `prometheus` is not installed (apt-get install prometheus)");
    }
    found
}

/// A Prometheus server, killed (and waited for) when dropped, even when the test fails.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let storage = dir.join("tsdb");
        let port = mycluster_relay::free_port().expect("a free port");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The samples of an instant query: each series' labels and value. `None` when
    /// Prometheus does not answer (yet).
    async fn query(&self, http: &reqwest::Client, query: &str) -> Option<Vec<(Value, f64)>> {
        let answer: Value = http
            .get(format!("{}/api/v1/query?query={}", self.url, escape(query)))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        if answer["status"] != "success" {
            return None;
        }
        answer["data"]["result"]
            .as_array()?
            .iter()
            .map(|sample| {
                let value = sample["value"][1].as_str()?.parse().ok()?;
                Some((sample["metric"].clone(), value))
            })
            .collect()
    }

    /// The one sample of a query that selects one series.
    async fn scalar(&self, http: &reqwest::Client, query: &str) -> Option<f64> {
        match self.query(http, query).await?.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` percent-encoded for a query string.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `host:port` of a `http://host:port` URL.
fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn manager_with_metrics_token(dir: &Path, name: &str, token_file: &Path) -> Manager {
    let mut command = Command::new(BIN);
    command
        .args(["manager", "--listen", "127.0.0.1:0", "--name", name])
        .arg("--data-dir")
        .arg(dir.join("manager"))
        .arg("--metrics-token-file")
        .arg(token_file);
    with_tokens(&mut command);
    Manager::from_command(command)
}

/// Tasks by state as `/api/v1/tasks` lists them (every state present, zeros included).
async fn tasks_by_state(api: &Api) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = [
        "pending", "assigned", "starting", "running", "complete", "failed", "lost", "shutdown",
    ]
    .into_iter()
    .map(|s| (s.to_string(), 0.0))
    .collect();
    for task in api.ok("/api/v1/tasks").await.as_array().unwrap() {
        *counts
            .entry(task["state"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_what_the_api_reports_after_a_worker_is_lost() {
    if !prometheus_or_skip("prometheus_reads_what_the_api_reports_after_a_worker_is_lost") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).unwrap();
    let name = format!("prom{}", std::process::id());
    let manager = manager_with_metrics_token(dir.path(), &name, &token_file);
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut agents: BTreeMap<&str, Agent> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|n| (n, Agent::start(&manager.url, n, "process", &[])))
        .collect();
    common::ready_workers(&api, 3).await;
    let mark = unique_mark("prometheus");
    let service = json!({
        "service": "web",
        "command": [BIN, "hello", "--port", "0"],
        "env": {"TEST_MARK": mark},
        "replicas": 3
    });
    assert_eq!(api.post("/api/v1/service", &service).await.status, 201);
    let running_on = |api: Api| async move {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let workers: Vec<String> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "running")
            .map(|t| t["worker"].as_str().unwrap_or("").to_string())
            .collect();
        workers
    };
    let placed = eventually("3 replicas running", || async {
        let workers = running_on(api.clone()).await;
        (workers.len() == 3).then_some(workers)
    })
    .await;
    // The worker to kill runs a replica; Prometheus scrapes another agent.
    let victim = placed[0].clone();
    let watched = ["w1", "w2", "w3"]
        .into_iter()
        .find(|w| *w != victim)
        .unwrap();
    let agent_address = eventually("the agent's health address", || async {
        agents[watched].health_address()
    })
    .await;

    let prometheus = Prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: manager\n\
             \x20   authorization:\n\
             \x20     credentials_file: {token}\n\
             \x20   static_configs:\n\
             \x20     - targets: ['{manager}']\n\
             \x20 - job_name: agent\n\
             \x20   static_configs:\n\
             \x20     - targets: ['{agent}']\n",
            token = token_file.display(),
            manager = host_port(&manager.url),
            agent = agent_address,
        ),
    );
    let http = mycluster_client::reqwest_builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    eventually("both targets up in Prometheus", || async {
        let manager_up = prometheus.scalar(&http, "up{job=\"manager\"}").await;
        let agent_up = prometheus.scalar(&http, "up{job=\"agent\"}").await;
        (manager_up == Some(1.0) && agent_up == Some(1.0)).then_some(())
    })
    .await;

    // The victim's agent dies (and its workload with it); its replica is relocated.
    agents.remove(victim.as_str()).unwrap().kill9();
    eventually("the lost replica relocated", || async {
        let stats = api.ok("/api/v1/stats").await;
        let workers = running_on(api.clone()).await;
        (stats["containers.relocated"] == 1
            && workers.len() == 3
            && workers.iter().all(|w| *w != victim))
        .then_some(())
    })
    .await;

    // What Prometheus stored equals what the API says (polled: a scrape a second).
    let (tasks, relocated) = eventually("Prometheus to agree with the API", || async {
        let want_tasks = tasks_by_state(&api).await;
        let stats = api.ok("/api/v1/stats").await;
        let got: BTreeMap<String, f64> = prometheus
            .query(&http, "mycluster_tasks")
            .await?
            .into_iter()
            .map(|(labels, value)| (labels["state"].as_str().unwrap_or("").to_string(), value))
            .collect();
        let relocated = prometheus
            .scalar(&http, "mycluster_containers_relocated_total")
            .await?;
        let failures = prometheus
            .scalar(&http, "mycluster_worker_failures_total")
            .await?;
        let agrees = got == want_tasks
            && Some(relocated) == stats["containers.relocated"].as_f64()
            && Some(failures) == stats["workers.failures"].as_f64();
        agrees.then_some((want_tasks, relocated))
    })
    .await;
    assert_eq!(relocated, 1.0);
    assert_eq!(tasks["lost"], 1.0, "{tasks:?}");
    assert_eq!(tasks["running"], 3.0, "{tasks:?}");

    // The scraped agent is up and reports its running workload; the manager's other
    // series are there too.
    eventually("the agent's series", || async {
        let up = prometheus.scalar(&http, "up{job=\"agent\"}").await?;
        let running = prometheus
            .scalar(&http, "mycluster_agent_containers{state=\"running\"}")
            .await?;
        (up == 1.0 && running >= 1.0).then_some(())
    })
    .await;
    for query in [
        "mycluster_workers{status=\"down\"}",
        "mycluster_service_replicas_desired{service=\"web\"}",
        "mycluster_task_start_seconds_count",
        "mycluster_store_commit_duration_seconds_count",
        "mycluster_agents_connected",
    ] {
        let value = prometheus.scalar(&http, query).await;
        assert!(
            value.is_some_and(|v| v >= 1.0),
            "{query}: {value:?}\nprometheus log:\n{}",
            prometheus.log_text()
        );
    }
    assert_eq!(
        prometheus
            .scalar(&http, "mycluster_service_replicas_running{service=\"web\"}")
            .await,
        Some(3.0)
    );
}

/// The manager refuses a metrics token that is an API token, or one with no
/// authentication to go with it, in one line.
#[test]
fn the_manager_checks_its_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same");
    std::fs::write(&same, TEST_TOKEN).unwrap();
    let (code, log) = common::manager_refused(
        &dir.path().join("a"),
        &["--metrics-token-file", same.to_str().unwrap()],
    );
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("must differ from the API and join tokens"),
        "{log}"
    );

    let good = dir.path().join("good");
    std::fs::write(&good, METRICS_TOKEN).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["manager", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .arg("--data-dir")
        .arg(dir.path().join("b"))
        .arg("--metrics-token-file")
        .arg(&good)
        .env_remove("MYCLUSTER_TOKEN")
        .env_remove("MYCLUSTER_TOKEN_FILE");
    let (code, log) = common::run_to_exit(command);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("contradict each other"), "{log}");
}

/// `setup --metrics-token-file`: the cluster's manager takes the token (given to its
/// container in the environment), which reads `/metrics` and nothing else; set up again
/// without the flag, the cluster keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_cluster_takes_a_metrics_token() {
    if !engine_or_skip("a_setup_cluster_takes_a_metrics_token") {
        return;
    }
    let cluster = format!("metrics{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let file = env.config.path().join("metrics-token");
    std::fs::write(&file, format!("{METRICS_TOKEN}\n")).unwrap();
    let file = file.display().to_string();
    let api = env.setup(&cluster, 1, &["--metrics-token-file", &file]);
    let status = |path: &str, token: &str| {
        let url = format!("{}{path}", api.url);
        let token = token.to_string();
        async move {
            mycluster_client::reqwest_builder()
                .build()
                .unwrap()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    let api_token = env.ok(&["token", "-n", &cluster]).trim().to_string();
    assert_eq!(status("/metrics", METRICS_TOKEN).await, 200);
    assert_eq!(status("/api/v1/state", METRICS_TOKEN).await, 403);
    assert_eq!(status("/metrics", &api_token).await, 200);
    // Set up again without the flag: the token is kept.
    env.setup(&cluster, 1, &[]);
    assert_eq!(status("/metrics", METRICS_TOKEN).await, 200);
    assert_eq!(status("/api/v1/state", METRICS_TOKEN).await, 403);
}
