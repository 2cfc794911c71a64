//! The store conformance suite: what every `Store` backend must do, written once against
//! the trait. A backend's test file implements `Backend` and calls `conformance_suite!`.

use std::collections::BTreeMap;

use mycluster_core::service::Volume;
use mycluster_core::{
    Change, Counters, DesiredState, Service, ServiceSpec, Task, TaskState, Worker, WorkerStatus,
};
use mycluster_store::{Head, Snapshot, Store, StoreError};

/// How the suite gets stores of one backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Where one test keeps its data; dropping it removes the data.
    type Place: Send + Sync;
    async fn place(&self) -> Self::Place;
    /// Opens the store at `place` for `cluster`; opening twice in a row (after the first
    /// was dropped) must see what the first committed.
    async fn open(&self, place: &Self::Place, cluster: &str) -> Result<Box<dyn Store>, StoreError>;
    /// Whether the backend can run here (a server it needs is installed). A backend that
    /// cannot must fail under `CI=true` and say it skips elsewhere.
    fn available(&self) -> bool {
        true
    }
}

/// Generates one `#[tokio::test]` per case for a backend.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            empty_store_loads_empty,
            commit_then_load_round_trips,
            later_puts_overwrite,
            deletes_remove_and_missing_deletes_are_harmless,
            changes_apply_in_order_within_a_commit,
            survives_reopen,
            index_is_the_last_committed,
            large_commit_is_whole,
            another_cluster_is_refused,
            concurrent_commits_on_one_head_let_one_land,
            a_commit_on_another_head_is_refused,
            a_retried_commit_lands_once,
            check_knows_the_history,
            replace_takes_any_history,
            odd_strings_round_trip,
            ping_answers,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !conformance::Backend::available(&$backend) {
                    return;
                }
                conformance::$case(&$backend).await;
            }
        )*
    };
}

/// A volume record of slot 0 of `service`.
pub fn volume(service: &str) -> Volume {
    Volume {
        name: format!("{service}-data-0"),
        service: service.into(),
        source: "data".into(),
        slot: 0,
        host: "engine-1".into(),
        worker: "w1".into(),
        remove: false,
        created_at: 1_500,
    }
}

pub fn service(name: &str, replicas: u32) -> Service {
    Service {
        generation: 0,
        history: Vec::new(),
        rollout: None,
        spec: ServiceSpec {
            healthcheck: None,
            update: Default::default(),
            name: name.into(),
            image: Some("mycluster/hello-world".into()),
            replicas,
            command: None,
            env: BTreeMap::new(),
            ports: Vec::new(),
            stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
            proxy_protocol: false,
            constraints: Vec::new(),
            spread: None,
            resources: Default::default(),
            volumes: Vec::new(),
            restart: Default::default(),
            on_disconnect: Default::default(),
        },
        version: 1,
        created_at: 1_000,
        updated_at: 2_000,
        rebalance: false,
    }
}

pub fn task(id: &str, service: &str, slot: u32) -> Task {
    Task {
        healthcheck: None,
        generation: 0,
        health: None,
        health_message: None,
        started_at: None,
        healthy_at: None,
        id: id.into(),
        service: service.into(),
        slot,
        spec_version: 1,
        image: Some("mycluster/hello-world".into()),
        command: Some(vec!["/mycluster".into(), "hello".into()]),
        env: BTreeMap::from([("PORT".to_string(), "8000".to_string())]),
        worker: Some("test_worker_1".into()),
        desired: DesiredState::Running,
        state: TaskState::Running,
        message: String::new(),
        container_id: Some("abc123".into()),
        exit_code: None,
        error: None,
        failures: 2,
        created_at: 1_000,
        updated_at: 1_500,
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
    }
}

pub fn worker(name: &str) -> Worker {
    Worker {
        name: name.into(),
        address: "10.0.0.1:7000".into(),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        capacity: Some(10),
        driver: Some(mycluster_core::Driver::Docker),
        status: WorkerStatus::Ready,
        registered_at: 1_000,
        updated_at: 1_000,
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
    }
}

