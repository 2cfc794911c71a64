//! The agent and its worker's credential, against a real manager: it joins with the join
//! token, keeps the credential it gets in its credential file (0600) and presents only
//! that from then on — a restarted agent with the same file registers its worker again
//! although the join token was rotated meanwhile; once its worker is removed (`worker
//! rm`) the agent ends with an error that says so, instead of joining again with the
//! join token; and a new agent may then register the name with the join token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mycluster_agent::{AgentConfig, AgentError};
use mycluster_client::Client;
use mycluster_core::wire::JoinTokenDoc;
use mycluster_manager::api::auth::{Auth, Token};
use mycluster_manager::api::ApiConfig;
use mycluster_manager::{ManagerConfig, RunningManager};
use mycluster_runtime::{Identity, SimRuntime};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const API: &str = "credential-test-api-token-0123456789";
const JOIN: &str = "credential-test-join-token-0123456789";

async fn manager(dir: &std::path::Path, stop: CancellationToken) -> RunningManager {
    RunningManager::start(
        ManagerConfig {
            api: ApiConfig {
                auth: Auth::On {
                    api: Token::parse(API, "api").unwrap(),
                    join: Some(Token::parse(JOIN, "join").unwrap()).into(),
                },
                ..ApiConfig::default()
            },
            ..ManagerConfig::local(dir, "test")
        },
        stop,
    )
    .await
    .unwrap()
}

fn agent(
    url: &str,
    name: &str,
    token: &str,
    file: &std::path::Path,
    stop: &CancellationToken,
) -> JoinHandle<Result<(), AgentError>> {
    let config = AgentConfig {
        listen: "127.0.0.1:0".into(),
        token: Some(token.into()),
        credential_file: Some(file.to_path_buf()),
        leave_on_stop: false,
        ..AgentConfig::new(url, name)
    };
    let runtime = Arc::new(SimRuntime::new(Identity {
        cluster: "test".into(),
        worker: name.into(),
    }));
    tokio::spawn(mycluster_agent::run(config, runtime, stop.clone()))
}

/// Waits (up to 20 s) until `check` answers.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker's instance while its heartbeats are fresh.
async fn beating(operator: &Client, name: &str) -> Option<String> {
    let workers = operator.workers().await.ok()?;
    let worker = workers.iter().find(|w| w.worker == name)?;
    (worker.last_heartbeat_age? < 1.5).then(|| worker.instance.clone())
}

#[tokio::test]
async fn an_agent_keeps_its_credential_and_stops_once_its_worker_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let running = manager(&dir.path().join("manager"), stop.clone()).await;
    let url = format!("http://{}", running.addr);
    let operator = Client::new(&url, Duration::from_secs(10))
        .unwrap()
        .with_token(Some(API.into()));
    let file = dir.path().join("agent/w1/credential");

    let first_stop = CancellationToken::new();
    let first = agent(&url, "w1", JOIN, &file, &first_stop);
    let first_instance = eventually("w1 to beat", || beating(&operator, "w1")).await;
    let secret = std::fs::read_to_string(&file).unwrap();
    assert!(secret.trim().starts_with("MCW1-"), "{secret}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    first_stop.cancel();
    first.await.unwrap().unwrap();

    // The join token is rotated: the agent restarted with its credential file does not
    // need it (it presents the old one, which the manager refuses, only if it has no
    // credential).
    let rotated: JoinTokenDoc = operator
        .request(reqwest::Method::POST, "/api/v1/cluster/join-token/rotate")
        .await
        .unwrap();
    let second_stop = CancellationToken::new();
    let second = agent(&url, "w1", JOIN, &file, &second_stop);
    eventually("the restarted agent to hold w1", || async {
        beating(&operator, "w1")
            .await
            .filter(|instance| *instance != first_instance)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), secret);

    // Removed: the agent ends, saying why, and does not join again.
    operator.set_drain("w1", true).await.unwrap();
    operator.remove_worker("w1").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("the agent ends once its worker is removed")
        .unwrap();
    let message = match ended {
        Err(AgentError::Revoked(message)) => message,
        other => panic!("expected a revoked credential, got {other:?}"),
    };
    assert!(message.contains("revoked credential"), "{message}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let workers = operator.workers().await.unwrap();
    assert!(workers.iter().all(|w| w.worker != "w1"), "{workers:?}");

    // A new host takes the name with the (new) join token.
    let other_file = dir.path().join("agent2/w1/credential");
    let third_stop = CancellationToken::new();
    let third = agent(&url, "w1", &rotated.token, &other_file, &third_stop);
    eventually("a new agent to hold w1", || beating(&operator, "w1")).await;
    assert_ne!(std::fs::read_to_string(&other_file).unwrap(), secret);
    // An agent restarted on the old file is refused for good at registration.
    let stale_stop = CancellationToken::new();
    let stale = agent(&url, "w1", &rotated.token, &file, &stale_stop);
    let ended = tokio::time::timeout(Duration::from_secs(20), stale)
        .await
        .expect("an agent with a revoked credential ends")
        .unwrap();
    assert!(matches!(ended, Err(AgentError::Revoked(_))), "{ended:?}");
    third_stop.cancel();
    third.await.unwrap().unwrap();
    stop.cancel();
}
