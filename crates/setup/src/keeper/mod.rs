//! The keeper: starts the cluster's control plane again after a `docker kill`.
//!
//! Every role container has the restart policy `unless-stopped` (`host::ROLE_RESTART`),
//! which brings one back when its process dies or the engine restarts, and keeps one an
//! operator stopped stopped. But the engine counts `docker kill` as an operator's stop
//! too (see `verdict`), so a killed manager or monitor would stay down. The keeper
//! follows the engine's events for the cluster's containers and, when a control-plane
//! container (manager, monitor, ingress, redis) dies without the `stop` event that ends
//! a `docker stop`, starts it again (`verdict` is the rule).
//!
//! Where it runs: in every worker's agent (`mycluster agent --keep-cluster NAME`, which
//! `setup` gives each worker). The workers already hold the engine's socket (they run
//! the workloads), so no container gets a socket it did not have; there are as many
//! keepers as workers, so killing one keeper's container leaves the others (several
//! keepers starting one container is harmless: a start of a running container is a
//! no-op); and a worker is exactly what the keeper must not keep, so it never keeps
//! itself. A separate keeper container was the alternative: it would need the socket
//! too, and nothing would keep it. When every worker is stopped nothing keeps the
//! control plane (the restart policy still covers crashes and engine restarts), and a
//! cluster without workers runs nothing anyway.
//!
//! The loop (`crates/background`) reconnects with a bounded backoff when the engine's
//! event stream breaks, and asks the engine to replay what it emitted since the last
//! event seen, so a death during the reconnection is still judged.

mod verdict;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mycluster_background::{Loop, LoopControl};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use verdict::{kept, verdict, Event, Now, Verdict, Why, KEPT_ROLES, STOP_WAIT};

use crate::host::{ClusterHost, ContainerEvent};

/// The wait before following the engine again after its stream ended, and the first
/// wait after a failure to reach it.
const PERIOD: Duration = Duration::from_secs(1);

/// The longest wait between tries to reach the engine: an engine that restarts is back
/// within seconds, and the control plane may be down meanwhile.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An event stream that lasted this long worked: its end is a reconnection, not a
/// failure to back off from.
const LASTED: Duration = Duration::from_secs(10);

/// Keeps the control plane of `cluster` on this host until `stop` is cancelled.
pub async fn keep(cluster: String, stop: CancellationToken) {
    tracing::info!(
        "Keeping the control plane of cluster '{cluster}' ({}): started again when killed without `docker stop`",
        KEPT_ROLES.join(", ")
    );
    let mut keeper = Keeper {
        cluster: cluster.clone(),
        host: None,
        since: None,
        pending: HashMap::new(),
        stop: stop.clone(),
    };
    Loop::new(format!("keeper of {cluster}"), PERIOD, stop)
        .max_backoff(MAX_BACKOFF)
        .on_recovery("following the engine's events again")
        .run_with(&mut keeper, |keeper| Box::pin(keeper.follow()))
        .await;
}

/// A control-plane container that died, waiting for the `stop` that would say an
/// operator meant it.
struct Pending {
    name: String,
    role: String,
    /// When to judge it.
    due: Instant,
    /// What the engine said about it since it died.
    seen: Vec<Event>,
}

struct Keeper {
    cluster: String,
    /// The engine, once reached (dropped when its stream breaks, reached again).
    host: Option<ClusterHost>,
    /// Where to resume the event stream: just after the last event seen (nanoseconds
    /// since the epoch), or when the stream was first opened.
    since: Option<i64>,
    /// By container id.
    pending: HashMap<String, Pending>,
    stop: CancellationToken,
}

impl Keeper {
    /// Follows the engine's events until its stream ends or the stop comes, judging each
    /// death once its wait is over.
    async fn follow(&mut self) -> Result<LoopControl, String> {
        let host = match self.host.take() {
            Some(host) => host,
            None => ClusterHost::connect().await.map_err(|e| e.to_string())?,
        };
        let opened = std::time::Instant::now();
        let mut events = host.container_events(&self.cluster, self.since);
        if self.since.is_none() {
            self.since = Some(wall_nanos());
        }
        let stop = self.stop.clone();
        loop {
            let due = self.pending.values().map(|p| p.due).min();
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(LoopControl::Stop),
                _ = sleep_until(due) => self.judge(&host).await,
                item = events.next() => match item {
                    Some(Ok(event)) => self.note(event),
                    Some(Err(e)) => return lost(opened, e.to_string()),
                    None => return lost(opened, "the engine closed its event stream".into()),
                },
            }
        }
    }

    /// Notes what the engine said.
    fn note(&mut self, event: ContainerEvent) {
        self.since = Some(event.time_nano.saturating_add(1));
        match event.event {
            // A death of a container not kept needs no judging (nor an inspect).
            Event::Die if kept(&event.role) => {
                // A new death starts a new wait, whatever came before it.
                self.pending.insert(
                    event.id,
                    Pending {
                        name: event.name,
                        role: event.role,
                        due: Instant::now() + STOP_WAIT,
                        seen: Vec::new(),
                    },
                );
            }
            other => {
                if let Some(pending) = self.pending.get_mut(&event.id) {
                    pending.seen.push(other);
                }
            }
        }
    }

    /// Judges every death whose wait is over; starts the ones the rule says to.
    async fn judge(&mut self, host: &ClusterHost) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            let state = match host.now(&id).await {
                Ok(state) => state,
                Err(e) => {
                    // Left to the other keepers (and to the next death).
                    tracing::warn!("keeper: cannot judge {}: {e}", pending.name);
                    continue;
                }
            };
            match verdict(&pending.role, &pending.seen, state) {
                Verdict::Start => {
                    tracing::warn!(
                        "keeper: {} died without `docker stop`: starting it again",
                        pending.name
                    );
                    match host.start_again(&id).await {
                        Ok(()) => tracing::info!("keeper: {} started again", pending.name),
                        Err(e) => tracing::warn!("keeper: {e}"),
                    }
                }
                Verdict::Leave(why) => {
                    tracing::debug!("keeper: {} died; left as it is ({why:?})", pending.name)
                }
            }
        }
    }
}

/// The stream ended: after a stream that worked for a while, follow again after the
/// loop's period; else a failure, backed off.
fn lost(opened: std::time::Instant, why: String) -> Result<LoopControl, String> {
    if opened.elapsed() >= LASTED {
        tracing::warn!("keeper: {why}; following again");
        Ok(LoopControl::Continue)
    } else {
        Err(why)
    }
}

/// Sleeps until `due`, or forever when nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Now on the engine's clock (the engine runs on this host), in nanoseconds since the
/// epoch.
fn wall_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
