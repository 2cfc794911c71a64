//! Network splits on the process driver (issue 18): a manager, its monitor and 4 agents,
//! each agent's traffic to the manager and the monitor's probes of it through relays a
//! test can cut (`common::relay`). Twenty seeded random splits of 1–15 s, while a sampler
//! reads the copies that really run every 50 ms (`common::copies`):
//! - an `on_disconnect: "stop"` service never has two copies of a slot;
//! - a `"replace"` service's cut-off copy, replaced meanwhile, is gone within 1 s of the
//!   heal;
//! - after each round of splits every service is back to exactly `replicas` running, and
//!   no service changed (`common::split`).
//!
//! The seed is printed; `PARTITION_SEED=<seed>` replays it. First, the relay's own
//! promises on plain sockets.

mod common;

use std::collections::BTreeMap;

use common::copies::{Processes, Sampler, PERIOD};
use common::relay::RelayedAgent;
use common::split::{self, Links, Run, REPLACE, REPLICAS, STOP};
use common::{ready_workers, unique_mark, Manager, Monitor};
use serde_json::{json, Value};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const PARTITIONS: usize = 20;
/// Up to three workers cut off at once: 20 splits in about ten rounds.
const TOGETHER: usize = 3;

fn service(name: &str, policy: &str, mark: &str) -> Value {
    json!({
        "service": name,
        "command": ["sleep", "100000"],
        "env": {"TEST_MARK": mark},
        "replicas": REPLICAS,
        "on_disconnect": policy,
        // `sleep` ends at SIGTERM; a short grace keeps the manager's wait for a cut-off
        // `stop` task (lease + grace + margin) within the splits' lengths.
        "stop_grace_period": "1s"
    })
}

struct Relayed(BTreeMap<String, RelayedAgent>);

impl Links for Relayed {
    fn cut(&mut self, worker: &str) {
        self.0[worker].cut();
    }

    fn heal(&mut self, worker: &str) {
        self.0[worker].heal();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_random_splits_keep_one_copy_per_slot_and_end_the_cut_off_copies() {
    let seed = split::seed();
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "part");
    let api = manager.api();
    let _monitor = Monitor::start(&manager.url);
    let mut links = Relayed(
        WORKERS
            .iter()
            .map(|w| (w.to_string(), RelayedAgent::start(&manager.url, w, &[])))
            .collect(),
    );
    ready_workers(&api, WORKERS.len()).await;
    let mark = unique_mark("partitions");
    for (name, policy) in [(STOP, "stop"), (REPLACE, "replace")] {
        let reply = api
            .post("/api/v1/service", &service(name, policy, &mark))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let sampler = Sampler::start(Processes { mark }, PERIOD);
    let run = Run {
        api: &api,
        sampler: &sampler,
        seed,
        workers: WORKERS.iter().map(|w| w.to_string()).collect(),
    };
    run.settle("at the start").await;

    let rounds = split::plan(seed, WORKERS.len(), PARTITIONS, TOGETHER);
    let report = run.splits(&mut links, &rounds).await;
    drop(sampler);
    report.check(PERIOD);
}
