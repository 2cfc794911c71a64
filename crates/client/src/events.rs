//! The event stream (`GET /api/v1/events`) read as typed `EventDoc`s: the manager writes
//! one JSON document per line, in pieces that need not end at a line's end; this puts
//! the pieces back together. A line that is an `ErrorDoc` (a follower that fell behind
//! is ended with one, code 410) becomes `ClientError::Api`.

use std::time::Duration;

use mycluster_core::wire::{ErrorDoc, EventDoc, Topic};
use reqwest::Method;

use crate::{describe, Client, ClientError};

/// What to ask the stream for.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Events after this index (`None`: the whole history the manager holds).
    pub index: Option<u64>,
    /// Only these topics (empty: all).
    pub topics: Vec<Topic>,
    /// Stay open for new events (else the answer ends after the history held).
    pub follow: bool,
}

impl EventQuery {
    fn path(&self) -> String {
        let mut params = Vec::new();
        if let Some(index) = self.index {
            params.push(format!("index={index}"));
        }
        if !self.topics.is_empty() {
            let names: Vec<&str> = self.topics.iter().map(|t| t.as_str()).collect();
            params.push(format!("topic={}", names.join(",")));
        }
        if !self.follow {
            params.push("follow=false".to_string());
        }
        if params.is_empty() {
            "/api/v1/events".to_string()
        } else {
            format!("/api/v1/events?{}", params.join("&"))
        }
    }
}

impl Client {
    /// Opens the event stream. The answer stays open as long as the manager and the
    /// connection do (with `follow`): it has no overall timeout, only one to connect,
    /// and TCP keepalives find a peer that vanished.
    pub async fn events(&self, query: &EventQuery) -> Result<EventStream, ClientError> {
        self.check_trust()?;
        let http = crate::http_builder(&self.base, self.pin)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| ClientError::BadUrl(format!("{}: {e}", self.base)))?;
        let url = format!("{}{}", self.base, query.path());
        let mut request = http
            .request(Method::GET, &url)
            .header(reqwest::header::ACCEPT, "application/x-ndjson");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| crate::send_error(&self.base, &e);
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_string();
        let not_manager = || ClientError::NotManager {
            url: self.base.clone(),
            status: status.as_u16(),
            content_type: content_type.clone(),
        };
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(unreachable)?;
            return Err(match serde_json::from_slice::<ErrorDoc>(&bytes) {
                Ok(error) if error.code == status.as_u16() => ClientError::Api {
                    status: error.code,
                    message: error.message,
                },
                _ => not_manager(),
            });
        }
        if !content_type.starts_with("application/x-ndjson") {
            return Err(not_manager());
        }
        Ok(EventStream {
            response,
            buffer: Vec::new(),
            url,
            ended: false,
        })
    }
}

/// An open event stream: `next` gives its events one by one.
pub struct EventStream {
    response: reqwest::Response,
    /// Received and not yet given: at most a part of one line after each `next`.
    buffer: Vec<u8>,
    url: String,
    ended: bool,
}

impl EventStream {
    /// The next event; `None` once the manager ended the stream (`follow=false` read to
    /// its end, or the manager stopping).
    pub async fn next(&mut self) -> Result<Option<EventDoc>, ClientError> {
        Ok(self.next_line().await?.map(|(event, _)| event))
    }

    /// The next event with its line as the manager wrote it (without the newline).
    pub async fn next_line(&mut self) -> Result<Option<(EventDoc, String)>, ClientError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]).trim().to_string();
                if text.is_empty() {
                    continue;
                }
                let event = self.decode(&text)?;
                return Ok(Some((event, text)));
            }
            if self.ended {
                if self.buffer.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                return Err(ClientError::Unreachable {
                    url: self.url.clone(),
                    reason: "the stream ended in the middle of a line".into(),
                });
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => self.ended = true,
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        reason: describe(&e),
                    })
                }
            }
        }
    }

    fn decode(&self, line: &str) -> Result<EventDoc, ClientError> {
        match serde_json::from_str::<EventDoc>(line) {
            Ok(event) => Ok(event),
            Err(e) => match serde_json::from_str::<ErrorDoc>(line) {
                Ok(error) => Err(ClientError::Api {
                    status: error.code,
                    message: error.message,
                }),
                Err(_) => Err(ClientError::Decode {
                    url: self.url.clone(),
                    reason: format!("an event line: {e}"),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_spelled_as_the_api_reads_it() {
        assert_eq!(EventQuery::default().path(), "/api/v1/events?follow=false");
        let query = EventQuery {
            index: Some(42_000_001),
            topics: vec![Topic::Task, Topic::Worker],
            follow: true,
        };
        assert_eq!(
            query.path(),
            "/api/v1/events?index=42000001&topic=task,worker"
        );
    }
}
