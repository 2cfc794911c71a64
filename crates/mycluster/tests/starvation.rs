//! A busy machine is no failed worker (issue 18): a manager, its monitor and 4 process
//! agents on this host while every core is saturated for 60 s by a bounded busy loop
//! (twice as many spinning threads as cores, each stopping at the deadline). No live
//! worker may be declared down: `workers.failures` and `containers.relocated` unchanged,
//! every worker `ready` at every look (every 250 ms), the monitor logs no "was not
//! found", and the service's copies are the ones it had before.
//!
//! The longest heartbeat age the manager reported for each worker, and how much the
//! spinners ran, are printed: how close the load came to the monitor's 2 s.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::copies::{Processes, Sampler, PERIOD};
use common::{eventually, ready_workers, unique_mark, Agent, Manager, Monitor};
use mycluster_core::wire::{StatsDoc, WorkerDoc, WorkerStatus};
use serde_json::json;

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const REPLICAS: u32 = 4;
const SATURATE: Duration = Duration::from_secs(60);

/// Threads that spin until `until`; each counts its rounds of work in `work`.
fn spin(threads: usize, until: Instant, work: Arc<AtomicU64>) -> Vec<std::thread::JoinHandle<()>> {
    (0..threads)
        .map(|i| {
            let work = work.clone();
            std::thread::Builder::new()
                .name(format!("spinner {i}"))
                .spawn(move || {
                    let mut x = i as u64 | 1;
                    while Instant::now() < until {
                        for _ in 0..100_000 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                        }
                        std::hint::black_box(x);
                        work.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .expect("spawn a spinner")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_saturated_cores_declares_no_live_worker_down() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "starve");
    let api = manager.api();
    let monitor = Monitor::start(&manager.url);
    let _agents: Vec<Agent> = WORKERS
        .iter()
        .map(|w| Agent::start(&manager.url, w, "process", &[]))
        .collect();
    ready_workers(&api, WORKERS.len()).await;
    let mark = unique_mark("starvation");
    let body = json!({
        "service": "busy",
        "command": ["sleep", "100000"],
        "env": {"TEST_MARK": mark},
        "replicas": REPLICAS
    });
    let reply = api.post("/api/v1/service", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let sampler = Sampler::start(Processes { mark }, PERIOD);
    let copies = eventually("4 copies of busy running", || async {
        let record = sampler.fresh().await;
        record.exactly("busy", REPLICAS).then(|| {
            record
                .latest
                .iter()
                .map(|c| c.task.clone())
                .collect::<Vec<_>>()
        })
    })
    .await;
    let stats = |api: common::Api| async move {
        serde_json::from_value::<StatsDoc>(api.ok("/api/v1/stats").await).expect("stats")
    };
    let before = stats(api.clone()).await;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let work = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let spinners = spin(2 * cores, started + SATURATE, work.clone());
    let mut oldest: BTreeMap<String, f64> = BTreeMap::new();
    let mut not_ready = Vec::new();
    let mut looks = 0;
    while started.elapsed() < SATURATE {
        let workers: Vec<WorkerDoc> =
            serde_json::from_value(api.ok("/api/v1/workers").await).expect("a worker list");
        looks += 1;
        for w in workers {
            let age = w.last_heartbeat_age.unwrap_or(0.0);
            let seen = oldest.entry(w.worker.clone()).or_insert(0.0);
            *seen = seen.max(age);
            if w.status != WorkerStatus::Ready {
                not_ready.push(format!(
                    "+{:.1}s {} {}",
                    started.elapsed().as_secs_f64(),
                    w.worker,
                    w.status.as_str()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for spinner in spinners {
        spinner.join().expect("a spinner");
    }
    let spun = started.elapsed();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let after = stats(api.clone()).await;
    let workers: Vec<WorkerDoc> =
        serde_json::from_value(api.ok("/api/v1/workers").await).expect("a worker list");
    let record = sampler.finish();
    let mut now: Vec<String> = record.latest.iter().map(|c| c.task.clone()).collect();
    now.sort();
    let mut then = copies;
    then.sort();
    println!(
        "{} spinners on {cores} cores for {:.1}s ({} rounds of work); load average {}; {looks} \
         looks at the workers; longest heartbeat age seen (s): {oldest:?}; sampler: {} samples, \
         longest gap {:.0} ms",
        2 * cores,
        spun.as_secs_f64(),
        work.load(Ordering::Relaxed),
        loadavg.trim(),
        record.samples,
        record.longest_gap.as_secs_f64() * 1000.0
    );
    assert!(
        not_ready.is_empty(),
        "workers not ready under load: {not_ready:?}"
    );
    assert_eq!(
        (after.worker_failures, after.containers_relocated),
        (before.worker_failures, before.containers_relocated),
        "a live worker was declared down under load\n{}",
        monitor.log_text()
    );
    assert!(
        workers.iter().all(|w| w.status == WorkerStatus::Ready),
        "{workers:?}"
    );
    assert!(
        !monitor.log_text().contains("was not found"),
        "{}",
        monitor.log_text()
    );
    assert_eq!(now, then, "the copies of busy changed under load");
    assert_eq!(record.most_copies("busy"), 1);
}
