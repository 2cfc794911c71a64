//! The route table the ingress balances over (`core::endpoints`), read off states the
//! core's `step` made, with agents that start tasks and report where they are reached:
//! - a published port belongs to one service: a second one gets a conflict naming the
//!   owner, and a deleted (or changed) service's port is free in the same step;
//! - only wanted, running, reachable and healthy tasks are endpoints, and
//!   a task leaves the table in the very step that asks its agent to stop it;
//! - property: through random start-first rolling updates (new images, the published
//!   port moved to another target, the PROXY protocol turned on or off) and scaling
//!   (never to zero), a service that had an endpoint always has one, each reached where
//!   it listens and as it expects — what "no failed request during a rolling update or
//!   a scale-down" rests on;
//! - an automatic rollback does not take back a port another service published since.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use mycluster_core::commands::CommandError;
use mycluster_core::endpoints::{self, Route};
use mycluster_core::service::{
    Health, HealthCheck, PortSpec, Probe, Protocol, ServicePatch, UpdateOrder, UpdatePolicy,
    DEFAULT_STOP_GRACE_PERIOD,
};
use mycluster_core::span::Span;
use mycluster_core::step::{
    DeleteService, NothingHeard, PatchService, PutService, Reconcile, Report, RollbackService,
};
use mycluster_core::task::TaskPort;
use mycluster_core::wire::TaskReport;
use mycluster_core::{
    ClusterState, Command, DesiredState, Millis, SequentialIds, ServiceSpec, TaskState, Worker,
    WorkerStatus,
};
use proptest::prelude::*;
use support::step_at;

fn port(published: Option<u16>, target: u16) -> PortSpec {
    PortSpec {
        published,
        target,
        protocol: Protocol::Tcp,
    }
}

fn spec(name: &str, image: &str, replicas: u32, ports: Vec<PortSpec>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        image: Some(image.into()),
        replicas,
        command: None,
        env: BTreeMap::new(),
        healthcheck: None,
        update: UpdatePolicy {
            monitor: Span(1_000),
            ..UpdatePolicy::default()
        },
        ports,
        stop_grace_period: DEFAULT_STOP_GRACE_PERIOD,
        proxy_protocol: false,
        constraints: Vec::new(),
        spread: None,
        resources: Default::default(),
        volumes: Vec::new(),
        restart: Default::default(),
        on_disconnect: Default::default(),
    }
}

/// A cluster of three workers whose agents do what they are told at once.
struct Cluster {
    state: ClusterState,
    ids: SequentialIds,
    now: Millis,
}

impl Cluster {
    fn new() -> Cluster {
        let workers = (1..=3).map(|i| Worker {
            name: format!("w{i}"),
            address: format!("w{i}:7001"),
            labels: BTreeMap::new(),
            capacity: None,
            driver: None,
            status: WorkerStatus::Ready,
            registered_at: 0,
            updated_at: 0,
            instance: String::new(),
            resources: Default::default(),
            host: String::new(),
            drain: false,
            label_overrides: Default::default(),
            epoch: 0,
            renewed_at: 0,
            lease: Default::default(),
            credential: None,
            agent_ca_sha256: None,
        });
        Cluster {
            state: ClusterState::from_parts([], [], workers, [], Default::default()),
            ids: SequentialIds::default(),
            now: 1_000,
        }
    }

    fn run<C: Command>(&mut self, command: C) -> Result<C::Outcome, CommandError> {
        let stepped = step_at(&self.state, command, self.now, &NothingHeard, &mut self.ids)?;
        self.state = stepped.state;
        Ok(stepped.outcome)
    }

    fn routes(&self) -> Vec<Route> {
        endpoints::routes(&self.state)
    }

