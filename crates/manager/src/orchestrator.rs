//! The orchestrator loop: reconcile and schedule the whole cluster on a timer. Every
//! request already reconciles what it touched; this pass is the level-triggered safety
//! net that repairs anything a missed event or a failed commit left behind, and starts
//! the replacements whose crash-loop backoff has run out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Follow};

/// The pass may take at most this share of the time: it holds the writer, so on a
/// million tasks a pass every second would leave little room for anything else.
const MAX_SHARE: u32 = 20;

pub async fn run(cluster: Arc<Cluster>, period: Duration, stop: CancellationToken) {
    let mut wait = period;
    let mut failures = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let started = Instant::now();
        let pass = cluster
            .mutate(|_txn, _now| Ok::<_, std::convert::Infallible>(((), Follow::All)))
            .await;
        let took = started.elapsed();
        wait = match pass {
            Ok(_) => {
                failures = 0;
                // Never more often than `period`, never more than 1/MAX_SHARE of the time,
                // and never so rarely that crash-loop retries wait minutes for it.
                period.max(took * MAX_SHARE).min(period * 30)
            }
            Err(e) => {
                failures += 1;
                let retry = mycluster_background::backoff(period, failures).min(period * 30);
                tracing::warn!("orchestrator: reconcile failed: {e}; retrying in {retry:?}");
                retry
            }
        };
        if took > period {
            tracing::debug!("orchestrator: a pass took {took:?}; next in {wait:?}");
        }
    }
}
