//! Streams of logs: `Client::service_logs` (the manager's merged `text/plain` stream, as
//! `mycluster logs` prints it) and `AgentLogs` (one agent's lines of one task, which the
//! manager merges; over TLS from an agent that registered its CA). Neither has an
//! overall timeout: a followed stream lasts as long as its reader wants; only connecting
//! is bounded.

use std::time::Duration;

use mycluster_core::wire::{ErrorDoc, LogLineDoc, LogsQuery};
use mycluster_tls::Pin;

use crate::{describe, segment, Client, ClientError};

/// How long connecting to a manager or an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an agent may take to start answering (the head of its answer): it reads its
/// engine or files first, which takes milliseconds unless it is stuck.
const AGENT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

fn streaming_client(base: &str, pin: Option<Pin>) -> Result<reqwest::Client, ClientError> {
    crate::http_builder(base, pin)?
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| ClientError::BadUrl(format!("{base}: {e}")))
}

/// The query string of `query` (what it sets only).
fn query_string(query: &LogsQuery) -> String {
    let pairs = [
        ("follow", &query.follow),
        ("tail", &query.tail),
        ("since", &query.since),
        ("timestamps", &query.timestamps),
    ];
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", segment(v))))
        .collect();
    match set.is_empty() {
        true => String::new(),
        false => format!("?{}", set.join("&")),
    }
}

/// An error answer as the error it documents, or its status.
async fn refusal(url: &str, response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(bytes) => match serde_json::from_slice::<ErrorDoc>(&bytes) {
            Ok(error) => ClientError::Api {
                status,
                message: error.message,
            },
            Err(_) => ClientError::Api {
                status,
                message: format!("{url} answered HTTP {status}"),
            },
        },
        Err(e) => ClientError::Unreachable {
            url: url.to_string(),
            reason: describe(&e),
        },
    }
}

/// The manager's merged stream of a service's logs, read as it comes.
pub struct ServiceLogs {
    url: String,
    response: reqwest::Response,
}

impl ServiceLogs {
    /// The next piece of text (whole lines), or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        self.response
            .chunk()
            .await
            .map(|chunk| chunk.map(|c| c.to_vec()))
            .map_err(|e| ClientError::Unreachable {
                url: self.url.clone(),
                reason: describe(&e),
            })
    }
}

impl Client {
    /// `GET /api/v1/service/<name>/logs`: every replica's lines, merged and prefixed.
    pub async fn service_logs(
        &self,
        name: &str,
        query: &LogsQuery,
    ) -> Result<ServiceLogs, ClientError> {
        let url = format!(
            "{}/api/v1/service/{}/logs{}",
            self.base,
            segment(name),
            query_string(query)
        );
        self.check_trust()?;
        let mut request = streaming_client(&self.base, self.pin)?.get(&url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| crate::send_error(&self.base, &e))?;
        if !response.status().is_success() {
            return Err(refusal(&self.base, response).await);
        }
        Ok(ServiceLogs {
            url: self.base.clone(),
            response,
        })
    }
}

/// One task's lines from its agent (`GET https://<agent>/tasks/<task id>/logs`, or
/// `http://` for an agent that registered no CA).
pub struct AgentLogs {
    url: String,
    response: reqwest::Response,
    /// What came after the last whole line.
    pending: Vec<u8>,
    lines: std::collections::VecDeque<LogLineDoc>,
}

impl AgentLogs {
    /// Asks the agent at `address` (its port, `host:port`) for `task`'s lines,
    /// presenting `token` (none: a cluster without authentication): over TLS when `ca`
    /// names the CA the agent registered — trusting a server that CA certified, and no
    /// other — else over plain HTTP (an agent from before agents served TLS). The
    /// answer's head must come within `AGENT_HEAD_TIMEOUT`. A server the pin refuses is
    /// `Untrusted`, and heard nothing: not the token, not the task.
    pub async fn open(
        address: &str,
        ca: Option<Pin>,
        token: Option<&str>,
        task: &str,
        query: &LogsQuery,
    ) -> Result<AgentLogs, ClientError> {
        let base = match ca {
            Some(_) => format!("https://{address}"),
            None => format!("http://{address}"),
        };
        let url = format!("{base}/tasks/{}/logs{}", segment(task), query_string(query));
        let mut request = streaming_client(&base, ca)?.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = tokio::time::timeout(AGENT_HEAD_TIMEOUT, request.send())
            .await
            .map_err(|_| ClientError::Unreachable {
                url: base.clone(),
                reason: format!("no answer within {} s", AGENT_HEAD_TIMEOUT.as_secs()),
            })?
            .map_err(|e| match (crate::send_error(&base, &e), ca) {
                // The pinned verifier speaks of a token's CA (what joining pins); here it
                // is the CA the worker's agent registered.
                (ClientError::Untrusted { url, .. }, Some(ca)) => ClientError::Untrusted {
                    url,
                    reason: format!(
                        "its certificate is not from the CA its worker's agent registered \
                         (sha256 {ca}): another agent answers at that address (a restarted \
                         one, until it registers again), or someone is in between"
                    ),
                },
                (error, _) => error,
            })?;
        if !response.status().is_success() {
            return Err(refusal(&format!("the agent at {address}"), response).await);
        }
        Ok(AgentLogs {
            url,
            response,
            pending: Vec::new(),
            lines: Default::default(),
        })
    }

    /// The next line, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<LogLineDoc>, ClientError> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Ok(Some(line));
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.url.clone(),
                    reason: describe(&e),
                })?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            self.pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = self.pending[start..].iter().position(|b| *b == b'\n') {
                let line = &self.pending[start..start + end];
                start += end + 1;
                let doc = serde_json::from_slice(line).map_err(|e| ClientError::Decode {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
                self.lines.push_back(doc);
            }
            self.pending.drain(..start);
        }
    }
}
