//! The monitor: decides that a worker is dead and tells the manager, which marks it down
//! and relocates its tasks. A worker is dead when
//! - its agent said it is leaving (it was stopped: `docker stop`, SIGTERM): at once;
//! - its agent's connection to the manager dropped (its process or host died: the
//!   kernel closed its sockets) *and* its health endpoint does not answer: at once;
//! - it missed heartbeats for `dead_after` (as the manager recorded them; a split, a
//!   frozen host) *and* its health endpoint does not answer.
//!
//! One slow heartbeat is therefore not a death. The first two the manager notes as
//! suspicions, and its blocking query (`GET /api/v1/workers?suspected_after=N&wait=`)
//! wakes the monitor the moment one is noted; it is also the monitor's pace between
//! looks. Every decision is one log line, in the original's words.
//!
//! Where to start reading: `run` (the pass: list workers, pick whom to look at by the
//! manager's suspicions and the core's liveness rule, probe them, declare the dead in one
//! verdict), then `look_at`.

mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mycluster_background::{pace, Loop, LoopControl};
use mycluster_client::Client;
use mycluster_core::wire::{DownDoc, SuspicionReason, WorkerDoc, WorkerStatus};
use tokio_util::sync::CancellationToken;

pub use config::ConfigError;

#[derive(Clone, Debug)]
pub struct MonitorConfig {
    pub manager: String,
    /// The cluster's API token (declaring a worker down is an operator's act).
    pub token: Option<String>,
    /// The cluster CA an `https://` manager must be certified by.
    pub pin: Option<mycluster_tls::Pin>,
    /// How often the workers are checked.
    pub interval: Duration,
    /// Silence after which a worker is suspected (and probed).
    pub dead_after: Duration,
    /// How long the probe of a suspect's health endpoint may take (longer for a worker
    /// asked to beat less often: see `probe_timeout`).
    pub probe_timeout: Duration,
}

