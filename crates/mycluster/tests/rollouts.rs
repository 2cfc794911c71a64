//! Rolling updates end to end (issue 15): a real manager and real agents, on the Docker
//! engine and on the process driver, with a sampler reading `GET /api/v1/tasks` every
//! 50 ms while a rollout runs. What is checked is what a user of the service sees: how
//! many replicas run and are healthy at every sample (never fewer than the policy
//! allows), how many tasks are wanted at once (never more than it allows), and how the
//! rollout ends (every slot on the new version, or the old one back after a failure).
//!
//! A rollout has ended when both its tasks and its own record
//! (`GET /api/v1/service/<name>/rollout`) say so. Two tests have the agent's own probes (HTTP on docker, exec on the
//! process driver) decide health instead of the manager's `monitor`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::docker::{engine_or_skip, test_image, Cleanup};
use common::{ready_workers, unique_mark, workloads, Agent, Api, Manager};
use serde_json::{json, Value};

/// The sampler's period, as the issue asks.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long a rollout may take before a test gives up: generous, a loaded CI machine
/// must not fail a test by being slow (the rollouts here take seconds).
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------
// The sampler.

/// What one read of the task list showed.
#[derive(Clone, Debug)]
struct Sample {
    /// Seconds since the sampler started.
    at: f64,
    /// Tasks running and healthy, whether still wanted or being stopped: what serves.
    up: usize,
    /// Tasks wanted running and not finished (pending to running).
    active: usize,
    /// Tasks not finished at all, wanted or being stopped: what the engine holds.
    live: usize,
}

/// Reads the service's tasks every 50 ms in the background until `finish`.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

const UNFINISHED: [&str; 4] = ["pending", "assigned", "starting", "running"];

fn is_up(task: &Value) -> bool {
    task["state"] == "running" && task["health"] == "healthy"
}

fn is_active(task: &Value) -> bool {
    task["desired_state"] == "running" && is_live(task)
}

fn is_live(task: &Value) -> bool {
    UNFINISHED.iter().any(|s| task["state"] == *s)
}

async fn tasks_of(api: &Api, service: &str) -> Vec<Value> {
    let reply = api.get(&format!("/api/v1/tasks?service={service}")).await;
    assert_eq!(reply.status, 200, "GET tasks: {}", reply.body);
    reply.body.as_array().cloned().unwrap_or_default()
}

impl Sampler {
    fn start(api: &Api, service: &str) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (api, service, into) = (api.clone(), service.to_string(), samples.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let tasks = tasks_of(&api, &service).await;
                let sample = Sample {
                    at: started.elapsed().as_secs_f64(),
                    up: tasks.iter().filter(|t| is_up(t)).count(),
                    active: tasks.iter().filter(|t| is_active(t)).count(),
                    live: tasks.iter().filter(|t| is_live(t)).count(),
                };
                into.lock().unwrap().push(sample);
            }
        });
        Sampler { samples, task }
    }

    /// Stops sampling; what it saw. A sampler that died (its GET failed) fails the test.
    async fn finish(self) -> Samples {
        assert!(!self.task.is_finished(), "the sampler stopped early");
        self.task.abort();
        let _ = self.task.await;
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        assert!(!samples.is_empty(), "no samples");
        Samples(samples)
    }
}

struct Samples(Vec<Sample>);

