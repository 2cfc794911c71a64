//! Per-worker credentials on a real listener: a worker's credential speaks for that
//! worker only (heartbeat, task list, report, leave: 403 for another); the join token
//! registers new names but cannot take an existing one over; `worker rm` revokes (401
//! `revoked credential` everywhere, registration included) and frees the name for the
//! join token; a rotated join token refuses the old one while registered workers keep
//! working; `--max-workers` bounds new names; credentials never show in listings.

use std::time::Duration;

use mycluster_client::{Client, ClientError};
use mycluster_core::identity::is_revoked;
use mycluster_core::wire::{JoinTokenDoc, Registration, StatusReport};
use mycluster_core::{Driver, Limits};
use mycluster_manager::{ManagerConfig, RunningManager};
use reqwest::Method;
use tokio_util::sync::CancellationToken;

mod support;

const API: &str = "identity-test-api-token-0123456789";
const JOIN: &str = "identity-test-join-token-0123456789";

struct Manager {
    _running: RunningManager,
    url: String,
    stop: CancellationToken,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Manager {
    async fn start(dir: &std::path::Path, max_workers: Option<usize>) -> Manager {
        let stop = CancellationToken::new();
        let running = RunningManager::start(
            ManagerConfig {
                limits: Limits {
                    max_workers,
                    ..Limits::default()
                },
                api: support::locked(API, Some(JOIN)),
                ..ManagerConfig::local(dir, "test")
            },
            stop.clone(),
        )
        .await
        .unwrap();
        Manager {
            url: format!("http://{}", running.addr),
            _running: running,
            stop,
        }
    }

    fn as_(&self, token: &str) -> Client {
        Client::new(&self.url, Duration::from_secs(10))
            .unwrap()
            .with_token(Some(token.to_string()))
    }
}

fn registration(name: &str, instance: &str) -> Registration {
    Registration {
        name: name.into(),
        address: "127.0.0.1:1".into(),
        labels: Default::default(),
        capacity: None,
        driver: Driver::Process.into(),
        instance: instance.into(),
        resources: Default::default(),
        host: String::new(),
        agent_ca_sha256: None,
    }
}

/// Registers and answers the credential it got.
async fn join(client: &Client, name: &str, instance: &str) -> String {
    let doc = client
        .register(&registration(name, instance))
        .await
        .unwrap();
    let credential = doc.credential.expect("a new worker gets a credential");
    assert!(credential.starts_with("MCW1-"), "{credential}");
    credential
}

/// The status and message of a refusal.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_credential_speaks_for_its_own_worker_only() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), None).await;
    let joiner = manager.as_(JOIN);
    let c1 = join(&joiner, "w1", "aaaa").await;
    let c2 = join(&joiner, "w2", "bbbb").await;
    let (one, two) = (manager.as_(&c1), manager.as_(&c2));
    one.heartbeat("w1", "aaaa").await.unwrap();
    one.assigned_tasks("w1", "aaaa", None, Duration::ZERO)
        .await
        .unwrap();
    let report = StatusReport {
        tasks: vec![],
        removed_volumes: vec![],
    };
    one.report_status("w1", "aaaa", &report).await.unwrap();

    // w2's credential, even naming w1's instance, cannot act for w1.
    let (status, message) = refused(two.heartbeat("w1", "aaaa").await);
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("worker w2's credential"), "{message}");
    assert_eq!(
        refused(two.assigned_tasks("w1", "aaaa", None, Duration::ZERO).await).0,
        403
    );
    assert_eq!(
        refused(two.report_status("w1", "aaaa", &report).await).0,
        403
    );
    assert_eq!(refused(two.leave("w1", "aaaa").await).0, 403);
    // Nor can the join token, now that w1 has its own credential.
    let (status, message) = refused(joiner.heartbeat("w1", "aaaa").await);
    assert_eq!(status, 403);
    assert!(
        message.contains("worker w1 has its own credential"),
        "{message}"
    );
    // A credential opens no operator's endpoint, but reads the route table.
    assert_eq!(refused(two.workers().await).0, 403);
    two.route_table(None, Duration::ZERO).await.unwrap();

    // The credentials never show in listings or the state.
    let operator = manager.as_(API);
    let listed = operator.workers().await.unwrap();
    assert!(listed.iter().all(|w| w.credential.is_none()));
    let state: serde_json::Value = operator
        .request(Method::GET, "/api/v1/state")
        .await
        .unwrap();
    let state = state.to_string();
    let hash = mycluster_client::credential::hash(&c1);
    assert!(
        !state.contains("MCW1-") && !state.contains(&hash),
        "{state}"
    );
}

