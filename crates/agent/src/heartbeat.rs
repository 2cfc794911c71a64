//! The heartbeat: what renews the worker's lease (see `fence`). Each heartbeat gives up
//! after a short timeout (a heartbeat lost in a network split must not hold up the
//! next), and while they fail they are sent again at a steady short pace rather than
//! after a growing backoff: the lease must be renewed the moment the manager is
//! reachable again, so a manager restart shorter than the lease stops nothing.
//!
//! Each answer names the worker's epoch; one newer than the agent's task list (the worker
//! was declared down meanwhile), or a lease that ran out, has the agent fetch its list at
//! once, before it does anything else (see `fencing::relist`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_background::{Loop, LoopControl};
use tokio_util::sync::CancellationToken;

use crate::fence::lease_of;
use crate::fencing::relist;
use crate::join::{held_elsewhere, rejoin, superseded};
use crate::{lock, Shared};

/// The longest an agent waits for its manager to ask for a slower pace, in seconds.
const MAX_HEARTBEAT_INTERVAL: f64 = 60.0;

/// The pace of heartbeats while they fail (and the most a failing step backs off).
pub(crate) const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);

/// How long one heartbeat waits for its answer: the interval, at most a second, at
/// least `MIN_TIMEOUT`.
const MAX_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_TIMEOUT: Duration = Duration::from_millis(250);

/// While heartbeats fail, how often the agent says so again.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the heartbeat loop keeps between beats.
struct Beats {
    /// The interval the manager asked for.
    interval: Duration,
    /// Since when heartbeats have failed, and when the agent last said so.
    outage: Option<(Instant, Instant)>,
}

pub(crate) async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let name = format!("agent {} heartbeat", shared.config.name);
    let mut beats = Beats {
        interval: shared.config.heartbeat,
        outage: None,
    };
    Loop::new(name, shared.config.heartbeat, stop)
        .max_backoff(HEARTBEAT_RETRY)
        .quiet_recovery()
        .run_with(&mut beats, |beats| {
            let shared = shared.clone();
            Box::pin(async move { beat(&shared, beats).await })
        })
        .await;
}

async fn beat(shared: &Arc<Shared>, beats: &mut Beats) -> Result<LoopControl, String> {
    let name = &shared.config.name;
    let timeout = beats.interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    // The lease counts from the sending: the manager hears it later.
    let sent = Instant::now();
    let answer = shared
        .client
        .heartbeat_within(name, &shared.config.instance, timeout)
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(message) = held_elsewhere(&e) {
                superseded(shared, message);
                return Ok(LoopControl::Stop);
            }
            // The manager does not know us (it lost its state): join again.
            if e.status() == Some(404) {
                rejoin(shared).await?;
                return Ok(LoopControl::Continue);
            }
            let now = Instant::now();
            match &mut beats.outage {
                None => {
                    beats.outage = Some((now, now));
                    tracing::warn!(
                        "agent {name}: no answer to its heartbeat ({e}); trying again every \
                         {HEARTBEAT_RETRY:?}"
                    );
                }
                Some((since, said)) if now.duration_since(*said) >= OUTAGE_LOG_EVERY => {
                    *said = now;
                    tracing::warn!(
                        "agent {name}: still no answer from the manager after {:.0}s ({e})",
                        now.duration_since(*since).as_secs_f64()
                    );
                }
                Some(_) => {}
            }
            return Ok(LoopControl::After(HEARTBEAT_RETRY));
        }
    };
    // A large cluster asks its agents to beat less often.
    beats.interval = match answer.heartbeat_interval {
        secs if secs.is_finite() && secs > 0.0 => {
            Duration::from_secs_f64(secs.min(MAX_HEARTBEAT_INTERVAL)).max(shared.config.heartbeat)
        }
        _ => shared.config.heartbeat,
    };
    let must_relist = {
        let mut fencing = lock(&shared.fencing);
        fencing.renewed(sent, Some(lease_of(answer.lease)), answer.epoch);
        fencing.must_relist()
    };
    shared.renewals.notify_one();
    if let Some((since, _)) = beats.outage.take() {
        tracing::info!(
            "agent {name}: the manager answers again (after {:.1}s)",
            since.elapsed().as_secs_f64()
        );
        // The long-poll may hang on a connection the outage broke, or wait out a backoff.
        shared.rewatch.notify_one();
    }
    if must_relist {
        if let Err(e) = relist(shared).await {
            tracing::warn!("agent {name}: {e}; trying again");
            return Ok(LoopControl::After(HEARTBEAT_RETRY));
        }
    }
    Ok(LoopControl::After(beats.interval))
}
