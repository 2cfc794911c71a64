//! `GET /api/v1/service/<name>/logs?follow=&tail=N&since=T&timestamps=`: a service's
//! logs, merged from its replicas' agents on demand. Logs stay on the workers (the
//! engine's, or the process driver's files); the manager keeps none. For every task
//! `core::logs::log_tasks` picks (live tasks, else a slot's latest that ran), it opens
//! that worker's agent's stream (`GET https://<worker address>/tasks/<id>/logs`, with
//! the hash of the worker's credential; for a worker without one, the join token, else
//! the API token) and writes each line, prefixed
//! `<service>.<slot>@<worker> | ` (and the time with `timestamps`), into one
//! `text/plain` body as lines arrive. An agent that cannot be reached, keeps nothing, or
//! is not trusted is one such line, not a failure of the request.
//!
//! The agent's port serves TLS with a CA the agent makes at each start and registers
//! (`Worker::agent_ca_sha256`): the manager trusts a server that CA certified and no
//! other, so neither the token nor the lines cross the network readable, and a server
//! that is not the agent which registered hears nothing. A worker whose agent
//! registered no CA (one from before agents served TLS, or a worker registered by hand)
//! is read over plain HTTP only at a loopback address or in a cluster without
//! authentication: anywhere else its token would cross the network in the clear, and
//! its replica shows a line that says so instead. Following, a replica whose agent was
//! not trusted (restarted, its new CA not registered yet) is opened again once its
//! worker registers another CA.
//!
//! Following, the manager looks again at every commit and opens the streams of tasks
//! that started since (a replacement, a scale-up); the stream ends when the client goes,
//! the service is deleted, or the manager stops. It is a long-poll for the guard (it
//! counts against the client's long-polls, and no request deadline cuts it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mycluster_client::{AgentLogs, ClientError};
use mycluster_core::logs::{log_tasks, prefix, render, LogRequest, LogTask, Nanos};
use mycluster_core::wire::{LogSource, LogsQuery};
use mycluster_tls::Pin;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::auth::Auth;
use super::{known, ApiError, AppState};
use crate::cluster::Cluster;

/// Lines waiting to be written to a slow client, from all replicas together; past it,
/// the replicas' streams wait (and so do their agents).
const BUFFERED_LINES: usize = 1024;