    /// One round of the agents (each report its own step, as the manager commits them),
    /// then a second passes and the periodic pass runs. `after_each` sees every state.
    fn tick(&mut self, mut after_each: impl FnMut(&ClusterState)) {
        let mut by_worker: BTreeMap<String, Vec<TaskReport>> = BTreeMap::new();
        for task in self.state.tasks.values().filter(|t| !t.state.is_terminal()) {
            let Some(worker) = task.worker.clone() else {
                continue;
            };
            let last = task.id.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            let report = match (task.desired, task.state) {
                (DesiredState::Shutdown, _) => TaskReport::new(&task.id, TaskState::Shutdown),
                (_, TaskState::Assigned | TaskState::Starting) => TaskReport {
                    health: Some(Health::Starting),
                    address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))),
                    ports: task
                        .ports
                        .iter()
                        .map(|p| TaskPort {
                            target: p.target,
                            port: Some(p.target),
                        })
                        .collect(),
                    ..TaskReport::new(&task.id, TaskState::Running)
                },
                (_, TaskState::Running)
                    if task.healthcheck.is_some() && task.health != Some(Health::Healthy) =>
                {
                    TaskReport {
                        health: Some(Health::Healthy),
                        ..TaskReport::new(&task.id, TaskState::Running)
                    }
                }
                _ => continue,
            };
            by_worker.entry(worker).or_default().push(report);
        }
        for (worker, tasks) in by_worker {
            let report = Report {
                worker,
                instance: String::new(),
                tasks,
                removed_volumes: Vec::new(),
            };
            if self.run(report).is_ok() {
                after_each(&self.state);
            }
        }
        self.now += 1_000;
        if self.run(Reconcile).is_ok() {
            after_each(&self.state);
        }
    }

    fn settle(&mut self) {
        for _ in 0..30 {
            self.tick(|_| {});
        }
    }
}

#[test]
fn a_published_port_belongs_to_one_service_and_is_free_once_it_is_deleted() {
    let mut cluster = Cluster::new();
    cluster
        .run(PutService(spec(
            "web",
            "a",
            2,
            vec![port(Some(8080), 8000)],
        )))
        .expect("created");
    let refused = cluster
        .run(PutService(spec(
            "api",
            "b",
            1,
            vec![port(Some(8080), 9000)],
        )))
        .expect_err("8080 is web's");
    assert_eq!(
        refused,
        CommandError::Conflict(
            "port 8080 is already published by service web: publish another port, or remove it from web first".into()
        )
    );
    // The same port unpublished (discovery only) and another port are fine.
    cluster
        .run(PutService(spec(
            "api",
            "b",
            1,
            vec![port(None, 8080), port(Some(8081), 9000)],
        )))
        .expect("another port");
    // Re-posting web with its own port is no conflict.
    cluster
        .run(PutService(spec(
            "web",
            "a2",
            2,
            vec![port(Some(8080), 8000)],
        )))
        .expect("its own port");
    // A PATCH onto a taken port is refused too.
    let patch = PatchService {
        name: "api".into(),
        patch: ServicePatch {
            ports: Some(vec![port(Some(8080), 9000)]),
            ..ServicePatch::default()
        },
    };
    assert!(matches!(cluster.run(patch), Err(CommandError::Conflict(_))));

    cluster
        .run(DeleteService {
            name: "web".into(),
            volumes: false,
        })
        .expect("deleted");
    assert!(cluster.routes().iter().all(|r| r.published != 8080));
    cluster
        .run(PutService(spec(
            "api",
            "b",
            1,
            vec![port(Some(8080), 9000)],
        )))
        .expect("8080 is free again at once");
    assert_eq!(
        cluster
            .routes()
            .iter()
            .map(|r| (r.published, r.service.as_str()))
            .collect::<Vec<_>>(),
        vec![(8080, "api")]
    );
}

#[test]
fn a_rollback_onto_a_port_taken_since_is_refused() {
    let mut cluster = Cluster::new();
    cluster
        .run(PutService(spec(
            "web",
            "a",
            1,
            vec![port(Some(8080), 8000)],
        )))
        .expect("created");
    cluster
        .run(PutService(spec(
            "web",
            "a",
            1,
            vec![port(Some(8081), 8000)],
        )))
        .expect("moved to 8081");
    cluster
        .run(PutService(spec(
            "api",
            "b",
            1,
            vec![port(Some(8080), 9000)],
        )))
        .expect("8080 is free");
    let refused = cluster
        .run(RollbackService("web".into()))
        .expect_err("8080 is api's now");
    assert!(
        matches!(&refused, CommandError::Conflict(m) if m.contains("service api")),
        "{refused:?}"
    );
}

