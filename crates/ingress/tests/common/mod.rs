//! What the ingress's tests share: real TCP backends (tiny servers that answer their own
//! id, then echo), a client that asks through the ingress, routes, and waiting for a
//! condition with a generous deadline.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mycluster_core::endpoints::{version, Endpoint, Route};
use mycluster_core::service::Protocol;
use mycluster_core::wire::RouteTable;
use mycluster_ingress::proxy_protocol;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Generous: a slow machine must not fail a test.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A backend: on each connection it (optionally) reads a PROXY v2 header, writes one
/// line — its id, and the client address the header gave — then echoes what it gets.
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Backend {
    pub async fn start(id: &str, proxy_protocol: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let name = id.to_string();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, name.clone(), proxy_protocol));
            }
        });
        Backend {
            id: id.to_string(),
            addr,
            server,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut stream: TcpStream, id: String, proxy_protocol: bool) {
    let line = if proxy_protocol {
        match proxy_protocol::read_header(&mut stream).await {
            Ok(header) => match header.source() {
                Some(source) => format!("{id} {source}\n"),
                None => format!("{id} local\n"),
            },
            Err(e) => format!("{id} bad header: {e}\n"),
        }
    } else {
        format!("{id}\n")
    };
    if stream.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// An address that refuses connections: a port bound, then released.
pub async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

/// An address that does not answer: a listener whose backlog is full, so the kernel
/// drops new SYNs and a connect hangs. (Addresses outside the host are no good here: a
/// sandbox's network may answer for any of them.) Keep it, and the connections that fill
/// its queue, for as long as it must stay silent.
pub struct Silent {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Silent {
    pub async fn start() -> Silent {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("address");
        // Connect until one gets no answer: the queue is full (one connection on Linux,
        // a few elsewhere).
        let mut queued = Vec::new();
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
            match attempt {
                Err(_) => break,
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("cannot fill a listener's backlog: {e}"),
            }
            assert!(
                queued.len() < 64,
                "this kernel answers connects to a listener with a full backlog: the test needs another silent address"
            );
        }
        Silent {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A port free right now (bound, then released).
pub async fn free_port() -> u16 {
    refusing().await.port()
}

/// A client connection through the ingress, with the backend's first line read.
pub struct Asked {
    pub line: String,
    pub stream: BufReader<TcpStream>,
}

impl Asked {
    /// Sends `text` and reads back the echo.
    pub async fn echo(&mut self, text: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write");
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, self.stream.read_line(&mut line))
            .await
            .expect("the echo in time")
            .expect("read");
        line.trim_end().to_string()
    }
}

/// Connects to `127.0.0.1:port` and reads the backend's line; `None` if the connection
/// was refused or closed without one.
pub async fn try_ask(port: u16) -> Option<Asked> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_line(&mut line))
        .await
        .expect("an answer or a close in time");
    match read {
        Ok(n) if n > 0 => Some(Asked {
            line: line.trim_end().to_string(),
            stream,
        }),
        _ => None,
    }
}

/// The id of the backend that answered a new connection to `port`.
pub async fn ask(port: u16) -> String {
    let asked = try_ask(port)
        .await
        .unwrap_or_else(|| panic!("no answer through port {port}"));
    asked.line
}

/// A route of `service` on `published` over `backends` (slots 1, 2, ...).
pub fn route(published: u16, service: &str, backends: &[SocketAddr]) -> Route {
    Route {
        published,
        protocol: Protocol::Tcp,
        service: service.into(),
        target: 8000,
        proxy_protocol: false,
        endpoints: backends
            .iter()
            .enumerate()
            .map(|(i, addr)| Endpoint {
                task: format!("{service}.{}", i + 1),
                slot: i as u32 + 1,
                worker: "w1".into(),
                address: addr.ip(),
                port: addr.port(),
                target: 8000,
                proxy_protocol: false,
            })
            .collect(),
    }
}

/// The table of `routes`, versioned as the manager does.
pub fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable {
        version: version(&routes),
        routes,
    }
}

/// Polls `check` until it returns `Some`, or panics after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the ingress's open ports satisfy `check`.
pub async fn ports_until(
    ports: &mut tokio::sync::watch::Receiver<std::collections::BTreeMap<u16, String>>,
    what: &str,
    check: impl FnMut(&std::collections::BTreeMap<u16, String>) -> bool,
) {
    tokio::time::timeout(DEADLINE, ports.wait_for(check))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("the ingress runs");
}
