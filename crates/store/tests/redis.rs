//! Runs the store conformance suite against the Redis backend, on a real redis-server,
//! plus what only it does (the original's key layout, namespaces, outages).

mod conformance;
#[path = "support/redis_server.rs"]
mod redis_server;

use conformance::{at, Backend};
use mycluster_core::Change;
use mycluster_store::{
    Create, Head, Holder, OpenOptions, RedisStore, Snapshot, Store, StoreError, LEASE,
};
use redis_server::RedisServer;

struct Redis;

/// Each test gets its own server, so a test that stops it disturbs no other.
#[async_trait::async_trait]
impl Backend for Redis {
    type Place = Option<RedisServer>;

    async fn place(&self) -> Option<RedisServer> {
        RedisServer::start("redis conformance")
    }

    fn available(&self) -> bool {
        redis_server::installed("redis conformance")
    }

    async fn open(
        &self,
        place: &Option<RedisServer>,
        cluster: &str,
    ) -> Result<Box<dyn Store>, StoreError> {
        match place {
            Some(server) => Ok(Box::new(RedisStore::open(&server.url(), cluster).await?)),
            None => Err(StoreError::Unavailable(
                "redis-server is not installed".into(),
            )),
        }
    }
}

conformance_suite!(Redis);

#[tokio::test]
async fn a_service_is_readable_json_under_services_name() {
    let Some(server) = RedisServer::start("a_service_is_readable_json_under_services_name") else {
        return;
    };
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("hello-world", 3))],
        )
        .await
        .unwrap();
    let output = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &server.port.to_string(),
            "GET",
            "mycluster:test:services.hello-world",
        ])
        .output()
        .expect("redis-cli");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["spec"]["name"], "hello-world");
    assert_eq!(json["spec"]["replicas"], 3);
}

#[tokio::test]
async fn two_clusters_share_one_server_without_meeting() {
    let Some(server) = RedisServer::start("two_clusters_share_one_server_without_meeting") else {
        return;
    };
    let a = RedisStore::open(&server.url(), "alpha").await.unwrap();
    let b = RedisStore::open(&server.url(), "beta").await.unwrap();
    a.commit(
        at(0),
        at(1),
        vec![Change::PutService(conformance::service("web", 1))],
    )
    .await
    .unwrap();
    b.commit(
        at(0),
        at(7),
        vec![Change::PutService(conformance::service("db", 2))],
    )
    .await
    .unwrap();
    let (la, lb) = (a.load().await.unwrap(), b.load().await.unwrap());
    assert_eq!(
        (la.head, la.services.len(), &la.services[0].spec.name[..]),
        (at(1), 1, "web")
    );
    assert_eq!(
        (lb.head, lb.services.len(), &lb.services[0].spec.name[..]),
        (at(7), 1, "db")
    );
}

#[tokio::test]
async fn an_outage_fails_commits_and_recovery_keeps_everything() {
    let Some(mut server) =
        RedisServer::start("an_outage_fails_commits_and_recovery_keeps_everything")
    else {
        return;
    };
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("web", 1))],
        )
        .await
        .unwrap();
    server.kill();
    let failed = store
        .commit(
            at(1),
            at(2),
            vec![Change::PutService(conformance::service("db", 1))],
        )
        .await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(store.ping().await.is_err());
    server.restart();
    // The connection comes back by itself.
    let started = std::time::Instant::now();
    while store.ping().await.is_err() {
        assert!(started.elapsed().as_secs() < 30, "no reconnection");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    store
        .commit(
            at(1),
            at(2),
            vec![Change::PutService(conformance::service("db", 1))],
        )
        .await
        .unwrap();
    let loaded = store.load().await.unwrap();
    let mut names: Vec<&str> = loaded
        .services
        .iter()
        .map(|s| s.spec.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["db", "web"]);
    assert_eq!(loaded.head, at(2));
}

/// A store checked (its lease renewed) twice a second, as the manager's store keeper
/// does, until stopped; `stop` gives what each check answered.
struct Renewing {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Result<(), StoreError>>>,
}

