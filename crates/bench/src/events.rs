//! What saying a commit's events costs the manager (issue 19): the core's `derive` over
//! a commit's changes and the writing of each event as the JSON line every follower
//! reads, for the largest commits the scheduler makes — a placement pass that puts
//! every pending task on a worker — in-process, no I/O. Beside it, the scheduling of
//! the same commit, for scale: the events are paid once per commit, on the commit path.

use std::time::{Duration, Instant};

use mycluster_core::events::{derive, event_index};
use mycluster_core::schedule;
use mycluster_core::wire::EventDoc;

use crate::figure::{report, Figure};
use crate::sched::pending_cluster;

/// Runs of each measurement; the median is reported.
const RUNS: usize = 5;

pub fn run(quick: bool) -> Vec<Figure> {
    let (workers, services, replicas) = if quick {
        (1_000, 10, 100)
    } else {
        (10_000, 100, 1_000)
    };
    let state = pending_cluster(workers, services, replicas);
    let mut scheduling = Vec::new();
    let mut deriving = Vec::new();
    let mut writing = Vec::new();
    let mut events = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let changes = schedule(&state, 1);
        scheduling.push(started.elapsed());
        let started = Instant::now();
        let derived = derive(&state, &changes);
        deriving.push(started.elapsed());
        let started = Instant::now();
        events = derived.len();
        let bytes = write(derived);
        writing.push(started.elapsed());
        std::hint::black_box(bytes);
    }
    let (scheduled, derived, written) = (median(scheduling), median(deriving), median(writing));
    let per_event = (derived + written).as_secs_f64() / events.max(1) as f64;
    vec![report(
        "events of a placement commit",
        format!("{:.0} ns/event", per_event * 1e9),
        format!(
            "{events} events ({services} services x {replicas} placed on {workers} workers): derive {:.3} s + JSON {:.3} s, beside scheduling them {:.3} s (medians of {RUNS})",
            derived.as_secs_f64(),
            written.as_secs_f64(),
            scheduled.as_secs_f64()
        ),
    )]
}

/// Each event as the manager's log writes it: numbered, and serialized once.
fn write(events: Vec<mycluster_core::events::Event>) -> usize {
    events
        .into_iter()
        .enumerate()
        .filter_map(|(position, event)| {
            let doc = EventDoc {
                index: event_index(7, position)?,
                commit: 7,
                time: 1_764_000_000.0,
                topic: event.topic(),
                event,
            };
            serde_json::to_string(&doc).ok()
        })
        .map(|line| line.len())
        .sum()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}
