//! The operator's endpoints of issue 17, in-process on a real `Cluster` (an embedded store
//! in a temporary dir): drain, activate, remove and label a worker; rebalance a service
//! or all; list and remove volumes, and a service removed with or without its volumes;
//! what the agent's long-poll says it must remove, and its report that it did. Every
//! success and every refusal (`{"message", "code"}`), and that the join token opens none
//! of them. Answers are read through the wire types.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use mycluster_core::service::Volume;
use mycluster_core::wire::{
    AssignedTasks, ErrorDoc, RebalanceDoc, ServiceDoc, TaskDoc, VolumeDoc, WorkerDoc, WorkerStatus,
};
use mycluster_core::wire::{Health, TaskState};
use mycluster_store::Snapshot;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tower::ServiceExt;

const API: &str = "api-token-0123456789abcdef";
const JOIN: &str = "join-token-0123456789abcdef";

/// A manager whose store holds `volumes` to begin with.
async fn app_with(volumes: Vec<Volume>) -> (axum::Router, tempfile::TempDir) {
    let seed = (!volumes.is_empty()).then(|| Snapshot {
        volumes,
        ..Snapshot::default()
    });
    support::seeded(support::locked(API, Some(JOIN)), seed).await
}

async fn app() -> (axum::Router, tempfile::TempDir) {
    app_with(Vec::new()).await
}

async fn call_as(
    app: &axum::Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(app, API, method, path, body).await
}