impl Renewing {
    fn start(store: std::sync::Arc<RedisStore>, head: Head) -> Renewing {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = tokio::spawn(async move {
            let mut checks = Vec::new();
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                checks.push(store.check(head).await);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            checks
        });
        Renewing { stop, handle }
    }

    async fn stop(self) -> Vec<Result<(), StoreError>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let checks = self.handle.await.expect("renewing task");
        assert!(!checks.is_empty(), "the store was never checked");
        checks
    }
}

/// A manager of another host holding cluster `test`, with one service committed.
async fn first_manager(server: &RedisServer) -> std::sync::Arc<RedisStore> {
    let first = RedisStore::connect(&server.url(), &options("test", elsewhere()))
        .await
        .unwrap();
    first
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("web", 1))],
        )
        .await
        .unwrap();
    std::sync::Arc::new(first)
}

/// This process, opening cluster `test` as a second manager.
async fn second_manager(server: &RedisServer) -> Result<RedisStore, StoreError> {
    RedisStore::connect(
        &server.url(),
        &options("test", Holder::this_process("manager")),
    )
    .await
}

/// A holder this process cannot take over at once (another host's manager).
fn elsewhere() -> Holder {
    Holder {
        token: "elsewhere".into(),
        host: "some-other-host".into(),
        ..Holder::this_process("manager")
    }
}

fn options(cluster: &str, holder: Holder) -> OpenOptions {
    OpenOptions {
        cluster: cluster.into(),
        create: Create::IfMissing,
        holder,
    }
}

fn expect_diverged(result: Result<(), StoreError>, what: &str) -> String {
    match result {
        Err(StoreError::Diverged(message)) => message,
        other => panic!("{what}: expected Diverged, got {other:?}"),
    }
}

/// The store's whole state as a snapshot at `head`.
async fn snapshot_at(store: &RedisStore, head: Head) -> Snapshot {
    Snapshot {
        head,
        ..store.load().await.expect("load")
    }
}

#[tokio::test]
async fn a_flushed_server_is_found_out_and_a_reseed_brings_it_back() {
    let Some(server) = RedisServer::start("a_flushed_server_is_found_out") else {
        return;
    };
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("web", 1))],
        )
        .await
        .unwrap();
    let kept = snapshot_at(&store, at(2)).await;
    server.cli(&["FLUSHALL"]);
    let message = expect_diverged(store.check(at(1)).await, "check after FLUSHALL");
    assert!(message.contains("nothing for this cluster"), "{message}");
    let message = expect_diverged(
        store
            .commit(
                at(1),
                at(2),
                vec![Change::PutService(conformance::service("db", 1))],
            )
            .await,
        "commit after FLUSHALL",
    );
    assert!(message.contains("mycluster store reseed"), "{message}");
    // Nothing was written on top of the emptied server.
    // Only the lease, which the manager keeps while it waits for an operator.
    assert_eq!(server.cli(&["KEYS", "*"]), "mycluster:test:lease");
    store.replace(&kept).await.expect("reseed");
    store.check(at(2)).await.expect("check after the reseed");
    store
        .commit(
            at(2),
            at(3),
            vec![Change::PutService(conformance::service("db", 1))],
        )
        .await
        .expect("commit after the reseed");
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.services.len(), 2);
    assert_eq!(loaded.head, at(3));
}

