//! The store keeper: checks the store every second — that it still holds this manager's
//! history, that the lease is renewed (Redis), that a file an I/O error left unusable is
//! reopened (embedded) — so `/healthz` tells the truth between writes, and a store that
//! comes back is written again without waiting for a client's write to find out.

use std::sync::Arc;
use std::time::Duration;

use mycluster_background::{run_loop, LoopControl};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

/// How often the store is checked. The Redis lease (10 s) is renewed at each check.
const PERIOD: Duration = Duration::from_secs(1);

pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    run_loop("store keeper", PERIOD, stop, || {
        let cluster = cluster.clone();
        async move {
            // What it finds is recorded (and logged when it changes) by the cluster: a
            // store that is down is not this loop's failure, and it must keep looking
            // every second to see it come back.
            cluster.check_store().await;
            Ok(LoopControl::Continue)
        }
    })
    .await;
}