impl Samples {
    fn min_up(&self) -> &Sample {
        self.0.iter().min_by_key(|s| s.up).unwrap()
    }
    fn max_active(&self) -> &Sample {
        self.0.iter().max_by_key(|s| s.active).unwrap()
    }
    fn max_live(&self) -> &Sample {
        self.0.iter().max_by_key(|s| s.live).unwrap()
    }
    /// The longest time between two samples: how fine the sampling really was.
    fn widest_gap(&self) -> f64 {
        self.0
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .fold(0.0, f64::max)
    }
    fn summary(&self) -> String {
        format!(
            "{} samples over {:.1} s (widest gap {:.0} ms): min up {} at {:.2} s, max active {}, max live {}",
            self.0.len(),
            self.0.last().map_or(0.0, |s| s.at),
            self.widest_gap() * 1000.0,
            self.min_up().up,
            self.min_up().at,
            self.max_active().active,
            self.max_live().live,
        )
    }
    /// The samples around the first one where `bad` holds, for a failure message.
    fn around(&self, bad: impl Fn(&Sample) -> bool) -> String {
        let Some(i) = self.0.iter().position(bad) else {
            return String::new();
        };
        self.0[i.saturating_sub(5)..(i + 5).min(self.0.len())]
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn assert_up_at_least(&self, floor: usize, tasks: &[Value]) {
        assert!(
            self.min_up().up >= floor,
            "running+healthy replicas fell to {} (floor {floor}); {}\nsamples around it:\n{}\ntasks at the end:\n{}",
            self.min_up().up,
            self.summary(),
            self.around(|s| s.up < floor),
            show_tasks(tasks)
        );
    }
    fn assert_active_at_most(&self, ceiling: usize, tasks: &[Value]) {
        assert!(
            self.max_active().active <= ceiling,
            "active tasks rose to {} (ceiling {ceiling}); {}\nsamples around it:\n{}\ntasks at the end:\n{}",
            self.max_active().active,
            self.summary(),
            self.around(|s| s.active > ceiling),
            show_tasks(tasks)
        );
    }
    fn assert_live_at_most(&self, ceiling: usize, tasks: &[Value]) {
        assert!(
            self.max_live().live <= ceiling,
            "live tasks (wanted or being stopped) rose to {} (ceiling {ceiling}); {}\nsamples around it:\n{}\ntasks at the end:\n{}",
            self.max_live().live,
            self.summary(),
            self.around(|s| s.live > ceiling),
            show_tasks(tasks)
        );
    }
}

/// One line per task: enough to read a failure from.
fn show_tasks(tasks: &[Value]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "slot {} {} image={} command={} desired={} state={} health={} {} {}",
                t["slot"],
                t["id"].as_str().unwrap_or(""),
                t["image"],
                t["command"],
                t["desired_state"],
                t["state"],
                t["health"],
                t["health_message"],
                t["message"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Waiting for a rollout to settle.

/// The service's rollout record (`GET /api/v1/service/<name>/rollout`).
async fn rollout_record(api: &Api, service: &str) -> Value {
    api.ok(&format!("/api/v1/service/{service}/rollout")).await
}

/// How a slot's task is told apart: by the field the update changed.
#[derive(Clone, Copy)]
enum Version<'a> {
    Image(&'a str),
    Command(&'a [&'a str]),
}

impl Version<'_> {
    fn matches(&self, task: &Value) -> bool {
        match self {
            Version::Image(image) => task["image"] == *image,
            Version::Command(command) => task["command"] == json!(command),
        }
    }
}

/// Waits until the service settled on `version`: `replicas` active tasks, all of it and
/// up, and nothing else left running; and the rollout's record in `state`. Returns the seconds it took and the task list then.
async fn settled(
    api: &Api,
    service: &str,
    replicas: usize,
    version: Version<'_>,
    state: &str,
) -> (f64, Vec<Value>) {
    let started = Instant::now();
    loop {
        let tasks = tasks_of(api, service).await;
        let active: Vec<&Value> = tasks.iter().filter(|t| is_active(t)).collect();
        let live = tasks.iter().filter(|t| is_live(t)).count();
        let tasks_done = active.len() == replicas
            && live == replicas
            && active.iter().all(|t| version.matches(t) && is_up(t));
        let record_done = rollout_record(api, service).await["state"] == state;
        if tasks_done && record_done {
            return (started.elapsed().as_secs_f64(), tasks);
        }
        assert!(
            started.elapsed() < ROLLOUT_DEADLINE,
            "the service did not settle ({state}) within {ROLLOUT_DEADLINE:?}; rollout record: {}\ntasks:\n{}",
            rollout_record(api, service).await,
            show_tasks(&tasks)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn patch(api: &Api, service: &str, body: Value) {
    let reply = api
        .send_json("PATCH", &format!("/api/v1/service/{service}"), &body)
        .await;
    assert!(
        reply.status == 200 || reply.status == 202,
        "PATCH {body}: {} {}",
        reply.status,
        reply.body
    );
}

async fn create(api: &Api, body: Value) {
    let reply = api.post("/api/v1/service?wait=0", &body).await;
    assert_eq!(reply.status, 201, "POST {body}: {}", reply.body);
}

// ---------------------------------------------------------------------------------------
// Docker.

/// A second tag of the test image: a new image as far as the service spec is concerned
/// (a change of `image` starts a rollout), with no registry involved.
fn image_v2() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let tag = "mycluster/hello-world:rollout-v2";
        let status = Command::new("docker")
            .args(["tag", test_image(), tag])
            .status()
            .expect("docker tag");
        assert!(status.success(), "docker tag {tag} failed");
        tag.to_string()
    })
}

/// A manager and two docker agents for one test, its containers removed by label when
/// it ends however it ends (the cleanup is dropped last: after the agents, which would
/// otherwise start replacements).
struct DockerCluster {
    agents: Vec<Agent>,
    manager: Manager,
    _dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

impl DockerCluster {
    async fn start(test: &str) -> DockerCluster {
        let cluster = format!("{test}{}", std::process::id());
        let cleanup = Cleanup::new(&cluster);
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager::start_named(dir.path(), &cluster);
        let agents = ["w1", "w2"]
            .iter()
            .map(|name| Agent::start(&manager.url, name, "docker", &[]))
            .collect();
        ready_workers(&manager.api(), 2).await;
        DockerCluster {
            agents,
            manager,
            _dir: dir,
            _cleanup: cleanup,
        }
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // Agents first: a live agent would start what the cleanup removes.
        self.agents.clear();
    }
}

fn web(image: &str, replicas: u32, update: Value) -> Value {
    json!({"service": "web", "image": image, "replicas": replicas, "update": update})
}

/// (a) start-first, the default: an image update of 4 replicas never has fewer than 4
/// running and healthy, nor more than 5 tasks wanted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_start_first_image_update_keeps_every_replica_serving() {
    if !engine_or_skip("docker_start_first_image_update_keeps_every_replica_serving") {
        return;
    }
    let (v1, v2) = (test_image(), image_v2());
    let cluster = DockerCluster::start("rolloutsf").await;
    let api = cluster.manager.api();
    create(&api, web(v1, 4, json!({"monitor": "1s"}))).await;
    settled(&api, "web", 4, Version::Image(v1), "completed").await;

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"image": v2})).await;
    let (took, tasks) = settled(&api, "web", 4, Version::Image(v2), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "start-first, 4 replicas: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(4, &tasks);
    samples.assert_active_at_most(5, &tasks);
    samples.assert_live_at_most(5, &tasks);
    let service = api.ok("/api/v1/service/web").await;
    assert_eq!(service["image"], v2, "{service}");
    let record = rollout_record(&api, "web").await;
    assert_eq!(
        (&record["updated"], &record["total"]),
        (&json!(4), &json!(4)),
        "{record}"
    );
    assert_eq!(record["failures"], 0, "{record}");
}

