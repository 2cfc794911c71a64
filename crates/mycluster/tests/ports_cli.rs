//! Ports through the command line, against a real manager: `--publish`,
//! `--stop-grace-period` and `--proxy-protocol` are the API's `ports`,
//! `stop_grace_period` and `proxy_protocol`; `--publish-rm` and `--no-publish` take ports
//! away; a port another service publishes is one line and exit 1; the tables show the
//! ports, and `service endpoints` and `tasks` where replicas are reached. The replicas'
//! addresses come from reports sent by hand, as an agent sends them.

mod common;

use common::{cli, eventually, Api, Manager};
use serde_json::{json, Value};

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

#[tokio::test]
async fn port_flags_are_the_apis_fields() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.as_str();
    let api = manager.api();

    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "web",
            "--image",
            "mycluster/hello-world",
            "--replicas",
            "2",
            "--publish",
            "8080:8000",
            "--publish",
            "9000",
            "--stop-grace-period",
            "30s",
            "--proxy-protocol",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc = api.ok("/api/v1/service/web").await;
    assert_eq!(
        doc["ports"],
        json!([{"published": 8080, "target": 8000, "protocol": "tcp"},
               {"target": 9000, "protocol": "tcp"}])
    );
    assert_eq!(doc["stop_grace_period"], "30s");
    assert_eq!(doc["proxy_protocol"], true);

    let (code, out, _) = run(url, &["service", "ls"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("PORTS") && out.contains("8080->8000/tcp, 9000/tcp"),
        "{out}"
    );
    let (code, out, _) = run(url, &["service", "get", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("8080->8000/tcp, 9000/tcp")
            && out.contains("stop_grace_period")
            && out.contains("30s")
            && out.contains("proxy_protocol"),
        "{out}"
    );
    let (code, out, _) = run(url, &["state"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("8080->8000/tcp"), "{out}");

    // A port another service publishes: the manager's 409, in one line, exit 1.
    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "other",
            "--image",
            "redis",
            "--publish",
            "8080:80",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: port 8080 is already published by service web")
            && err.contains("409"),
        "{err}"
    );
    assert_eq!(api.get("/api/v1/service/other").await.status, 404);
    let (code, _, err) = run(
        url,
        &[
            "service",
            "update",
            "web",
            "--publish",
            "8081:8000",
            "--publish",
            "8081:9000",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("--publish 8081:9000: port 8081 is published twice"),
        "{err}"
    );

    // --publish-rm takes one away; --proxy-protocol=false turns it off; the rest stays.
    let (code, out, err) = run(
        url,
        &[
            "service",
            "update",
            "web",
            "--publish-rm",
            "9000",
            "--proxy-protocol=false",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc = api.ok("/api/v1/service/web").await;
    assert_eq!(
        doc["ports"],
        json!([{"published": 8080, "target": 8000, "protocol": "tcp"}])
    );
    assert_eq!(doc["proxy_protocol"], Value::Null, "off: left out");
    assert_eq!(doc["stop_grace_period"], "30s");
    let (code, _, err) = run(url, &["service", "update", "web", "--publish-rm", "7000"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("its ports: 8080->8000/tcp"), "{err}");

    // --publish on update replaces the whole list.
    let (code, _, err) = run(
        url,
        &[
            "service",
            "update",
            "web",
            "--publish",
            "8082:8000",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let doc = api.ok("/api/v1/service/web").await;
    assert_eq!(
        doc["ports"],
        json!([{"published": 8082, "target": 8000, "protocol": "tcp"}])
    );
    // A create over an existing service without --publish keeps its ports, as a POST
    // without `ports` does.
    let (code, _, err) = run(
        url,
        &[
            "service",
            "create",
            "web",
            "--image",
            "mycluster/hello-world",
            "--replicas",
            "3",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        api.ok("/api/v1/service/web").await["ports"][0]["published"],
        8082
    );

    // --no-publish takes every port away, and 8080 was free since the update above.
    let (code, _, err) = run(
        url,
        &["service", "update", "web", "--no-publish", "--wait", "0"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(api.ok("/api/v1/service/web").await["ports"], Value::Null);
    let (code, out, err) = run(
        url,
        &[
            "service",
            "create",
            "other",
            "--image",
            "redis",
            "--publish",
            "8080:80",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(url, &["service", "endpoints", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("names no port"), "{out}");
}

/// Registers `w1` and reports every task assigned to it running at its own address.
async fn report_running(api: &Api) -> Vec<String> {
    let list = api.ok("/api/v1/workers/w1/tasks").await;
    let mut ids = Vec::new();
    let reports: Vec<Value> = list["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            ids.push(t["id"].as_str().unwrap().to_string());
            json!({
                "id": t["id"],
                "state": "running",
                "container_id": format!("c{i}"),
                "address": format!("10.9.0.{}", i + 2),
                "ports": [{"target": 8000, "port": 8000}],
            })
        })
        .collect();
    let reply = api
        .post("/api/v1/workers/w1/status", &json!({"tasks": reports}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    ids
}

#[tokio::test]
async fn endpoints_and_tasks_show_where_replicas_are_reached() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.as_str();
    let api = manager.api();
    let reply = api
        .post(
            "/api/v1/workers",
            &json!({"name": "w1", "address": "127.0.0.1:7000"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let (code, _, err) = run(
        url,
        &[
            "service",
            "create",
            "web",
            "--image",
            "mycluster/hello-world",
            "--replicas",
            "2",
            "--publish",
            "8080:8000",
            "--wait",
            "0",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(url, &["service", "endpoints", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("Service web: 8080->8000/tcp") && out.contains("No replica serves yet"),
        "{out}"
    );

    let ids = report_running(&api).await;
    assert_eq!(ids.len(), 2);
    // Without a health check a running task serves once it has run the update policy's
    // monitor (the manager's judgement).
    eventually("both replicas to serve", || async {
        let doc = api.ok("/api/v1/service/web/endpoints").await;
        (doc["endpoints"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let (code, out, _) = run(url, &["service", "endpoints", "web"]).await;
    assert_eq!(code, 0);
    for header in ["TASK", "SLOT", "WORKER", "ADDRESS", "PORT", "TARGET"] {
        assert!(out.contains(header), "{out}");
    }
    for (id, address) in ids.iter().zip(["10.9.0.2", "10.9.0.3"]) {
        let row = out
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {id}:\n{out}"));
        assert!(
            row.contains("w1") && row.contains(address) && row.contains("8000"),
            "{row}"
        );
    }
    let (code, out, _) = run(url, &["service", "endpoints", "web", "--json"]).await;
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(doc["service"], "web");
    assert_eq!(doc["endpoints"].as_array().map(Vec::len), Some(2));

    let (code, out, _) = run(url, &["tasks", "--service", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("ADDRESS") && out.contains("10.9.0.2:8000") && out.contains("10.9.0.3:8000"),
        "{out}"
    );
    let (code, _, err) = run(url, &["service", "endpoints", "nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("nope") && err.contains("404"), "{err}");
}
