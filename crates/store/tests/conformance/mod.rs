//! The store conformance suite: what every `Store` backend must do, written once against
//! the trait. A backend's test file implements `Backend` and calls `conformance_suite!`.

use std::collections::BTreeMap;

use mycluster_core::{
    Change, Counters, DesiredState, Service, ServiceSpec, Task, TaskState, Worker, WorkerStatus,
};
use mycluster_store::{Snapshot, Store, StoreError};

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
            concurrent_commits_all_land,
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

pub fn service(name: &str, replicas: u32) -> Service {
    Service {
        spec: ServiceSpec {
            name: name.into(),
            image: Some("mycluster/hello-world".into()),
            replicas,
            command: None,
            env: BTreeMap::new(),
        },
        version: 1,
        created_at: 1_000,
        updated_at: 2_000,
    }
}

pub fn task(id: &str, service: &str, slot: u32) -> Task {
    Task {
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
    }
}

pub fn worker(name: &str) -> Worker {
    Worker {
        name: name.into(),
        address: "10.0.0.1:7000".into(),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        capacity: Some(10),
        driver: "docker".into(),
        status: WorkerStatus::Ready,
        registered_at: 1_000,
        updated_at: 1_000,
        instance: String::new(),
    }
}

/// Sorted, so backends may return records in any order.
fn sorted(mut snapshot: Snapshot) -> Snapshot {
    snapshot
        .services
        .sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    snapshot.tasks.sort_by(|a, b| a.id.cmp(&b.id));
    snapshot.workers.sort_by(|a, b| a.name.cmp(&b.name));
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
        Change::PutCounters(counters),
    ];
    store.commit(1, changes).await.expect("commit");
    let expected = Snapshot {
        index: 1,
        services: vec![service("web", 2)],
        tasks: vec![task("t1", "web", 0), task("t2", "web", 1)],
        workers: vec![worker("test_worker_1")],
        counters,
    };
    assert_eq!(load(&*store).await, expected);
}

pub async fn later_puts_overwrite<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store
        .commit(1, vec![Change::PutService(service("web", 2))])
        .await
        .expect("commit");
    store
        .commit(2, vec![Change::PutService(service("web", 7))])
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
            1,
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
            2,
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
            1,
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
                1,
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
    assert_eq!(snapshot.index, 1);
    assert_eq!(snapshot.services, vec![service("web", 3)]);
    assert_eq!(snapshot.counters.total_requests, 1);
}

pub async fn index_is_the_last_committed<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    for index in 1..=20 {
        store
            .commit(
                index,
                vec![Change::PutTask(task(&format!("t{index}"), "web", 0))],
            )
            .await
            .expect("commit");
    }
    assert_eq!(load(&*store).await.index, 20);
    // An empty commit still moves the index.
    store.commit(21, Vec::new()).await.expect("commit");
    assert_eq!(load(&*store).await.index, 21);
}

pub async fn large_commit_is_whole<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    let changes: Vec<Change> = (0..10_000)
        .map(|i| Change::PutTask(task(&format!("t{i:05}"), "big", i)))
        .collect();
    store.commit(1, changes).await.expect("commit");
    let snapshot = load(&*store).await;
    assert_eq!(snapshot.tasks.len(), 10_000);
    assert_eq!(snapshot.tasks[9_999].slot, 9_999);
}

pub async fn another_cluster_is_refused<B: Backend>(backend: &B) {
    let place = backend.place().await;
    {
        let store = backend.open(&place, "alpha").await.expect("open");
        store
            .commit(1, vec![Change::PutService(service("web", 1))])
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

pub async fn concurrent_commits_all_land<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store: std::sync::Arc<dyn Store> = backend.open(&place, "test").await.expect("open").into();
    let mut handles = Vec::new();
    for i in 0..32u64 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .commit(
                    i + 1,
                    vec![Change::PutService(service(&format!("s{i:02}"), 1))],
                )
                .await
        }));
    }
    for handle in handles {
        handle.await.expect("join").expect("commit");
    }
    assert_eq!(load(&*store).await.services.len(), 32);
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
        .commit(1, vec![Change::PutTask(odd.clone())])
        .await
        .expect("commit");
    assert_eq!(load(&*store).await.tasks, vec![odd]);
}

pub async fn ping_answers<B: Backend>(backend: &B) {
    let place = backend.place().await;
    let store = backend.open(&place, "test").await.expect("open");
    store.ping().await.expect("ping");
}