/// (b) stop-first, parallelism 2: never fewer than 2 running and healthy, and never
/// more than 4 tasks at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_first_parallelism_2_keeps_at_least_2() {
    if !engine_or_skip("docker_stop_first_parallelism_2_keeps_at_least_2") {
        return;
    }
    let (v1, v2) = (test_image(), image_v2());
    let cluster = DockerCluster::start("rolloutstop").await;
    let api = cluster.manager.api();
    let update = json!({"monitor": "1s", "order": "stop-first", "parallelism": 2});
    create(&api, web(v1, 4, update)).await;
    settled(&api, "web", 4, Version::Image(v1), "completed").await;

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"image": v2})).await;
    let (took, tasks) = settled(&api, "web", 4, Version::Image(v2), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "stop-first, parallelism 2, 4 replicas: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(2, &tasks);
    samples.assert_active_at_most(4, &tasks);
    samples.assert_live_at_most(4, &tasks);
}

/// (c) An update whose replicas exit at once is rolled back by itself: the old image is
/// the service's again, and the old replicas served all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_update_that_crashes_is_rolled_back_with_the_old_replicas_serving() {
    if !engine_or_skip("docker_update_that_crashes_is_rolled_back_with_the_old_replicas_serving") {
        return;
    }
    let (v1, v2) = (test_image(), image_v2());
    let cluster = DockerCluster::start("rolloutback").await;
    let api = cluster.manager.api();
    create(&api, web(v1, 4, json!({"monitor": "1s"}))).await;
    settled(&api, "web", 4, Version::Image(v1), "completed").await;
    let before: Vec<String> = tasks_of(&api, "web")
        .await
        .iter()
        .filter(|t| is_active(t))
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The image's entrypoint is `mycluster`: this command makes each new replica exit
    // with status 1 a tenth of a second after it starts.
    let crash = [
        "hello",
        "--port",
        "8000",
        "--exit-after",
        "0.1",
        "--exit-code",
        "1",
    ];
    let asked = Instant::now();
    patch(&api, "web", json!({"image": v2, "command": crash})).await;
    // The old tasks alone would look settled before the new ones even start: first the
    // failure and the rollback itself.
    common::eventually(
        "a new replica to fail and the old image to be back",
        || async {
            let failed = tasks_of(&api, "web")
                .await
                .iter()
                .any(|t| t["image"] == v2 && t["state"] == "failed");
            let service = api.ok("/api/v1/service/web").await;
            (failed && service["image"] == v1).then_some(())
        },
    )
    .await;
    let (_, tasks) = settled(&api, "web", 4, Version::Image(v1), "rolled_back").await;
    let took = asked.elapsed().as_secs_f64();
    let samples = sampler.finish().await;
    eprintln!(
        "crashing update rolled back in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(4, &tasks);
    samples.assert_active_at_most(5, &tasks);

    let service = api.ok("/api/v1/service/web").await;
    assert_eq!(service["image"], v1, "the old image is back: {service}");
    assert!(
        service.get("command").is_none_or(Value::is_null),
        "the old (no) command is back: {service}"
    );
    // The old replicas were never stopped: the same tasks serve.
    let after: Vec<String> = tasks
        .iter()
        .filter(|t| is_active(t))
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        before,
        after,
        "the old replicas kept serving:\n{}",
        show_tasks(&tasks)
    );
    let failed = tasks
        .iter()
        .filter(|t| t["image"] == v2 && t["state"] == "failed")
        .count();
    assert!(failed >= 1, "a new replica failed:\n{}", show_tasks(&tasks));
    let record = rollout_record(&api, "web").await;
    assert_eq!(record["state"], "rolled_back", "{record}");
    let reason = record["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "the record says why: {record}");
    eprintln!("rollback record: {record}");
}

