//! The heartbeat: what renews the worker's lease (see `fence`). A heartbeat not answered
//! within `HEARTBEAT_RETRY` gets another attempt beside it, and so on every
//! `HEARTBEAT_RETRY` (each attempt waits up to `ATTEMPT_TIMEOUT`): an attempt lost in a
//! network split does not hold up the next, so the lease is renewed the moment the
//! manager is reachable again (a manager restart shorter than the lease stops nothing,
//! and a healed split is heard within a quarter second), and a slow manager still renews
//! it with a late answer.
//!
//! Each answer names the worker's epoch; one newer than the agent's task list (the worker
//! was declared down meanwhile), or a lease that ran out, has the agent fetch its list at
//! once, before it does anything else (see `fencing::relist`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_background::{Loop, LoopControl};
use mycluster_client::ClientError;
use mycluster_core::wire::HeartbeatDoc;
use tokio_util::sync::CancellationToken;

use crate::fence::lease_of;
use crate::fencing::relist;
use crate::join::{ends_agent, refused_for_good, rejoin};
use crate::{lock, Shared};

/// The longest an agent waits for its manager to ask for a slower pace, in seconds.
const MAX_HEARTBEAT_INTERVAL: f64 = 60.0;

/// The pace of heartbeats while they fail (and the most a failing step backs off).
pub(crate) const HEARTBEAT_RETRY: Duration = Duration::from_millis(250);

/// How long one attempt waits for its answer. Attempts overlap (see `answer`), so a
/// manager that answers slowly — busy, or starved of CPU — still renews the lease with
/// a late answer, while a new attempt after a split heals does not wait for the ones
/// lost in it.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most attempts in flight at once.
const MAX_ATTEMPTS: usize = 8;

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
    Loop::new(name, shared.config.heartbeat, stop.clone())
        .max_backoff(HEARTBEAT_RETRY)
        .quiet_recovery()
        .run_with(&mut beats, |beats| {
            let (shared, stop) = (shared.clone(), stop.clone());
            Box::pin(async move { beat(&shared, beats, &stop).await })
        })
        .await;
}

/// One heartbeat answered: the first answer to attempts sent every `HEARTBEAT_RETRY`
/// (at most `MAX_ATTEMPTS` in flight, each given `ATTEMPT_TIMEOUT`) until one is
/// answered, with the moment that one was sent (the lease counts from it). `Err`: the
/// manager refused it in a way the loop acts on (409, 404); `Ok(None)`: stopped. While
/// no attempt is answered the outage is logged (once, then every `OUTAGE_LOG_EVERY`).
async fn answer(
    shared: &Arc<Shared>,
    beats: &mut Beats,
    stop: &CancellationToken,
) -> Result<Option<(Instant, HeartbeatDoc)>, ClientError> {
    let name = &shared.config.name;
    let mut attempts = tokio::task::JoinSet::new();
    let mut pace = tokio::time::interval(HEARTBEAT_RETRY);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = pace.tick() => {
                if attempts.len() < MAX_ATTEMPTS {
                    let shared = shared.clone();
                    attempts.spawn(async move {
                        // The lease counts from the sending: the manager hears it later.
                        let sent = Instant::now();
                        let answer = shared
                            .client()
                            .heartbeat_within(&shared.config.name, &shared.config.instance, ATTEMPT_TIMEOUT)
                            .await;
                        (sent, answer)
                    });
                }
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                let Ok((sent, answer)) = done else { continue };
                let e = match answer {
                    Ok(answer) => return Ok(Some((sent, answer))),
                    Err(e) if refused_for_good(&e).is_some() || e.status() == Some(404) => {
                        return Err(e)
                    }
                    Err(e) => e,
                };
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
            }
        }
    }
}

async fn beat(
    shared: &Arc<Shared>,
    beats: &mut Beats,
    stop: &CancellationToken,
) -> Result<LoopControl, String> {
    let name = &shared.config.name;
    let (sent, answer) = match answer(shared, beats, stop).await {
        Ok(Some(answered)) => answered,
        Ok(None) => return Ok(LoopControl::Stop),
        Err(e) => {
            if ends_agent(shared, &e) {
                return Ok(LoopControl::Stop);
            }
            // The manager does not know us (it lost its state): join again (only
            // without a credential: see `join::rejoin`).
            rejoin(shared).await?;
            return Ok(LoopControl::Continue);
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