impl MonitorConfig {
    /// Defaults that find a dead worker within about 3 s of its last heartbeat, with
    /// heartbeats every second: 2 s of silence, a 500 ms probe, checks every 250 ms.
    pub fn new(manager: &str) -> MonitorConfig {
        MonitorConfig {
            manager: manager.to_string(),
            token: None,
            pin: None,
            interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// How long a worker may stay silent before it is suspected: `dead_after`, or two of the
/// heartbeat intervals it was asked for if that is longer (a large cluster's agents beat
/// less often than once a second) — the core's one liveness shape, with the monitor's
/// own floor.
pub fn silence_allowed(worker: &WorkerDoc, dead_after: Duration) -> Duration {
    // Clamped: the interval comes from the manager, and a day of silence is plenty.
    let interval = worker.heartbeat_interval.clamp(0.0, 43_200.0);
    mycluster_core::worker::silence_allowed(Duration::from_secs_f64(interval), dead_after)
}

/// The workers that are up (ready, or draining: a drained worker that dies mid-move must
/// be found too, or its replicas would count as running forever) and silent for longer
/// than they may be: the ones to probe.
pub fn suspects(workers: &[WorkerDoc], dead_after: Duration) -> Vec<&WorkerDoc> {
    workers
        .iter()
        .filter(|w| w.status != WorkerStatus::Down)
        .filter(|w| silent_too_long(w, dead_after))
        .collect()
}

/// Whether a worker has been silent for longer than it may be.
fn silent_too_long(worker: &WorkerDoc, dead_after: Duration) -> bool {
    worker
        .last_heartbeat_age
        .is_some_and(|age| age > silence_allowed(worker, dead_after).as_secs_f64())
}

/// Probes at once at most this many suspects' health endpoints.
const PARALLEL_PROBES: usize = 64;

/// Runs until `stop` is cancelled.
pub async fn run(
    config: MonitorConfig,
    stop: CancellationToken,
) -> Result<(), mycluster_client::ClientError> {
    let client = Client::new(&config.manager, Duration::from_secs(10))?
        .with_pin(config.pin)?
        .with_token(config.token.clone());
    let probe = mycluster_client::reqwest_builder()
        .timeout(MAX_PROBE_TIMEOUT.max(config.probe_timeout))
        .build()
        .map_err(|e| mycluster_client::ClientError::BadUrl(e.to_string()))?;
    tracing::info!("Starting monitor agent");
    let interval = config.interval;
    let mut pass = Pass {
        client,
        probe,
        config,
        last_status: BTreeMap::new(),
        answering: BTreeSet::new(),
        manager_down: false,
        suspected_after: 0,
        pace: interval,
    };
    Loop::new("monitor", interval, stop)
        .run_with(&mut pass, |pass| Box::pin(pass.once()))
        .await;
    tracing::info!("Stopping monitor agent");
    Ok(())
}

/// The monitor's pass, and what it remembers from one pass to the next.
struct Pass {
    client: Client,
    probe: reqwest::Client,
    config: MonitorConfig,
    /// Each worker's status when last seen, to say what changed.
    last_status: BTreeMap<String, WorkerStatus>,
    /// Silent workers whose agent answers its probe, said once.
    answering: BTreeSet<String>,
    /// Whether the manager did not answer the last look, said once.
    manager_down: bool,
    /// The highest suspicion index in the last answer: the next look waits for a newer.
    suspected_after: u64,
    /// How long the next look may wait on the manager's side for a suspicion.
    pace: Duration,
}

impl Pass {
    /// Looks at the workers, probes the silent ones and declares the dead ones down;
    /// when to look again. It never fails as a loop's step: an unreachable manager is
    /// said once, in the original's words, and looked for again at the usual pace (not
    /// backed off: the moment it answers, the workers are watched again).
    async fn once(&mut self) -> Result<LoopControl, String> {
        let asked = std::time::Instant::now();
        // The wait between looks is the manager's blocking query: it answers at once when
        // an agent says it is leaving or its connection drops, else after `pace`.
        let listed = self
            .client
            .workers_suspected_after(self.suspected_after, self.pace)
            .await;
        // When the list arrived: its silences were measured just before.
        let looked = std::time::Instant::now();
        let workers = match listed {
            Ok(workers) => workers,
            Err(e) => {
                if !self.manager_down {
                    tracing::error!("Cannot reach the manager: {e}");
                    self.manager_down = true;
                }
                // Looked for again at the usual pace (not backed off: the moment it
                // answers, the workers are watched again).
                return Ok(LoopControl::After(self.config.interval));
            }
        };
        if self.manager_down {
            tracing::info!("The manager at {} answers again", self.config.manager);
            self.manager_down = false;
        }
        note_changes(&workers, &mut self.last_status);
        self.suspected_after = workers
            .iter()
            .filter_map(|w| w.suspected.map(|s| s.index))
            .max()
            .unwrap_or(0);
        let looks = look_at(&workers, self.config.dead_after);
        let alive = probe_all(&self.probe, &looks.probe, self.config.probe_timeout).await;
        let mut silent = Vec::new();
        let mut at_once: Vec<&WorkerDoc> = looks.left.clone();
        for (worker, alive) in looks.probe.iter().zip(alive) {
            let disconnected = worker
                .suspected
                .is_some_and(|s| s.reason == SuspicionReason::Disconnected);
            if alive {
                // Heartbeats are not arriving (or its connection dropped), but the agent
                // answers: a network problem between it and the manager, not a dead
                // worker. Say it once.
                if self.answering.insert(worker.worker.clone()) {
                    if disconnected {
                        tracing::info!(
                            "Worker {}'s connection to the manager dropped, but it answers its health probe: not relocating",
                            worker.worker
                        );
                    } else {
                        tracing::warn!(
                            "Worker {} missed heartbeats for {:.1}s but answers its health probe: not relocating",
                            worker.worker,
                            worker.last_heartbeat_age.unwrap_or_default()
                        );
                    }
                }
                continue;
            }
            self.answering.remove(&worker.worker);
            if disconnected && !silent_too_long(worker, self.config.dead_after) {
                at_once.push(*worker);
            } else {
                silent.push(*worker);
            }
        }
        if !at_once.is_empty() {
            // Its agent said it left, or its connection dropped and it does not answer:
            // no silence to wait for.
            declare(&self.client, &at_once, None, &mut self.last_status).await;
        }
        if !silent.is_empty() {
            // Each was silent longer than it may be when the list was made, and has been
            // since (probing took a while); the manager refuses any that beat again in
            // between: such a worker is silent for less than the time since the look,
            // the dead ones for more than the shortest allowance plus that time.
            let silent_for = silent
                .iter()
                .map(|w| silence_allowed(w, self.config.dead_after))
                .min()
                .unwrap_or(self.config.dead_after)
                + looked.elapsed();
            declare(
                &self.client,
                &silent,
                Some(silent_for),
                &mut self.last_status,
            )
            .await;
        }
        // At most a tenth of the time goes to looking (a list of ten thousand workers
        // from a busy manager takes a while); a large cluster's agents beat every few
        // seconds anyway. The next look waits that long on the manager's side.
        self.pace = pace(
            self.config.interval,
            looked
                .saturating_duration_since(asked)
                .saturating_sub(self.pace),
            10,
            Duration::from_secs(5),
        );
        Ok(LoopControl::Now)
    }
}

/// Which workers to look at closer in one pass.
#[derive(Debug, Default)]
pub struct Looks<'a> {
    /// Their agent said it left: declared down without a probe.
    pub left: Vec<&'a WorkerDoc>,
    /// Silent too long, or their connection dropped: probed, declared down if the probe
    /// fails.
    pub probe: Vec<&'a WorkerDoc>,
}

/// The workers that are up (ready, or draining) and either silent for longer than they
/// may be (`suspects`) or suspected by the manager (left, disconnected).
pub fn look_at(workers: &[WorkerDoc], dead_after: Duration) -> Looks<'_> {
    let mut looks = Looks::default();
    let silent: BTreeSet<&str> = suspects(workers, dead_after)
        .iter()
        .map(|w| w.worker.as_str())
        .collect();
    for worker in workers.iter().filter(|w| w.status != WorkerStatus::Down) {
        match worker.suspected.map(|s| s.reason) {
            Some(SuspicionReason::Left) => looks.left.push(worker),
            Some(SuspicionReason::Disconnected) => looks.probe.push(worker),
            None if silent.contains(worker.worker.as_str()) => looks.probe.push(worker),
            None => {}
        }
    }
    looks
}

/// Declares every confirmed-dead worker down in one request (one commit, one reconcile),
/// then says, for each, what moved where. With `silent_for`, the manager leaves out any
/// heard from within it.
async fn declare(
    client: &Client,
    dead: &[&WorkerDoc],
    silent_for: Option<Duration>,
    last_status: &mut BTreeMap<String, WorkerStatus>,
) {
    let names: Vec<&str> = dead.iter().map(|w| w.worker.as_str()).collect();
    match client.declare_down_many(&names, silent_for).await {
        Ok(answer) => {
            for verdict in &answer.down {
                let worker = verdict.worker.as_str();
                tracing::error!("Worker {worker} was not found... relocating its services");
                log_relocations(worker, verdict);
                last_status.insert(worker.to_string(), WorkerStatus::Down);
            }
            // It beat again meanwhile: alive after all.
            for skipped in &answer.skipped {
                tracing::info!("{}", skipped.message);
            }
        }
        Err(e) => tracing::error!(
            "Could not relocate the services of {}: {e}",
            names.join(", ")
        ),
    }
}

/// Whether each worker's agent answers its health probe, probed side by side: when a
/// rack dies, a thousand probes in a row would hold up the verdict on all of them.
async fn probe_all(probe: &reqwest::Client, workers: &[&WorkerDoc], base: Duration) -> Vec<bool> {
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_PROBES));
    let mut probes = tokio::task::JoinSet::new();
    for (i, worker) in workers.iter().enumerate() {
        let (probe, address, limit) = (probe.clone(), worker.address.clone(), limit.clone());
        let timeout = probe_timeout(worker, base);
        probes.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, probe_health(&probe, &address, timeout).await)
        });
    }
    let mut alive = vec![false; workers.len()];
    while let Some(done) = probes.join_next().await {
        // A probe that panicked answered nothing: the worker is not known to be alive.
        if let Ok((i, answered)) = done {
            alive[i] = answered;
        }
    }
    alive
}

