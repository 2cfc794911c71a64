//! The long-poll of the worker's task list: each new list is published (see
//! `fencing::publish`); a poll that answered is the wait, so the next one starts at
//! once. A list fetched meanwhile by the heartbeat (`fencing::relist`), or the manager
//! answering heartbeats again after an outage, starts the poll over: the one under way
//! may hang on a connection a network split broke, and its answer would be older.

use std::sync::Arc;
use std::time::Duration;

use mycluster_background::{Loop, LoopControl};
use tokio_util::sync::CancellationToken;

use crate::fence::Source;
use crate::fencing::publish;
use crate::join::{ends_agent, rejoin};
use crate::{lock, Shared};

/// The first wait after a failed poll (doubled at each next failure).
const WATCH_RETRY: Duration = Duration::from_millis(500);

pub(crate) async fn watch_loop(shared: Arc<Shared>, stop: CancellationToken) {
    // Whether the last poll failed: the next asks for the list at once, not for a change.
    let mut failed = false;
    let name = format!("agent {}", shared.config.name);
    Loop::new(name, WATCH_RETRY, stop.clone())
        .on_recovery("the manager answers again")
        // Also ends a backoff: the manager answers heartbeats again.
        .woken_by(&shared.rewatch)
        .run_with(&mut failed, |failed| {
            let (shared, stop) = (shared.clone(), stop.clone());
            Box::pin(async move {
                let (index, generation) = {
                    let fencing = lock(&shared.fencing);
                    (fencing.index(), fencing.generation())
                };
                let index = if *failed { None } else { index };
                let client = shared.client();
                let poll = client.assigned_tasks(
                    &shared.config.name,
                    &shared.config.instance,
                    index,
                    shared.config.poll_wait,
                );
                // A poll waits up to `poll_wait`: neither the stop nor a fresher list
                // waits for it.
                let result = tokio::select! {
                    _ = stop.cancelled() => return Ok(LoopControl::Stop),
                    _ = shared.rewatch.notified() => return Ok(LoopControl::Now),
                    result = poll => result,
                };
                match result {
                    Ok(list) => {
                        *failed = false;
                        publish(&shared, list, Source::Watch { generation }).await;
                        Ok(LoopControl::Now)
                    }
                    Err(e) => {
                        if ends_agent(&shared, &e) {
                            return Ok(LoopControl::Stop);
                        }
                        if e.status() == Some(404) {
                            let _ = rejoin(&shared).await;
                        }
                        // Keep the last list: the containers keep running as they are.
                        *failed = true;
                        Err(format!("cannot get tasks: {e}"))
                    }
                }
            })
        })
        .await;
}
