//! A mutation whose caller goes away (a client hanging up mid-request) must still leave
//! memory and store in agreement: either both have the change or neither has.

use std::sync::Arc;
use std::time::Duration;

use mycluster_core::step::PutService;
use mycluster_core::{Limits, ServiceSpec};
use mycluster_manager::Cluster;
use mycluster_store::{EmbeddedStore, Store};

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: name.into(),
        image: Some("redis".into()),
        replicas: 2,
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mutation_leaves_memory_and_store_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), "test").await.unwrap());
    let cluster = Arc::new(
        Cluster::load("test".into(), Limits::default(), store.clone())
            .await
            .unwrap(),
    );
    for i in 0..20 {
        let name = format!("svc-{i}");
        let attempt = cluster.apply(PutService(spec(&name)));
        // Give up almost at once: most of these are dropped while the commit runs.
        let _ = tokio::time::timeout(Duration::from_micros(50), attempt).await;
    }
    // One more, awaited: it queues behind any commit still in flight.
    cluster.apply(PutService(spec("last"))).await.unwrap();
    let memory = cluster.snapshot();
    let stored = store.load().await.unwrap();
    assert_eq!(memory.index, stored.head.index);
    let mut in_memory: Vec<&String> = memory.state.services.keys().collect();
    let mut on_disk: Vec<&String> = stored.services.iter().map(|s| &s.spec.name).collect();
    in_memory.sort();
    on_disk.sort();
    assert_eq!(in_memory, on_disk);
    assert_eq!(memory.state.tasks.len(), stored.tasks.len());
    assert_eq!(memory.state.counters, stored.counters);
}
