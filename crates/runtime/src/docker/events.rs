//! Following the engine's event stream (`GET /events`) for the exits of this runtime's
//! containers: `die` (exited, or killed) and `oom`, of containers of type `container`
//! carrying this runtime's cluster and worker labels. Each is announced as an
//! [`Exit::Ended`] once the engine's `list` shows it (see `announce_when_settled`), so an
//! agent reports a crashed task at once instead of at its next periodic pass.
//!
//! The follower is a background loop: when the stream breaks (the engine restarted, or
//! closed it) it connects again with bounded backoff, and after each reconnection it
//! announces [`Exit::Missed`] once, since whatever ended meanwhile was not heard of.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use mycluster_background::{Loop, LoopControl};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::engine::message;
use crate::exits::{announce, Exit};
use crate::{Identity, LABEL_CLUSTER, LABEL_TASK, LABEL_WORKER};

/// The first wait before connecting again; doubled while the engine does not answer.
const RECONNECT: Duration = Duration::from_millis(250);

/// The longest wait between two tries: a restarted engine is followed again within it.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A stream that lasted this long before it broke counts as having worked: the next try
/// starts again from the first wait rather than backing off further.
const STEADY: Duration = Duration::from_secs(10);

/// How long the engine may take to answer the ping before a connection.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine's filters for the events this runtime follows.
pub(super) fn filters(identity: &Identity) -> HashMap<String, Vec<String>> {
    HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            vec!["die".to_string(), "oom".to_string()],
        ),
        // Several label filters must all match.
        (
            "label".to_string(),
            vec![
                format!("{LABEL_CLUSTER}={}", identity.cluster),
                format!("{LABEL_WORKER}={}", identity.worker),
            ],
        ),
    ])
}

/// What an event announces, if it is the exit of one of `identity`'s containers (the
/// engine filtered already; the check keeps the promise even if one ignored a filter).
pub(super) fn exit_of(event: &EventMessage, identity: &Identity) -> Option<Exit> {
    if !matches!(event.action.as_deref(), Some("die" | "oom")) {
        return None;
    }
    let actor = event.actor.as_ref()?;
    let labels = actor.attributes.as_ref()?;
    let ours = labels.get(LABEL_CLUSTER) == Some(&identity.cluster)
        && labels.get(LABEL_WORKER) == Some(&identity.worker);
    if !ours {
        return None;
    }
    Some(Exit::Ended {
        task_id: labels.get(LABEL_TASK)?.clone(),
        container_id: actor.id.clone().unwrap_or_default(),
    })
}

/// The longest an announcement waits for the engine to settle an exit.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Announces `exit` once the engine has settled it. The engine sends `die` while it is
/// still handling the exit (for 0.1–0.3 s here: releasing the network, the mounts), and
/// until then `list` shows the container running: a pass woken by the event would see
/// nothing to report. An inspect waits for the engine to finish (it takes the
/// container's lock, which the exit's handling holds), so after it `list` shows the
/// exit. An inspect that fails or takes too long announces anyway: it is only a hint.
async fn announce_when_settled(docker: Docker, sender: broadcast::Sender<Exit>, exit: Exit) {
    if let Exit::Ended { container_id, .. } = &exit {
        let inspected = docker.inspect_container(container_id, None);
        if let Err(e) = tokio::time::timeout(SETTLE_TIMEOUT, inspected).await {
            tracing::debug!("docker driver: {container_id} not settled: {e}");
        }
    }
    tracing::debug!("docker driver: {exit:?}");
    announce(&sender, exit);
}

/// Whether a connection has been made before: a reconnection announces what it may
/// have missed.
#[derive(Default)]
struct Follow {
    connected_before: bool,
}

/// Follows the engine's events for `identity` until `stop`, announcing on `sender`.
pub(super) async fn follow(
    docker: Docker,
    identity: Identity,
    sender: broadcast::Sender<Exit>,
    stop: CancellationToken,
) {
    let name = format!("docker driver {}: event stream", identity.worker);
    let mut state = Follow::default();
    Loop::new(name, RECONNECT, stop.clone())
        .max_backoff(RECONNECT_MAX)
        .on_recovery("following the engine's events again")
        .run_with(&mut state, |state| {
            let (docker, identity, sender, stop) = (
                docker.clone(),
                identity.clone(),
                sender.clone(),
                stop.clone(),
            );
            Box::pin(async move { follow_once(state, &docker, &identity, &sender, &stop).await })
        })
        .await;
}

