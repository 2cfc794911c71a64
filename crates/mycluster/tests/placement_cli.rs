//! Issue 17 through the command line, against a real manager: `--constraint`, `--spread`,
//! `--reserve-*`/`--limit-*`, `--volume`, `--restart-*` are the API's fields (and their
//! `-rm` forms and `--spread ""` take them away on `update`); a bad flag is one line and a
//! non-zero exit; `worker drain|activate|rm|label`, `workers`, `service rebalance`,
//! `volume ls|rm` and `service rm` print what the API answered, and refuse in one line.
//! The workers are registered by hand, as an agent registers.

mod common;

use common::{cli, Manager};
use mycluster_core::wire::{ServiceDoc, WorkerDoc, WorkerStatus};
use serde_json::json;

async fn run(url: &str, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&url, &args)
    })
    .await
    .unwrap()
}

/// A refusal: a non-zero exit and one line on stderr that contains `needle`.
async fn refused(url: &str, args: &[&str], needle: &str) {
    let (code, out, err) = run(url, args).await;
    assert_ne!(code, 0, "{args:?}: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{args:?}: {err}"
    );
}

#[tokio::test]
async fn placement_flags_are_the_apis_fields() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--allow-bind", "/srv/data"]);
    let url = manager.url.as_str();
    let api = manager.api();

    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "db",
            "--replicas",
            "2",
            "--constraint",
            "node.labels.disk==ssd",
            "--constraint",
            "node.name != w9",
            "--spread",
            "node.labels.zone",
            "--reserve-cpus",
            "0.5",
            "--reserve-memory",
            "256M",
            "--limit-cpus",
            "1",
            "--limit-memory",
            "512M",
            "--volume",
            "data:/data",
            "--volume",
            "/srv/data/conf:/conf:ro",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--restart-delay",
            "2s",
            "--wait",
            "0",
            "--",
            "sleep",
            "60",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: ServiceDoc = serde_json::from_value(api.ok("/api/v1/service/db").await).unwrap();
    let constraints: Vec<String> = doc.constraints.iter().map(ToString::to_string).collect();
    assert_eq!(constraints, ["node.labels.disk == ssd", "node.name != w9"]);
    assert_eq!(
        doc.spread.as_ref().map(|s| s.0.to_string()).as_deref(),
        Some("node.labels.zone")
    );
    let r = doc.resources;
    assert_eq!(
        (
            r.reservations.cpus.map(|c| c.0),
            r.reservations.memory.map(|m| m.0),
            r.limits.cpus.map(|c| c.0),
            r.limits.memory.map(|m| m.0)
        ),
        (Some(500), Some(256 << 20), Some(1000), Some(512 << 20))
    );
    let volumes: Vec<(&str, &str, bool)> = doc
        .volumes
        .iter()
        .map(|v| (v.source.as_str(), v.target.as_str(), v.read_only))
        .collect();
    assert_eq!(
        volumes,
        [("data", "/data", false), ("/srv/data/conf", "/conf", true)]
    );
    let restart = doc.restart.expect("not the default");
    assert_eq!(
        (
            restart.condition.as_str(),
            restart.max_attempts,
            restart.delay.to_string()
        ),
        ("on-failure", 3, "2s".to_string())
    );
    let (code, out, _) = run(url, &["service", "get", "db"]).await;
    assert_eq!(code, 0);
    for shown in [
        "node.labels.disk == ssd",
        "node.labels.zone",
        "reserve 0.5 CPUs, 256 MiB; limit 1 CPUs, 512 MiB",
        "/srv/data/conf:/conf:ro",
        "on-failure, at most 3 restarts after failures in a row, delay 2s",
    ] {
        assert!(out.contains(shown), "{shown}: {out}");
    }

    // update: adds, removes, clears; the rest is kept.
    let (code, out, err) = run(
        url,
        &[
            "service",
            "update",
            "db",
            "--constraint-rm",
            "node.name!=w9",
            "--constraint",
            "node.driver==process",
            "--spread",
            "",
            "--volume-rm",
            "/conf",
            "--limit-memory",
            "1G",
            "--restart-condition",
            "none",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: ServiceDoc = serde_json::from_value(api.ok("/api/v1/service/db").await).unwrap();
    let constraints: Vec<String> = doc.constraints.iter().map(ToString::to_string).collect();
    assert_eq!(
        constraints,
        ["node.labels.disk == ssd", "node.driver == process"]
    );
    assert_eq!(doc.spread, None);
    assert_eq!(doc.volumes.len(), 1);
    assert_eq!(doc.resources.limits.memory.map(|m| m.0), Some(1 << 30));
    assert_eq!(doc.resources.reservations.cpus.map(|c| c.0), Some(500));
    let restart = doc.restart.expect("not the default");
    assert_eq!(
        (restart.condition.as_str(), restart.max_attempts),
        ("none", 3)
    );

    // Bad flags: one line, non-zero, naming the flag (or the manager's field).
    let create = |extra: &'static [&'static str]| {
        let mut args = vec!["service", "create", "bad", "--wait", "0"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "60"]);
        args
    };
    let cases: [(&[&str], &str); 10] = [
        (&["--constraint", "disk==ssd"], "--constraint disk==ssd"),
        (&["--constraint", "node.cpu==4"], "node.labels.<key>"),
        (&["--spread", "zone"], "--spread zone"),
        (&["--reserve-cpus", "0"], "--reserve-cpus 0"),
        (&["--reserve-cpus", "many"], "--reserve-cpus"),
        (&["--limit-memory", "lots"], "--limit-memory"),
        (
            &["--reserve-memory", "1G", "--limit-memory", "512M"],
            "--reserve-memory must not exceed the limit",
        ),
        (&["--volume", "data"], "--volume data"),
        (&["--restart-condition", "sometimes"], "--restart-condition"),
        (&["--restart-delay", "soon"], "--restart-delay"),
    ];
    for (extra, needle) in cases {
        refused(url, &create(extra), needle).await;
    }
    // The manager refuses a bind mount outside --allow-bind, naming the field.
    refused(
        url,
        &create(&["--volume", "/etc:/etc"]),
        "volumes[0].source",
    )
    .await;
    let gone = api.get("/api/v1/service/bad").await;
    assert_eq!(gone.status, 404, "nothing was created");
    refused(
        url,
        &["service", "update", "db", "--constraint-rm", "node.name==x"],
        "has no constraint",
    )
    .await;
    refused(
        url,
        &["service", "update", "db", "--volume-rm", "/nope"],
        "mounts nothing at /nope",
    )
    .await;
}

