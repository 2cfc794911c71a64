//! Named cases of moves and restarts that a review found: a rebalance evens the values
//! of a spread attribute (a zone that comes back gets its share); a drain moves a slot
//! whatever the restart policy says of its history; two services cannot share a volume
//! by their names; a moved slot starts its failure count afresh; a service with named
//! volumes moves stop-first (one task mounts a slot's volume at a time).

mod support;

use mycluster_core::service::{Attribute, RestartCondition, RestartPolicy, Spread, VolumeSpec};
use mycluster_core::step::{DeclareDown, PutService, Report, SetDrain, WorkerBack};
use mycluster_core::wire::TaskReport;
use mycluster_core::TaskState;
use support::sim::{spec, Sim};
use support::step_with;

/// With a spread attribute, a zone whose workers come back gets its share again.
#[test]
fn a_zone_that_comes_back_gets_its_share() {
    let mut sim = Sim::new(true);
    for (w, z) in [("w0", "a"), ("w1", "a"), ("w2", "b"), ("w3", "b")] {
        sim.join(w, &[("zone", z)]);
    }
    let mut s = spec("web", 8);
    s.spread = Some(Spread(Attribute::Label("zone".into())));
    sim.run(PutService(s));
    for _ in 0..10 {
        sim.round();
    }
    sim.run(DeclareDown {
        workers: vec!["w0".into(), "w1".into()],
        silent_for: None,
    });
    for _ in 0..10 {
        sim.round();
    }
    for w in ["w0", "w1"] {
        sim.run(WorkerBack {
            worker: w.into(),
            instance: String::new(),
        });
    }
    for _ in 0..200 {
        sim.round();
    }
    let spread = sim.spread("web");
    let v: Vec<u32> = spread.into_values().collect();
    assert_eq!(v, [2, 2, 2, 2]);
}

/// A slot whose latest finished task the (changed) restart policy calls done is still
/// served by a running task: a drain moves it.
#[test]
fn a_drain_moves_a_slot_whatever_its_history_says() {
    let mut sim = Sim::new(false);
    sim.join("w0", &[]);
    let mut s = spec("job", 1);
    sim.run(PutService(s.clone()));
    for _ in 0..3 {
        sim.round();
    }
    // The task exits 0 under `any`: replaced.
    let id = sim
        .state
        .tasks_of_service("job")
        .find(|t| t.is_active())
        .unwrap()
        .id
        .clone();
    let mut r = TaskReport::new(id, TaskState::Complete);
    r.exit_code = Some(0);
    sim.run(Report {
        worker: "w0".into(),
        instance: String::new(),
        tasks: vec![r],
        removed_volumes: vec![],
    });
    for _ in 0..3 {
        sim.round();
    }
    // Now on-failure (no new template, so no rollout).
    s.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        ..RestartPolicy::default()
    };
    sim.run(PutService(s));
    for _ in 0..3 {
        sim.round();
    }
    sim.join("w1", &[]);
    sim.run(SetDrain {
        worker: "w0".into(),
        drain: true,
    });
    for _ in 0..60 {
        sim.round();
    }
    let left = sim
        .state
        .tasks_on_worker("w0")
        .filter(|t| t.is_live())
        .count();
    assert_eq!(left, 0, "drain of w0 never finishes");
}

/// Two services whose volume names would collide (`a-b` with source `c`, `a` with source
/// `b-c`: both `a-b-c-<slot>`): the second is refused, and so is a service whose volume
/// would take over one kept from a removed service.
#[test]
fn volume_names_of_two_services_cannot_collide() {
    let mut sim = Sim::new(false);
    sim.join("w0", &[]);
    let volume = |source: &str| VolumeSpec {
        source: source.into(),
        target: "/data".into(),
        read_only: false,
    };
    let mut one = spec("a-b", 1);
    one.volumes = vec![volume("c")];
    let mut two = spec("a", 1);
    two.volumes = vec![volume("b-c")];
    assert!(sim.run(PutService(one)).is_some());
    let refused = step_with(
        &sim.state,
        PutService(two.clone()),
        sim.now,
        &sim.limits,
        &mut sim.ids,
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("would name this service's volumes a-b-c-<slot>"),
        "{message}"
    );
    for _ in 0..3 {
        sim.round();
    }
    assert_eq!(sim.state.volumes.keys().collect::<Vec<_>>(), ["a-b-c-0"]);
    // Removed with its volumes kept: the kept volume is still not another's.
    sim.run(mycluster_core::step::DeleteService {
        name: "a-b".into(),
        volumes: false,
    });
    let refused = step_with(
        &sim.state,
        PutService(two),
        sim.now,
        &sim.limits,
        &mut sim.ids,
    );
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("volume a-b-c-0 holds the data of service a-b"),
        "{message}"
    );
}