async fn probe_health(probe: &reqwest::Client, address: &str, timeout: Duration) -> bool {
    let url = format!("http://{address}/healthz");
    matches!(
        probe.get(&url).timeout(timeout).send().await,
        Ok(response) if response.status().is_success()
    )
}

/// The longest the probe of a worker whose connection dropped may take.
const DROPPED_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// The longest a probe may take, whatever the worker's pace.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a worker's health probe may take: `base`, or a quarter of its heartbeat
/// interval if that is longer (at most 5 s). A cluster large enough to slow its
/// heartbeats has already traded detection time for load; a busy agent that answers in
/// 2 s is alive, and declaring it dead would move its work for nothing.
pub fn probe_timeout(worker: &WorkerDoc, base: Duration) -> Duration {
    // A worker whose connection just dropped was heard from a moment ago: a live agent
    // answers at once, and a dead host's address does not answer at all (on a Docker
    // network, its IP is gone: no ARP answer, only the timeout), so its probe is short.
    if worker
        .suspected
        .is_some_and(|s| s.reason == SuspicionReason::Disconnected)
    {
        return base.min(DROPPED_PROBE_TIMEOUT);
    }
    let quarter = Duration::from_secs_f64((worker.heartbeat_interval / 4.0).clamp(0.0, 5.0));
    base.max(quarter).min(MAX_PROBE_TIMEOUT.max(base))
}

/// Logs workers that came back, joined, or went down by another hand.
fn note_changes(workers: &[WorkerDoc], last: &mut BTreeMap<String, WorkerStatus>) {
    for worker in workers {
        let before = last.insert(worker.worker.clone(), worker.status);
        match (before, worker.status) {
            (Some(WorkerStatus::Down), WorkerStatus::Ready) => {
                tracing::info!("Worker {} is back and ready", worker.worker)
            }
            (None, _) => tracing::info!("Watching worker {} ({})", worker.worker, worker.status),
            _ => {}
        }
    }
}

