//! Load by `wrk` (Debian's package): one run against a URL, with keep-alive or a new
//! connection per request, read back into requests/s, p50/p99 latency and errors; and
//! the wait that starts every new-connection run with the same ephemeral ports free.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::api;
use crate::error::BenchError;

/// How wrk uses its connections.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Connections {
    /// Its default: each connection carries request after request.
    KeepAlive,
    /// `-H "Connection: close"`: a new connection per request.
    Close,
}

impl Connections {
    pub fn describe(self) -> &'static str {
        match self {
            Connections::KeepAlive => "keep-alive",
            Connections::Close => "new conns",
        }
    }
}

/// One wrk run, as it printed it.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub rps: f64,
    pub p50: String,
    pub p99: String,
    /// Socket errors and non-2xx/3xx answers.
    pub errors: u64,
}

/// One `wrk` run against `url` (http:// or https://: wrk checks no certificate), with
/// 2 threads and 32 connections, sending `headers` (`Name: value`) with each request.
pub async fn run(
    url: &str,
    seconds: u64,
    connections: Connections,
    headers: &[String],
) -> Result<Run, BenchError> {
    let mut command = tokio::process::Command::new("wrk");
    command.args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"]);
    if connections == Connections::Close {
        command.args(["-H", "Connection: close"]);
    }
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .output()
        .await
        .map_err(|e| BenchError::context("cannot run wrk", e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Failed(format!(
            "wrk {url} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(parse(&text))
}

/// What wrk printed: requests/s, p50 and p99 latency, and every error it counted.
fn parse(text: &str) -> Run {
    let rps = api::field(text, "Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let non_2xx = api::field(text, "Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // "Socket errors: connect 0, read 12, write 0, timeout 3"
    let socket: u64 = api::field(text, "Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Run {
        rps,
        p50: api::latency(text, "50%").unwrap_or_else(|| "-".into()),
        p99: api::latency(text, "99%").unwrap_or_else(|| "-".into()),
        errors: non_2xx + socket,
    }
}

/// The run with the median requests/s (the lower middle of an even count).
pub fn median(runs: &[Run]) -> Option<Run> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted.get(sorted.len().saturating_sub(1) / 2).cloned()
}

/// Waits (up to 65 s) until this host holds fewer than 1,000 connections to `at` in
/// TIME_WAIT. Whichever end closes a connection first keeps it in TIME_WAIT for 60 s;
/// where that is wrk, each holds one of the ~28,000 ephemeral ports a destination has
/// (`net.ipv4.ip_local_port_range`), and a run that starts with many of them taken is
/// slowed by the port search, whichever side it measures. (Servers answering
/// `Connection: close` mostly close first, so this seldom waits.)
pub async fn drain(at: SocketAddrV4) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(65) {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        if time_wait_to(&table, at) < 1_000 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How many connections to `at` the kernel's table (`/proc/net/tcp`) holds in
/// TIME_WAIT (state `06`; addresses in hex, the IPv4 address in the host's byte order).
fn time_wait_to(table: &str, at: SocketAddrV4) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some("06")) = (fields.get(2), fields.get(3).copied()) else {
                return false;
            };
            let Some((ip, port)) = remote.split_once(':') else {
                return false;
            };
            let ip = u32::from_str_radix(ip, 16).map(|n| Ipv4Addr::from(n.to_ne_bytes()));
            let port = u16::from_str_radix(port, 16);
            matches!((ip, port), (Ok(ip), Ok(port)) if SocketAddrV4::new(ip, port) == at)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output_with_its_errors() {
        let text = "Running 2s test @ http://127.0.0.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  500.00us   9.00ms   80.00%
  Latency Distribution
     50%    1.10ms
     75%    1.40ms
     90%    1.80ms
     99%    3.20ms
  24000 requests in 2.00s, 3.00MB read
  Socket errors: connect 0, read 12, write 1, timeout 3
  Non-2xx or 3xx responses: 2
Requests/sec:  12000.50
Transfer/sec:      1.50MB
";
        let run = parse(text);
        assert_eq!(run.rps, 12000.5);
        assert_eq!((run.p50.as_str(), run.p99.as_str()), ("1.10ms", "3.20ms"));
        assert_eq!(run.errors, 18);
        let clean = parse("Requests/sec:  10.00\n");
        assert_eq!((clean.errors, clean.p50.as_str()), (0, "-"));
    }

    #[test]
    fn counts_time_wait_connections_to_one_destination() {
        // 172.17.0.2:8000 is 020011AC:1F40 on a little-endian host.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue
   0: 010011AC:9C40 020011AC:1F40 06 00000000:00000000 03:00001770 00000000
   1: 010011AC:9C41 020011AC:1F40 06 00000000:00000000 03:00001770 00000000
   2: 010011AC:9C42 020011AC:1F40 01 00000000:00000000 00:00000000 00000000
   3: 010011AC:9C43 030011AC:1F40 06 00000000:00000000 03:00001770 00000000
";
        let at = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 8000);
        if cfg!(target_endian = "little") {
            assert_eq!(time_wait_to(table, at), 2);
        }
        assert_eq!(time_wait_to("", at), 0);
    }

    #[test]
    fn the_median_run_is_the_middle_one() {
        let run = |rps| Run {
            rps,
            ..Run::default()
        };
        let median_rps = |runs: &[Run]| median(runs).map(|r| r.rps);
        assert_eq!(median_rps(&[run(3.0), run(1.0), run(2.0)]), Some(2.0));
        assert_eq!(median_rps(&[run(3.0), run(1.0)]), Some(1.0));
        assert_eq!(median_rps(&[]), None);
    }
}
