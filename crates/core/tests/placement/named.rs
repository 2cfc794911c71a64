//! Named placement situations with the exact words spelled out: each filter, a volume's
//! host, and a move's replacement.

use super::*;

use mycluster_core::{Counters, Service};

/// The one pending task of `service`'s slot `slot`.
fn pending(sim: &Sim, service: &str) -> Task {
    sim.state
        .tasks_of_service(service)
        .find(|t| t.is_pending())
        .cloned()
        .expect("a pending task")
}

fn task(id: &str, service: &Service, slot: u32, worker: Option<&str>) -> Task {
    Task {
        healthcheck: None,
        generation: service.generation,
        health: None,
        health_message: None,
        started_at: None,
        healthy_at: None,
        id: id.into(),
        service: service.spec.name.clone(),
        slot,
        spec_version: service.version,
        image: service.spec.image.clone(),
        command: service.spec.command.clone(),
        env: Default::default(),
        worker: worker.map(String::from),
        desired: DesiredState::Running,
        state: if worker.is_some() {
            TaskState::Running
        } else {
            TaskState::Pending
        },
        message: String::new(),
        container_id: None,
        exit_code: None,
        error: None,
        failures: 0,
        created_at: 0,
        updated_at: 0,
        ports: Vec::new(),
        address: None,
        stop_grace_period: service.spec.stop_grace_period,
        proxy_protocol: false,
        published: Default::default(),
        constraints: service.spec.constraints.clone(),
        resources: service.spec.resources,
        mounts: Mount::for_slot(&service.spec.name, slot, &service.spec.volumes),
        moving: None,
        on_disconnect: Default::default(),
    }
}

#[test]
fn the_reason_counts_each_cause_with_its_verb() {
    let mut w1 = worker("w1");
    w1.status = WorkerStatus::Down;
    let mut w2 = worker("w2");
    w2.status = WorkerStatus::Draining;
    w2.drain = true;
    let mut w5 = worker("w5");
    w5.labels.insert("disk".into(), "ssd".into());
    w5.resources.memory = Some(Bytes(512 * MIB));
    let mut sim = Sim::new(vec![w1, w2, worker("w3"), worker("w4"), w5]);
    let mut s = spec("db", 1);
    s.constraints = vec![Constraint::parse("node.labels.disk == ssd").expect("valid")];
    s.resources = reserve(None, Some(1024 * MIB));
    sim.run(PutService(s));
    sim.settle().expect("settles");
    let task = pending(&sim, "db");
    assert_eq!(
        task.message,
        "no worker can take it: 1 is down, 1 is draining, 2 lack label disk=ssd, 1 lacks 512 MiB of memory"
    );
    let say = |name: &str| {
        fits(&sim.state, &task, &sim.state.workers[name])
            .expect_err("refused")
            .to_string()
    };
    assert_eq!(say("w1"), "is down");
    assert_eq!(say("w3"), "lacks label disk=ssd");
    assert_eq!(say("w5"), "lacks 512 MiB of memory");
}

#[test]
fn drivers_capacity_and_cpus_each_say_why() {
    let mut w1 = worker("w1");
    w1.driver = Some(Driver::Process);
    let mut w2 = worker("w2");
    w2.capacity = Some(1);
    let mut w3 = worker("w3");
    w3.resources.cpus = Some(Cpus(1000));
    let mut w4 = worker("w4");
    w4.driver = Some(Driver::Docker);
    let mut sim = Sim::new(vec![w1, w2, w3, w4]);
    let mut other = spec("other", 1);
    other.constraints = vec![Constraint::parse("node.name == w2").expect("valid")];
    sim.run(PutService(other));
    sim.settle().expect("settles");

    let mut s = spec("job", 1);
    s.image = None;
    s.command = Some(vec!["run".into()]);
    s.volumes = data_volume();
    s.resources = reserve(Some(1500), None);
    sim.run(PutService(s.clone()));
    sim.settle().expect("settles");
    assert_eq!(
        pending(&sim, "job").message,
        "no worker can take it: 1 cannot run it (the process driver cannot mount volumes), \
         1 cannot run it (the docker driver needs an image), 1 is at capacity, 1 lacks 0.5 CPUs"
    );

    // Two workers short by different amounts: the smallest is said.
    let mut w5 = worker("w5");
    w5.resources.cpus = Some(Cpus(500));
    sim.state.apply(&Change::PutWorker(w5));
    sim.settle().expect("settles");
    assert!(
        pending(&sim, "job")
            .message
            .ends_with("1 is at capacity, 2 lack at least 0.5 CPUs"),
        "{}",
        pending(&sim, "job").message
    );
}

#[test]
fn with_no_workers_the_reason_says_so() {
    let mut sim = Sim::new(Vec::new());
    sim.run(PutService(spec("web", 1)));
    sim.settle().expect("settles");
    assert_eq!(
        pending(&sim, "web").message,
        "no worker can take it: no workers registered"
    );
}