/// A head for commit `n` of a test (0: a new store's).
pub fn at(n: u64) -> Head {
    match n {
        0 => Head::default(),
        n => Head {
            index: n,
            commit: n * 1000 + 7,
        },
    }
}

/// Sorted, so backends may return records in any order.
fn sorted(mut snapshot: Snapshot) -> Snapshot {
    snapshot
        .services
        .sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    snapshot.tasks.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot.workers.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot.volumes.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot
}

async fn load(store: &dyn Store) -> Snapshot {
    sorted(store.load().await.expect("load"))
}

pub async fn empty_store_loads_empty<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    assert_eq!(load(&*store).await, Snapshot::default());
}

pub async fn commit_then_load_round_trips<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    let counters = Counters {
        total_requests: 3,
        total_containers: 5,
        worker_failures: 1,
        containers_relocated: 2,
    };
    let changes = vec![
        Change::PutService(service("web", 2)),
        Change::PutTask(task("t1", "web", 0)),
        Change::PutTask(task("t2", "web", 1)),
        Change::PutWorker(worker("test_worker_1")),
        Change::PutVolume(volume("web")),
        Change::PutCounters(counters),
    ];
    store.commit(at(0), at(1), changes).await.expect("commit");
    let expected = Snapshot {
        head: at(1),
        services: vec![service("web", 2)],
        tasks: vec![task("t1", "web", 0), task("t2", "web", 1)],
        workers: vec![worker("test_worker_1")],
        volumes: vec![volume("web")],
        counters,
    };
    assert_eq!(load(&*store).await, expected);
}

pub async fn later_puts_overwrite<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(at(0), at(1), vec![Change::PutService(service("web", 2))])
        .await
        .expect("commit");
    store
        .commit(at(1), at(2), vec![Change::PutService(service("web", 7))])
        .await
        .expect("commit");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.services, vec![service("web", 7)]);
}

pub async fn deletes_remove_and_missing_deletes_are_harmless<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(
            at(0),
            at(1),
            vec![
                Change::PutService(service("web", 1)),
                Change::PutService(service("db", 1)),
                Change::PutTask(task("t1", "web", 0)),
                Change::PutWorker(worker("w1")),
            ],
        )
        .await
        .expect("commit");
    store
        .commit(
            at(1),
            at(2),
            vec![
                Change::DeleteService("web".into()),
                Change::DeleteTask("t1".into()),
                Change::DeleteWorker("w1".into()),
                Change::DeleteService("never-existed".into()),
                Change::DeleteTask("nope".into()),
            ],
        )
        .await
        .expect("commit");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.services, vec![service("db", 1)]);
    assert!(snapshot.tasks.is_empty());
    assert!(snapshot.workers.is_empty());
}

pub async fn changes_apply_in_order_within_a_commit<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(
            at(0),
            at(1),
            vec![
                Change::PutService(service("gone", 1)),
                Change::DeleteService("gone".into()),
                Change::DeleteService("back".into()),
                Change::PutService(service("back", 4)),
                Change::PutTask(task("t1", "back", 0)),
                Change::PutTask(Task {
                    state: TaskState::Failed,
                    ..task("t1", "back", 0)
                }),
            ],
        )
        .await
        .expect("commit");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.services, vec![service("back", 4)]);
    assert_eq!(snapshot.tasks.len(), 1);
    assert_eq!(snapshot.tasks[0].state, TaskState::Failed);
}

