//! Leases: how long a worker cut off from the manager keeps its tasks, and when the
//! manager may replace them. One rule, read by both sides.
//!
//! Every heartbeat the manager acknowledges renews the worker's lease. The agent counts
//! its lease from the moment it *sent* the last acknowledged heartbeat (the manager got
//! it later), the manager from the moment it *heard* it: the agent's count always runs
//! out first. For `on_disconnect: "stop"` tasks:
//! - the agent stops them itself once `lease` has passed without a renewal;
//! - the manager replaces them only `lease + stop_grace_period + LEASE_MARGIN` after the
//!   last renewal it heard, by which time the agent has stopped them (and killed them
//!   after their grace period), so no moment has two copies of a slot. The margin covers
//!   the agent's reaction time and two clocks that do not tick at exactly one rate.
//!
//! A manager that restarts knows no renewal from before: it counts from its own start,
//! which is later than any, so it waits at least as long. A worker that comes back
//! before its `stop` tasks are due keeps them (the agent stops them only if its own
//! count ran out). `replace` tasks ignore the lease: they are replaced once the worker is
//! declared down, and stopped by their agent when it reaches the manager again (its
//! epoch moved on: see `Worker::epoch`).

use std::time::Duration;

use crate::span::Span;
use crate::Millis;

/// The lease unless the manager is told otherwise (`--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// The shortest lease: a lease shorter than a few heartbeats would stop tasks on a busy
/// but healthy worker.
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// The longest lease.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// What the manager adds to the lease and the grace period before it replaces a `stop`
/// task of a worker it no longer hears.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// When the manager may replace a `stop` task of a worker last renewed at `renewed`
/// (wall-clock milliseconds): `lease + grace + LEASE_MARGIN` later.
pub fn replace_stop_task_at(renewed: Millis, lease: Duration, grace: Span) -> Millis {
    renewed
        .saturating_add(lease.as_millis() as Millis)
        .saturating_add(grace.millis())
        .saturating_add(LEASE_MARGIN.as_millis() as Millis)
}

/// Whether an agent whose last acknowledged heartbeat was sent `since_renewal` ago must
/// stop its `stop` tasks.
pub fn expired(since_renewal: Duration, lease: Duration) -> bool {
    since_renewal >= lease
}

/// The earliest moment after `now` at which an `on_disconnect: "stop"` task of a down
/// worker may be replaced: the orchestrator runs its pass then.
pub fn next_due(state: &crate::ClusterState, now: Millis) -> Option<Millis> {
    state
        .workers
        .values()
        .filter(|w| w.status == crate::WorkerStatus::Down)
        .flat_map(|w| {
            state
                .tasks_on_worker(&w.name)
                .filter(|t| t.is_live() && t.on_disconnect == crate::service::OnDisconnect::Stop)
                .filter_map(move |t| w.stop_tasks_replaceable_at(t.stop_grace_period))
        })
        .filter(|at| *at > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_waits_for_the_lease_the_grace_and_the_margin() {
        assert_eq!(
            replace_stop_task_at(10_000, DEFAULT_LEASE, Span::secs(10)),
            10_000 + 5_000 + 10_000 + 1_000
        );
        assert_eq!(
            replace_stop_task_at(Millis::MAX - 1, DEFAULT_LEASE, Span::secs(10)),
            Millis::MAX
        );
        assert!(!expired(Duration::from_millis(4_999), DEFAULT_LEASE));
        assert!(expired(DEFAULT_LEASE, DEFAULT_LEASE));
    }
}
