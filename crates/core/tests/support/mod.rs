//! What the core's tests share: running one command through `step` the way the manager
//! does, with the cluster's default limits and heartbeat rate.

// Each test binary uses a part of it.
#![allow(dead_code)]

pub mod sim;

use mycluster_core::commands::CommandError;
use mycluster_core::step::{self, Liveness, Step};
use mycluster_core::{ClusterState, Command, Context, IdSource, Limits, Millis};

/// `command` stepped on `state` at `now`, with `heard` as what the manager last heard.
pub fn step_at<C: Command>(
    state: &ClusterState,
    command: C,
    now: Millis,
    heard: &dyn Liveness,
    ids: &mut dyn IdSource,
) -> Result<Step<C::Outcome>, CommandError> {
    let limits = Limits::default();
    let ctx = Context {
        now,
        limits: &limits,
        max_heartbeats_per_second: 1000,
        heard,
    };
    step::step(state, command, &ctx, ids)
}

/// `command` stepped on `state` at `now` under the cluster's `limits` (its policies:
/// `--rebalance`, `--allow-bind`).
pub fn step_with<C: Command>(
    state: &ClusterState,
    command: C,
    now: Millis,
    limits: &Limits,
    ids: &mut dyn IdSource,
) -> Result<Step<C::Outcome>, CommandError> {
    let ctx = Context {
        now,
        limits,
        max_heartbeats_per_second: 1000,
        heard: &step::NothingHeard,
    };
    step::step(state, command, &ctx, ids)
}
