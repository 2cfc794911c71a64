//! The agent's health checks: one prober per running container whose task has a
//! `healthcheck`, started and stopped by the sync pass, publishing its verdict for the
//! plan to report (and, when unhealthy, to replace the container).
//!
//! One lightweight tokio task per probed container, rather than one loop over them all:
//! each keeps its own timing (a check's interval, 1 s while starting) and its own timeout,
//! so a slow or hanging probe delays no other, and tokio's timer wheel does the
//! scheduling a single loop would have to redo. A sleeping task costs a few hundred bytes:
//! 1000 of them are nothing. At most `PARALLEL_PROBES` probes run at once, so 1000 exec
//! checks due together do not fork 1000 processes at once.
//!
//! A prober ends when its task is no longer wanted running, when its container is gone or
//! another runs for the task, when it found the task unhealthy (the container is then
//! replaced), and when the agent stops: the sync pass drops its handle, which cancels it,
//! and a probe under way is dropped with it (an exec's process is killed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mycluster_background::{Loop, LoopControl};
use mycluster_core::service::HealthCheck;
use mycluster_core::wire::{DesiredState, TaskDoc};
use mycluster_runtime::{Container, ContainerState};
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::probe::{self, Target};
use crate::verdict::{Tracker, Verdict};
use crate::{lock, Shared};

/// How many probes of one agent run at once.
const PARALLEL_PROBES: usize = 64;

pub struct Probers {
    /// By task id: the container each prober watches, and what stops it when dropped.
    running: Mutex<HashMap<String, Handle>>,
    /// By task id: each prober's latest verdict, kept after it ended (an unhealthy
    /// verdict outlives its container: the failure is reported once it is removed) and
    /// dropped with the task from the manager's list.
    verdicts: Mutex<HashMap<String, Verdict>>,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
}

struct Handle {
    container_id: String,
    _stop: DropGuard,
}

impl Probers {
    pub fn new() -> Result<Probers, reqwest::Error> {
        Ok(Probers {
            running: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(HashMap::new()),
            http: probe::http_client()?,
            permits: Arc::new(Semaphore::new(PARALLEL_PROBES)),
        })
    }

    /// Makes the probers match the tasks and containers of this pass: starts one for each
    /// probed container that has none, stops those no longer wanted; returns the
    /// verdicts, for the plan. Only map updates and spawns: never waits on a probe.
    pub fn sync(
        shared: &Arc<Shared>,
        tasks: &[TaskDoc],
        containers: &[Container],
    ) -> BTreeMap<String, Verdict> {
        let probers = &shared.probers;
        let by_task: HashMap<&str, &Container> =
            containers.iter().map(|c| (c.task_id.as_str(), c)).collect();
        let wanted: Vec<(&TaskDoc, &HealthCheck, &Container)> = tasks
            .iter()
            .filter(|t| t.desired_state == DesiredState::Running && !t.state.is_terminal())
            .filter_map(|t| {
                let check = t.healthcheck.as_ref()?;
                let container = by_task.get(t.id.as_str()).copied()?;
                (container.state == ContainerState::Running).then_some((t, check, container))
            })
            .collect();
        {
            let mut running = lock(&probers.running);
            let keep: HashMap<&str, &str> = wanted
                .iter()
                .map(|(t, _, c)| (t.id.as_str(), c.id.as_str()))
                .collect();
            running.retain(|task, handle| keep.get(task.as_str()) == Some(&&*handle.container_id));
            for (task, check, container) in wanted {
                if running.contains_key(&task.id) {
                    continue;
                }
                // Probed where the task listens: on the process driver, not at the
                // target the check names but at the port the agent gave it for it.
                let reached = shared.ports.reached(task, shared.runtime.driver());
                let mut check = check.clone();
                check.probe = crate::ports::retarget(&check.probe, &reached);
                let stop = shared.quit.child_token();
                running.insert(
                    task.id.clone(),
                    Handle {
                        container_id: container.id.clone(),
                        _stop: stop.clone().drop_guard(),
                    },
                );
                let tracker = Tracker::new(&check, task.health);
                tokio::spawn(watch(
                    shared.clone(),
                    container.clone(),
                    check,
                    tracker,
                    stop,
                ));
            }
        }
        let listed: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let mut verdicts = lock(&probers.verdicts);
        verdicts.retain(|task, _| listed.contains(task.as_str()));
        verdicts
            .iter()
            .map(|(task, verdict)| (task.clone(), verdict.clone()))
            .collect()
    }

    /// Stops every prober (the agent is stopping).
    pub fn stop_all(&self) {
        lock(&self.running).clear();
    }
}

/// What one prober keeps from one probe to the next.
struct Watch {
    container: Container,
    check: HealthCheck,
    tracker: Tracker,
    target: Target,
    started: Instant,
}

/// Probes one container until stopped or unhealthy.
async fn watch(
    shared: Arc<Shared>,
    container: Container,
    check: HealthCheck,
    tracker: Tracker,
    stop: CancellationToken,
) {
    let name = format!(
        "agent {}: health check of {}",
        shared.config.name, container.name
    );
    let mut state = Watch {
        container,
        check,
        tracker,
        target: Target::default(),
        started: Instant::now(),
    };
    let period = Duration::from_millis(state.check.interval.millis());
    Loop::new(name, period, stop.clone())
        .run_with(&mut state, |state| {
            let (shared, stop) = (shared.clone(), stop.clone());
            Box::pin(async move {
                let timeout = Duration::from_millis(state.check.timeout.millis());
                let probers = &shared.probers;
                let probed = async {
                    // Waiting for a turn is not part of the probe's time.
                    let _permit = probers.permits.acquire().await;
                    probe::run(
                        &*shared.runtime,
                        &probers.http,
                        &mut state.target,
                        &state.container,
                        &state.check.probe,
                        timeout,
                    )
                    .await
                };
                let result = tokio::select! {
                    _ = stop.cancelled() => return Ok(LoopControl::Stop),
                    result = probed => result,
                };
                shared.metrics.health_check(result.is_ok());
                let changed = state.tracker.observe(state.started.elapsed(), result);
                let verdict = state.tracker.verdict(&state.container.id);
                if changed {
                    tracing::info!(
                        "agent {}: {} is {}{}",
                        shared.config.name,
                        state.container.name,
                        verdict.health,
                        verdict
                            .message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                }
                if stop.is_cancelled() {
                    return Ok(LoopControl::Stop);
                }
                lock(&probers.verdicts).insert(state.container.task_id.clone(), verdict);
                if changed {
                    // Reported (or the container replaced) by the next pass, now.
                    shared.poke.notify_one();
                }
                Ok(match state.tracker.next_probe() {
                    Some(wait) => LoopControl::After(wait),
                    None => LoopControl::Stop,
                })
            })
        })
        .await;
}