pub async fn survives_reopen<B: Backend>(backend: &B) {
    let place = backend.place().await;
    {
        let store = backend.open(&place, "test").await.expect("open");
        store
            .commit(
                at(0),
                at(1),
                vec![
                    Change::PutService(service("web", 3)),
                    Change::PutCounters(Counters {
                        total_requests: 1,
                        ..Counters::default()
                    }),
                ],
            )
            .await
            .expect("commit");
    }
    let store = backend.open(&place, "test").await.expect("reopen");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.head, at(1));
    assert_eq!(snapshot.services, vec![service("web", 3)]);
    assert_eq!(snapshot.counters.total_requests, 1);
}

pub async fn index_is_the_last_committed<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    for index in 1..=20 {
        store
            .commit(
                at(index - 1),
                at(index),
                vec![Change::PutTask(task(&format!("t{index}"), "web", 0))],
            )
            .await
            .expect("commit");
    }
    assert_eq!(load(&*store).await.head, at(20));
    // An empty commit still moves the index.
    store
        .commit(at(20), at(21), Vec::new())
        .await
        .expect("commit");
    assert_eq!(load(&*store).await.head, at(21));
}

pub async fn large_commit_is_whole<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    let changes: Vec<Change> = (0..10_000)
        .map(|i| Change::PutTask(task(&format!("t{i:05}"), "big", i)))
        .collect();
    store.commit(at(0), at(1), changes).await.expect("commit");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.tasks.len(), 10_000);
    assert_eq!(snapshot.tasks[9_999].slot, 9_999);
}

pub async fn another_cluster_is_refused<B: Backend>(backend: &B) {
    let place = backend.place().await;
    {
        let store = backend.open(&place, "alpha").await.expect("open");
        store
            .commit(at(0), at(1), vec![Change::PutService(service("web", 1))])
            .await
            .expect("commit");
    }
    match backend.open(&place, "beta").await {
        Err(StoreError::WrongCluster { found, expected }) => {
            assert_eq!((found.as_str(), expected.as_str()), ("alpha", "beta"));
        }
        Err(other) => panic!("expected WrongCluster, got {other}"),
        Ok(store) => {
            // A backend that namespaces by cluster may open it, but must not show alpha's data.
            assert_eq!(load(&*store).await, Snapshot::default());
        }
    }
    let store = backend.open(&place, "alpha").await.expect("reopen alpha");
    assert_eq!(load(&*store).await.services, vec![service("web", 1)]);
}

/// The history check is atomic: of many commits on one head, exactly one lands.
pub async fn concurrent_commits_on_one_head_let_one_land<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store: std::sync::Arc<dyn Store> = backend.open(&place, "test").await.expect("open").into();
    let mut handles = Vec::new();
    for i in 0..32u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let next = Head {
                index: 1,
                commit: 100 + i,
            };
            let result = store
                .commit(
                    at(0),
                    next,
                    vec![Change::PutService(service(&format!("s{i:02}"), 1))],
                )
                .await;
            (i, result)
        }));
    }
    let mut landed = Vec::new();
    for handle in handles {
        match handle.await.expect("join") {
            (i, Ok(())) => landed.push(i),
            (_, Err(StoreError::Diverged(_))) => {}
            (_, Err(other)) => panic!("expected Ok or Diverged, got {other}"),
        }
    }
    assert_eq!(landed.len(), 1, "landed: {landed:?}");
    let snapshot = load(&*store).await;
    assert_eq!(
        snapshot.services,
        vec![service(&format!("s{:02}", landed[0]), 1)]
    );
    assert_eq!(
        snapshot.head,
        Head {
            index: 1,
            commit: 100 + landed[0]
        }
    );
}

