//! A seeded, bounded chaos test on the process driver: agents are killed and restarted,
//! workload processes killed, while services are created, scaled and deleted. After each
//! quiet period every service has exactly `replicas` running tasks, exactly those run as
//! processes, nothing else runs, and the stats agree with what happened. A failure prints
//! the seed; `CHAOS_SEED=<seed>` replays it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{eventually, unique_mark, workloads, Agent, Api, Manager, Monitor, BIN};
use serde_json::{json, Value};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];
const SERVICES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// New rounds stop starting after this, so the test ends within about two minutes.
const BUDGET: Duration = Duration::from_secs(90);

/// xorshift64*: a few lines, reproducible from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Chaos {
    api: Api,
    url: String,
    mark: String,
    agents: BTreeMap<&'static str, Agent>,
    /// Replicas the test asked for, by service.
    wanted: BTreeMap<&'static str, u64>,
    requests: u64,
    kills: u64,
    relocated: u64,
    log: Vec<String>,
}

impl Chaos {
    fn service_body(&self, name: &str, replicas: u64) -> Value {
        json!({
            "service": name,
            "command": [BIN, "hello", "--port", "0"],
            "env": {"TEST_MARK": self.mark},
            "replicas": replicas
        })
    }

    async fn put(&mut self, name: &'static str, replicas: u64) {
        let body = self.service_body(name, replicas);
        let reply = self.api.post("/api/v1/service?wait=0", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        self.requests += 1;
        self.wanted.insert(name, replicas);
        self.log.push(format!("put {name} x{replicas}"));
    }

    async fn delete(&mut self, name: &'static str) {
        let reply = self
            .api
            .raw("DELETE", &format!("/api/v1/service/{name}"), None, None)
            .await;
        assert_eq!(reply.status, 200);
        self.wanted.remove(name);
        self.log.push(format!("delete {name}"));
    }

    /// Kills an agent (its workloads die with it) and waits for the monitor's verdict.
    /// An agent restarted moments ago is first waited for until it is back `ready`:
    /// killed while still `down` from its last death, it would be no new failure, and
    /// the wait for the verdict below would pass at once.
    async fn kill_agent(&mut self, worker: &'static str) {
        let api = self.api.clone();
        eventually(&format!("{worker} ready before it is killed"), || {
            let api = api.clone();
            async move {
                let w = api.ok(&format!("/api/v1/workers/{worker}")).await;
                (w["status"] == "ready").then_some(())
            }
        })
        .await;
        let tasks = self.api.ok("/api/v1/tasks").await;
        let on_it = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["worker"] == worker && t["desired_state"] == "running")
            .filter(|t| {
                !matches!(
                    t["state"].as_str(),
                    Some("failed" | "complete" | "lost" | "shutdown")
                )
            })
            .count() as u64;
        self.agents.remove(worker).unwrap().kill9();
        self.kills += 1;
        self.relocated += on_it;
        self.log
            .push(format!("kill agent {worker} ({on_it} tasks)"));
        let api = self.api.clone();
        eventually(&format!("{worker} declared down"), || {
            let api = api.clone();
            async move {
                let w = api.ok(&format!("/api/v1/workers/{worker}")).await;
                (w["status"] == "down").then_some(())
            }
        })
        .await;
    }

    fn restart_agent(&mut self, worker: &'static str) {
        self.agents
            .insert(worker, Agent::start(&self.url, worker, "process", &[]));
        self.log.push(format!("restart agent {worker}"));
    }

