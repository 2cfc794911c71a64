//! Runs the store conformance suite against the Redis backend, on a real redis-server,
//! plus what only it does (the original's key layout, namespaces, outages).

mod conformance;
#[path = "support/redis_server.rs"]
mod redis_server;

use conformance::Backend;
use mycluster_core::Change;
use mycluster_store::{RedisStore, Store, StoreError};
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
            1,
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
    a.commit(1, vec![Change::PutService(conformance::service("web", 1))])
        .await
        .unwrap();
    b.commit(7, vec![Change::PutService(conformance::service("db", 2))])
        .await
        .unwrap();
    let (la, lb) = (a.load().await.unwrap(), b.load().await.unwrap());
    assert_eq!(
        (la.index, la.services.len(), &la.services[0].spec.name[..]),
        (1, 1, "web")
    );
    assert_eq!(
        (lb.index, lb.services.len(), &lb.services[0].spec.name[..]),
        (7, 1, "db")
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
        .commit(1, vec![Change::PutService(conformance::service("web", 1))])
        .await
        .unwrap();
    server.kill();
    let failed = store
        .commit(2, vec![Change::PutService(conformance::service("db", 1))])
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
        .commit(2, vec![Change::PutService(conformance::service("db", 1))])
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
    assert_eq!(loaded.index, 2);
}
