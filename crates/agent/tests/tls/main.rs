//! Agents and a manager serving TLS, over real sockets: what crosses the network between
//! them (read off a recording relay in between) holds no secret; an agent whose join
//! token pins another CA sends nothing; plain HTTP from another host gets no answer but
//! the error; loopback keeps plain HTTP. The other way, the manager reads a task's logs
//! from its agent's port over TLS, trusting only the CA that agent registered: nothing
//! readable crosses the network, and what answers at an agent's address without its CA
//! hears nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mycluster_agent::AgentConfig;
use mycluster_client::Client;
use mycluster_manager::api::auth::{Auth, Token};
use mycluster_manager::{ApiConfig, ManagerConfig, RunningManager, TlsSettings};
use mycluster_runtime::{Identity, SimRuntime};
use mycluster_tls::{ClusterCa, JoinToken, Pin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

mod logs;

const API_TOKEN: &str = "api-secret-0123456789abcdef";
const JOIN_SECRET: &str = "join-secret-0123456789abcdef";

/// The longest any one wait here may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A manager of this process, locked with both tokens; TLS unless `tls` is false.
struct Manager {
    _dir: tempfile::TempDir,
    running: RunningManager,
    stop: CancellationToken,
}

impl Manager {
    async fn start(listen: &str, tls: bool) -> Manager {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let stop = CancellationToken::new();
        let config = ManagerConfig {
            listen: listen.into(),
            api: ApiConfig {
                auth: Auth::On {
                    api: Token::parse(API_TOKEN, "api").expect("a token"),
                    join: Some(Token::parse(JOIN_SECRET, "join").expect("a token")).into(),
                },
                ..ApiConfig::default()
            },
            tls: tls.then(|| TlsSettings {
                dir: dir.path().join("tls"),
                names: Vec::new(),
            }),
            ..ManagerConfig::local(dir.path(), "tls")
        };
        let running = RunningManager::start(config, stop.clone())
            .await
            .expect("the manager starts");
        Manager {
            _dir: dir,
            running,
            stop,
        }
    }

    fn pin(&self) -> Pin {
        self.running.ca.as_ref().expect("TLS is on").pin
    }

    /// The API over loopback, where plain HTTP is served.
    fn api(&self) -> Client {
        let url = format!("http://127.0.0.1:{}", self.running.addr.port());
        Client::new(&url, Duration::from_secs(10))
            .expect("a client")
            .with_token(Some(API_TOKEN.into()))
    }

    async fn workers(&self) -> Vec<String> {
        let workers = self.api().workers().await.expect("the workers");
        workers.into_iter().map(|w| w.worker).collect()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TCP relay that keeps every byte it carries, both ways.
struct Recorder {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Recorder {
    async fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (kept, counted) = (bytes.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                *counted.lock().unwrap() += 1;
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(copy(client_read, server_write, kept.clone()));
                tokio::spawn(copy(server_read, client_write, kept.clone()));
            }
        });
        Recorder {
            addr,
            bytes,
            connections,
        }
    }

    fn captured(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    kept: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Fails if `captured` holds any of `texts`: each would have crossed the network readable.
fn none_in_the_clear(captured: &[u8], texts: &[&str]) {
    for text in texts {
        assert!(
            !contains(captured, text),
            "'{text}' crossed the network in the clear"
        );
    }
}

/// A port free on loopback now, for a listener the test names before it binds.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The join token of `manager`: its CA, and the join secret.
fn join_token(manager: &Manager) -> String {
    JoinToken {
        ca: manager.pin(),
        secret: JOIN_SECRET.into(),
    }
    .to_string()
}

/// An agent of this process on the simulated runtime, for `manager` with `token`.
fn agent(name: &str, manager: &str, token: &str) -> CancellationToken {
    run_agent(config(name, manager, token))
}

/// The same, keeping its credential in `credential_file`; and its instance id.
fn agent_keeping(
    name: &str,
    manager: &str,
    token: &str,
    credential_file: Option<std::path::PathBuf>,
) -> (CancellationToken, String) {
    let config = AgentConfig {
        credential_file,
        ..config(name, manager, token)
    };
    let instance = config.instance.clone();
    (run_agent(config), instance)
}

/// An agent's configuration for `manager` with `token`: its port on loopback.
fn config(name: &str, manager: &str, token: &str) -> AgentConfig {
    AgentConfig {
        listen: "127.0.0.1:0".into(),
        token: Some(token.into()),
        leave_on_stop: false,
        ..AgentConfig::new(manager, name)
    }
}

/// Runs an agent of `config` on the simulated runtime; what stops it.
fn run_agent(config: AgentConfig) -> CancellationToken {
    let runtime = Arc::new(SimRuntime::new(Identity {
        cluster: "tls".into(),
        worker: config.name.clone(),
    }));
    let stop = CancellationToken::new();
    tokio::spawn(mycluster_agent::run(config, runtime, stop.clone()));
    stop
}

/// Waits for `condition`, failing with `what` past the deadline.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seconds since `name`'s last heartbeat, as the manager saw it.
async fn beats(manager: &Manager, name: &str) -> bool {
    manager
        .api()
        .workers()
        .await
        .map(|workers| {
            workers
                .iter()
                .any(|w| w.worker == name && w.last_heartbeat_age.is_some())
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn no_secret_crosses_the_network_in_the_clear() {
    let manager = Manager::start("127.0.0.1:0", true).await;
    let recorder = Recorder::start(manager.running.addr).await;
    let token = join_token(&manager);
    let url = format!("https://{}", recorder.addr);
    let stop = agent("w1", &url, &token);
    wait_for("the agent to register and beat", || beats(&manager, "w1")).await;
    // A few more rounds of heartbeats and long-polls.
    let seen = recorder.captured().len();
    wait_for("more traffic", || {
        let grown = recorder.captured().len() > seen + 2000;
        async move { grown }
    })
    .await;
    // And an operator's call, through the same wire.
    let admin = Client::new(&url, Duration::from_secs(10))
        .unwrap()
        .with_pin(Some(manager.pin()))
        .unwrap()
        .with_token(Some(API_TOKEN.into()));
    admin.stats().await.expect("the API answers over TLS");
    stop.cancel();

    let captured = recorder.captured();
    assert!(captured.len() > 2000, "the relay carried the traffic");
    none_in_the_clear(
        &captured,
        &[
            JOIN_SECRET,
            API_TOKEN,
            "Bearer",
            "authorization",
            "MCW1-",
            "/api/v1/",
        ],
    );
}

#[tokio::test]
async fn the_recorder_does_see_plain_http() {
    // The control of the test above: without TLS, the same capture holds the secret.
    let manager = Manager::start("127.0.0.1:0", false).await;
    let recorder = Recorder::start(manager.running.addr).await;
    let stop = agent("w1", &format!("http://{}", recorder.addr), JOIN_SECRET);
    wait_for("the agent to register and beat", || beats(&manager, "w1")).await;
    stop.cancel();
    assert!(contains(&recorder.captured(), JOIN_SECRET));
}

#[tokio::test]
async fn a_token_that_pins_another_ca_sends_nothing() {
    let manager = Manager::start("127.0.0.1:0", true).await;
    let recorder = Recorder::start(manager.running.addr).await;
    let other = ClusterCa::generate().expect("a CA");
    let token = JoinToken {
        ca: other.pin(),
        secret: JOIN_SECRET.into(),
    }
    .to_string();
    let stop = agent("w1", &format!("https://{}", recorder.addr), &token);
    // It keeps trying (and refusing): three connections, none of them carrying the token.
    wait_for("the agent to try three times", || {
        let tried = recorder.connections() >= 3;
        async move { tried }
    })
    .await;
    stop.cancel();
    assert!(!contains(&recorder.captured(), JOIN_SECRET));
    assert!(manager.workers().await.is_empty(), "nothing registered");

    // What a client is told: a refusal of the server, not a network failure.
    let client = Client::new(
        &format!("https://{}", recorder.addr),
        Duration::from_secs(10),
    )
    .unwrap()
    .with_token(Some(token));
    let error = client.health().await.unwrap_err();
    assert!(
        matches!(error, mycluster_client::ClientError::Untrusted { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not from the CA the token pins"),
        "{error}"
    );
}

/// This host's first address that is not loopback (`hostname -I`): the way another
/// host reaches it.
fn outside_address() -> std::net::IpAddr {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
        .expect("this host has an address besides loopback")
}

#[tokio::test]
async fn plain_http_is_served_on_loopback_only() {
    let manager = Manager::start("0.0.0.0:0", true).await;
    let port = manager.running.addr.port();
    let outside = SocketAddr::new(outside_address(), port);

    // From "another host": the 400 that says to use https, and nothing else.
    let mut stream = TcpStream::connect(outside).await.expect("connects");
    let request = format!(
        "GET /api/v1/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    assert!(!answer.contains("services"), "{answer}");

    // HTTPS from there answers; plain HTTP on loopback too.
    let tls = Client::new(&format!("https://{outside}"), Duration::from_secs(10))
        .unwrap()
        .with_pin(Some(manager.pin()))
        .unwrap()
        .with_token(Some(API_TOKEN.into()));
    tls.state().await.expect("HTTPS answers from outside");
    manager
        .api()
        .state()
        .await
        .expect("plain HTTP answers on loopback");

    // An https:// client with nothing to trust refuses before sending anything.
    let blind = Client::new(&format!("https://{outside}"), Duration::from_secs(10))
        .unwrap()
        .with_token(Some(API_TOKEN.into()));
    let error = blind.state().await.unwrap_err();
    assert!(
        error.to_string().contains("no CA to check it against"),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_restarted_with_its_credential_still_trusts_the_tokens_ca() {
    // Restarted, the agent presents its credential, not the join token: the CA it trusts
    // still comes from the join token it was given.
    let manager = Manager::start("127.0.0.1:0", true).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credential");
    let token = join_token(&manager);
    let url = format!("https://{}", manager.running.addr);
    let (first, _) = agent_keeping("w1", &url, &token, Some(file.clone()));
    wait_for("the agent to register and beat", || beats(&manager, "w1")).await;
    wait_for("its credential to be kept", || {
        let kept = file.exists();
        async move { kept }
    })
    .await;
    first.cancel();
    let (second, instance) = agent_keeping("w1", &url, &token, Some(file));
    wait_for("the restarted agent to hold the worker", || {
        let api = manager.api();
        let instance = instance.clone();
        async move {
            api.workers()
                .await
                .is_ok_and(|w| w.iter().any(|w| w.worker == "w1" && w.instance == instance))
        }
    })
    .await;
    second.cancel();
}