    /// The cluster is quiet and right: what every check after a quiet period demands.
    async fn converged(&self) -> Option<()> {
        let tasks = self.api.ok("/api/v1/tasks").await;
        let tasks = tasks.as_array().unwrap();
        let mut running: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        let mut running_ids = BTreeSet::new();
        for t in tasks
            .iter()
            .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        {
            let slots = running.entry(t["service"].as_str().unwrap()).or_default();
            if !slots.insert(t["slot"].as_u64().unwrap()) {
                return None; // two running tasks for one slot: not settled (or a bug)
            }
            running_ids.insert(t["id"].as_str().unwrap().to_string());
        }
        for (service, replicas) in &self.wanted {
            let n = running.get(service).map_or(0, BTreeSet::len) as u64;
            if n != *replicas {
                return None;
            }
        }
        if running.keys().any(|s| !self.wanted.contains_key(s)) {
            return None;
        }
        // Nothing settles while a task is still on its way somewhere.
        if tasks.iter().any(|t| {
            matches!(
                t["state"].as_str(),
                Some("assigned" | "starting" | "pending")
            )
        }) {
            return None;
        }
        let procs = workloads(&self.mark);
        let proc_tasks: BTreeSet<String> = procs.iter().map(|p| p.task.clone()).collect();
        (procs.len() == running_ids.len() && proc_tasks == running_ids).then_some(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_every_service_at_its_replicas() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos seed: {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start_unique(dir.path(), "chaos");
    let _monitor = Monitor::start(&manager.url);
    let mut chaos = Chaos {
        api: manager.api(),
        url: manager.url.clone(),
        mark: unique_mark("chaos"),
        agents: WORKERS
            .iter()
            .map(|w| (*w, Agent::start(&manager.url, w, "process", &[])))
            .collect(),
        wanted: BTreeMap::new(),
        requests: 0,
        kills: 0,
        relocated: 0,
        log: Vec::new(),
    };
    eventually("workers ready", || async {
        let workers = chaos.api.ok("/api/v1/workers").await;
        (workers.as_array().unwrap().len() == WORKERS.len()).then_some(())
    })
    .await;

    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < BUDGET && round < 8 {
        round += 1;
        chaos.log.push(format!("-- round {round}"));
        // A worker dies, unless that would leave fewer than two.
        if chaos.agents.len() > 2 && rng.below(2) == 0 {
            let alive: Vec<&'static str> = chaos.agents.keys().copied().collect();
            let victim = alive[rng.below(alive.len() as u64) as usize];
            chaos.kill_agent(victim).await;
        }
        for _ in 0..1 + rng.below(4) {
            let name = SERVICES[rng.below(SERVICES.len() as u64) as usize];
            match rng.below(3) {
                0 | 1 => chaos.put(name, rng.below(5)).await,
                _ if chaos.wanted.contains_key(name) => chaos.delete(name).await,
                _ => {}
            }
        }
        // A workload is killed (a crash).
        if rng.below(2) == 0 {
            let procs = workloads(&chaos.mark);
            if !procs.is_empty() {
                let victim = &procs[rng.below(procs.len() as u64) as usize];
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &victim.pid.to_string()])
                    .status();
                chaos
                    .log
                    .push(format!("kill workload of task {}", victim.task));
            }
        }
        // A dead worker returns.
        let dead: Vec<&'static str> = WORKERS
            .iter()
            .copied()
            .filter(|w| !chaos.agents.contains_key(w))
            .collect();
        if !dead.is_empty() && rng.below(2) == 0 {
            chaos.restart_agent(dead[rng.below(dead.len() as u64) as usize]);
        }
        // Quiet period: everything must settle.
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if chaos.converged().await.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chaos seed {seed}: not converged after round {round}\nevents:\n{}\ntasks: {}",
                chaos.log.join("\n"),
                chaos.api.ok("/api/v1/tasks").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stats = chaos.api.ok("/api/v1/stats").await;
        let context = || {
            format!(
                "chaos seed {seed}, round {round}\nevents:\n{}\nstats: {stats}",
                chaos.log.join("\n")
            )
        };
        assert_eq!(stats["workers.failures"], chaos.kills, "{}", context());
        assert_eq!(
            stats["services.totalOfRequests"],
            chaos.requests,
            "{}",
            context()
        );
        assert_eq!(
            stats["containers.relocated"],
            chaos.relocated,
            "{}",
            context()
        );
    }
    println!(
        "chaos seed {seed}: {round} rounds in {:.1}s\n{}",
        started.elapsed().as_secs_f64(),
        chaos.log.join("\n")
    );
}
