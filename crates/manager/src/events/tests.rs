//! The log's promises: numbering, the bound, where its history begins (the 410
//! boundary), and reading on from a position.

use mycluster_core::events::Event;
use mycluster_core::step::{step, NothingHeard, Register};
use mycluster_core::wire::{EventDoc, Registration, Topic};
use mycluster_core::{Change, ClusterState, Context, Limits, SequentialIds};

use super::{EventLog, Gone};

/// The state and changes of `names` registering, one worker each, in one commit.
fn workers_join(state: &ClusterState, names: &[&str]) -> (ClusterState, Vec<Change>) {
    let limits = Limits::default();
    let ctx = Context {
        now: 1_000,
        limits: &limits,
        max_heartbeats_per_second: 1000,
        heard: &NothingHeard,
    };
    let mut ids = SequentialIds::default();
    let mut state = state.clone();
    let mut changes = Vec::new();
    for name in names {
        let registration = Registration {
            name: name.to_string(),
            address: format!("{name}:7001"),
            labels: Default::default(),
            capacity: None,
            driver: Default::default(),
            instance: String::new(),
            resources: Default::default(),
            host: "h".into(),
            agent_ca_sha256: None,
        };
        let stepped =
            step(&state, Register::open(registration), &ctx, &mut ids).expect("registers");
        state = stepped.state;
        changes.extend(stepped.changes);
    }
    (state, changes)
}

fn docs(log: &EventLog, after: u64) -> Vec<EventDoc> {
    log.read(after, &[], usize::MAX, None)
        .expect("held")
        .events
        .iter()
        .map(|h| serde_json::from_str(&h.json).expect("an EventDoc"))
        .collect()
}

#[test]
fn events_are_numbered_by_commit_and_position() {
    let log = EventLog::new(4, 100);
    let (state, changes) = workers_join(&ClusterState::default(), &["w1", "w2", "w3"]);
    log.record(&ClusterState::default(), &changes, 5, 1_500);
    let (_, more) = workers_join(&state, &["w4"]);
    log.record(&state, &more, 7, 2_000);
    let got = docs(&log, log.start());
    let indexes: Vec<u64> = got.iter().map(|d| d.index).collect();
    assert_eq!(indexes, [5_000_001, 5_000_002, 5_000_003, 7_000_001]);
    assert_eq!(got[0].commit, 5);
    assert_eq!(got[0].time, 1.5);
    assert_eq!(got[0].topic, Topic::Worker);
    assert!(matches!(
        &got[3].event,
        Event::WorkerStatus { worker, previous: None, .. } if worker == "w4"
    ));
    // A commit with nothing to say moves the head, not the numbering.
    log.record(&state, &[], 8, 2_500);
    assert_eq!(log.newest(), 7_000_001);
    assert!(log.check(8_000_000).is_ok(), "commit 8 is known");
    assert!(log.check(9_000_000).is_err(), "commit 9 is not yet");
}

#[test]
fn the_history_is_bounded_and_says_where_it_starts() {
    let log = EventLog::new(0, 3);
    let (_, changes) = workers_join(&ClusterState::default(), &["a", "b", "c", "d", "e"]);
    log.record(&ClusterState::default(), &changes, 1, 1_000);
    assert_eq!(log.len(), 3);
    // Events 1 and 2 were dropped: a reader at 1 missed 2; one at 2 missed nothing.
    let gone = log.read(1_000_001, &[], 10, None).expect_err("2 is gone");
    assert_eq!(
        gone,
        Gone {
            asked: 1_000_001,
            oldest: Some(1_000_003),
            resume: 1_000_005,
            ahead: false,
        }
    );
    assert_eq!(
        gone.to_string(),
        "events after 1000001 are no longer kept (the oldest kept is 1000003): read the state again (GET /api/v1/state) and follow from index 1000005"
    );
    let kept: Vec<u64> = docs(&log, 1_000_002).iter().map(|d| d.index).collect();
    assert_eq!(kept, [1_000_003, 1_000_004, 1_000_005]);
    // A reader that asked for no index starts at the oldest held.
    assert_eq!(log.start(), 1_000_002);
    log.set_capacity(1);
    assert_eq!(log.start(), 1_000_004);
    assert!(log.check(1_000_003).is_err());
}

#[test]
fn events_before_the_loaded_commit_are_gone() {
    // Loaded at commit 10: its events and those before were an earlier run's.
    let log = EventLog::new(10, 100);
    assert!(log.check(9_999_999).is_err());
    assert!(log.check(10_000_000).is_err());
    assert!(
        log.check(10_000_004).is_err(),
        "a reader that stopped inside commit 10 may have missed the rest of it"
    );
    assert!(
        log.check(10_999_999).is_ok(),
        "the end of commit 10 goes on"
    );
    let ahead = log.check(11_000_001).expect_err("past the head");
    assert!(ahead.ahead);
    assert_eq!(ahead.oldest, None);
    assert_eq!(ahead.resume, 10_999_999);
    assert!(ahead.to_string().contains("none is kept yet"), "{ahead}");
}

#[test]
fn a_reader_goes_on_from_its_position_with_topics_and_limits() {
    let log = EventLog::new(0, 100);
    let (_, changes) = workers_join(&ClusterState::default(), &["a", "b", "c"]);
    log.record(&ClusterState::default(), &changes, 1, 1_000);
    let first = log.read(0, &[], 2, None).expect("held");
    assert_eq!(first.events.len(), 2);
    assert!(first.more);
    assert_eq!(first.position, 1_000_002);
    let rest = log.read(first.position, &[], 2, None).expect("held");
    assert_eq!(rest.events.len(), 1);
    assert!(!rest.more);
    assert_eq!(rest.position, 1_000_003);
    // Another topic: nothing given, but the position moves past what was looked at.
    let none = log.read(0, &[Topic::Service], 10, None).expect("held");
    assert!(none.events.is_empty());
    assert_eq!(none.position, 1_000_003);
    // Up to a bound (a read that ends: `follow=false`).
    let until = log.read(0, &[], 10, Some(1_000_001)).expect("held");
    assert_eq!(until.events.len(), 1);
    assert!(!until.more);
}

#[tokio::test]
async fn followers_are_woken_by_records() {
    let log = EventLog::new(0, 100);
    let mut latest = log.subscribe();
    latest.borrow_and_update();
    let (_, changes) = workers_join(&ClusterState::default(), &["a"]);
    log.record(&ClusterState::default(), &changes, 1, 1_000);
    assert!(latest.has_changed().expect("open"));
    assert_eq!(*latest.borrow_and_update(), 1_000_001);
}
