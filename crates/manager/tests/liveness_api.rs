//! What the manager hears of its agents besides heartbeats, on a real listener (a
//! dropped connection is only seen over TCP): an agent that says it is leaving, and an
//! agent whose task long-poll is cut mid-wait, each become a suspicion that wakes the
//! monitor's blocking query at once; a heartbeat clears it; the epoch moves on with a
//! verdict and comes back in heartbeats and task lists.

use std::time::{Duration, Instant};

use mycluster_client::Client;
use mycluster_core::wire::{Registration, SuspicionReason, WorkerDoc};
use mycluster_core::Driver;
use mycluster_manager::{ManagerConfig, RunningManager};
use tokio_util::sync::CancellationToken;

async fn manager(dir: &std::path::Path) -> (RunningManager, Client, CancellationToken) {
    let stop = CancellationToken::new();
    let manager = RunningManager::start(ManagerConfig::local(dir, "test"), stop.clone())
        .await
        .unwrap();
    let client = Client::new(&format!("http://{}", manager.addr), Duration::from_secs(10)).unwrap();
    (manager, client, stop)
}

async fn register(client: &Client, name: &str, instance: &str) {
    client
        .register(&Registration {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            labels: Default::default(),
            capacity: None,
            driver: Driver::Process.into(),
            instance: instance.into(),
            resources: Default::default(),
            host: String::new(),
            agent_ca_sha256: None,
        })
        .await
        .unwrap();
}

/// The monitor's blocking query, with how long it took to answer.
async fn suspected_after(client: &Client, after: u64) -> (Vec<WorkerDoc>, Duration) {
    let asked = Instant::now();
    let workers = client
        .workers_suspected_after(after, Duration::from_secs(20))
        .await
        .unwrap();
    (workers, asked.elapsed())
}

fn worker<'a>(workers: &'a [WorkerDoc], name: &str) -> &'a WorkerDoc {
    workers.iter().find(|w| w.worker == name).unwrap()
}

#[tokio::test]
async fn a_leaving_agent_and_a_dropped_long_poll_wake_the_monitor_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, client, stop) = manager(dir.path()).await;
    register(&client, "w1", "aaaaaaaaaaaaaaaa").await;
    register(&client, "w2", "bbbbbbbbbbbbbbbb").await;

    // Nothing suspected: the query waits (here: until the leave below, in 300 ms).
    let leaver = client.clone();
    let leave = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        leaver.leave("w1", "aaaaaaaaaaaaaaaa").await.unwrap();
    });
    let (workers, took) = suspected_after(&client, 0).await;
    leave.await.unwrap();
    let left = worker(&workers, "w1").suspected.expect("w1 suspected");
    assert_eq!(left.reason, SuspicionReason::Left);
    assert!(took < Duration::from_secs(10), "woken after {took:?}");
    assert!(worker(&workers, "w2").suspected.is_none());

    // Only the holder may say it leaves.
    let refused = client.leave("w2", "cccccccccccccccc").await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");

    // A long-poll cut mid-wait (the agent died: its socket closed) is a suspicion too.
    let index = client
        .assigned_tasks("w2", "bbbbbbbbbbbbbbbb", None, Duration::ZERO)
        .await
        .unwrap()
        .index;
    let poller = client.clone();
    let poll = tokio::spawn(async move {
        poller
            .assigned_tasks(
                "w2",
                "bbbbbbbbbbbbbbbb",
                Some(index),
                Duration::from_secs(30),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    poll.abort();
    let (workers, _) = suspected_after(&client, left.index).await;
    let dropped = worker(&workers, "w2").suspected.expect("w2 suspected");
    assert_eq!(dropped.reason, SuspicionReason::Disconnected);
    assert!(dropped.index > left.index);

    // A heartbeat clears it; a long-poll that answers normally notes nothing.
    client.heartbeat("w2", "bbbbbbbbbbbbbbbb").await.unwrap();
    client
        .assigned_tasks(
            "w2",
            "bbbbbbbbbbbbbbbb",
            Some(index),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    let workers = client.workers().await.unwrap();
    assert!(worker(&workers, "w2").suspected.is_none());
    stop.cancel();
}

#[tokio::test]
async fn a_verdict_moves_the_epoch_on_and_the_agent_hears_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_manager, client, stop) = manager(dir.path()).await;
    register(&client, "w1", "aaaaaaaaaaaaaaaa").await;
    let beat = client.heartbeat("w1", "aaaaaaaaaaaaaaaa").await.unwrap();
    assert_eq!(beat.lease, 5.0);
    let first = beat.epoch;
    let list = client
        .assigned_tasks("w1", "aaaaaaaaaaaaaaaa", None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(list.epoch, first);
    client.declare_down_many(&["w1"], None).await.unwrap();
    // Back with its next heartbeat, in a new epoch.
    let beat = client.heartbeat("w1", "aaaaaaaaaaaaaaaa").await.unwrap();
    assert_eq!(beat.epoch, first + 1);
    let list = client
        .assigned_tasks("w1", "aaaaaaaaaaaaaaaa", None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(list.epoch, first + 1);
    // Another agent instance taking the name over voids what was assigned too.
    tokio::time::sleep(Duration::from_millis(10)).await;
    client.declare_down_many(&["w1"], None).await.unwrap();
    register(&client, "w1", "dddddddddddddddd").await;
    let beat = client.heartbeat("w1", "dddddddddddddddd").await.unwrap();
    assert_eq!(beat.epoch, first + 3);
    stop.cancel();
}
