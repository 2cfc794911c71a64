//! Drains and rebalances, as properties: whatever operators do to workers (drain,
//! activate, a rebalance, a new worker joining or a drained one coming back, with or
//! without the manager's `--rebalance`), a service never has fewer than `replicas`
//! healthy tasks running nor more than `replicas + 1` active ones, at any step; a drain
//! that can finish empties its worker; and a rebalance ends with the spread even. The
//! agents and the clock are simulated: each round, assigned tasks start and stopped ones
//! end, and a second passes (a task without a health check is healthy after the update
//! policy's `monitor`).

mod support;

use proptest::prelude::*;

use mycluster_core::step::{Rebalance, SetDrain};
use mycluster_core::WorkerStatus;
use support::sim::{spec, Sim};

const SERVICES: [(&str, u32); 3] = [("web", 4), ("api", 3), ("one", 1)];

#[derive(Clone, Debug)]
enum Op {
    Drain(usize),
    Activate(usize),
    /// A worker registers (a new one, or one that existed).
    Join(usize),
    Rebalance(Option<usize>),
}

/// The promise of every step: at least `replicas` healthy and running (a task told to
/// stop still serves until its agent stops it), at most `replicas + 1` active.
fn check(sim: &Sim) -> Result<(), TestCaseError> {
    for (name, replicas) in SERVICES {
        let tasks: Vec<_> = sim.state.tasks_of_service(name).collect();
        let healthy = tasks.iter().filter(|t| t.is_healthy()).count() as u32;
        let active = tasks.iter().filter(|t| t.is_active()).count() as u32;
        prop_assert!(
            healthy >= replicas,
            "{name}: {healthy} healthy of {replicas} at {}",
            sim.now
        );
        prop_assert!(
            active <= replicas + 1,
            "{name}: {active} active of {replicas} at {}",
            sim.now
        );
    }
    Ok(())
}

/// A cluster of `workers` workers running the services, every replica healthy.
fn settled(workers: usize, rebalance: bool) -> Sim {
    let mut sim = Sim::new(rebalance);
    for i in 0..workers {
        sim.join(&format!("w{i}"), &[]);
    }
    for (name, replicas) in SERVICES {
        sim.run(mycluster_core::step::PutService(spec(name, replicas)));
    }
    for _ in 0..10 {
        sim.round();
    }
    sim
}

fn op(workers: usize) -> impl Strategy<Value = Op> {
    let w = 0..workers + 2;
    prop_oneof![
        3 => w.clone().prop_map(Op::Drain),
        2 => w.clone().prop_map(Op::Activate),
        2 => w.prop_map(Op::Join),
        2 => proptest::option::of(0..SERVICES.len()).prop_map(Op::Rebalance),
    ]
}

fn apply(sim: &mut Sim, op: &Op) {
    match op {
        Op::Drain(i) | Op::Activate(i) => {
            sim.run(SetDrain {
                worker: format!("w{i}"),
                drain: matches!(op, Op::Drain(_)),
            });
        }
        Op::Join(i) => sim.join(&format!("w{i}"), &[]),
        Op::Rebalance(service) => {
            sim.run(Rebalance {
                service: service.map(|s| SERVICES[s].0.to_string()),
                dry_run: false,
            });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn drains_and_rebalances_keep_every_service_served(
        workers in 1usize..5,
        rebalance in any::<bool>(),
        ops in proptest::collection::vec((op(4), 0u32..12), 1..8),
    ) {
        let mut sim = settled(workers, rebalance);
        check(&sim)?;
        for (op, rounds) in &ops {
            apply(&mut sim, op);
            check(&sim)?;
            for _ in 0..*rounds {
                sim.round();
                check(&sim)?;
            }
        }
        // Given time, a drain that can finish empties its worker, and a rebalance leaves
        // the spread even.
        for _ in 0..120 {
            sim.round();
            check(&sim)?;
        }
        let ready = sim.state.workers.values().filter(|w| w.status == WorkerStatus::Ready).count();
        if ready > 0 {
            for worker in sim.state.workers.values().filter(|w| w.status == WorkerStatus::Draining) {
                let left: Vec<_> = sim.state.tasks_on_worker(&worker.name).filter(|t| t.is_live()).collect();
                prop_assert!(left.is_empty(), "drained {} still holds {:?}", worker.name, left);
            }
        }
        // Only a rebalance asked after the last change of workers is sure to have seen
        // it; the manager's option sees every change.
        let last_worker_change = ops.iter().rposition(|(op, _)| !matches!(op, Op::Rebalance(_)));
        for (name, _) in SERVICES {
            let last_asked = ops.iter().rposition(|(op, _)| match op {
                Op::Rebalance(None) => true,
                Op::Rebalance(Some(s)) => SERVICES[*s].0 == name,
                _ => false,
            });
            if rebalance || (last_asked.is_some() && last_asked > last_worker_change) {
                let counts = sim.spread(name);
                let (min, max) = (counts.values().min(), counts.values().max());
                if let (Some(min), Some(max)) = (min, max) {
                    prop_assert!(max - min <= 1, "{name} spread {counts:?}");
                }
            }
        }
    }
}

/// The case: an 8-replica service on 4 workers, one worker stopped and back;
/// with `--rebalance` the spread returns to 2/2/2/2, one move at a time.
#[test]
fn a_returning_worker_gets_its_share_back() {
    let mut sim = settled(4, true);
    sim.run(mycluster_core::step::PutService(spec("web", 8)));
    for _ in 0..10 {
        sim.round();
    }
    sim.run(mycluster_core::step::DeclareDown {
        workers: vec!["w3".into()],
        silent_for: None,
    });
    for _ in 0..10 {
        sim.round();
    }
    assert_eq!(sim.spread("web").get("w3"), None, "w3 is down");
    sim.run(mycluster_core::step::WorkerBack {
        worker: "w3".into(),
        instance: String::new(),
    });
    let mut most_active = 0;
    for _ in 0..200 {
        sim.round();
        let active = sim
            .state
            .tasks_of_service("web")
            .filter(|t| t.is_active())
            .count();
        most_active = most_active.max(active);
    }
    let counts: Vec<u32> = sim.spread("web").into_values().collect();
    assert_eq!(counts, [2, 2, 2, 2]);
    assert_eq!(most_active, 9, "one move at a time");
}