/// (a) with the agent's HTTP probe deciding health instead of the manager's `monitor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_start_first_with_an_http_health_check() {
    if !engine_or_skip("docker_start_first_with_an_http_health_check") {
        return;
    }
    let (v1, v2) = (test_image(), image_v2());
    let cluster = DockerCluster::start("rollouthttp").await;
    let api = cluster.manager.api();
    let mut body = web(v1, 4, json!({"monitor": "5s"}));
    body["healthcheck"] = json!({"http": {"port": 8000, "path": "/"}, "interval": "500ms"});
    create(&api, body).await;
    settled(&api, "web", 4, Version::Image(v1), "completed").await;

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"image": v2})).await;
    let (took, tasks) = settled(&api, "web", 4, Version::Image(v2), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "start-first with an HTTP check: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(4, &tasks);
    samples.assert_active_at_most(5, &tasks);
    samples.assert_live_at_most(5, &tasks);
}

// ---------------------------------------------------------------------------------------
// The process driver.

/// A manager of its own and process agents; the agents' workloads die with them.
struct ProcessCluster {
    agents: Vec<Agent>,
    manager: Manager,
    mark: String,
    _dir: tempfile::TempDir,
}

impl ProcessCluster {
    async fn start(test: &str, workers: usize) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let manager = Manager::start_unique(dir.path(), test);
        let agents = (1..=workers)
            .map(|i| Agent::start(&manager.url, &format!("w{i}"), "process", &[]))
            .collect();
        ready_workers(&manager.api(), workers).await;
        ProcessCluster {
            agents,
            manager,
            mark: unique_mark(test),
            _dir: dir,
        }
    }

    fn sleeper(&self, seconds: &str, replicas: u32, update: Value) -> Value {
        json!({
            "service": "web",
            "command": ["sleep", seconds],
            "env": {"TEST_MARK": self.mark},
            "replicas": replicas,
            "update": update,
        })
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.agents.clear();
    }
}

