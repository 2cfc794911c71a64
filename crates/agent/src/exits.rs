//! Exits the runtime announces (`ContainerRuntime::exits`: the docker driver's engine
//! events, the process driver's SIGCHLD): each wakes the sync loop at once, so a crashed
//! task is reported `failed` (and its slot replaced by the manager) within milliseconds
//! instead of at the next sync period. An announcement is only a reason to look: the
//! sync pass reads what really runs, as on its periodic pass, which stays the safety net
//! for a driver that announces nothing (sim) or an announcement that was missed.

use std::sync::Arc;
use std::time::Duration;

use mycluster_background::{Loop, LoopControl};
use mycluster_runtime::Exit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Pokes the sync loop at each exit the runtime announces, until `stop`; returns at once
/// for a runtime that announces none.
pub(crate) async fn follow(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(mut exits) = shared.runtime.exits() else {
        return;
    };
    let name = format!("agent {} exits", shared.config.name);
    // The step only waits on a channel: it never fails, the period is never waited.
    Loop::new(name, Duration::from_secs(1), stop.clone())
        .run_with(&mut exits, |exits| {
            let (shared, stop) = (shared.clone(), stop.clone());
            Box::pin(async move {
                let heard = tokio::select! {
                    _ = stop.cancelled() => return Ok(LoopControl::Stop),
                    heard = exits.recv() => heard,
                };
                match heard {
                    Ok(Exit::Ended { task_id, .. }) => {
                        tracing::debug!("agent {}: task {task_id} ended", shared.config.name);
                    }
                    // Exits may have gone unheard: one pass looks at everything.
                    Ok(Exit::Missed) | Err(RecvError::Lagged(_)) => {}
                    // The runtime stopped announcing: the periodic pass goes on alone.
                    Err(RecvError::Closed) => return Ok(LoopControl::Stop),
                }
                shared.poke.notify_one();
                Ok(LoopControl::Now)
            })
        })
        .await;
}
