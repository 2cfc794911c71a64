//! The scheduler core alone: placements per second for pending tasks on many workers,
//! in-process, no I/O.

use std::time::Instant;

use mycluster_core::{
    schedule, Change, ClusterState, Counters, DesiredState, Service, ServiceSpec, Task, TaskState,
    Worker, WorkerStatus,
};

use crate::figure::{report, Figure};

pub fn run(quick: bool) -> Vec<Figure> {
    let (workers, services, replicas) = if quick {
        (1_000, 10, 1_000)
    } else {
        (10_000, 100, 1_000)
    };
    let state = pending_cluster(workers, services, replicas);
    let started = Instant::now();
    let changes = schedule(&state, 1);
    let took = started.elapsed();
    let placed = changes
        .iter()
        .filter(|c| matches!(c, Change::PutTask(t) if t.worker.is_some()))
        .count();
    let rate = placed as f64 / took.as_secs_f64();
    vec![report(
        "scheduler core",
        format!("{rate:.0} placements/s"),
        format!(
            "{placed} tasks ({services} services x {replicas}) on {workers} workers in {:.3} s",
            took.as_secs_f64()
        ),
    )]
}

/// A cluster of ready workers and services whose tasks all wait to be placed.
pub fn pending_cluster(workers: usize, services: usize, replicas: u32) -> ClusterState {
    let workers = (0..workers).map(|i| Worker {
        name: format!("w{i:05}"),
        address: format!("10.0.0.1:{}", 7000 + i % 50_000),
        labels: Default::default(),
        capacity: None,
        driver: Some(mycluster_core::Driver::Sim),
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
    let mut all_services = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..services {
        let spec = ServiceSpec {
            healthcheck: None,
            update: Default::default(),
            name: format!("svc-{s:04}"),
            image: Some("mycluster/hello-world".into()),
            replicas,
            command: None,
            env: Default::default(),
            ports: Vec::new(),
            stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        };
        let service = Service::updated(None, spec, 0);
        for slot in 0..replicas {
            tasks.push(Task {
                healthcheck: None,
                generation: 0,
                health: None,
                health_message: None,
                started_at: None,
                healthy_at: None,
                id: format!("{s:04}-{slot:06}"),
                service: service.spec.name.clone(),
                slot,
                spec_version: 1,
                image: service.spec.image.clone(),
                command: None,
                env: Default::default(),
                worker: None,
                desired: DesiredState::Running,
                state: TaskState::Pending,
                message: String::new(),
                container_id: None,
                exit_code: None,
                error: None,
                failures: 0,
                created_at: 0,
                updated_at: 0,
                ports: Vec::new(),
                address: None,
                stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
                proxy_protocol: false,
                published: Default::default(),
                constraints: Vec::new(),
                resources: Default::default(),
                mounts: Vec::new(),
                moving: None,
                on_disconnect: Default::default(),
            });
        }
        all_services.push(service);
    }
    ClusterState::from_parts(all_services, tasks, workers, [], Counters::default())
}