#[tokio::test]
async fn worker_volume_rebalance_and_rm_commands() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.as_str();
    let api = manager.api();
    for (name, labels) in [("w1", json!({"zone": "a"})), ("w2", json!({}))] {
        let body = json!({"name": name, "address": format!("{name}:7000"), "driver": "process",
            "labels": labels, "resources": {"cpus": 4, "memory": 8589934592u64}});
        let reply = api.post("/api/v1/workers", &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "web",
            "--replicas",
            "2",
            "--reserve-cpus",
            "0.5",
            "--wait",
            "0",
            "--",
            "sleep",
            "60",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // The workers table: the original's columns first, then drain, capacity, labels.
    let (code, out, _) = run(url, &["workers"]).await;
    assert_eq!(code, 0);
    let header = out
        .lines()
        .find(|l| l.contains("WORKER"))
        .expect("a header");
    let at = |column: &str| {
        header
            .find(column)
            .unwrap_or_else(|| panic!("{column}: {out}"))
    };
    assert!(at("WORKER") < at("STATUS") && at("LAST HEARTBEAT") < at("DRAIN"));
    assert!(
        at("DRAIN") < at("CPUS") && at("MEMORY") < at("LABELS"),
        "{out}"
    );
    assert!(out.contains("0.5/4") && out.contains("8 GiB") && out.contains("zone=a"));

    let (code, out, err) = run(url, &["worker", "drain", "w1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Worker w1 drained"), "{out}");
    let w1: WorkerDoc = serde_json::from_value(api.ok("/api/v1/workers/w1").await).unwrap();
    assert_eq!((w1.status, w1.drain), (WorkerStatus::Draining, true));
    let (_, out, _) = run(url, &["workers"]).await;
    assert!(out.contains("draining"), "{out}");
    refused(url, &["worker", "rm", "w2"], "drain it first").await;
    refused(url, &["worker", "drain", "nobody"], "nobody").await;
    let (code, out, _) = run(url, &["worker", "activate", "w1"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("Worker w1 is active"), "{out}");

    let (code, out, err) = run(url, &["worker", "label", "w1", "disk=ssd", "zone-"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Worker w1 labels: disk=ssd");
    refused(url, &["worker", "label", "w1", "disk"], "KEY=VALUE").await;
    refused(url, &["worker", "label", "w1", "bad key=x"], "label key").await;
    let (code, _, err) = run(url, &["worker", "label", "w1"]).await;
    assert_eq!(code, 2, "a usage error: {err}");

    // Rebalance: nothing runs (no agent), so nothing to move; the dry run says so too.
    let (code, out, err) = run(url, &["service", "rebalance", "web", "--dry-run"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Nothing to move"), "{out}");
    let (code, out, _) = run(url, &["service", "rebalance"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("every service"), "{out}");
    refused(url, &["service", "rebalance", "nope"], "nope").await;

    // Volumes: the scheduler records a slot's volume when it places its task (on a
    // docker worker: the process driver mounts none).
    let body = json!({"name": "d1", "address": "d1:7000", "driver": "docker", "host": "h1"});
    let reply = api.post("/api/v1/workers", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "store",
            "--image",
            "redis",
            "--replicas",
            "2",
            "--volume",
            "data:/data",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(url, &["volume", "ls"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("VOLUME") && out.contains("IN USE"), "{out}");
    let (_, tasks, _) = run(url, &["service", "ps", "store"]).await;
    assert!(
        out.contains("store-data-0") && out.contains("store-data-1"),
        "{out}{tasks}"
    );
    refused(
        url,
        &["volume", "rm", "store-data-0"],
        "used by service store",
    )
    .await;
    refused(url, &["volume", "rm", "nope-data-0"], "nope-data-0").await;
    let (code, out, err) = run(url, &["service", "rm", "store"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "Service store removed\nkept volumes store-data-0, store-data-1 (remove them with `mycluster volume rm` or `service rm --volumes`)"
    );
    let (code, out, err) = run(url, &["volume", "rm", "store-data-0", "store-data-1"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("is being removed").count(), 2, "{out}");
    let (_, out, _) = run(url, &["volume", "ls"]).await;
    assert_eq!(out.matches("removing").count(), 2, "{out}");

    let (code, out, _) = run(url, &["service", "ps", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web: 0 running, 2 starting"), "{out}");
    let (code, out, err) = run(url, &["service", "rm", "web", "--volumes"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Service web removed");
    refused(url, &["service", "rm", "web"], "web").await;
}
