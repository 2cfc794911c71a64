//! Running one health probe against one container: an HTTP GET or a TCP connection to its
//! address (from outside, as a client would), or a command inside it (the runtime's
//! exec). Each is bounded by the check's `timeout`; a failure says why in words a user can
//! act on ("GET http://172.18.0.5:8000/ answered 500", "connection refused").

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mycluster_core::service::Probe;
use mycluster_runtime::{Container, ContainerRuntime, RuntimeError};

/// The HTTP client every HTTP probe of an agent shares.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    mycluster_client::reqwest_builder()
        // A 3xx passes: the probe judges the answer it got, not where it points.
        .redirect(reqwest::redirect::Policy::none())
        // Each probe opens a connection of its own, as Docker's do: a task whose accept
        // loop is wedged must fail, not be hidden by a pooled connection.
        .pool_max_idle_per_host(0)
        // The container's address is on this host's networks: never through a proxy the
        // agent's environment names.
        .no_proxy()
        .build()
}

/// Where a prober reaches its container, found once and kept: a running container keeps
/// its address, and looking it up is an engine call per probe otherwise.
#[derive(Default)]
pub struct Target {
    address: Option<IpAddr>,
}

/// Runs `probe` once against `container`, within `timeout`.
pub async fn run(
    runtime: &dyn ContainerRuntime,
    http: &reqwest::Client,
    target: &mut Target,
    container: &Container,
    probe: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    let port = match probe {
        Probe::Exec(argv) => return exec(runtime, container, argv, timeout).await,
        Probe::Http { port, .. } | Probe::Tcp { port } => *port,
    };
    let ip = match target.address {
        Some(ip) => ip,
        None => {
            let found = tokio::time::timeout(timeout, runtime.address(container)).await;
            match found {
                Ok(Ok(Some(ip))) => *target.address.insert(ip),
                Ok(Ok(None)) => return Err("the container has no address on its network".into()),
                Ok(Err(e)) => return Err(format!("cannot find the container's address: {e}")),
                Err(_) => {
                    return Err(format!(
                        "cannot find the container's address: no answer within {timeout:?}"
                    ))
                }
            }
        }
    };
    let address = SocketAddr::new(ip, port);
    let result = match probe {
        Probe::Http { path, .. } => get(http, address, path, timeout).await,
        _ => connect(address, timeout).await,
    };
    if result.is_err() {
        // Looked up again next time, in case the container moved (a network reconnect).
        target.address = None;
    }
    result
}

async fn get(
    http: &reqwest::Client,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = format!("http://{address}{path}");
    match http.get(&url).timeout(timeout).send().await {
        Ok(answer) if answer.status().is_success() || answer.status().is_redirection() => Ok(()),
        Ok(answer) => Err(format!("GET {url} answered {}", answer.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("GET {url}: no answer within {timeout:?}")),
        Err(e) => Err(format!("GET {url}: {}", cause(&e))),
    }
}

async fn connect(address: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("TCP {address}: {}", io_words(&e))),
        Err(_) => Err(format!("TCP {address}: no answer within {timeout:?}")),
    }
}

async fn exec(
    runtime: &dyn ContainerRuntime,
    container: &Container,
    argv: &[String],
    timeout: Duration,
) -> Result<(), String> {
    // The runtime bounds the command itself; this bounds the engine's calls around it.
    let bound = timeout + Duration::from_secs(5);
    match tokio::time::timeout(bound, runtime.exec(container, argv, timeout)).await {
        Ok(Ok(outcome)) if outcome.code == 0 => Ok(()),
        Ok(Ok(outcome)) if outcome.output.is_empty() => {
            Err(format!("exec exited {}", outcome.code))
        }
        Ok(Ok(outcome)) => Err(format!("exec exited {}: {}", outcome.code, outcome.output)),
        Ok(Err(RuntimeError::TimedOut(_))) | Err(_) => {
            Err(format!("exec did not end within {timeout:?}"))
        }
        Ok(Err(e)) => Err(format!("exec failed: {e}")),
    }
}

/// The innermost reason of an HTTP client error: "connection refused" rather than
/// "error sending request for url (...)".
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return io_words(io);
        }
        match current.source() {
            Some(next) => current = next,
            None => return current.to_string(),
        }
    }
}

/// An I/O error in plain words: "connection refused", not "Connection refused (os error
/// 111)".
fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::TimedOut => e.kind().to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mycluster_runtime::{ContainerState, Identity, SimRuntime, TaskSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A running sim container: its address is loopback, where the tests listen.
    async fn running() -> (Arc<SimRuntime>, Container) {
        let runtime = Arc::new(SimRuntime::new(Identity {
            cluster: "c".into(),
            worker: "w".into(),
        }));
        let spec = TaskSpec {
            task_id: "t1".into(),
            service: "web".into(),
            slot: 0,
            image: Some("img".into()),
            command: None,
            env: Default::default(),
            resources: Default::default(),
            mounts: Vec::new(),
        };
        let id = runtime.start(&spec).await.expect("start");
        let container = Container {
            task_id: "t1".into(),
            id,
            name: spec.container_name(),
            state: ContainerState::Running,
        };
        (runtime, container)
    }

    /// Answers every connection with `status`, once per connection.
    async fn serve(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                // The request first: an answer before it is no answer to a client.
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(n @ 1..) => request.extend_from_slice(&buffer[..n]),
                        _ => break,
                    }
                }
                let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        port
    }

    /// A port nothing listens on (bound, then closed).
    async fn closed_port() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr").port()
    }

    async fn probe(probe: Probe) -> Result<(), String> {
        let (runtime, container) = running().await;
        let http = http_client().expect("client");
        let mut target = Target::default();
        run(
            &*runtime,
            &http,
            &mut target,
            &container,
            &probe,
            Duration::from_secs(5),
        )
        .await
    }

    #[tokio::test]
    async fn http_passes_on_2xx_and_3xx_and_names_other_answers() {
        let path = "/healthz".to_string();
        for ok in ["200 OK", "204 No Content", "302 Found"] {
            let port = serve(ok).await;
            let result = probe(Probe::Http {
                port,
                path: path.clone(),
            })
            .await;
            assert_eq!(result, Ok(()), "{ok}");
        }
        let port = serve("500 Internal Server Error").await;
        let result = probe(Probe::Http { port, path }).await;
        assert_eq!(
            result,
            Err(format!("GET http://127.0.0.1:{port}/healthz answered 500"))
        );
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = closed_port().await;
        let http = probe(Probe::Http {
            port,
            path: "/".into(),
        })
        .await;
        assert_eq!(
            http,
            Err(format!("GET http://127.0.0.1:{port}/: connection refused"))
        );
        let tcp = probe(Probe::Tcp { port }).await;
        assert_eq!(
            tcp,
            Err(format!("TCP 127.0.0.1:{port}: connection refused"))
        );
        let open = serve("200 OK").await;
        assert_eq!(probe(Probe::Tcp { port: open }).await, Ok(()));
    }

    #[tokio::test]
    async fn exec_passes_on_exit_0() {
        // The sim runtime's commands all succeed.
        assert_eq!(probe(Probe::Exec(vec!["true".into()])).await, Ok(()));
    }
}