#[test]
fn a_slot_goes_back_to_the_host_its_volume_lives_on() {
    let mut w1 = worker("w1");
    w1.host = "h1".into();
    let mut w2 = worker("w2");
    w2.host = "h2".into();
    let mut sim = Sim::new(vec![w1, w2]);
    let mut s = spec("web", 1);
    s.volumes = data_volume();
    sim.run(PutService(s));
    sim.settle().expect("settles");
    assert_eq!(sim.active("web")[0].worker.as_deref(), Some("w1"));
    let record = sim.state.volumes["web-data-0"].clone();
    assert_eq!(
        (record.service.as_str(), record.source.as_str(), record.slot),
        ("web", "data", 0)
    );
    assert_eq!((record.host.as_str(), record.worker.as_str()), ("h1", "w1"));

    // Its host's only worker dies: the slot waits for it, and says why.
    sim.set_status("w1", WorkerStatus::Down);
    sim.settle().expect("settles");
    assert_eq!(
        pending(&sim, "web").message,
        "no worker can take it: 1 is down, 1 is not on host h1 where volume web-data-0 lives; \
         its volume web-data-0 lives on host h1, whose workers are all down or draining"
    );

    // Another worker on h1 takes it, never w2.
    let mut w3 = worker("w3");
    w3.host = "h1".into();
    sim.state.apply(&Change::PutWorker(w3));
    sim.settle().expect("settles");
    assert_eq!(sim.active("web")[0].worker.as_deref(), Some("w3"));
    assert_eq!(sim.state.volumes["web-data-0"].host, "h1");
}

#[test]
fn volume_records_are_made_restored_and_completed() {
    let mut w1 = worker("w1");
    w1.host = "h1".into();
    let mut sim = Sim::new(vec![w1]);
    let record = |slot: u32, host: &str, remove: bool| Volume {
        name: format!("web-data-{slot}"),
        service: "web".into(),
        source: "data".into(),
        slot,
        host: host.into(),
        worker: "gone".into(),
        remove,
        created_at: 5,
    };
    // Slot 0's volume was asked to be removed (the service was deleted), slot 1's was
    // made by a worker that did not say its host.
    sim.state.apply(&Change::PutVolume(record(0, "h9", true)));
    sim.state.apply(&Change::PutVolume(record(1, "", false)));
    let mut s = spec("web", 3);
    s.volumes = data_volume();
    sim.run(PutService(s));
    sim.settle().expect("settles");
    assert_eq!(sim.active("web").len(), 3);
    assert!(sim
        .active("web")
        .iter()
        .all(|t| t.state == TaskState::Running));
    let v = |name: &str| sim.state.volumes[name].clone();
    assert_eq!(
        v("web-data-0"),
        Volume {
            host: "h1".into(),
            worker: "w1".into(),
            ..record(0, "h1", false)
        }
    );
    assert_eq!(
        v("web-data-1"),
        Volume {
            worker: "w1".into(),
            ..record(1, "h1", false)
        }
    );
    let fresh = v("web-data-2");
    assert_eq!(
        (
            fresh.host.as_str(),
            fresh.worker.as_str(),
            fresh.source.as_str(),
            fresh.remove
        ),
        ("h1", "w1", "data", false)
    );
}

#[test]
fn a_moving_tasks_replacement_starts_elsewhere() {
    let web = Service::updated(None, spec("web", 1), 0);
    let other = Service::updated(None, spec("other", 3), 0);
    let mut old = task("web-0", &web, 0, Some("w1"));
    old.moving = Some("rebalance".into());
    let replacement = task("web-0b", &web, 0, None);
    // w2 is the busier worker: only the move keeps the replacement off w1.
    let busy = (0..3).map(|slot| task(&format!("other-{slot}"), &other, slot, Some("w2")));
    let tasks = [old, replacement.clone()].into_iter().chain(busy);
    let state = ClusterState::from_parts(
        [web.clone(), other.clone()],
        tasks,
        [worker("w1"), worker("w2")],
        [],
        Counters::default(),
    );
    let placed: Vec<(String, Option<String>)> = schedule::schedule(&state, 10)
        .into_iter()
        .filter_map(|c| match c {
            Change::PutTask(t) => Some((t.id, t.worker)),
            _ => None,
        })
        .collect();
    assert_eq!(placed, [("web-0b".to_string(), Some("w2".to_string()))]);
    assert_eq!(
        fits(&state, &replacement, &state.workers["w1"]),
        Err(Cause::MovingFrom)
    );

    // With nowhere else to go, it waits and says why.
    let mut alone = state.clone();
    alone.apply(&Change::DeleteWorker("w2".into()));
    let waiting: Vec<String> = schedule::schedule(&alone, 10)
        .into_iter()
        .filter_map(|c| match c {
            Change::PutTask(t) => Some(t.message),
            _ => None,
        })
        .collect();
    assert_eq!(waiting, ["no worker can take it: 1 is where it moves from"]);
}
