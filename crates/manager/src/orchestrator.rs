//! The orchestrator loop: the core's periodic pass (`step::Reconcile`: reconcile and
//! schedule the whole cluster) on a timer. Every request already reconciles what it
//! touched; this pass is the level-triggered safety net that repairs anything a missed
//! event or a failed commit left behind, and starts the replacements whose crash-loop
//! backoff has run out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_background::{pace, run_loop, LoopControl};
use tokio_util::sync::CancellationToken;

use mycluster_core::rollout::next_due;
use mycluster_core::step::Reconcile;

use crate::cluster::{now_millis, Cluster};

/// The shortest wait between passes, however soon a rollout is due.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The pass may take at most this share of the time: it holds the writer, so on a
/// million tasks a pass every second would leave little room for anything else.
const MAX_SHARE: u32 = 20;

pub async fn run(cluster: Arc<Cluster>, period: Duration, stop: CancellationToken) {
    run_loop("orchestrator", period, stop, || {
        let cluster = cluster.clone();
        async move {
            let started = Instant::now();
            let (_, snapshot) = cluster
                .apply(Reconcile)
                .await
                .map_err(|e| format!("reconcile failed: {e}"))?;
            // Never more often than `period`, never more than 1/MAX_SHARE of the time,
            // and never so rarely that crash-loop retries wait minutes for it...
            let took = started.elapsed();
            let mut next = pace(period, took, MAX_SHARE, period * 30);
            // ...except when a rollout moves on at a known moment (a new task's monitor
            // runs out): then, still within the share, at that moment.
            let now = now_millis();
            // (or a cut-off worker's `on_disconnect: "stop"` tasks may be replaced).
            let due = [
                next_due(&snapshot.state, now),
                mycluster_core::lease::next_due(&snapshot.state, now),
            ];
            if let Some(due) = due.into_iter().flatten().min() {
                let wait = Duration::from_millis(due.saturating_sub(now));
                next = next.min(wait.max(took.saturating_mul(MAX_SHARE)).max(MIN_WAIT));
            }
            Ok(LoopControl::After(next))
        }
    })
    .await;
}
