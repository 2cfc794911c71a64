//! Group commit: concurrent mutations share store commits, every one is answered only
//! once durable, and a failed commit fails every mutation computed on it and leaves the
//! state as it was.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use mycluster_core::commands::{put_service, CommandError};
use mycluster_core::{Change, Limits, ServiceSpec};
use mycluster_manager::cluster::{Follow, MutateError};
use mycluster_manager::Cluster;
use mycluster_store::{EmbeddedStore, Snapshot, Store, StoreError};

/// The embedded store, counting commits and failing them on demand.
struct Flaky {
    inner: EmbeddedStore,
    commits: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl Store for Flaky {
    fn describe(&self) -> String {
        "flaky".into()
    }
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn commit(&self, index: u64, changes: Vec<Change>) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("failing on purpose".into()));
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(index, changes).await
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
    });
    let cluster = Arc::new(
        Cluster::load("test".into(), Limits::default(), store.clone())
            .await
            .unwrap(),
    );
    (dir, store, cluster)
}

async fn create(cluster: &Arc<Cluster>, name: String) -> Result<(), MutateError<CommandError>> {
    let spec = ServiceSpec {
        name: name.clone(),
        image: Some("redis".into()),
        replicas: 1,
        command: None,
        env: Default::default(),
    };
    cluster
        .mutate(|txn, now| {
            put_service(txn, spec, now, &Default::default())?;
            Ok::<_, CommandError>(((), Follow::Services(vec![name])))
        })
        .await
        .map(drop)
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
    assert_eq!(cluster.snapshot().index, stored.index);
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
    let stored: Vec<String> = store
        .load()
        .await
        .unwrap()
        .services
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(cluster.snapshot().state.services.len(), 2);
}
