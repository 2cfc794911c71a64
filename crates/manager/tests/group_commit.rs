//! Group commit: concurrent mutations share store commits, every one is answered only
//! once durable, and a failed commit fails every mutation computed on it and leaves the
//! state as it was. And the store's history: a commit whose answer was lost is settled
//! by the store's head, and a store that lost the history is written no more until it is
//! reseeded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mycluster_core::step::PutService;
use mycluster_core::{Change, Limits, ServiceSpec};
use mycluster_manager::cluster::MutateError;
use mycluster_manager::{Cluster, StoreHealth};
use mycluster_store::{EmbeddedStore, Head, Snapshot, Store, StoreError};

/// The embedded store, counting commits and failing them on demand: before writing
/// (`failing`), or after (`losing`: the commit lands, its answer is lost).
struct Flaky {
    inner: EmbeddedStore,
    commits: AtomicUsize,
    failing: AtomicBool,
    losing: AtomicBool,
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn commit(
        &self,
        after: Head,
        next: Head,
        changes: Vec<Change>,
    ) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("failing on purpose".into()));
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(after, next, changes).await?;
        if self.losing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("answer lost on purpose".into()));
        }
        Ok(())
    }
    async fn head(&self) -> Result<Head, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("failing on purpose".into()));
        }
        self.inner.head().await
    }
    async fn check(&self, head: Head) -> Result<(), StoreError> {
        self.inner.check(head).await
    }
    async fn replace(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.replace(snapshot).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

async fn setup() -> (tempfile::TempDir, Arc<Flaky>, Arc<Cluster>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky {
        inner: EmbeddedStore::open(dir.path(), "test").await.unwrap(),
        commits: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
        losing: AtomicBool::new(false),
    });
    let cluster = Arc::new(
        Cluster::load("test".into(), Limits::default(), store.clone())
            .await
            .unwrap(),
    );
    (dir, store, cluster)
}