#[tokio::test]
async fn a_server_restarted_empty_is_found_out() {
    let Some(mut server) = RedisServer::start("a_server_restarted_empty_is_found_out") else {
        return;
    };
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("web", 1))],
        )
        .await
        .unwrap();
    server.restart_empty();
    // The connection comes back by itself; then the store's history is gone.
    let started = std::time::Instant::now();
    let message = loop {
        match store.check(at(1)).await {
            Err(StoreError::Unavailable(_)) => {
                assert!(started.elapsed().as_secs() < 30, "no reconnection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break expect_diverged(other, "check after the restart"),
        }
    };
    assert!(message.contains("nothing for this cluster"), "{message}");
    expect_diverged(
        store.commit(at(1), at(2), Vec::new()).await,
        "commit after the restart",
    );
    // Only the lease, which the manager keeps while it waits for an operator.
    assert_eq!(server.cli(&["KEYS", "*"]), "mycluster:test:lease");
}

#[tokio::test]
async fn an_evicting_server_is_refused_at_open_and_stops_writes_after() {
    let Some(server) = RedisServer::start("an_evicting_server_is_refused") else {
        return;
    };
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    match RedisStore::open(&server.url(), "test").await {
        Err(StoreError::Config(message)) => {
            assert!(
                message.contains("maxmemory-policy allkeys-lru"),
                "{message}"
            );
            assert!(message.contains("noeviction"), "{message}");
        }
        Err(other) => panic!("expected Config, got {other}"),
        Ok(_) => panic!("a store that may evict keys was opened"),
    }
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![Change::PutService(conformance::service("web", 1))],
        )
        .await
        .unwrap();
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let message = expect_diverged(
        store.commit(at(1), at(2), Vec::new()).await,
        "commit under volatile-lru",
    );
    assert!(
        message.contains("maxmemory-policy volatile-lru"),
        "{message}"
    );
    expect_diverged(store.check(at(1)).await, "check under volatile-lru");
    // Set back, it stays refused: keys may have gone meanwhile. A reseed clears it.
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    expect_diverged(store.check(at(1)).await, "check once set back");
    let kept = snapshot_at(&store, at(2)).await;
    store.replace(&kept).await.expect("reseed");
    store
        .commit(at(2), at(3), Vec::new())
        .await
        .expect("commit after the reseed");
}

#[tokio::test]
async fn a_service_key_gone_from_the_server_fails_the_load() {
    let Some(server) = RedisServer::start("a_service_key_gone_fails_the_load") else {
        return;
    };
    let store = RedisStore::open(&server.url(), "test").await.unwrap();
    store
        .commit(
            at(0),
            at(1),
            vec![
                Change::PutService(conformance::service("web", 1)),
                Change::PutService(conformance::service("db", 1)),
            ],
        )
        .await
        .unwrap();
    // What an eviction does: the key goes, the set still names it.
    server.cli(&["DEL", "mycluster:test:services.db"]);
    match store.load().await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("lists service db"), "{message}")
        }
        other => panic!(
            "expected Corrupt, got {:?}",
            other.map(|s| s.services.len())
        ),
    }
}

#[tokio::test]
async fn a_second_manager_is_refused_while_the_first_renews() {
    let Some(server) = RedisServer::start("a_second_manager_is_refused") else {
        return;
    };
    let first = first_manager(&server).await;
    let renewing = Renewing::start(first.clone(), at(1));
    let second = second_manager(&server).await;
    for check in renewing.stop().await {
        check.expect("the first keeps its lease");
    }
    match second {
        Err(StoreError::Held(message)) => {
            assert!(
                message.contains("a manager on host some-other-host"),
                "{message}"
            );
            assert!(message.contains("--name test"), "{message}");
        }
        Err(other) => panic!("expected Held, got {other}"),
        Ok(_) => panic!("a second manager opened a cluster held by a live one"),
    }
    // The first still writes.
    first
        .commit(at(1), at(2), Vec::new())
        .await
        .expect("the first writes on");
}

#[tokio::test]
async fn a_holder_that_stops_renewing_is_taken_over_and_fenced() {
    let Some(server) = RedisServer::start("a_holder_that_stops_renewing") else {
        return;
    };
    let first = RedisStore::connect(&server.url(), &options("test", elsewhere()))
        .await
        .unwrap();
    first.commit(at(0), at(1), Vec::new()).await.unwrap();
    // The first stops renewing (paused, cut off): after its lease the second gets in.
    let second = RedisStore::connect(
        &server.url(),
        &options("test", Holder::this_process("manager")),
    )
    .await
    .expect("taken over once the lease ran out");
    second
        .commit(at(1), at(2), Vec::new())
        .await
        .expect("the second writes");
    // The first, back, can no longer write: it is fenced.
    match first.check(at(1)).await {
        Err(StoreError::Held(message)) => assert!(message.contains("lost cluster"), "{message}"),
        other => panic!("expected Held, got {other:?}"),
    }
    let own = Head {
        index: 2,
        commit: 1,
    };
    assert!(matches!(
        first.commit(at(1), own, Vec::new()).await,
        Err(StoreError::Held(_))
    ));
}