/// A call that must answer 200 (or 201), read as `T`.
async fn ok<T: DeserializeOwned>(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> T {
    let (status, answer) = call(app, method, path, body).await;
    assert!(
        status == 200 || status == 201,
        "{method} {path}: {status} {answer}"
    );
    serde_json::from_value(answer).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A call that must be refused with `status`; the error document's message.
async fn refused(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> String {
    let (got, answer) = call(app, method, path, body).await;
    assert_eq!(got, status, "{method} {path}: {answer}");
    let error: ErrorDoc = serde_json::from_value(answer).expect("an error document");
    assert_eq!(error.code, status);
    error.message
}

async fn register(app: &axum::Router, name: &str, host: &str, labels: Value) -> WorkerDoc {
    let body = json!({"name": name, "address": format!("{name}:7000"), "driver": "process",
        "host": host, "labels": labels});
    ok(app, "POST", "/api/v1/workers", Some(body)).await
}

async fn worker(app: &axum::Router, name: &str) -> WorkerDoc {
    ok(app, "GET", &format!("/api/v1/workers/{name}"), None).await
}

async fn tasks(app: &axum::Router, service: &str) -> Vec<TaskDoc> {
    ok(
        app,
        "GET",
        &format!("/api/v1/tasks?service={service}"),
        None,
    )
    .await
}

/// Reports every live task of `service` running and healthy, as its agent would.
async fn run_all(app: &axum::Router, service: &str) {
    let mut by_worker: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for task in tasks(app, service).await {
        if task.state.is_terminal() {
            continue;
        }
        let worker = task.worker.clone().expect("placed");
        by_worker
            .entry(worker)
            .or_default()
            .push(json!({"id": task.id, "state": TaskState::Running, "health": Health::Healthy}));
    }
    for (worker, reports) in by_worker {
        let path = format!("/api/v1/workers/{worker}/status");
        let (status, body) = call(app, "POST", &path, Some(json!({"tasks": reports}))).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn drain_activate_and_their_refusals() {
    let (app, _dir) = app().await;
    register(&app, "w1", "h1", json!({})).await;
    register(&app, "w2", "h1", json!({})).await;

    let drained: WorkerDoc = ok(&app, "POST", "/api/v1/workers/w1/drain", None).await;
    assert_eq!(
        (drained.status, drained.drain),
        (WorkerStatus::Draining, true)
    );
    assert_eq!(worker(&app, "w1").await.status, WorkerStatus::Draining);
    // Draining twice is no change, and no error.
    let again: WorkerDoc = ok(&app, "POST", "/api/v1/workers/w1/drain", None).await;
    assert_eq!(again.status, WorkerStatus::Draining);
    // A drained worker takes nothing new.
    let web = json!({"service": "web", "command": ["sleep", "60"], "replicas": 2});
    let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;
    for task in tasks(&app, "web").await {
        assert_eq!(task.worker.as_deref(), Some("w2"), "{task:?}");
    }

    let active: WorkerDoc = ok(&app, "POST", "/api/v1/workers/w1/activate", None).await;
    assert_eq!((active.status, active.drain), (WorkerStatus::Ready, false));

    let message = refused(&app, "POST", "/api/v1/workers/nobody/drain", None, 404).await;
    assert!(message.contains("nobody"), "{message}");
    refused(&app, "POST", "/api/v1/workers/nobody/activate", None, 404).await;
    // An operator's endpoint: the join token does not open it.
    let (status, _) = call_as(&app, JOIN, "POST", "/api/v1/workers/w1/drain", None).await;
    assert_eq!(status, 403);
    let (status, _) = call_as(&app, "", "POST", "/api/v1/workers/w1/drain", None).await;
    assert_eq!(status, 401);
    refused(&app, "GET", "/api/v1/workers/w1/drain", None, 405).await;
}

#[tokio::test]
async fn a_worker_is_removed_only_when_down_or_drained_and_empty() {
    let (app, _dir) = app().await;
    register(&app, "w1", "h1", json!({})).await;
    register(&app, "w2", "h1", json!({})).await;
    let web = json!({"service": "web", "command": ["sleep", "60"], "replicas": 2});
    let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;
    let on_w1 = tasks(&app, "web")
        .await
        .iter()
        .filter(|t| t.worker.as_deref() == Some("w1"))
        .count();
    assert_eq!(on_w1, 1, "one replica on each worker");

    let message = refused(&app, "DELETE", "/api/v1/workers/w1", None, 409).await;
    assert!(message.contains("drain it first"), "{message}");
    // Drained, but its task is still there (being moved).
    let _: WorkerDoc = ok(&app, "POST", "/api/v1/workers/w1/drain", None).await;
    let message = refused(&app, "DELETE", "/api/v1/workers/w1", None, 409).await;
    assert!(message.contains("still holds"), "{message}");
    // Down: it can go.
    let _: Value = ok(&app, "POST", "/api/v1/workers/w1/down", None).await;
    let removed: WorkerDoc = ok(&app, "DELETE", "/api/v1/workers/w1", None).await;
    assert_eq!(removed.worker, "w1");
    refused(&app, "GET", "/api/v1/workers/w1", None, 404).await;
    refused(&app, "DELETE", "/api/v1/workers/w1", None, 404).await;
    let (status, _) = call_as(&app, JOIN, "DELETE", "/api/v1/workers/w2", None).await;
    assert_eq!(status, 403);
    let workers: Vec<WorkerDoc> = ok(&app, "GET", "/api/v1/workers", None).await;
    assert_eq!(
        workers
            .iter()
            .map(|w| w.worker.as_str())
            .collect::<Vec<_>>(),
        ["w2"]
    );
}

#[tokio::test]
async fn labels_are_set_removed_and_kept_across_a_registration() {
    let (app, _dir) = app().await;
    register(&app, "w1", "h1", json!({"zone": "a", "rack": "1"})).await;
    let body = json!({"set": {"disk": "ssd"}, "remove": ["zone"]});
    let labelled: WorkerDoc = ok(&app, "PATCH", "/api/v1/workers/w1/labels", Some(body)).await;
    let expected = BTreeMap::from([
        ("disk".to_string(), "ssd".to_string()),
        ("rack".to_string(), "1".to_string()),
    ]);
    assert_eq!(labelled.labels, expected);
    // Its agent registers again with its own labels: the operator's stay over them.
    let back = register(&app, "w1", "h1", json!({"zone": "a", "rack": "2"})).await;
    let expected = BTreeMap::from([
        ("disk".to_string(), "ssd".to_string()),
        ("rack".to_string(), "2".to_string()),
    ]);
    assert_eq!(back.labels, expected);
    assert_eq!(worker(&app, "w1").await.labels, expected);

    // A constraint on the label places a service only there.
    register(&app, "w2", "h1", json!({})).await;
    let db = json!({"service": "db", "command": ["sleep", "60"], "replicas": 2,
        "constraints": ["node.labels.disk == ssd"]});
    let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(db)).await;
    for task in tasks(&app, "db").await {
        assert_eq!(task.worker.as_deref(), Some("w1"), "{task:?}");
    }
    // Removed, the label no longer admits new tasks: they wait, saying why.
    let body = json!({"remove": ["disk"]});
    let _: WorkerDoc = ok(&app, "PATCH", "/api/v1/workers/w1/labels", Some(body)).await;
    let _: Value = ok(
        &app,
        "PATCH",
        "/api/v1/service/db",
        Some(json!({"replicas": 3})),
    )
    .await;
    let pending: Vec<TaskDoc> = tasks(&app, "db")
        .await
        .into_iter()
        .filter(|t| t.state == TaskState::Pending)
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].message.contains("lack label disk=ssd"),
        "{}",
        pending[0].message
    );

    let path = "/api/v1/workers/w1/labels";
    let cases = [
        (json!({}), 400, "nothing to change"),
        (json!({"set": {"bad key": "x"}}), 400, "bad key"),
        (json!({"set": {"a": "1"}, "remove": ["a"]}), 400, "both"),
        (json!({"sett": {"a": "1"}}), 400, "sett"),
        (json!({"set": ["a=1"]}), 400, "set"),
    ];
    for (body, status, needle) in cases {
        let message = refused(&app, "PATCH", path, Some(body.clone()), status).await;
        assert!(message.contains(needle), "{body}: {message}");
    }
    let body = json!({"set": {"a": "1"}});
    refused(
        &app,
        "PATCH",
        "/api/v1/workers/nobody/labels",
        Some(body.clone()),
        404,
    )
    .await;
    let (status, _) = call_as(&app, JOIN, "PATCH", path, Some(body)).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn rebalance_answers_its_moves_and_a_dry_run_changes_nothing() {
    let (app, _dir) = app().await;
    register(&app, "w1", "h1", json!({})).await;
    register(&app, "w2", "h1", json!({})).await;
    let web = json!({"service": "web", "command": ["sleep", "60"], "replicas": 4,
        "healthcheck": {"tcp": {"port": 8000}}});
    let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;
    run_all(&app, "web").await;
    // Two workers join: 2/2/0/0 is uneven.
    register(&app, "w3", "h1", json!({})).await;
    register(&app, "w4", "h1", json!({})).await;

    let before = tasks(&app, "web").await.len();
    let dry: RebalanceDoc = ok(
        &app,
        "POST",
        "/api/v1/service/web/rebalance?dry_run=true",
        None,
    )
    .await;
    assert!(dry.dry_run);
    assert_eq!(dry.moves.len(), 1, "one move per service: {dry:?}");
    let first = &dry.moves[0];
    assert_eq!(first.service, "web");
    assert!(["w1", "w2"].contains(&first.from.as_str()), "{first:?}");
    assert!(["w3", "w4"].contains(&first.to.as_str()), "{first:?}");
    assert!(!first.why.is_empty());
    assert_eq!(
        tasks(&app, "web").await.len(),
        before,
        "a dry run changes nothing"
    );
    let all: RebalanceDoc = ok(&app, "POST", "/api/v1/rebalance?dry_run=1", None).await;
    assert_eq!(all.moves, dry.moves);

    // For real: the moved slot gets a replacement, and its old task says why it moves.
    let done: RebalanceDoc = ok(&app, "POST", "/api/v1/service/web/rebalance", None).await;
    assert!(!done.dry_run);
    assert_eq!(done.moves.len(), 1, "{done:?}");
    let now = tasks(&app, "web").await;
    assert_eq!(now.len(), before + 1, "{now:?}");
    let moving = now
        .iter()
        .find(|t| t.id == done.moves[0].task)
        .expect("the moved task");
    assert!(moving.moving.is_some(), "{moving:?}");

    // An even service has nothing to move.
    let _: Value = ok(
        &app,
        "POST",
        "/api/v1/service?wait=0",
        Some(json!({"service": "one", "command": ["sleep", "60"], "replicas": 1})),
    )
    .await;
    let none: RebalanceDoc = ok(&app, "POST", "/api/v1/service/one/rebalance", None).await;
    assert!(none.moves.is_empty(), "{none:?}");

    refused(&app, "POST", "/api/v1/service/nope/rebalance", None, 404).await;
    let message = refused(&app, "POST", "/api/v1/rebalance?dry_run=maybe", None, 400).await;
    assert!(message.contains("dry_run"), "{message}");
    let message = refused(&app, "POST", "/api/v1/rebalance?dryrun=true", None, 400).await;
    assert!(message.contains("unknown query parameter"), "{message}");
    let (status, _) = call_as(&app, JOIN, "POST", "/api/v1/rebalance", None).await;
    assert_eq!(status, 403);
}

fn volume(name: &str, service: &str, slot: u32, host: &str) -> Volume {
    Volume {
        name: name.into(),
        service: service.into(),
        source: "data".into(),
        slot,
        host: host.into(),
        worker: "w1".into(),
        remove: false,
        created_at: 1_700_000_000_000,
    }
}

#[tokio::test]
async fn volumes_are_listed_marked_for_removal_and_removed_by_their_hosts_agent() {
    let (app, _dir) = app_with(vec![
        volume("web-data-0", "web", 0, "h1"),
        volume("web-data-1", "web", 1, "h1"),
        volume("old-data-0", "old", 0, "h1"),
    ])
    .await;
    // The agent of w1 speaks with the credential its registration gave it.
    let credential = register(&app, "w1", "h1", json!({}))
        .await
        .credential
        .expect("a credential");
    register(&app, "w2", "h2", json!({})).await;
    let web = json!({"service": "web", "command": ["sleep", "60"], "replicas": 1,
        "volumes": [{"source": "data", "target": "/data"}]});
    let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(web)).await;

    let listed: Vec<VolumeDoc> = ok(&app, "GET", "/api/v1/volumes", None).await;
    let in_use: Vec<(&str, bool)> = listed.iter().map(|v| (v.name.as_str(), v.in_use)).collect();
    // web-data-1's slot is not wanted (1 replica); old's service is gone.
    assert_eq!(
        in_use,
        [
            ("old-data-0", false),
            ("web-data-0", true),
            ("web-data-1", false)
        ]
    );
    assert!(listed.iter().all(|v| !v.remove && v.host == "h1"));

    let message = refused(&app, "DELETE", "/api/v1/volumes/web-data-0", None, 409).await;
    assert!(message.contains("used by service web"), "{message}");
    let message = refused(&app, "DELETE", "/api/v1/volumes/nope-data-0", None, 404).await;
    assert!(message.contains("nope-data-0"), "{message}");
    let (status, _) = call_as(&app, JOIN, "DELETE", "/api/v1/volumes/old-data-0", None).await;
    assert_eq!(status, 403);

    // The agent of h1 waits for its next change; the removal wakes it.
    let index = ok::<AssignedTasks>(&app, "GET", "/api/v1/workers/w1/tasks", None)
        .await
        .index;
    let poll = tokio::spawn({
        let app = app.clone();
        let path = format!("/api/v1/workers/w1/tasks?index={index}&wait=60s");
        let credential = credential.clone();
        async move { call_as(&app, &credential, "GET", &path, None).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let marked: VolumeDoc = ok(&app, "DELETE", "/api/v1/volumes/old-data-0", None).await;
    assert!(marked.remove && !marked.in_use, "{marked:?}");
    let (status, woke) = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the removal woke the long-poll")
        .unwrap();
    assert_eq!(status, 200, "{woke}");
    let woke: AssignedTasks = serde_json::from_value(woke).unwrap();
    assert_eq!(woke.remove_volumes, ["old-data-0"]);
    // Another host's agent is not told.
    let other: AssignedTasks = ok(&app, "GET", "/api/v1/workers/w2/tasks", None).await;
    assert!(other.remove_volumes.is_empty(), "{other:?}");

    // w1's agent removed it: the record goes.
    let report = json!({"tasks": [], "removed_volumes": ["old-data-0"]});
    let (status, body) = call_as(
        &app,
        &credential,
        "POST",
        "/api/v1/workers/w1/status",
        Some(report),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<VolumeDoc> = ok(&app, "GET", "/api/v1/volumes", None).await;
    assert!(listed.iter().all(|v| v.name != "old-data-0"), "{listed:?}");
    let after: AssignedTasks = ok(&app, "GET", "/api/v1/workers/w1/tasks", None).await;
    assert!(after.remove_volumes.is_empty(), "{after:?}");
}

#[tokio::test]
async fn a_service_is_removed_with_or_without_its_volumes() {
    let (app, _dir) = app_with(vec![
        volume("web-data-0", "web", 0, "h1"),
        volume("web-data-1", "web", 1, "h1"),
        volume("db-data-0", "db", 0, ""),
    ])
    .await;
    register(&app, "w1", "h1", json!({})).await;
    for (name, replicas) in [("web", 2), ("db", 1), ("plain", 1)] {
        let mut body = json!({"service": name, "command": ["sleep", "60"], "replicas": replicas});
        if name != "plain" {
            body["volumes"] = json!([{"source": "data", "target": "/data"}]);
        }
        let _: Value = ok(&app, "POST", "/api/v1/service?wait=0", Some(body)).await;
    }

    // A service without volumes answers exactly as it always did.
    let (status, plain) = call(&app, "DELETE", "/api/v1/service/plain", None).await;
    assert_eq!(status, 200, "{plain}");
    // Sorted: with serde_json's `preserve_order` on in the build, a parsed map keeps the
    // document's order.
    let mut keys: Vec<&String> = plain.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["command", "image", "last_updated", "replicas", "service"]
    );

    // Without ?volumes: they are kept, and named.
    let web: ServiceDoc = ok(&app, "DELETE", "/api/v1/service/web", None).await;
    assert_eq!(web.kept_volumes, ["web-data-0", "web-data-1"]);
    assert!(web.removed_volumes.is_empty());
    let listed: Vec<VolumeDoc> = ok(&app, "GET", "/api/v1/volumes", None).await;
    assert!(
        listed
            .iter()
            .filter(|v| v.service == "web")
            .all(|v| !v.remove && !v.in_use),
        "{listed:?}"
    );

    let message = refused(
        &app,
        "DELETE",
        "/api/v1/service/db?volumes=maybe",
        None,
        400,
    )
    .await;
    assert!(message.contains("volumes"), "{message}");
    let db: ServiceDoc = ok(&app, "DELETE", "/api/v1/service/db?volumes=true", None).await;
    assert_eq!(db.removed_volumes, ["db-data-0"]);
    assert!(db.kept_volumes.is_empty());
    let listed: Vec<VolumeDoc> = ok(&app, "GET", "/api/v1/volumes", None).await;
    let db_data = listed.iter().find(|v| v.name == "db-data-0").expect("kept");
    assert!(db_data.remove, "{db_data:?}");
    // Its volume is on no known host: any agent removes it, once db's task has ended.
    let told: AssignedTasks = ok(&app, "GET", "/api/v1/workers/w1/tasks", None).await;
    let db_live = told.tasks.iter().any(|t| t.service == "db");
    assert_eq!(
        told.remove_volumes.contains(&"db-data-0".to_string()),
        !db_live,
        "{told:?}"
    );
    refused(&app, "DELETE", "/api/v1/service/db?volumes=true", None, 404).await;
}
