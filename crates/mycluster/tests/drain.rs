//! Draining and rebalancing on the topology users get: a `setup --rebalance` cluster of
//! 4 workers on the real Docker engine, an 8-replica service spread 2/2/2/2.
//! - `mycluster worker drain` empties a worker with no moment below 8 replicas running
//!   (a sampler reads the tasks every 100 ms throughout);
//! - `worker activate`, and the manager's `--rebalance` brings the spread back to
//!   2/2/2/2, again never below 8 running;
//! - `docker stop` of a worker: its replicas run elsewhere; `docker start`: it comes
//!   back and gets its share again, 2/2/2/2;
//! - a `restart: none` job of 3 replicas whose command exits 0 ends with 3 `complete`
//!   tasks and none running.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::docker::{docker, engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::{eventually, Api};
use serde_json::Value;

const REPLICAS: usize = 8;

/// The service's running replicas per worker (every ready or draining worker listed,
/// with 0 for none).
async fn spread(api: &Api, service: &str) -> Option<BTreeMap<String, usize>> {
    let workers = api.ok("/api/v1/workers").await;
    let mut counts: BTreeMap<String, usize> = workers
        .as_array()?
        .iter()
        .filter(|w| w["status"] != "down")
        .filter_map(|w| Some((w["worker"].as_str()?.to_string(), 0)))
        .collect();
    let tasks = api.ok(&format!("/api/v1/tasks?service={service}")).await;
    for task in tasks.as_array()? {
        if task["state"] == "running" && task["desired_state"] == "running" {
            if let Some(n) = task["worker"].as_str().and_then(|w| counts.get_mut(w)) {
                *n += 1;
            }
        }
    }
    Some(counts)
}

/// Tasks of `service` in state running (whatever is wanted of them: one asked to stop
/// still serves until its agent stops it).
async fn running(api: &Api, service: &str) -> Option<usize> {
    let tasks = api.ok(&format!("/api/v1/tasks?service={service}")).await;
    Some(
        tasks
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "running")
            .count(),
    )
}

/// Reads the running replicas every 100 ms until stopped; answers the fewest seen and
/// how many reads it made.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(usize, usize)>,
}

impl Sampler {
    fn start(api: Api, service: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let service = service.to_string();
        let handle = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut fewest, mut reads) = (usize::MAX, 0);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = running(&api, &service).await {
                        fewest = fewest.min(n);
                        reads += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (fewest, reads)
            }
        });
        Sampler { stop, handle }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("sampler")
    }
}

async fn even_over(api: &Api, service: &str, workers: usize) -> BTreeMap<String, usize> {
    eventually(
        &format!("{service} spread 2 per worker over {workers} workers"),
        || async {
            let counts = spread(api, service).await?;
            (counts.len() == workers && counts.values().all(|n| *n == REPLICAS / workers))
                .then_some(counts)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_keeps_every_replica_and_a_returning_worker_gets_its_share_back() {
    if !engine_or_skip("a_drain_keeps_every_replica_and_a_returning_worker_gets_its_share_back") {
        return;
    }
    let cluster = format!("drain{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let printed = env.ok(&["setup", "--name", &cluster, "--workers", "4", "--rebalance"]);
    assert!(printed.contains("ready, 4 workers"), "{printed}");
    let api = env.api(&cluster);
    let replicas = REPLICAS.to_string();
    env.ok(&[
        "service",
        "create",
        "web",
        "--image",
        "mycluster/hello-world",
        "--replicas",
        &replicas,
    ]);
    let counts = even_over(&api, "web", 4).await;
    let workers: Vec<String> = counts.keys().cloned().collect();

    // Drain one worker: its replicas move, each replacement healthy before the old stops.
    let drained = workers[1].clone();
    let sampler = Sampler::start(api.clone(), "web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let said = env.ok(&["worker", "drain", &drained]);
    assert!(said.contains(&drained), "{said}");
    eventually(&format!("{drained} empty"), || async {
        let tasks = api.ok("/api/v1/tasks?service=web").await;
        let left = tasks
            .as_array()?
            .iter()
            .filter(|t| t["worker"] == drained.as_str())
            .filter(|t| {
                !["shutdown", "failed", "lost", "complete"]
                    .contains(&t["state"].as_str().unwrap_or(""))
            })
            .count();
        let counts = spread(&api, "web").await?;
        (left == 0 && counts.values().sum::<usize>() == REPLICAS).then_some(())
    })
    .await;
    let (fewest, reads) = sampler.finish().await;
    eprintln!("drain: fewest running replicas over {reads} reads: {fewest}");
    assert!(reads >= 10, "{reads} reads");
    assert!(
        fewest >= REPLICAS,
        "a drain went below {REPLICAS} running: {fewest}"
    );
    let listed = env.ok(&["workers"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&drained) && l.contains("draining")),
        "{listed}"
    );

    // Activate it: the manager's --rebalance evens the spread, never below 8 running.
    let sampler = Sampler::start(api.clone(), "web");
    env.ok(&["worker", "activate", &drained]);
    even_over(&api, "web", 4).await;
    let (fewest, reads) = sampler.finish().await;
    eprintln!("rebalance after activate: fewest running over {reads} reads: {fewest}");
    assert!(
        fewest >= REPLICAS,
        "a rebalance went below {REPLICAS} running: {fewest}"
    );

    // docker stop / docker start of a worker: back to 2/2/2/2.
    let stopped = workers[2].clone();
    docker(&["stop", &stopped]);
    eventually(
        &format!("{stopped} down, its replicas elsewhere"),
        || async {
            let listed: Value = api.ok("/api/v1/workers").await;
            let down = listed
                .as_array()?
                .iter()
                .any(|w| w["worker"] == stopped.as_str() && w["status"] == "down");
            let counts = spread(&api, "web").await?;
            (down && counts.values().sum::<usize>() == REPLICAS).then_some(())
        },
    )
    .await;
    docker(&["start", &stopped]);
    let counts = even_over(&api, "web", 4).await;
    eprintln!("after docker start of {stopped}: {counts:?}");

    // A one-off job on the same cluster: `restart: none`, 3 replicas of a command that
    // exits 0 (the demo image's `mycluster --version`) end as 3 complete tasks, none
    // running, and stay so.
    env.ok(&[
        "service",
        "create",
        "job",
        "--image",
        "mycluster/hello-world",
        "--replicas",
        "3",
        "--restart-condition",
        "none",
        "--",
        "--version",
    ]);
    let states = || async {
        let tasks = api.ok("/api/v1/tasks?service=job").await;
        let states: Vec<String> = tasks
            .as_array()?
            .iter()
            .filter_map(|t| t["state"].as_str().map(str::to_string))
            .collect();
        Some(states)
    };
    eventually("3 complete tasks of job", || async {
        let states = states().await?;
        (states.len() == 3 && states.iter().all(|s| s == "complete")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = states().await.unwrap_or_default();
    assert_eq!(
        after,
        ["complete", "complete", "complete"],
        "nothing runs again"
    );
    let listed = env.ok(&["service", "ps", "job"]);
    assert!(
        listed.contains("job: 0 running, 3 complete (done)"),
        "{listed}"
    );
}