#[tokio::test]
async fn the_join_token_cannot_take_an_existing_name_and_worker_rm_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), None).await;
    let joiner = manager.as_(JOIN);
    let c1 = join(&joiner, "w1", "aaaa").await;
    // Another host (another instance) with the join token: refused, whatever its state.
    let (status, message) = refused(joiner.register(&registration("w1", "cccc")).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("mycluster worker rm w1") && message.contains("only its own agent"),
        "{message}"
    );
    // The agent that holds it, having lost its credential, gets a new one; the old one
    // stops working.
    let c1b = join(&joiner, "w1", "aaaa").await;
    assert_ne!(c1, c1b);
    let (status, message) = refused(manager.as_(&c1).heartbeat("w1", "aaaa").await);
    assert!(is_revoked(status, &message), "{status} {message}");
    // Registering again with its own credential keeps it (and answers none).
    let again = manager
        .as_(&c1b)
        .register(&registration("w1", "aaaa"))
        .await
        .unwrap();
    assert!(again.credential.is_none());
    let old = manager.as_(&c1b);
    old.heartbeat("w1", "aaaa").await.unwrap();

    // `worker rm`: the credential names nothing any more.
    let operator = manager.as_(API);
    operator.set_drain("w1", true).await.unwrap();
    operator.remove_worker("w1").await.unwrap();
    for (status, message) in [
        refused(old.heartbeat("w1", "aaaa").await),
        refused(old.assigned_tasks("w1", "aaaa", None, Duration::ZERO).await),
        refused(old.register(&registration("w1", "aaaa")).await),
        refused(old.route_table(None, Duration::ZERO).await),
    ] {
        assert!(is_revoked(status, &message), "{status} {message}");
    }
    let (_, message) = refused(old.register(&registration("w1", "aaaa")).await);
    assert!(
        message.contains("was removed") && message.contains("mycluster join"),
        "{message}"
    );
    // A new host may have the name now, with the join token.
    let fresh = join(&joiner, "w1", "dddd").await;
    manager.as_(&fresh).heartbeat("w1", "dddd").await.unwrap();
    assert!(old.heartbeat("w1", "aaaa").await.is_err());
}

#[tokio::test]
async fn a_rotated_join_token_refuses_the_old_one_and_registered_workers_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), None).await;
    let operator = manager.as_(API);
    let shown: JoinTokenDoc = operator
        .request(Method::GET, "/api/v1/cluster/join-token")
        .await
        .unwrap();
    assert_eq!(shown.token, JOIN);
    assert_eq!(shown.ca_sha256, None);
    let c1 = join(&manager.as_(JOIN), "w1", "aaaa").await;

    let rotated: JoinTokenDoc = operator
        .request(Method::POST, "/api/v1/cluster/join-token/rotate")
        .await
        .unwrap();
    assert_ne!(rotated.token, JOIN);
    assert_eq!(rotated.token.len(), 64);
    let (status, _) = refused(
        manager
            .as_(JOIN)
            .register(&registration("w2", "bbbb"))
            .await,
    );
    assert_eq!(status, 401);
    manager.as_(&c1).heartbeat("w1", "aaaa").await.unwrap();
    join(&manager.as_(&rotated.token), "w2", "bbbb").await;
    let now: JoinTokenDoc = operator
        .request(Method::GET, "/api/v1/cluster/join-token")
        .await
        .unwrap();
    assert_eq!(now, rotated);
    // Only operators see or rotate it; without TLS there is no CA to fetch.
    assert_eq!(
        refused(
            manager
                .as_(&rotated.token)
                .request::<JoinTokenDoc>(Method::GET, "/api/v1/cluster/join-token")
                .await
        )
        .0,
        403
    );
    let (status, message) = refused(
        operator
            .request::<serde_json::Value>(Method::GET, "/api/v1/cluster/ca")
            .await,
    );
    assert_eq!(status, 404);
    assert!(message.contains("no TLS"), "{message}");
}

#[tokio::test]
async fn max_workers_bounds_new_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), Some(2)).await;
    let joiner = manager.as_(JOIN);
    let c1 = join(&joiner, "w1", "aaaa").await;
    join(&joiner, "w2", "bbbb").await;
    let (status, message) = refused(joiner.register(&registration("w3", "cccc")).await);
    assert_eq!(status, 409);
    assert!(
        message.contains("at most 2 workers (--max-workers)"),
        "{message}"
    );
    // A worker already counted registers again.
    manager
        .as_(&c1)
        .register(&registration("w1", "aaaa"))
        .await
        .unwrap();
    let operator = manager.as_(API);
    operator.set_drain("w2", true).await.unwrap();
    operator.remove_worker("w2").await.unwrap();
    join(&joiner, "w3", "cccc").await;
}
