//! Network splits on the topology users get (issue 18): a `setup` cluster of 4 workers on
//! the real Docker engine, a worker cut off by `docker network disconnect NAME_default
//! NAME_worker_K` (alive, its containers running, neither reaching the manager nor
//! probed by the monitor) and joined again by `docker network connect`. Five seeded
//! random splits of 1–15 s while a sampler lists the running workload containers every
//! 50 ms through the engine's API (`common::copies`); the same promises as
//! `partitions.rs` (`common::split`): no two copies of an `on_disconnect: "stop"` slot at
//! any sample, a replaced `"replace"` copy gone within 1 s of the heal, every service
//! back to exactly `replicas` after each round, nothing lost.
//!
//! Everything the cluster made is removed by its label when the test ends, failed or not.
//! The seed is printed; `PARTITION_SEED=<seed>` replays it.

mod common;

use std::process::Command;

use common::copies::{Containers, Sampler, PERIOD};
use common::docker::{engine_or_skip, Teardown};
use common::setup_env::SetupEnv;
use common::split::{self, Links, Run, REPLACE, REPLICAS, STOP};
use common::{eventually, Api};
use mycluster_core::wire::{WorkerDoc, WorkerStatus};
use serde_json::json;

const WORKERS: usize = 4;
const PARTITIONS: usize = 5;
/// Up to two workers cut off at once.
const TOGETHER: usize = 2;
/// The demo image `setup` builds: `hello --port 8000`, which ends at SIGTERM.
const DEMO: &str = "mycluster/hello-world";

/// Cuts a worker container off the cluster's network, and joins it again.
struct Network(String);

impl Network {
    fn docker(&self, verb: &str, worker: &str) {
        let output = Command::new("docker")
            .args(["network", verb, &self.0, worker])
            .output()
            .expect("run docker");
        assert!(
            output.status.success(),
            "docker network {verb} {} {worker}: {}",
            self.0,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Links for Network {
    fn cut(&mut self, worker: &str) {
        self.docker("disconnect", worker);
    }

    fn heal(&mut self, worker: &str) {
        self.docker("connect", worker);
    }
}

async fn workers(api: &Api) -> Vec<WorkerDoc> {
    serde_json::from_value(api.ok("/api/v1/workers").await).expect("a worker list")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_random_splits_of_a_setup_cluster_keep_one_copy_per_slot() {
    if !engine_or_skip("five_random_splits_of_a_setup_cluster_keep_one_copy_per_slot") {
        return;
    }
    let seed = split::seed();
    let cluster = format!("split{}", std::process::id());
    let _teardown = Teardown(cluster.clone());
    let env = SetupEnv::new();
    let api = env.setup(&cluster, WORKERS as u32, &[]);
    let names: Vec<String> = eventually("4 workers ready", || async {
        let listed = workers(&api).await;
        (listed.len() == WORKERS && listed.iter().all(|w| w.status == WorkerStatus::Ready))
            .then(|| listed.into_iter().map(|w| w.worker).collect())
    })
    .await;
    for (name, policy) in [(STOP, "stop"), (REPLACE, "replace")] {
        let body = json!({
            "service": name,
            "image": DEMO,
            "replicas": REPLICAS,
            "on_disconnect": policy,
            // The demo ends at SIGTERM; a short grace keeps the manager's wait for a
            // cut-off `stop` task (lease + grace + margin) within the splits' lengths.
            "stop_grace_period": "1s"
        });
        let reply = api.post("/api/v1/service", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let sampler = Sampler::start(Containers::new(&cluster), PERIOD);
    let run = Run {
        api: &api,
        sampler: &sampler,
        seed,
        workers: names,
    };
    run.settle("at the start").await;

    let rounds = split::plan(seed, WORKERS, PARTITIONS, TOGETHER);
    let mut network = Network(format!("{cluster}_default"));
    let report = run.splits(&mut network, &rounds).await;
    drop(sampler);
    report.check(PERIOD);
}
