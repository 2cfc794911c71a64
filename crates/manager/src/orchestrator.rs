//! The orchestrator loop: the core's periodic pass (`step::Reconcile`: reconcile and
//! schedule the whole cluster) on a timer. Every request already reconciles what it
//! touched; this pass is the level-triggered safety net that repairs anything a missed
//! event or a failed commit left behind, and starts the replacements whose crash-loop
//! backoff has run out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_background::{pace, run_loop, LoopControl};
use tokio_util::sync::CancellationToken;

use mycluster_core::step::Reconcile;

use crate::cluster::Cluster;

/// The pass may take at most this share of the time: it holds the writer, so on a
/// million tasks a pass every second would leave little room for anything else.
const MAX_SHARE: u32 = 20;

pub async fn run(cluster: Arc<Cluster>, period: Duration, stop: CancellationToken) {
    run_loop("orchestrator", period, stop, || {
        let cluster = cluster.clone();
        async move {
            let started = Instant::now();
            cluster
                .apply(Reconcile)
                .await
                .map_err(|e| format!("reconcile failed: {e}"))?;
            // Never more often than `period`, never more than 1/MAX_SHARE of the time,
            // and never so rarely that crash-loop retries wait minutes for it.
            let took = started.elapsed();
            Ok(LoopControl::After(pace(
                period,
                took,
                MAX_SHARE,
                period * 30,
            )))
        }
    })
    .await;
}
