//! The orchestrator loop: reconcile and schedule the whole cluster on a timer. Every
//! request already reconciles what it touched; this pass is the level-triggered safety
//! net that repairs anything a missed event or a failed commit left behind.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Follow};
use mycluster_background::{run_loop, LoopControl};

pub async fn run(cluster: Arc<Cluster>, period: Duration, stop: CancellationToken) {
    run_loop("orchestrator", period, stop, || {
        let cluster = cluster.clone();
        async move {
            cluster
                .mutate(|_txn, _now| Ok::<_, std::convert::Infallible>(((), Follow::All)))
                .await
                .map(|_| LoopControl::Continue)
                .map_err(|e| e.to_string())
        }
    })
    .await
}
