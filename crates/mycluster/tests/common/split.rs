//! A seeded run of network splits against a cluster, and what the cluster must keep
//! through them (issue 18's "Done when"), for any way of cutting a worker off: the
//! process cluster's relays (`relay`) or `docker network disconnect`.
//!
//! The cluster runs two services of `REPLICAS` slots: `STOP` (`on_disconnect: "stop"`)
//! and `REPLACE` (`"replace"`). The splits come in rounds: one to `together` workers are
//! cut at random offsets for 1–15 s each (overlapping on different workers, which keeps
//! the run short), and when the round's last link is healed the cluster must settle.
//! A `copies::Sampler` reads the copies that really run throughout. What is checked:
//! - `STOP`: no sample ever had two copies of a slot;
//! - `REPLACE`: a copy of a worker cut off, replaced while it was (its task `lost` or
//!   asked to shut down when the link healed), is gone within 1 s of the heal. The gone
//!   time is the end of the first read that missed it: late by at most the sampler's
//!   longest gap between two reads, so that gap is the tolerance;
//! - after each round: every worker `ready`, each service exactly `REPLICAS` running
//!   tasks (one per slot) and exactly those copies running, nothing on its way;
//! - nothing lost: each service's document is what it was before the splits.
//!
//! A failure says the seed; `PARTITION_SEED=<seed>` replays the same splits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mycluster_core::wire::{
    DesiredState, ServiceDoc, StatsDoc, TaskDoc, TaskState, WorkerDoc, WorkerStatus,
};

use super::copies::{Record, Sampler};
use super::{Api, DEADLINE};

pub const STOP: &str = "solo";
pub const REPLACE: &str = "spare";
pub const REPLICAS: u32 = 4;
/// The rule under test: a replaced copy is gone this soon after its link heals.
pub const GONE_WITHIN: Duration = Duration::from_secs(1);

/// How a test cuts a worker off and joins it again.
pub trait Links {
    fn cut(&mut self, worker: &str);
    fn heal(&mut self, worker: &str);
}

/// xorshift64*: a few lines, reproducible from one seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `PARTITION_SEED`, else one from the clock; printed either way.
pub fn seed() -> u64 {
    let seed = std::env::var("PARTITION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("partition seed: {seed} (replay with PARTITION_SEED={seed})");
    seed
}

/// One worker cut off: from `start` after its round began, for `length`. Which worker is
/// a rank: 0 is the one running the most copies when the round begins (ties by name),
/// so a split mostly cuts off copies (a worker back from a split runs none until some
/// slot needs it), and a seed replays the same kind of splits whatever the placement.
#[derive(Clone, Debug)]
pub struct Split {
    pub rank: usize,
    pub start: Duration,
    pub length: Duration,
}

/// `partitions` splits of 1–15 s in rounds of one to `together` distinct workers of
/// `workers`, each cut within the first 2 s of its round. Ranks lean to the fullest
/// workers: the lower of two draws.
pub fn plan(seed: u64, workers: usize, partitions: usize, together: usize) -> Vec<Vec<Split>> {
    let mut rng = Rng(seed);
    let mut rounds = Vec::new();
    let mut left = partitions;
    while left > 0 {
        let k = (1 + rng.below(together as u64) as usize)
            .min(left)
            .min(workers);
        let mut ranks: Vec<usize> = (0..workers).collect();
        let mut round = Vec::new();
        for _ in 0..k {
            let n = ranks.len() as u64;
            let at = rng.below(n).min(rng.below(n)) as usize;
            round.push(Split {
                rank: ranks.remove(at),
                start: Duration::from_millis(rng.below(2_000)),
                length: Duration::from_millis(1_000 + rng.below(14_001)),
            });
        }
        left -= k;
        rounds.push(round);
    }
    rounds
}

/// What happened to one split.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub round: usize,
    pub split: Split,
    pub worker: String,
    /// When the link was cut and healed (as the test saw it).
    pub cut_at: Option<Instant>,
    pub heal_at: Option<Instant>,
    /// The worker was `down` when the link healed.
    pub down_at_heal: bool,
    /// The copies running on it when it was cut, by service.
    pub cut_off: BTreeMap<String, Vec<String>>,
    /// Of those, the ones replaced by the heal (task lost or asked to shut down).
    pub replaced: BTreeMap<String, Vec<String>>,
    /// Of those, the ones already gone at the heal (stopped by their agent).
    pub gone_before_heal: BTreeMap<String, Vec<String>>,
    /// For each replaced copy still running at the heal: how long after it it was gone.
    pub gone_after_heal: BTreeMap<String, Vec<(String, Duration)>>,
    /// Copies cut off that were replaced only after the heal (the worker declared down
    /// as its link came back: a probe lost in the cut), and how long after the heal they
    /// were gone. Not held to `GONE_WITHIN`: their worker was not down at the heal.
    pub replaced_after_heal: Vec<(String, Option<Duration>)>,
}