async fn create(cluster: &Arc<Cluster>, name: String) -> Result<(), MutateError> {
    let spec = ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: name.clone(),
        image: Some("redis".into()),
        replicas: 1,
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
    cluster.apply(PutService(spec)).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_share_commits_and_all_land() {
    let (_dir, store, cluster) = setup().await;
    let mut all = Vec::new();
    for i in 0..200 {
        let cluster = cluster.clone();
        all.push(tokio::spawn(async move {
            create(&cluster, format!("svc-{i}")).await
        }));
    }
    for one in all {
        one.await.unwrap().expect("every mutation succeeds");
    }
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(
        commits < 200,
        "200 mutations took {commits} commits: no batching"
    );
    let stored = store.load().await.unwrap();
    assert_eq!(stored.services.len(), 200);
    assert_eq!(cluster.snapshot().state.services.len(), 200);
    assert_eq!(cluster.snapshot().index, stored.head.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_mutations_and_changes_nothing() {
    let (_dir, store, cluster) = setup().await;
    create(&cluster, "kept".into()).await.unwrap();
    store.failing.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for i in 0..20 {
        let cluster = cluster.clone();
        all.push(tokio::spawn(async move {
            create(&cluster, format!("lost-{i}")).await
        }));
    }
    for one in all {
        assert!(matches!(one.await.unwrap(), Err(MutateError::Store(_))));
    }
    let names: Vec<String> = cluster.snapshot().state.services.keys().cloned().collect();
    assert_eq!(names, ["kept"]);
    // The tip went back too: the next mutation builds on what is durable.
    store.failing.store(false, Ordering::SeqCst);
    create(&cluster, "after".into()).await.unwrap();
    let stored = stored_names(&store).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(cluster.snapshot().state.services.len(), 2);
}

/// The services the store holds, by name.
async fn stored_names(store: &Flaky) -> Vec<String> {
    let mut names: Vec<String> = store
        .load()
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    names.sort();
    names
}

fn names(cluster: &Cluster) -> Vec<String> {
    cluster.snapshot().state.services.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_was_lost_is_settled_by_the_store() {
    let (_dir, store, cluster) = setup().await;
    create(&cluster, "kept".into()).await.unwrap();
    // It lands, but its caller is told it failed ("may still be applied").
    store.losing.store(true, Ordering::SeqCst);
    assert!(matches!(
        create(&cluster, "landed".into()).await,
        Err(MutateError::Store(StoreError::Unavailable(_)))
    ));
    store.losing.store(false, Ordering::SeqCst);
    assert_eq!(names(&cluster), ["kept"]);
    // The next commit first asks the store: the change had landed, so it is published,
    // and the mutation computed without it is refused (to be tried again).
    assert!(create(&cluster, "next".into()).await.is_err());
    assert_eq!(names(&cluster), ["kept", "landed"]);
    create(&cluster, "next".into()).await.unwrap();
    assert_eq!(names(&cluster), ["kept", "landed", "next"]);
    let stored = store.load().await.unwrap();
    assert_eq!(stored.services.len(), 3);
    assert_eq!(stored.head.index, cluster.snapshot().index);
    assert_eq!(cluster.check_store().await, StoreHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_did_not_land_is_settled_too() {
    let (_dir, store, cluster) = setup().await;
    create(&cluster, "kept".into()).await.unwrap();
    store.failing.store(true, Ordering::SeqCst);
    assert!(create(&cluster, "lost".into()).await.is_err());
    assert!(matches!(
        cluster.check_store().await,
        StoreHealth::Unavailable(_)
    ));
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(cluster.check_store().await, StoreHealth::Ok);
    create(&cluster, "after".into()).await.unwrap();
    assert_eq!(names(&cluster), ["after", "kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_the_history_is_written_no_more_until_reseeded() {
    let (_dir, store, cluster) = setup().await;
    create(&cluster, "one".into()).await.unwrap();
    create(&cluster, "two".into()).await.unwrap();
    // Someone rewinds the store behind the manager's back (an old copy restored).
    store
        .inner
        .replace(&Snapshot::default())
        .await
        .expect("rewind");
    let health = cluster.check_store().await;
    let StoreHealth::Refusing(why) = health else {
        panic!("expected Refusing, got {health:?}")
    };
    assert!(why.contains("mycluster store reseed"), "{why}");
    match create(&cluster, "three".into()).await {
        Err(MutateError::Store(StoreError::Diverged(why))) => {
            assert!(
                why.contains("no longer holds this manager's history"),
                "{why}"
            )
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    // Nothing was written on top of the rewound store.
    assert!(store.load().await.unwrap().services.is_empty());
    assert_eq!(names(&cluster), ["one", "two"]);
    // The operator's choice: write memory back.
    let (head, _) = cluster.reseed().await.expect("reseed");
    assert_eq!(cluster.health(), StoreHealth::Ok);
    assert_eq!(store.load().await.unwrap().head, head);
    create(&cluster, "three".into()).await.unwrap();
    let stored = stored_names(&store).await;
    assert_eq!(stored, ["one", "three", "two"]);
}

/// The events are said from every change as it was made, not from what the store got:
/// scales that shared a commit (and were compacted into one write of the service) are
/// each an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_share_a_commit_are_each_an_event() {
    let (_dir, store, cluster) = setup().await;
    create(&cluster, "web".into()).await.unwrap();
    let before = store.commits.load(Ordering::SeqCst);
    let mut all = Vec::new();
    // Distinct sizes: each scale changes the replicas, whatever order they land in.
    for replicas in 2..=101u32 {
        let cluster = cluster.clone();
        all.push(tokio::spawn(async move {
            let scale = mycluster_core::step::PatchService {
                name: "web".into(),
                patch: mycluster_core::service::ServicePatch {
                    replicas: Some(replicas),
                    ..Default::default()
                },
            };
            cluster.apply(scale).await.map(drop)
        }));
    }
    for one in all {
        one.await.unwrap().expect("every scale succeeds");
    }
    let commits = store.commits.load(Ordering::SeqCst) - before;
    assert!(
        commits < 100,
        "100 scales took {commits} commits: no batching"
    );
    let log = cluster.events();
    let read = log
        .read(
            log.start(),
            &[mycluster_core::events::Topic::Service],
            10_000,
            None,
        )
        .expect("held");
    let updates = read
        .events
        .iter()
        .filter(|held| held.json.contains("\"type\":\"service_updated\""))
        .count();
    assert_eq!(updates, 100, "{commits} commits");
}
