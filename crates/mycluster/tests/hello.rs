//! `mycluster hello`, the demo workload: "Hello World" on every path, and a header naming
//! the replica that answered.

mod common;

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
            let client = reqwest::Client::builder()
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