/// The run's results.
pub struct Report {
    pub seed: u64,
    pub outcomes: Vec<Outcome>,
    /// How long each round took to settle after its last heal.
    pub settle: Vec<Duration>,
    pub record: Record,
    pub failures_before: u64,
    pub failures_after: u64,
    pub took: Duration,
}

/// The cluster under test, and its sampler.
pub struct Run<'a> {
    pub api: &'a Api,
    pub sampler: &'a Sampler,
    pub seed: u64,
    /// The workers' names.
    pub workers: Vec<String>,
}

impl Run<'_> {
    async fn tasks(&self) -> Vec<TaskDoc> {
        serde_json::from_value(self.api.ok("/api/v1/tasks").await).expect("a task list")
    }

    async fn workers(&self) -> Vec<WorkerDoc> {
        serde_json::from_value(self.api.ok("/api/v1/workers").await).expect("a worker list")
    }

    pub async fn stats(&self) -> StatsDoc {
        serde_json::from_value(self.api.ok("/api/v1/stats").await).expect("stats")
    }

    pub async fn service(&self, name: &str) -> ServiceDoc {
        serde_json::from_value(self.api.ok(&format!("/api/v1/service/{name}")).await)
            .expect("a service")
    }

    /// Why the cluster is not settled, or `Ok`: every worker ready; each service exactly
    /// `REPLICAS` running tasks, one per slot, nothing on its way; exactly those copies
    /// run.
    pub async fn settled(&self) -> Result<(), String> {
        let workers = self.workers().await;
        if let Some(w) = workers.iter().find(|w| w.status != WorkerStatus::Ready) {
            return Err(format!("{} is {}", w.worker, w.status.as_str()));
        }
        let tasks = self.tasks().await;
        let record = self.sampler.fresh().await;
        for service in [STOP, REPLACE] {
            let ours = tasks.iter().filter(|t| t.service == service);
            if let Some(t) = ours.clone().find(|t| {
                t.desired_state == DesiredState::Running
                    && matches!(
                        t.state,
                        TaskState::Pending | TaskState::Assigned | TaskState::Starting
                    )
            }) {
                return Err(format!("{service}: task {} is {:?}", t.id, t.state));
            }
            let running: Vec<&TaskDoc> = ours
                .filter(|t| {
                    t.state == TaskState::Running && t.desired_state == DesiredState::Running
                })
                .collect();
            let slots: BTreeSet<u32> = running.iter().map(|t| t.slot).collect();
            if running.len() != REPLICAS as usize || !slots.iter().copied().eq(0..REPLICAS) {
                return Err(format!(
                    "{service}: {} running tasks, slots {slots:?}",
                    running.len()
                ));
            }
            if !record.exactly(service, REPLICAS) {
                return Err(format!(
                    "{service}: copies running {:?}",
                    record.slots(service)
                ));
            }
            let ids: BTreeSet<&str> = running.iter().map(|t| t.id.as_str()).collect();
            let copies: BTreeSet<&str> = record
                .latest
                .iter()
                .filter(|c| c.service == service)
                .map(|c| c.task.as_str())
                .collect();
            if ids != copies {
                return Err(format!(
                    "{service}: running tasks {ids:?}, copies running {copies:?}"
                ));
            }
        }
        Ok(())
    }

    /// Waits until `settled`; how long it took.
    pub async fn settle(&self, what: &str) -> Duration {
        let started = Instant::now();
        loop {
            let why = match self.settled().await {
                Ok(()) => return started.elapsed(),
                Err(why) => why,
            };
            assert!(
                started.elapsed() < DEADLINE,
                "partition seed {}: not settled {what} after {DEADLINE:?}: {why}\ntasks: {}",
                self.seed,
                self.api.ok("/api/v1/tasks").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `rounds` of splits through `links`; panics at once only when the cluster does
    /// not settle or a service changed (the rest is for `Report::check`).
    pub async fn splits(&self, links: &mut dyn Links, rounds: &[Vec<Split>]) -> Report {
        let started = Instant::now();
        let before: Vec<ServiceDoc> = vec![self.service(STOP).await, self.service(REPLACE).await];
        let failures_before = self.stats().await.worker_failures;
        let mut outcomes = Vec::new();
        let mut settle = Vec::new();
        for (r, round) in rounds.iter().enumerate() {
            let mut events: Vec<(Duration, bool, usize)> = Vec::new();
            for (i, split) in round.iter().enumerate() {
                events.push((split.start, true, i));
                events.push((split.start + split.length, false, i));
            }
            events.sort_by_key(|(at, cut, _)| (*at, !*cut));
            // The workers, fullest first, as the splits' ranks name them.
            let record = self.sampler.fresh().await;
            let mut by_copies: Vec<(usize, String)> = self
                .workers
                .iter()
                .map(|w| (record.on_worker(w).len(), w.clone()))
                .collect();
            by_copies.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut here: Vec<Outcome> = round
                .iter()
                .map(|split| Outcome {
                    round: r,
                    split: split.clone(),
                    worker: by_copies[split.rank].1.clone(),
                    cut_at: None,
                    heal_at: None,
                    down_at_heal: false,
                    cut_off: BTreeMap::new(),
                    replaced: BTreeMap::new(),
                    gone_before_heal: BTreeMap::new(),
                    gone_after_heal: BTreeMap::new(),
                    replaced_after_heal: Vec::new(),
                })
                .collect();
            let began = tokio::time::Instant::now();
            for (at, cut, i) in events {
                tokio::time::sleep_until(began + at).await;
                let outcome = &mut here[i];
                let worker = outcome.worker.clone();
                if cut {
                    links.cut(&worker);
                    outcome.cut_at = Some(Instant::now());
                    let record = self.sampler.fresh().await;
                    for copy in record.on_worker(&worker) {
                        outcome
                            .cut_off
                            .entry(copy.service)
                            .or_default()
                            .push(copy.task);
                    }
                    eprintln!(
                        "+{:.1}s round {r}: cut {worker} for {:.1}s; running there: {:?}",
                        started.elapsed().as_secs_f64(),
                        outcome.split.length.as_secs_f64(),
                        outcome.cut_off
                    );
                } else {
                    // What the manager decided while it was cut off, read just before
                    // the heal.
                    let tasks = self.tasks().await;
                    let workers = self.workers().await;
                    links.heal(&worker);
                    let heal_at = Instant::now();
                    outcome.heal_at = Some(heal_at);
                    outcome.down_at_heal = workers
                        .iter()
                        .any(|w| w.worker == worker && w.status == WorkerStatus::Down);
                    let record = self.sampler.snapshot();
                    for (service, cut_off) in &outcome.cut_off {
                        for task in cut_off {
                            let replaced = tasks.iter().any(|t| {
                                t.id == *task
                                    && (t.state == TaskState::Lost
                                        || t.desired_state == DesiredState::Shutdown)
                            });
                            if !replaced {
                                continue;
                            }
                            outcome
                                .replaced
                                .entry(service.clone())
                                .or_default()
                                .push(task.clone());
                            if record.gone(task).is_some_and(|gone| gone <= heal_at) {
                                outcome
                                    .gone_before_heal
                                    .entry(service.clone())
                                    .or_default()
                                    .push(task.clone());
                            }
                        }
                    }
                    eprintln!(
                        "+{:.1}s round {r}: healed {worker} (down: {}); replaced: {:?}; \
                         gone before the heal: {:?}",
                        started.elapsed().as_secs_f64(),
                        outcome.down_at_heal,
                        outcome.replaced,
                        outcome.gone_before_heal
                    );
                }
            }
            // Each replaced copy still running at its heal: when it went.
            for outcome in &mut here {
                let Some(heal_at) = outcome.heal_at else {
                    continue;
                };
                for (service, replaced) in &outcome.replaced {
                    let gone_before = outcome.gone_before_heal.get(service);
                    for task in replaced {
                        if gone_before.is_some_and(|g| g.contains(task)) {
                            continue;
                        }
                        let waited = Instant::now();
                        let gone = loop {
                            if let Some(gone) = self.sampler.record().gone(task) {
                                break gone;
                            }
                            assert!(
                                waited.elapsed() < DEADLINE,
                                "partition seed {}: the cut-off copy {task} of {service} on {} \
                                 still runs {DEADLINE:?} after its link healed",
                                self.seed,
                                outcome.worker
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        };
                        let after = gone.saturating_duration_since(heal_at);
                        eprintln!(
                            "  {service} copy {task} on {}: gone {:.3}s after the heal",
                            outcome.worker,
                            after.as_secs_f64()
                        );
                        outcome
                            .gone_after_heal
                            .entry(service.clone())
                            .or_default()
                            .push((task.clone(), after));
                    }
                }
            }
            let took = self.settle(&format!("after round {r}")).await;
            eprintln!(
                "+{:.1}s round {r}: settled {:.2}s after its last heal",
                started.elapsed().as_secs_f64(),
                took.as_secs_f64()
            );
            settle.push(took);
            // Copies cut off and replaced only after their heal.
            let tasks = self.tasks().await;
            let record = self.sampler.snapshot();
            for outcome in &mut here {
                let heal_at = outcome.heal_at.unwrap_or_else(Instant::now);
                for (service, cut_off) in &outcome.cut_off {
                    let replaced = outcome.replaced.get(service);
                    for task in cut_off {
                        if replaced.is_some_and(|r| r.contains(task)) {
                            continue;
                        }
                        if tasks.iter().any(|t| {
                            t.id == *task
                                && (t.state == TaskState::Lost
                                    || t.desired_state == DesiredState::Shutdown)
                        }) {
                            let after = record
                                .gone(task)
                                .map(|gone| gone.saturating_duration_since(heal_at));
                            eprintln!(
                                "  {service} copy {task} on {}: replaced after the heal, gone \
                                 {} after it",
                                outcome.worker,
                                after.map_or("?".into(), |d| format!("{:.3}s", d.as_secs_f64()))
                            );
                            outcome.replaced_after_heal.push((task.clone(), after));
                        }
                    }
                }
            }
            let after = vec![self.service(STOP).await, self.service(REPLACE).await];
            assert_eq!(
                after, before,
                "partition seed {}: a service changed in round {r}",
                self.seed
            );
            outcomes.extend(here);
        }
        Report {
            seed: self.seed,
            outcomes,
            settle,
            record: self.sampler.snapshot(),
            failures_before,
            failures_after: self.stats().await.worker_failures,
            took: started.elapsed(),
        }
    }
}

impl Report {
    /// The tolerance on `GONE_WITHIN`: the sampler's resolution (its longest gap between
    /// two reads, at least its period).
    pub fn tolerance(&self, period: Duration) -> Duration {
        self.record.longest_gap.max(period)
    }

    /// Every replaced copy's time from heal to gone, by service.
    pub fn gone_times(&self, service: &str) -> Vec<Duration> {
        self.outcomes
            .iter()
            .filter_map(|o| o.gone_after_heal.get(service))
            .flatten()
            .map(|(_, after)| *after)
            .collect()
    }

    /// A table of what happened, and the measures.
    pub fn summary(&self, period: Duration) -> String {
        let mut lines = vec![format!(
            "partition seed {}: {} splits in {:.1}s; {} samples, every {:?} asked, gaps median \
             {:.0} ms, p99 {:.0} ms, longest {:.0} ms; longest read {:.1} ms, {} failed reads; \
             workers.failures {} -> {}",
            self.seed,
            self.outcomes.len(),
            self.took.as_secs_f64(),
            self.record.samples,
            period,
            self.record.gap_quantile(0.5).as_secs_f64() * 1000.0,
            self.record.gap_quantile(0.99).as_secs_f64() * 1000.0,
            self.record.longest_gap.as_secs_f64() * 1000.0,
            self.record.longest_read.as_secs_f64() * 1000.0,
            self.record.errors,
            self.failures_before,
            self.failures_after
        )];
        for o in &self.outcomes {
            let count = |m: &BTreeMap<String, Vec<String>>, s: &str| m.get(s).map_or(0, Vec::len);
            let gone: Vec<String> = o
                .gone_after_heal
                .values()
                .flatten()
                .map(|(_, d)| format!("{:.2}s", d.as_secs_f64()))
                .collect();
            let late: Vec<String> = o
                .replaced_after_heal
                .iter()
                .map(|(_, d)| d.map_or("?".into(), |d| format!("{:.2}s", d.as_secs_f64())))
                .collect();
            lines.push(format!(
                "round {:2} {:>12} (rank {}) {:5.1}s down={:<5} stop: {} cut off, {} replaced, {} gone \
                 before heal; replace: {} cut off, {} replaced; gone after heal: [{}]; replaced after \
                 heal, gone: [{}]",
                o.round,
                o.worker,
                o.split.rank,
                o.split.length.as_secs_f64(),
                o.down_at_heal,
                count(&o.cut_off, STOP),
                count(&o.replaced, STOP),
                count(&o.gone_before_heal, STOP),
                count(&o.cut_off, REPLACE),
                count(&o.replaced, REPLACE),
                gone.join(", "),
                late.join(", ")
            ));
        }
        let settle: Vec<String> = self
            .settle
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect();
        lines.push(format!(
            "settled after each round (s): {}",
            settle.join(" ")
        ));
        for service in [STOP, REPLACE] {
            let mut times = self.gone_times(service);
            times.sort();
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                lines.push(format!(
                    "{service}: replaced copies gone after their heal: {} measured, median {:.3}s, \
                     max {:.3}s (min {:.3}s)",
                    times.len(),
                    times[times.len() / 2].as_secs_f64(),
                    last.as_secs_f64(),
                    first.as_secs_f64()
                ));
            }
            lines.push(format!(
                "{service}: most copies of one slot at a sample: {}",
                self.record.most_copies(service)
            ));
            let episodes = self.record.describe_episodes(service);
            if !episodes.is_empty() {
                lines.push(episodes);
            }
        }
        lines.join("\n")
    }

    /// The promises; every one that fails is named (not only the first).
    pub fn check(&self, period: Duration) {
        let summary = self.summary(period);
        println!("{summary}");
        let mut failed = Vec::new();
        if self.record.most_copies(STOP) > 1 {
            failed.push(format!(
                "on_disconnect \"stop\": a slot had {} copies at once:\n{}",
                self.record.most_copies(STOP),
                self.record.describe_episodes(STOP)
            ));
        }
        let tolerance = self.tolerance(period);
        let late: Vec<String> = self
            .outcomes
            .iter()
            .flat_map(|o| {
                o.gone_after_heal
                    .get(REPLACE)
                    .into_iter()
                    .flatten()
                    .filter(|(_, after)| *after > GONE_WITHIN + tolerance)
                    .map(move |(task, after)| {
                        format!(
                            "{task} on {} gone {:.3}s after the heal",
                            o.worker,
                            after.as_secs_f64()
                        )
                    })
            })
            .collect();
        if !late.is_empty() {
            failed.push(format!(
                "on_disconnect \"replace\": cut-off copies not gone within {GONE_WITHIN:?} (+{:.0} ms \
                 of sampling) of the heal: {}",
                tolerance.as_secs_f64() * 1000.0,
                late.join("; ")
            ));
        }
        assert!(
            failed.is_empty(),
            "partition seed {}:\n{}\n\n{summary}",
            self.seed,
            failed.join("\n")
        );
    }
}