/// One connection: until the stream breaks (an error, unless it had been steady), or the
/// stop.
async fn follow_once(
    state: &mut Follow,
    docker: &Docker,
    identity: &Identity,
    sender: &broadcast::Sender<Exit>,
    stop: &CancellationToken,
) -> Result<LoopControl, String> {
    // The stream's request is made at its first poll, and says nothing until an event
    // comes: a ping first tells a down engine from a quiet one.
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("the engine does not answer: {}", message(&e))),
        Err(_) => {
            return Err(format!(
                "the engine does not answer within {} s",
                PING_TIMEOUT.as_secs()
            ))
        }
    }
    let filters = filters(identity);
    let options = EventsOptionsBuilder::default().filters(&filters).build();
    let mut events = docker.events(Some(options));
    if state.connected_before {
        announce(sender, Exit::Missed);
    }
    state.connected_before = true;
    let opened = Instant::now();
    let why = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(LoopControl::Stop),
            next = events.next() => next,
        };
        match next {
            Some(Ok(event)) => {
                if let Some(exit) = exit_of(&event, identity) {
                    // Off the stream's reading: the next exit is not held up by this one.
                    tokio::spawn(announce_when_settled(docker.clone(), sender.clone(), exit));
                }
            }
            Some(Err(e)) => break format!("the event stream broke: {}", message(&e)),
            None => break "the engine ended the event stream".to_string(),
        }
    };
    if opened.elapsed() >= STEADY {
        tracing::info!(
            "docker driver {}: {why}; following it again",
            identity.worker
        );
        Ok(LoopControl::Continue)
    } else {
        Err(why)
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{EventActor, EventMessageTypeEnum};

    use super::*;

    fn identity() -> Identity {
        Identity {
            cluster: "c".into(),
            worker: "w1".into(),
        }
    }

    fn event(action: &str, labels: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_exit_of_one_of_ours_names_its_task() {
        let ours = [
            (LABEL_CLUSTER, "c"),
            (LABEL_WORKER, "w1"),
            (LABEL_TASK, "t1"),
        ];
        let ended = Some(Exit::Ended {
            task_id: "t1".into(),
            container_id: "abc".into(),
        });
        assert_eq!(exit_of(&event("die", &ours), &identity()), ended);
        assert_eq!(exit_of(&event("oom", &ours), &identity()), ended);
        assert_eq!(exit_of(&event("start", &ours), &identity()), None);
    }

    #[test]
    fn another_workers_or_unlabelled_containers_are_not_announced() {
        let theirs = [
            (LABEL_CLUSTER, "c"),
            (LABEL_WORKER, "w2"),
            (LABEL_TASK, "t1"),
        ];
        assert_eq!(exit_of(&event("die", &theirs), &identity()), None);
        let untasked = [(LABEL_CLUSTER, "c"), (LABEL_WORKER, "w1")];
        assert_eq!(exit_of(&event("die", &untasked), &identity()), None);
        assert_eq!(exit_of(&event("die", &[]), &identity()), None);
    }

    /// A stand-in for the engine on a unix socket: it answers pings, and each events
    /// request with one `die` of task t1, then ends the stream (as an engine going away).
    async fn flaky_engine(listener: tokio::net::UnixListener) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let answer = if head.contains("/events") {
                    let event = r#"{"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"mycluster.cluster":"c","mycluster.worker":"w1","mycluster.task":"t1"}},"time":1,"timeNano":1}"#;
                    let line = format!("{event}\n");
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                         {:x}\r\n{line}\r\n0\r\n\r\n",
                        line.len()
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
                     Connection: close\r\n\r\nOK"
                        .to_string()
                };
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    }

    /// The stream ends (the engine went away): the follower connects again, says that
    /// exits may have been missed, and announces the exits it hears after.
    #[tokio::test]
    async fn a_broken_stream_is_followed_again_and_says_exits_may_be_missed() {
        let dir = std::env::temp_dir().join(format!("mycluster-events-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("engine.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind a socket");
        let engine = tokio::spawn(flaky_engine(listener));
        let host = format!("unix://{}", path.display());
        let docker =
            Docker::connect_with_unix(&host, 5, bollard::API_DEFAULT_VERSION).expect("a client");
        let (sender, mut exits) = broadcast::channel(16);
        let stop = CancellationToken::new();
        let follower = tokio::spawn(follow(docker, identity(), sender, stop.clone()));
        let ended = Exit::Ended {
            task_id: "t1".into(),
            container_id: "abc".into(),
        };
        let mut heard = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            while heard.len() < 3 {
                match exits.recv().await {
                    Ok(exit) => heard.push(exit),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        stop.cancel();
        let _ = follower.await;
        engine.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}: {heard:?}");
        assert_eq!(heard, [ended.clone(), Exit::Missed, ended]);
    }

    #[test]
    fn the_filters_ask_for_exits_of_this_workers_containers_only() {
        let filters = filters(&identity());
        assert_eq!(filters["type"], ["container"]);
        assert_eq!(filters["event"], ["die", "oom"]);
        assert_eq!(
            filters["label"],
            [format!("{LABEL_CLUSTER}=c"), format!("{LABEL_WORKER}=w1")]
        );
    }
}