#[test]
fn an_automatic_rollback_leaves_a_port_another_service_took_since() {
    let mut cluster = Cluster::new();
    let mut web = spec("web", "good", 1, vec![port(Some(8080), 8000)]);
    web.healthcheck = Some(HealthCheck::new(Probe::Tcp { port: 8000 }));
    cluster.run(PutService(web.clone())).expect("created");
    cluster.settle();
    // A bad image that also moves to 9090; api takes the freed 8080.
    let mut bad = web.clone();
    bad.image = Some("bad".into());
    bad.ports = vec![port(Some(9090), 8000)];
    cluster.run(PutService(bad)).expect("updated");
    cluster
        .run(PutService(spec(
            "api",
            "b",
            1,
            vec![port(Some(8080), 9000)],
        )))
        .expect("8080 is free");
    // The bad replica fails: the rollout rolls back.
    for _ in 0..5 {
        let failing: Vec<TaskReport> = cluster
            .state
            .tasks
            .values()
            .filter(|t| t.image.as_deref() == Some("bad") && !t.state.is_terminal())
            .map(|t| TaskReport {
                exit_code: Some(1),
                ..TaskReport::new(&t.id, TaskState::Failed)
            })
            .collect();
        if !failing.is_empty() {
            cluster
                .run(Report {
                    worker: "w1".into(),
                    instance: String::new(),
                    tasks: failing,
                    removed_volumes: Vec::new(),
                })
                .ok();
        }
        cluster.tick(|_| {});
    }
    let web = cluster.state.services.get("web").expect("web");
    let rollout = web.rollout.as_ref().expect("a rollout");
    assert_eq!(
        rollout.state,
        mycluster_core::rollout::RolloutState::RolledBack
    );
    assert_eq!(web.spec.image.as_deref(), Some("good"));
    assert_eq!(web.spec.ports, vec![port(None, 8000)], "8080 stays api's");
    let reason = rollout.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("port 8080 is not published again: service api publishes it now"),
        "{reason}"
    );
    let owners: Vec<(u16, String)> = cluster
        .routes()
        .iter()
        .map(|r| (r.published, r.service.clone()))
        .collect();
    assert_eq!(owners, vec![(8080, "api".to_string())]);
    // Both can still be changed: no 409 for a port a service already holds.
    let scale = |name: &str| PatchService {
        name: name.into(),
        patch: ServicePatch {
            replicas: Some(2),
            ..ServicePatch::default()
        },
    };
    cluster.run(scale("api")).expect("api scales");
    cluster.run(scale("web")).expect("web scales");
}