/// (d) A command change on the process driver: the same bounds as (a).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_start_first_command_update_keeps_every_replica_serving() {
    let cluster = ProcessCluster::start("rolloutproc", 2).await;
    let api = cluster.manager.api();
    let (old, new) = (["sleep", "3600"], ["sleep", "3601"]);
    create(&api, cluster.sleeper("3600", 4, json!({"monitor": "1s"}))).await;
    settled(&api, "web", 4, Version::Command(&old), "completed").await;
    assert_eq!(workloads(&cluster.mark).len(), 4);

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"command": new})).await;
    let (took, tasks) = settled(&api, "web", 4, Version::Command(&new), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "process driver, start-first, 4 replicas: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(4, &tasks);
    samples.assert_active_at_most(5, &tasks);
    samples.assert_live_at_most(5, &tasks);
    // The processes are the new ones, and no old one is left behind.
    common::eventually("4 processes", || async {
        (workloads(&cluster.mark).len() == 4).then_some(())
    })
    .await;
}

/// (d) with an `exec` health check run by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_start_first_with_an_exec_health_check() {
    let cluster = ProcessCluster::start("rolloutexec", 2).await;
    let api = cluster.manager.api();
    let (old, new) = (["sleep", "3600"], ["sleep", "3601"]);
    let mut body = cluster.sleeper("3600", 4, json!({"monitor": "5s"}));
    body["healthcheck"] = json!({"exec": ["true"], "interval": "500ms"});
    create(&api, body).await;
    settled(&api, "web", 4, Version::Command(&old), "completed").await;

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"command": new})).await;
    let (took, tasks) = settled(&api, "web", 4, Version::Command(&new), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "process driver with an exec check: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(4, &tasks);
    samples.assert_active_at_most(5, &tasks);
    samples.assert_live_at_most(5, &tasks);
}

/// (e) 100 replicas, 10 at a time, on the process driver: the rollout completes within
/// the bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_100_replicas_parallelism_10_completes() {
    let cluster = ProcessCluster::start("rollout100", 2).await;
    let api = cluster.manager.api();
    let (old, new) = (["sleep", "3600"], ["sleep", "3601"]);
    let update = json!({"monitor": "1s", "parallelism": 10});
    create(&api, cluster.sleeper("3600", 100, update)).await;
    settled(&api, "web", 100, Version::Command(&old), "completed").await;

    let sampler = Sampler::start(&api, "web");
    tokio::time::sleep(Duration::from_millis(200)).await;
    patch(&api, "web", json!({"command": new})).await;
    let (took, tasks) = settled(&api, "web", 100, Version::Command(&new), "completed").await;
    let samples = sampler.finish().await;
    eprintln!(
        "process driver, 100 replicas, parallelism 10: rolled in {took:.1} s; {}",
        samples.summary()
    );
    samples.assert_up_at_least(100, &tasks);
    samples.assert_active_at_most(110, &tasks);
    samples.assert_live_at_most(110, &tasks);
    let per_worker = tasks.iter().filter(|t| is_active(t)).fold(
        BTreeMap::<String, usize>::new(),
        |mut counts, t| {
            *counts
                .entry(t["worker"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
            counts
        },
    );
    eprintln!("per worker after the rollout: {per_worker:?}");
}
