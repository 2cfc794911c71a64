//! `GET /api/v1/events`: the event log (`crate::events`) as a stream a client follows
//! and resumes. Newline-delimited JSON, one `EventDoc` per line, written per commit; or
//! Server-Sent Events (`id:` the index, `event:` the topic) when the request accepts
//! `text/event-stream`, with a keepalive comment every 15 s and `Last-Event-ID` taken as
//! the index (a browser's `EventSource` resends it when it reconnects).
//!
//! `?index=N` gives every event after N, or 410 when some of those are no longer kept;
//! without it, the whole history held. `?topic=` filters (comma-separated, repeatable);
//! `?follow=false` ends the answer at the history held when it was asked. A follower too
//! slow to keep up — its position dropped out of the history while its answer was being
//! written — is ended with a last line saying so: an `ErrorDoc` with code 410 (an
//! `event: error` in SSE). Streams end at the manager's stop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mycluster_core::wire::{ErrorDoc, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState};
use crate::cluster::Cluster;
use crate::events::{Gone, Held};

/// The most events written in one piece (a reader far behind catches up in pieces).
const BATCH: usize = 1000;

/// How often an idle Server-Sent Events stream says it is alive (proxies close idle
/// connections; `EventSource` ignores comments).
const KEEPALIVE: Duration = Duration::from_secs(15);

const PARAMETERS: &[&str] = &["index", "topic", "follow"];

pub async fn stream(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asked = Asked::parse(query, &headers)?;
    let log = app.cluster.events();
    // Watched before the first read: an event recorded in between wakes the stream.
    let mut latest = log.subscribe();
    latest.borrow_and_update();
    let position = match asked.index {
        Some(index) => {
            log.check(index)
                .map_err(|gone| ApiError::new(StatusCode::GONE, gone.to_string()))?;
            index
        }
        None => log.start(),
    };
    let follower = Follower {
        cluster: app.cluster.clone(),
        position,
        topics: asked.topics,
        until: (!asked.follow).then(|| log.newest()),
        sse: asked.sse,
        latest,
        stop: app.stop.clone(),
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE),
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(
        follower,
        |mut follower| async move {
            let chunk = follower.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), follower))
        },
    ));
    let content_type = if asked.sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// What a request asked for.
#[derive(Debug)]
struct Asked {
    index: Option<u64>,
    topics: Vec<Topic>,
    follow: bool,
    sse: bool,
}

impl Asked {
    fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        headers: &HeaderMap,
    ) -> Result<Asked, ApiError> {
        let Query(pairs) = query?;
        let mut asked = Asked {
            index: None,
            topics: Vec::new(),
            follow: true,
            sse: headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("text/event-stream")),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &pairs {
            if key != "topic" && seen.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "query parameter '{key}' is given more than once"
                )));
            }
            seen.push(key);
            match key.as_str() {
                "index" => {
                    asked.index = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("query parameter 'index' must be a whole number")
                    })?)
                }
                "follow" => {
                    asked.follow = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "query parameter 'follow' must be true or false",
                            ))
                        }
                    }
                }
                "topic" => {
                    for name in value.split(',') {
                        let topic = Topic::parse(name.trim()).ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "unknown topic '{}'; known topics: {}",
                                name.escape_debug(),
                                known_topics()
                            ))
                        })?;
                        if !asked.topics.contains(&topic) {
                            asked.topics.push(topic);
                        }
                    }
                }
                unknown => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter '{}'; allowed: {}",
                        unknown.escape_debug(),
                        PARAMETERS.join(", ")
                    )))
                }
            }
        }
        // A reconnecting `EventSource` sends the last id it got, with the URL it first
        // used: the header is the newer news.
        if let Some(last) = headers.get("last-event-id") {
            let index = last
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be an event index (a whole number)")
                })?;
            asked.index = Some(index);
        }
        Ok(asked)
    }
}

fn known_topics() -> String {
    Topic::ALL.map(Topic::as_str).join(", ")
}

/// One open stream: where it is in the log, and what it writes.
struct Follower {
    cluster: Arc<Cluster>,
    /// The last event looked at.
    position: u64,
    topics: Vec<Topic>,
    /// `follow=false`: the newest event when it was asked; nothing after it is written.
    until: Option<u64>,
    sse: bool,
    latest: watch::Receiver<u64>,
    stop: CancellationToken,
    keepalive: tokio::time::Interval,
    done: bool,
}

impl Follower {
    /// The next piece of the answer; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        loop {
            self.latest.borrow_and_update();
            let read = self
                .cluster
                .events()
                .read(self.position, &self.topics, BATCH, self.until);
            match read {
                Err(gone) => {
                    self.done = true;
                    return Some(self.fell_behind(&gone));
                }
                Ok(batch) => {
                    self.position = batch.position;
                    if !batch.events.is_empty() {
                        self.keepalive.reset();
                        return Some(self.write(&batch.events));
                    }
                    if batch.more {
                        continue;
                    }
                }
            }
            if self.until.is_some() {
                return None;
            }
            tokio::select! {
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.stop.cancelled() => return None,
                _ = self.keepalive.tick(), if self.sse => {
                    return Some(b": keepalive\n\n".to_vec());
                }
            }
        }
    }

    fn write(&self, events: &[Held]) -> Vec<u8> {
        let mut out = Vec::new();
        for held in events {
            if self.sse {
                out.extend_from_slice(
                    format!(
                        "id: {}\nevent: {}\ndata: {}\n\n",
                        held.index,
                        held.topic.as_str(),
                        held.json
                    )
                    .as_bytes(),
                );
            } else {
                out.extend_from_slice(held.json.as_bytes());
                out.push(b'\n');
            }
        }
        out
    }

    /// The last words to a follower whose position is no longer held.
    fn fell_behind(&self, gone: &Gone) -> Vec<u8> {
        let error = ErrorDoc {
            message: format!("this stream fell behind: {gone}"),
            code: StatusCode::GONE.as_u16(),
        };
        let json = serde_json::to_string(&error).unwrap_or_else(|_| {
            r#"{"message": "this stream fell behind", "code": 410}"#.to_string()
        });
        if self.sse {
            format!("event: error\ndata: {json}\n\n").into_bytes()
        } else {
            format!("{json}\n").into_bytes()
        }
    }
}