#[test]
fn only_serving_tasks_are_endpoints_and_a_stopped_one_leaves_in_the_same_step() {
    let mut cluster = Cluster::new();
    let mut web = spec(
        "web",
        "a",
        3,
        vec![port(Some(8080), 8000), port(None, 9000)],
    );
    web.healthcheck = Some(HealthCheck::new(Probe::Tcp { port: 8000 }));
    cluster.run(PutService(web)).expect("created");
    // Placed but not running: no endpoint yet.
    assert_eq!(cluster.routes()[0].endpoints.len(), 0);
    cluster.tick(|_| {});
    // Running but not yet healthy (it has a check): still none.
    assert!(cluster
        .state
        .tasks
        .values()
        .all(|t| t.state == TaskState::Running));
    assert_eq!(cluster.routes()[0].endpoints.len(), 0);
    cluster.tick(|_| {});
    let routes = cluster.routes();
    assert_eq!(routes.len(), 1, "only the published port is routed");
    assert_eq!(routes[0].published, 8080);
    assert_eq!(routes[0].target, 8000);
    assert_eq!(routes[0].endpoints.len(), 3);
    let service = cluster.state.services.get("web").expect("web").clone();
    let listed = endpoints::of_service(&cluster.state, &service);
    assert_eq!(listed.len(), 6, "3 replicas x 2 targets");

    let version = endpoints::version(&cluster.routes());
    cluster
        .run(PatchService {
            name: "web".into(),
            patch: ServicePatch {
                replicas: Some(1),
                ..ServicePatch::default()
            },
        })
        .expect("scaled");
    let stopping: Vec<_> = cluster
        .state
        .tasks
        .values()
        .filter(|t| t.desired == DesiredState::Shutdown && t.state == TaskState::Running)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(stopping.len(), 2, "two replicas are asked to stop");
    let routes = cluster.routes();
    assert_eq!(routes[0].endpoints.len(), 1);
    assert!(routes[0]
        .endpoints
        .iter()
        .all(|e| !stopping.contains(&e.task)));
    assert_ne!(
        endpoints::version(&routes),
        version,
        "a new table, a new version"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Update,
    /// The published port moves to another target (with a new image: a rollout).
    Retarget(u16),
    /// The PROXY protocol turned on or off (a rollout).
    Proxy(bool),
    Scale(u32),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Update),
        1 => (8000u16..8003).prop_map(Op::Retarget),
        1 => any::<bool>().prop_map(Op::Proxy),
        1 => (1u32..=5).prop_map(Op::Scale),
        6 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Start-first updates and scaling never leave a published service without an
    /// endpoint once it had one, and no task that was asked to stop is ever an endpoint.
    #[test]
    fn start_first_updates_and_scaling_never_empty_the_route(
        checked in any::<bool>(),
        parallelism in 0u32..=2,
        replicas in 1u32..=4,
        settled in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut cluster = Cluster::new();
        let mut web = spec("web", "v0", replicas, vec![port(Some(8080), 8000)]);
        web.update.order = UpdateOrder::StartFirst;
        web.update.parallelism = parallelism;
        if checked {
            web.healthcheck = Some(HealthCheck::new(Probe::Tcp { port: 8000 }));
        }
        cluster.run(PutService(web)).expect("created");
        // Settled, or with the create's rollout still under way (its tasks not judged
        // healthy yet) when the first update comes.
        if settled {
            cluster.settle();
            prop_assert!(!cluster.routes()[0].endpoints.is_empty());
        }
        let mut images = 0;
        let mut had = settled;
        let mut failure: Option<String> = None;
        for op in &ops {
            match op {
                Op::Update => {
                    images += 1;
                    let patch = PatchService {
                        name: "web".into(),
                        patch: ServicePatch {
                            image: Some(format!("v{images}")),
                            ..ServicePatch::default()
                        },
                    };
                    cluster.run(patch).expect("updated");
                    check(&cluster.state, &mut had, &mut failure);
                }
                Op::Retarget(target) => {
                    images += 1;
                    let patch = PatchService {
                        name: "web".into(),
                        patch: ServicePatch {
                            image: Some(format!("v{images}")),
                            ports: Some(vec![port(Some(8080), *target)]),
                            ..ServicePatch::default()
                        },
                    };
                    cluster.run(patch).expect("retargeted");
                    check(&cluster.state, &mut had, &mut failure);
                }
                Op::Proxy(on) => {
                    let patch = PatchService {
                        name: "web".into(),
                        patch: ServicePatch {
                            proxy_protocol: Some(*on),
                            ..ServicePatch::default()
                        },
                    };
                    cluster.run(patch).expect("proxy protocol");
                    check(&cluster.state, &mut had, &mut failure);
                }
                Op::Scale(n) => {
                    let patch = PatchService {
                        name: "web".into(),
                        patch: ServicePatch {
                            replicas: Some(*n),
                            ..ServicePatch::default()
                        },
                    };
                    cluster.run(patch).expect("scaled");
                    check(&cluster.state, &mut had, &mut failure);
                }
                Op::Tick => cluster.tick(|state| check(state, &mut had, &mut failure)),
            }
            prop_assert!(failure.is_none(), "{}", failure.unwrap_or_default());
        }
    }
}

/// Notes the first broken promise of the route table in `state`: once the route had an
/// endpoint (`had`), it always has one, only wanted running tasks are endpoints, and each
/// on a target it listens on, with the PROXY header it expects.
fn check(state: &ClusterState, had: &mut bool, failure: &mut Option<String>) {
    if failure.is_some() {
        return;
    }
    let routes = endpoints::routes(state);
    let Some(route) = routes.first() else {
        *failure = Some("the route is gone".into());
        return;
    };
    if route.endpoints.is_empty() && *had {
        *failure = Some("the route has no endpoint left".into());
        return;
    }
    *had |= !route.endpoints.is_empty();
    for endpoint in &route.endpoints {
        let Some(task) = state.tasks.get(&endpoint.task) else {
            *failure = Some(format!("endpoint {} is no task", endpoint.task));
            return;
        };
        // Each replica is reached where it listens, and with the header it expects.
        if !task.ports.iter().any(|p| p.target == endpoint.target)
            || endpoint.proxy_protocol != task.proxy_protocol
        {
            *failure = Some(format!(
                "task {} is routed on target {} (proxy {}) but listens on {:?} (proxy {})",
                task.id,
                endpoint.target,
                endpoint.proxy_protocol,
                task.targets(),
                task.proxy_protocol
            ));
            return;
        }
        if task.desired != DesiredState::Running || task.state != TaskState::Running {
            *failure = Some(format!(
                "task {} is an endpoint while {} (wanted {})",
                task.id, task.state, task.desired
            ));
            return;
        }
    }
}