/// A service with a named volume moves stop-first: at no moment do two tasks of a slot
/// mount its volume.
#[test]
fn a_slot_with_a_volume_moves_stop_first() {
    let mut sim = Sim::new(false);
    sim.join("w0", &[]);
    let mut s = spec("db", 1);
    s.volumes = vec![VolumeSpec {
        source: "data".into(),
        target: "/data".into(),
        read_only: false,
    }];
    sim.run(PutService(s));
    for _ in 0..10 {
        sim.round();
    }
    sim.join("w1", &[]);
    sim.run(SetDrain {
        worker: "w0".into(),
        drain: true,
    });
    for _ in 0..30 {
        let live = sim
            .state
            .tasks_of_service("db")
            .filter(|t| t.is_live())
            .count();
        assert!(live <= 1, "two tasks mount db-data-0");
        sim.round();
    }
    let on: Vec<_> = sim
        .state
        .tasks_of_service("db")
        .filter(|t| t.is_active())
        .map(|t| t.worker.clone())
        .collect();
    assert_eq!(on, [Some("w1".to_string())]);
    let moved = sim
        .state
        .tasks_of_service("db")
        .find(|t| t.worker.as_deref() == Some("w0"))
        .map(|t| t.message.clone())
        .unwrap_or_default();
    assert!(
        moved.contains("moving stop-first (worker w0 is draining)"),
        "{moved}"
    );
}

fn exit(sim: &mut Sim, code: i64) {
    let live: Vec<_> = sim
        .state
        .tasks
        .values()
        .filter(|t| t.is_active() && t.state == TaskState::Running)
        .map(|t| (t.id.clone(), t.worker.clone().unwrap()))
        .collect();
    for (id, w) in live {
        let mut r = TaskReport::new(
            id,
            if code == 0 {
                TaskState::Complete
            } else {
                TaskState::Failed
            },
        );
        r.exit_code = Some(code);
        sim.run(Report {
            worker: w,
            instance: String::new(),
            tasks: vec![r],
            removed_volumes: vec![],
        });
    }
}

/// A slot that failed once, then ran healthy for an hour, is moved by a drain: one
/// failure of the replacement does not give the slot up (max_attempts 1).
#[test]
fn a_moved_slot_starts_its_failure_count_afresh() {
    let mut sim = Sim::new(false);
    sim.join("w0", &[]);
    sim.join("w1", &[]);
    let mut s = spec("web", 1);
    s.restart = RestartPolicy {
        condition: RestartCondition::OnFailure,
        max_attempts: 1,
        ..RestartPolicy::default()
    };
    sim.run(PutService(s));
    sim.round();
    sim.round();
    exit(&mut sim, 1); // failure 1 (quick)
    for _ in 0..5 {
        sim.round();
    }
    for _ in 0..3600 {
        sim.round();
    } // an hour, healthy
    let w = sim
        .state
        .tasks_of_service("web")
        .find(|t| t.is_active())
        .unwrap()
        .worker
        .clone()
        .unwrap();
    sim.run(SetDrain {
        worker: w,
        drain: true,
    });
    for _ in 0..20 {
        sim.round();
    }
    exit(&mut sim, 1); // one failure after the move
    for _ in 0..20 {
        sim.round();
    }
    assert!(
        sim.state.tasks_of_service("web").any(|t| t.is_active()),
        "slot given up after one failure in an hour"
    );
}
