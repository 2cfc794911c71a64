//! `mycluster hello`, the demo workload: "Hello World" on every path, and a header naming
//! the replica that answered.

mod common;

use mycluster_relay::free_port;
use std::process::{Child, Command};
use std::time::Duration;

/// The server, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn hello_answers_hello_world_and_names_the_replica() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _server = Server(
        Command::new(common::BIN)
            .args(["hello", "--port", &port.to_string()])
            .spawn()
            .expect("run mycluster hello"),
    );
    let url = format!("http://127.0.0.1:{port}/any/path");
    let response = common::eventually("hello to answer", || {
        let url = url.clone();
        async move {
            let client = mycluster_client::reqwest_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()?;
            client.get(&url).send().await.ok()
        }
    })
    .await;
    let served_by = response
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    assert_eq!(served_by.as_deref(), Some(host.as_str()));
    assert_eq!(response.text().await.expect("body"), "Hello World\n");
}

/// Sends `preamble` then a GET on a new connection; the whole answer, or what came
/// before the server closed the connection.
async fn raw_get(port: u16, preamble: &[u8]) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(preamble).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(common::DEADLINE, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    Ok(answer)
}

#[tokio::test]
async fn hello_with_proxy_protocol_answers_the_client_address_from_the_header() {
    let port = free_port().expect("a free port");
    let _server = Server(
        Command::new(common::BIN)
            .args(["hello", "--port", &port.to_string(), "--proxy-protocol"])
            .env("MYCLUSTER_SERVED_BY", "box.web.2")
            .spawn()
            .expect("run mycluster hello"),
    );
    // As the ingress writes it: the client, then the address it connected to.
    let client: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let ingress: std::net::SocketAddr = "192.0.2.1:8080".parse().unwrap();
    let header = mycluster_ingress::proxy_protocol::encode(client, ingress);
    let answer = common::eventually("hello to answer", || {
        let header = header.clone();
        async move { raw_get(port, &header).await.ok().filter(|a| !a.is_empty()) }
    })
    .await;
    let lower = answer.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{answer}");
    assert!(
        lower.contains("\r\nx-client-address: 203.0.113.7:40000\r\n"),
        "{answer}"
    );
    // MYCLUSTER_SERVED_BY names the replica instead of the hostname.
    assert!(lower.contains("\r\nx-served-by: box.web.2\r\n"), "{answer}");
    assert!(answer.ends_with("Hello World\n"), "{answer}");

    // A LOCAL header (the proxy's own health check): served, with no client to name.
    let mut local = mycluster_ingress::proxy_protocol::SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let answer = raw_get(port, &local).await.expect("an answer");
    assert!(answer.ends_with("Hello World\n"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("x-client-address"),
        "{answer}"
    );

    // No header at all: not served (the connection is closed without an answer).
    let answer = raw_get(port, b"").await.unwrap_or_default();
    assert!(!answer.contains("Hello World"), "{answer}");
}