pub async fn service_logs(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let Query(query) = query?;
    known(&app.cluster.snapshot().state, &name)?;
    let request = LogRequest::read(&query, now()).map_err(ApiError::bad_request)?;
    let (lines, body) = mpsc::channel::<String>(BUFFERED_LINES);
    tokio::spawn(merge(
        app.cluster.clone(),
        name,
        request,
        agent_token(&app.config.auth),
        lines,
        app.stop.clone(),
    ));
    let body = futures_util::stream::unfold(body, |mut body| async move {
        let line = body.recv().await?;
        Some((
            Ok::<Bytes, std::convert::Infallible>(Bytes::from(line)),
            body,
        ))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// What the manager presents to the agent of a worker without a credential (one
/// registered before credentials existed): the join token, or the API token where the
/// cluster has no join token (agents join with the API token then); none without
/// authentication. A worker with a credential is presented its hash instead (`merge`),
/// which opens nothing on the manager. Only one, never the API token after a refused
/// join token: a worker's address is whatever it registered, and a join token's holder
/// must not be able to collect the API token by answering 401.
fn agent_token(auth: &Auth) -> Option<String> {
    match auth {
        Auth::Off => None,
        Auth::On { api, join } => Some(
            join.get()
                .map_or_else(|| api.as_str().to_string(), |j| j.as_str().to_string()),
        ),
    }
}

/// Opens the stream of each task to show, now and (following) as tasks start, until
/// every stream ended (not following), or the client went, the service was deleted or
/// the manager stops (following).
async fn merge(
    cluster: std::sync::Arc<Cluster>,
    service: String,
    request: LogRequest,
    token: Option<String>,
    lines: mpsc::Sender<String>,
    stop: CancellationToken,
) {
    let mut commits = cluster.watch_commits();
    let mut opened: HashSet<String> = HashSet::new();
    // Following: tasks whose agent was not trusted, by the CA that was tried.
    let mut untrusted: HashMap<String, Untrusted> = HashMap::new();
    let mut readers = JoinSet::new();
    loop {
        commits.borrow_and_update();
        let snapshot = cluster.snapshot();
        if !snapshot.state.services.contains_key(&service) {
            let _ = lines
                .send(format!("{service} | the service was deleted\n"))
                .await;
            break;
        }
        // A restarted agent answers with its new CA before it registers it: its tasks
        // are opened again once their worker registered another CA than the one tried.
        untrusted.retain(|task, tried| {
            let registered = snapshot
                .state
                .workers
                .get(&tried.worker)
                .and_then(|w| w.agent_ca_sha256.as_ref());
            if registered == tried.ca.as_ref() {
                return true;
            }
            opened.remove(task);
            false
        });
        for task in log_tasks(&snapshot.state, &service) {
            if !opened.insert(task.task.clone()) {
                continue;
            }
            let worker = snapshot.state.workers.get(&task.worker);
            let agent = worker.map(|w| Agent {
                address: w.address.clone(),
                ca: w.agent_ca_sha256.clone(),
            });
            // A worker with a credential is shown the credential's hash: the agent
            // knows its credential, and the manager nothing more (see `agent_token`).
            let token = match worker.and_then(|w| w.credential.clone()) {
                Some(hash) if token.is_some() => Some(hash),
                _ => token.clone(),
            };
            readers.spawn(read_within(
                service.clone(),
                task,
                agent,
                request.clone(),
                token,
                lines.clone(),
            ));
        }
        if !request.follow {
            break;
        }
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { break },
            _ = lines.closed() => break,
            _ = stop.cancelled() => break,
            // Readers end with their tasks: reaped as they do.
            Some(ended) = readers.join_next(), if !readers.is_empty() => {
                if let Ok(Some(tried)) = ended {
                    untrusted.insert(tried.task.clone(), tried);
                }
            }
        }
    }
    if request.follow {
        // The client went, the service is gone or the manager stops: so do the readers.
        readers.abort_all();
        return;
    }
    tokio::select! {
        _ = async { while readers.join_next().await.is_some() {} } => {}
        _ = stop.cancelled() => readers.abort_all(),
    }
}

/// The longest a request that does not follow waits for one agent's lines: an agent
/// that accepted the connection but does not answer (hung, or its engine stuck) must
/// not hold the whole answer, and its client's long-poll slot, forever.
const NOT_FOLLOWING: Duration = Duration::from_secs(30);

/// A task whose agent's certificate was not from the CA its worker registered.
struct Untrusted {
    task: String,
    worker: String,
    /// The CA tried: the one its worker had registered then.
    ca: Option<String>,
}

/// Where a worker's agent serves its tasks' logs, as the worker registered it.
struct Agent {
    address: String,
    /// The SHA-256 of the CA it registered (see the module's doc); `None`: plain HTTP.
    ca: Option<String>,
}

/// `read`, within `NOT_FOLLOWING` unless the request follows; a reader cut short says so
/// in a line of its own. Following, says whether the agent was not trusted.
async fn read_within(
    service: String,
    task: LogTask,
    agent: Option<Agent>,
    request: LogRequest,
    token: Option<String>,
    lines: mpsc::Sender<String>,
) -> Option<Untrusted> {
    if request.follow {
        return read(service, task, agent, request, token, lines).await;
    }
    let prefix = prefix(&service, task.slot, &task.worker);
    let id = task.task.clone();
    let reading = read(service, task, agent, request, token, lines.clone());
    if tokio::time::timeout(NOT_FOLLOWING, reading).await.is_err() {
        let _ = lines
            .send(render(
                &prefix,
                None,
                &format!(
                    "(the logs of task {id} stopped: its agent did not finish within {} s)",
                    NOT_FOLLOWING.as_secs()
                ),
            ))
            .await;
    }
    None
}

/// Copies one task's lines from its agent, prefixed, until its stream ends or the client
/// goes; says whether the agent was not trusted.
async fn read(
    service: String,
    task: LogTask,
    agent: Option<Agent>,
    request: LogRequest,
    token: Option<String>,
    lines: mpsc::Sender<String>,
) -> Option<Untrusted> {
    let prefix = prefix(&service, task.slot, &task.worker);
    let time = |t: Nanos| request.timestamps.then_some(t);
    // Why this replica shows no lines, said as one of its lines.
    let say = |why: String| {
        let line = render(&prefix, None, &format!("({why})"));
        let lines = lines.clone();
        async move {
            let _ = lines.send(line).await;
        }
    };
    let Some(agent) = agent.filter(|a| !a.address.is_empty()) else {
        say(format!("no logs: worker {} is not known", task.worker)).await;
        return None;
    };
    // Checked when it registered: a digest that does not read is never taken as "none",
    // which would send the token in the clear.
    let ca = match agent.ca.as_deref().map(Pin::parse).transpose() {
        Ok(ca) => ca,
        Err(e) => {
            say(format!("no logs of task {}: {e}", task.task)).await;
            return None;
        }
    };
    // Without a CA to read it over TLS (an agent older than the manager, or a worker
    // registered by hand), a worker's token is sent only where it cannot cross a network.
    if ca.is_none() && token.is_some() && !mycluster_client::is_loopback(&agent.address) {
        say(format!(
            "no logs of task {}: its agent registered no CA to read them over TLS, and the manager sends no token to {} in the clear (an agent older than the manager: upgrade it)",
            task.task, agent.address
        ))
        .await;
        return None;
    }
    let opened = AgentLogs::open(
        &agent.address,
        ca,
        token.as_deref(),
        &task.task,
        &request.to_query(),
    )
    .await;
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(ClientError::Untrusted { reason, .. }) => {
            let address = &agent.address;
            say(format!(
                "no logs of task {}: the agent at {address} is not trusted: {reason}",
                task.task
            ))
            .await;
            return Some(Untrusted {
                task: task.task.clone(),
                worker: task.worker.clone(),
                ca: agent.ca.clone(),
            });
        }
        // The client's wording speaks of a manager; here it is the worker's agent.
        Err(ClientError::Unreachable { url, reason }) => {
            say(format!(
                "no logs of task {}: cannot reach its agent at {url} (the address its worker registered: `--advertise` on the agent sets it): {reason}",
                task.task
            ))
            .await;
            return None;
        }
        Err(e) => {
            say(format!("no logs of task {}: {e}", task.task)).await;
            return None;
        }
    };
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = lines.closed() => return None,
        };
        let (text, last) = match next {
            Ok(Some(line)) => match line.stream {
                LogSource::Stdout | LogSource::Stderr => {
                    (render(&prefix, time(line.time), &line.text), false)
                }
                LogSource::Agent => (
                    render(&prefix, time(line.time), &format!("({})", line.text)),
                    false,
                ),
            },
            Ok(None) => return None,
            Err(e) => (
                render(
                    &prefix,
                    None,
                    &format!("(the logs of task {} stopped: {e})", task.task),
                ),
                true,
            ),
        };
        if lines.send(text).await.is_err() || last {
            return None;
        }
    }
}

fn now() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