#[tokio::test]
async fn a_gone_holder_of_this_host_is_taken_over_at_once() {
    let Some(server) = RedisServer::start("a_gone_holder_is_taken_over") else {
        return;
    };
    let gone = Holder {
        token: "crashed".into(),
        pid: u32::MAX - 1,
        ..Holder::this_process("manager")
    };
    let first = RedisStore::connect(&server.url(), &options("test", gone))
        .await
        .unwrap();
    first.commit(at(0), at(1), Vec::new()).await.unwrap();
    drop(first);
    let started = std::time::Instant::now();
    let second = RedisStore::open(&server.url(), "test")
        .await
        .expect("taken over");
    assert!(
        started.elapsed() < LEASE,
        "waited {:?} (a lease) for a holder known to be gone",
        started.elapsed()
    );
    second
        .commit(at(1), at(2), Vec::new())
        .await
        .expect("writes");
}

#[tokio::test]
async fn a_released_lease_lets_the_next_manager_in() {
    let Some(server) = RedisServer::start("a_released_lease") else {
        return;
    };
    let first = RedisStore::connect(&server.url(), &options("test", elsewhere()))
        .await
        .unwrap();
    first.release().await;
    let started = std::time::Instant::now();
    RedisStore::open(&server.url(), "test")
        .await
        .expect("opened");
    // Not the wait for the lease to run out.
    assert!(started.elapsed() < LEASE, "waited {:?}", started.elapsed());
}

/// A manager whose store lost its history keeps the cluster's lease while it waits for
/// an operator: a second manager started meanwhile must not take the emptied store for
/// a new cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_waiting_for_a_reseed_keeps_the_cluster() {
    let Some(server) = RedisServer::start("a_manager_waiting_for_a_reseed_keeps_the_cluster")
    else {
        return;
    };
    let first = first_manager(&server).await;
    let kept = snapshot_at(&first, at(2)).await;
    server.cli(&["FLUSHALL"]);
    let renewing = Renewing::start(first.clone(), at(1));
    let second = second_manager(&server).await;
    for check in renewing.stop().await {
        expect_diverged(check, "check after FLUSHALL");
    }
    match second {
        Err(StoreError::Held(message)) => assert!(message.contains("some-other-host"), "{message}"),
        Err(other) => panic!("expected Held, got {other}"),
        Ok(_) => panic!("a second manager started on a store another manager waits to reseed"),
    }
    // Nothing was made in the emptied store; the first reseeds it.
    assert_eq!(server.cli(&["EXISTS", "mycluster:test:meta"]), "0");
    first.replace(&kept).await.expect("reseed");
    assert_eq!(first.load().await.unwrap().services.len(), 1);
}

/// A reseed replaces this cluster's keys and nothing else, even where another cluster's
/// keys share its prefix.
#[tokio::test]
async fn a_reseed_leaves_other_clusters_alone() {
    let Some(server) = RedisServer::start("a_reseed_leaves_other_clusters_alone") else {
        return;
    };
    let a = RedisStore::open(&server.url(), "a").await.unwrap();
    let ab = RedisStore::open(&server.url(), "a:b").await.unwrap();
    for store in [&a, &ab] {
        store
            .commit(
                at(0),
                at(1),
                vec![Change::PutService(conformance::service("web", 1))],
            )
            .await
            .unwrap();
    }
    a.replace(&Snapshot {
        head: at(2),
        ..Snapshot::default()
    })
    .await
    .unwrap();
    assert!(a.load().await.unwrap().services.is_empty());
    assert_eq!(ab.load().await.unwrap().services.len(), 1);
    ab.check(at(1)).await.expect("the other cluster is whole");
}