/// The history check: a commit names the head it builds on, and a store whose head is
/// anything else refuses it and writes nothing.
pub async fn a_commit_on_another_head_is_refused<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(at(0), at(1), vec![Change::PutService(service("web", 1))])
        .await
        .expect("commit");
    // Built on a head the store no longer has (what a manager whose store was rolled
    // back, emptied or written by another would send).
    for stale in [
        at(0),
        at(2),
        Head {
            index: 1,
            commit: 999,
        },
    ] {
        let refused = store
            .commit(
                stale,
                stale.next(5),
                vec![Change::PutService(service("db", 1))],
            )
            .await;
        match refused {
            Err(StoreError::Diverged(message)) => {
                assert!(message.contains("mycluster store reseed"), "{message}")
            }
            other => panic!("expected Diverged for a commit on {stale}, got {other:?}"),
        }
    }
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.services, vec![service("web", 1)]);
    assert_eq!(snapshot.head, at(1));
    assert_eq!(store.head().await.expect("head"), at(1));
}

/// A commit retried after its answer was lost (it had landed) succeeds without applying
/// twice; a different commit of the same index does not.
pub async fn a_retried_commit_lands_once<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    let changes = vec![Change::PutService(service("web", 1))];
    store
        .commit(at(0), at(1), changes.clone())
        .await
        .expect("commit");
    store.commit(at(0), at(1), changes).await.expect("retry");
    assert_eq!(store.head().await.expect("head"), at(1));
    let other = Head {
        index: 1,
        commit: 4242,
    };
    assert!(matches!(
        store.commit(at(0), other, Vec::new()).await,
        Err(StoreError::Diverged(_))
    ));
    store
        .commit(at(1), at(2), Vec::new())
        .await
        .expect("next commit");
    assert_eq!(store.head().await.expect("head"), at(2));
}

/// `check` passes on the store's head and refuses any other.
pub async fn check_knows_the_history<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .check(Head::default())
        .await
        .expect("check of a new store");
    store
        .commit(at(0), at(1), vec![Change::PutService(service("web", 1))])
        .await
        .expect("commit");
    store.check(at(1)).await.expect("check");
    for other in [
        at(0),
        at(2),
        Head {
            index: 1,
            commit: 1,
        },
    ] {
        assert!(
            matches!(store.check(other).await, Err(StoreError::Diverged(_))),
            "check({other}) passed"
        );
    }
}

/// `replace` writes a whole state on any history; commits then build on its head only.
pub async fn replace_takes_any_history<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(
            at(0),
            at(1),
            vec![
                Change::PutService(service("old", 1)),
                Change::PutTask(task("t-old", "old", 0)),
                Change::PutWorker(worker("w-old")),
                Change::PutVolume(volume("old")),
            ],
        )
        .await
        .expect("commit");
    let wanted = Snapshot {
        head: at(7),
        services: vec![service("a", 2), service("b", 1)],
        tasks: vec![task("t1", "a", 0), task("t2", "a", 1)],
        workers: vec![worker("w1")],
        volumes: vec![volume("a")],
        counters: Counters {
            total_requests: 9,
            ..Counters::default()
        },
    };
    store.replace(&wanted).await.expect("replace");
    assert_eq!(load(&*store).await, wanted);
    store.check(at(7)).await.expect("check on the new head");
    assert!(matches!(
        store.commit(at(1), at(2), Vec::new()).await,
        Err(StoreError::Diverged(_))
    ));
    store
        .commit(at(7), at(8), vec![Change::DeleteService("b".into())])
        .await
        .expect("commit on the new head");
    assert_eq!(load(&*store).await.services, vec![service("a", 2)]);
    // It survives a reopen like any commit.
    drop(store);
    let store = backend.open(&place, "test").await.expect("reopen");
    assert_eq!(load(&*store).await.head, at(8));
}

pub async fn odd_strings_round_trip<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    let odd = Task {
        message: "quote \" backslash \\ newline \n tab \t emoji 🚀 nul \u{0}".into(),
        error: Some("ünïcödé".into()),
        ..task("t:with/odd.chars", "web", 0)
    };
    store
        .commit(at(0), at(1), vec![Change::PutTask(odd.clone())])
        .await
        .expect("commit");
    assert_eq!(load(&*store).await.tasks, vec![odd]);
}

pub async fn ping_answers<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store.ping().await.expect("ping");
}
