//! The checks every request passes before it reaches a handler: header size, the token,
//! a cap on long-polls per client, and a deadline, each refused with the error document
//! so a hostile or broken client learns why and the manager spends nothing on it.
//!
//! A stream (the event stream `GET /api/v1/events`, a service's logs `GET
//! /api/v1/service/<name>/logs`) is a long-poll that does not end: it takes a long-poll
//! slot like the others, and the guard hands that slot to the response's body, so it is
//! held for as long as the stream is open. The deadline only bounds the time to its
//! response's head; the body is not cut by it (it ends when its client goes, or at the
//! manager's stop).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{access_for, Access};
use super::{ApiError, AppState};

/// The peer of the connection a request came on (set by `mycluster_http::serve`; absent
/// in tests that call the router directly).
pub use mycluster_http::Peer;

pub async fn guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let header_bytes: usize = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len())
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if header_bytes > app.config.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request line and headers are {header_bytes} bytes, more than the limit of {}",
                app.config.max_header_bytes
            ),
        )
        .into_response();
    }
    let access = access_for(request.method(), request.uri().path());
    let metrics_token = app.config.metrics_token.as_ref();
    let caller = match app
        .config
        .auth
        .check_with(access, request.headers(), metrics_token)
    {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    // The handlers of agents' endpoints decide, on the state, for which worker it speaks.
    let mut request = request;
    request.extensions_mut().insert(caller);
    let waits = may_wait(request.method(), request.uri().path());
    // Held until the answer is ready: a client may only park so many requests here.
    // Held until the answer is ready (a stream: until its body ends): a client may only
    // park so many requests here.
    let slot = if matches!(waits, Wait::LongPoll | Wait::Stream) {
        let client = request.extensions().get::<Peer>().map(|p| p.0.ip());
        match app.long_polls.enter(client) {
            Ok(slot) => Some(slot),
            Err(refused) => return *refused,
        }
    } else {
        None
    };
    let deadline = app.config.request_timeout
        + match waits {
            Wait::No | Wait::Stream => Duration::ZERO,
            Wait::Converge | Wait::LongPoll => app.config.max_wait,
        };
    match tokio::time::timeout(deadline, next.run(request)).await {
        // The deadline is the answer's start; its body streams for as long as it lasts,
        // holding its slot.
        Ok(response) if waits == Wait::Stream => response.map(|body| {
            use http_body_util::BodyExt;
            axum::body::Body::new(body.map_frame(move |frame| {
                let _held = &slot;
                frame
            }))
        }),
        Ok(response) => {
            drop(slot);
            response
        }
        // The manager was slow, not the client (a slow body is 408, in the body reader).
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the manager did not complete the request within {} s; a change it asked for may still be applied: read the state before retrying",
                deadline.as_secs()
            ),
        )
        .into_response(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    No,
    /// `POST /api/v1/service?wait=`: waits for its tasks, bounded by `max_wait`.
    Converge,
    /// An agent's blocking query for its tasks, or an ingress's for its routes.
    LongPoll,
    /// A body that streams for as long as the client reads (the events, a service's
    /// logs).
    Stream,
}

fn may_wait(method: &Method, path: &str) -> Wait {
    if method == Method::GET && path == "/api/v1/events" {
        return Wait::Stream;
    }
    let logs = path
        .strip_prefix("/api/v1/service/")
        .and_then(|rest| rest.strip_suffix("/logs"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if method == Method::GET && logs {
        return Wait::Stream;
    }
    if method == Method::POST && path == "/api/v1/service" {
        return Wait::Converge;
    }
    if method == Method::GET
        && access_for(method, path) == Access::Agent
        && (path.ends_with("/tasks") || path == "/api/v1/endpoints")
    {
        return Wait::LongPoll;
    }
    Wait::No
}

/// Long-polls parked per client address, and in all.
pub struct LongPolls {
    per_client: usize,
    total: usize,
    parked: Mutex<(usize, HashMap<Option<IpAddr>, usize>)>,
}

pub struct Slot {
    polls: Arc<LongPolls>,
    client: Option<IpAddr>,
}

impl LongPolls {
    pub fn new(per_client: usize, total: usize) -> Arc<LongPolls> {
        Arc::new(LongPolls {
            per_client,
            total,
            parked: Mutex::new((0, HashMap::new())),
        })
    }

    /// How many long-polls are parked now, in all (`mycluster_long_polls_open`).
    pub fn open(&self) -> usize {
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn enter(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, Box<Response>> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *parked;
        let mine = per_client.entry(client).or_insert(0);
        if *mine >= self.per_client {
            let shown = client.map_or("this client".to_string(), |ip| ip.to_string());
            return Err(retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{shown} already has {} long-polls waiting (the limit): wait for one to end",
                    self.per_client
                ),
            ));
        }
        if *total >= self.total {
            return Err(retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the manager already holds {} long-polls (its limit): try again shortly",
                    self.total
                ),
            ));
        }
        *mine += 1;
        *total += 1;
        Ok(Slot {
            polls: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut parked = self.polls.parked.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *parked;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_client.remove(&self.client);
            }
        }
    }
}

fn retry_later(status: StatusCode, message: String) -> Box<Response> {
    let mut response = ApiError::new(status, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Box::new(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_are_capped_per_client_and_in_all() {
        let polls = LongPolls::new(2, 3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let first = polls.enter(a).ok();
        let _second = polls.enter(a).ok();
        assert_eq!(
            polls.enter(a).err().map(|r| r.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        let _third = polls.enter(b).ok();
        assert_eq!(
            polls.enter(b).err().map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(polls.open(), 3);
        drop(first);
        assert_eq!(polls.open(), 2);
        assert!(polls.enter(a).is_ok(), "a slot frees when its poll ends");
    }

    #[test]
    fn only_waiting_endpoints_wait() {
        assert_eq!(
            may_wait(&Method::GET, "/api/v1/workers/w/tasks"),
            Wait::LongPoll
        );
        assert_eq!(may_wait(&Method::POST, "/api/v1/service"), Wait::Converge);
        assert_eq!(may_wait(&Method::GET, "/api/v1/tasks"), Wait::No);
        assert_eq!(may_wait(&Method::GET, "/api/v1/events"), Wait::Stream);
        assert_eq!(
            may_wait(&Method::GET, "/api/v1/service/web/logs"),
            Wait::Stream
        );
        assert_eq!(may_wait(&Method::GET, "/api/v1/service//logs"), Wait::No);
        assert_eq!(may_wait(&Method::GET, "/api/v1/state"), Wait::No);
    }
}