/// One line per replacement, naming its service and where it went.
fn log_relocations(worker: &str, answer: &DownDoc) {
    let relocated = &answer.relocated;
    tracing::info!("Relocating services from worker {worker}");
    let mut placed = 0;
    for task in relocated {
        let service = task.service.as_str();
        let what = task.image.as_deref().unwrap_or(service);
        match task.worker.as_deref() {
            Some(to) => {
                placed += 1;
                tracing::info!(
                    "New {what} container of service {service} will be deployed to {to}"
                );
            }
            None => tracing::error!(
                "No healthy worker left for service {service}: its container stays pending ({})",
                task.message
            ),
        }
    }
    tracing::info!(
        "Total of {placed} containers relocated from {worker}{}",
        if placed < relocated.len() {
            format!(", {} waiting for a worker", relocated.len() - placed)
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str, status: WorkerStatus, age: Option<f64>) -> WorkerDoc {
        WorkerDoc {
            worker: name.into(),
            address: "127.0.0.1:1".into(),
            status,
            labels: Default::default(),
            capacity: None,
            driver: Some(mycluster_core::Driver::Process),
            tasks: 0,
            running: 0,
            last_heartbeat_age: age,
            heartbeat_interval: 1.0,
            registered_at: 0.0,
            instance: String::new(),
            resources: Default::default(),
            reserved: Default::default(),
            host: String::new(),
            drain: false,
            epoch: 0,
            suspected: None,
            credential: None,
        }
    }

    #[test]
    fn only_silent_workers_that_are_up_are_suspects() {
        let workers = [
            worker("fresh", WorkerStatus::Ready, Some(0.4)),
            worker("silent", WorkerStatus::Ready, Some(2.5)),
            worker("already-down", WorkerStatus::Down, Some(30.0)),
            worker("draining", WorkerStatus::Draining, Some(30.0)),
            worker("unknown", WorkerStatus::Ready, None),
        ];
        let names: Vec<&str> = suspects(&workers, Duration::from_secs(2))
            .into_iter()
            .map(|w| w.worker.as_str())
            .collect();
        assert_eq!(names, ["silent", "draining"]);
    }

    #[test]
    fn the_managers_suspicions_are_looked_at_before_any_silence() {
        use mycluster_core::wire::Suspicion;
        let suspected = |name: &str, reason, status| {
            let mut w = worker(name, status, Some(0.1));
            w.suspected = Some(Suspicion { reason, index: 1 });
            w
        };
        let workers = [
            suspected("left", SuspicionReason::Left, WorkerStatus::Ready),
            suspected(
                "dropped",
                SuspicionReason::Disconnected,
                WorkerStatus::Draining,
            ),
            suspected("gone", SuspicionReason::Left, WorkerStatus::Down),
            worker("silent", WorkerStatus::Ready, Some(2.5)),
            worker("fresh", WorkerStatus::Ready, Some(0.2)),
        ];
        let looks = look_at(&workers, Duration::from_secs(2));
        let names = |ws: &[&WorkerDoc]| ws.iter().map(|w| w.worker.clone()).collect::<Vec<_>>();
        assert_eq!(names(&looks.left), ["left"]);
        assert_eq!(names(&looks.probe), ["dropped", "silent"]);
    }

    #[test]
    fn a_slower_heartbeat_allows_a_slower_probe() {
        let base = Duration::from_millis(500);
        let mut w = worker("w", WorkerStatus::Ready, Some(3.0));
        assert_eq!(probe_timeout(&w, base), base);
        w.heartbeat_interval = 10.0;
        assert_eq!(probe_timeout(&w, base), Duration::from_millis(2500));
        w.heartbeat_interval = 60.0;
        assert_eq!(probe_timeout(&w, base), Duration::from_secs(5));
    }

    #[test]
    fn a_slower_heartbeat_allows_a_longer_silence() {
        let mut slow = worker("slow", WorkerStatus::Ready, Some(12.0));
        slow.heartbeat_interval = 10.0;
        let mut late = worker("late", WorkerStatus::Ready, Some(21.0));
        late.heartbeat_interval = 10.0;
        let workers = [slow, late];
        let names: Vec<&str> = suspects(&workers, Duration::from_secs(2))
            .into_iter()
            .map(|w| w.worker.as_str())
            .collect();
        assert_eq!(names, ["late"]);
        assert_eq!(
            silence_allowed(&workers[0], Duration::from_secs(2)),
            Duration::from_secs(20)
        );
        // A manager's absurd interval does not panic the monitor.
        let mut absurd = worker("absurd", WorkerStatus::Ready, Some(1.0));
        absurd.heartbeat_interval = 1e300;
        assert_eq!(
            silence_allowed(&absurd, Duration::from_secs(2)),
            Duration::from_secs(86_400)
        );
    }
}
