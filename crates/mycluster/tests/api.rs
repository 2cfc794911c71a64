//! The manager's REST API, end to end against the real binary: the original's documents
//! exactly, every bad input refused without changing anything, and the agent endpoints.

mod common;

use common::{Api, Manager};
use serde_json::{json, Value};

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    keys
}

/// Everything observable, except the clock.
async fn world(api: &Api) -> Value {
    let mut stats = api.ok("/api/v1/stats").await;
    stats.as_object_mut().unwrap().remove("cluster.upTime");
    json!({
        "state": api.ok("/api/v1/state").await,
        "services": api.ok("/api/v1/services").await,
        "tasks": api.ok("/api/v1/tasks").await,
        "workers": api.ok("/api/v1/workers").await,
        "stats": stats,
    })
}

fn hello(replicas: i64) -> Value {
    json!({"service": "hello-world", "image": "crccheck/hello-world", "replicas": replicas})
}

#[tokio::test]
async fn stats_has_the_originals_shape() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let reply = manager.api().get("/api/v1/stats").await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("application/json"));
    let stats = reply.body;
    assert_eq!(
        keys(&stats),
        [
            "cluster.upTime",
            "containers.relocated",
            "services.totalOfContainers",
            "services.totalOfRequests",
            "workers.failures"
        ]
    );
    let uptime = stats["cluster.upTime"].as_str().unwrap();
    let parts: Vec<&str> = uptime.split(':').collect();
    assert_eq!(parts.len(), 3, "{uptime}");
    assert!(
        parts[0].parse::<u64>().is_ok() && parts[1].len() == 2,
        "{uptime}"
    );
    let (secs, micros) = parts[2].split_once('.').expect("micros");
    assert_eq!((secs.len(), micros.len()), (2, 6), "{uptime}");
    for key in [
        "containers.relocated",
        "services.totalOfContainers",
        "services.totalOfRequests",
        "workers.failures",
    ] {
        assert_eq!(stats[key], json!(0), "{key}");
    }
}

#[tokio::test]
async fn state_has_the_originals_shape() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let state = manager.api().ok("/api/v1/state").await;
    assert_eq!(
        state,
        json!({"cluster.name": "test", "cluster.numOfWorkers": 0, "cluster.workers": [], "cluster.servicesDef": []})
    );
}

#[tokio::test]
async fn create_get_and_update_a_service_as_the_original_page_shows() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let reply = api.post("/api/v1/service", &hello(3)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let state = reply.body;
    assert_eq!(
        keys(&state),
        [
            "cluster.name",
            "cluster.numOfWorkers",
            "cluster.servicesDef",
            "cluster.workers"
        ]
    );
    assert_eq!(state["cluster.name"], "test");
    let defs = state["cluster.servicesDef"].as_array().unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!(
        keys(&defs[0]),
        ["image", "last_updated", "replicas", "service"]
    );

    let service = api.ok("/api/v1/service/hello-world").await;
    assert_eq!(
        keys(&service),
        ["image", "last_updated", "replicas", "service"]
    );
    assert_eq!(service["service"], "hello-world");
    assert_eq!(service["image"], "crccheck/hello-world");
    assert_eq!(service["replicas"], 3);
    let updated = service["last_updated"].as_u64().expect("integer seconds");
    assert!(updated >= before && updated <= before + 60, "{updated}");

    // Posting the same name again updates in place: never a duplicate.
    let reply = api.post("/api/v1/service", &hello(5)).await;
    assert_eq!(reply.status, 201);
    let services = api.ok("/api/v1/services").await;
    assert_eq!(services.as_array().unwrap().len(), 1);
    assert_eq!(services[0]["replicas"], 5);
    let active = |tasks: &Value| {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["desired_state"] == "running")
            .count()
    };
    assert_eq!(
        active(&api.ok("/api/v1/tasks?service=hello-world").await),
        5
    );

    // A new image replaces every task: five new ones, the old ones stopped.
    let mut new_image = hello(5);
    new_image["image"] = json!("mycluster/hello-world:v2");
    assert_eq!(api.post("/api/v1/service", &new_image).await.status, 201);
    let tasks = api.ok("/api/v1/tasks?service=hello-world").await;
    let running: Vec<&Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "running")
        .collect();
    assert_eq!(running.len(), 5);
    assert!(running
        .iter()
        .all(|t| t["image"] == "mycluster/hello-world:v2"));
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(stats["services.totalOfRequests"], 3);
}

#[tokio::test]
async fn an_unknown_service_is_a_404_with_the_originals_message() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let reply = manager.api().get("/api/v1/service/hello-world").await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.body,
        json!({"message": "Service hello-world was not registered for this cluster.", "code": 404})
    );
    for (method, path) in [
        ("DELETE", "/api/v1/service/nope"),
        ("PATCH", "/api/v1/service/nope"),
    ] {
        let reply = manager
            .api()
            .raw(
                method,
                path,
                Some("application/json"),
                Some(br#"{"replicas": 1}"#.to_vec()),
            )
            .await;
        assert_eq!(reply.status, 404, "{method} {path}");
        assert_eq!(
            reply.body["message"],
            "Service nope was not registered for this cluster."
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &["--max-replicas", "1000"]);
    let api = manager.api();
    assert_eq!(api.post("/api/v1/service", &hello(2)).await.status, 201);
    let before = world(&api).await;

    let json_ct = Some("application/json");
    let big = format!(
        r#"{{"service": "big", "image": "x", "replicas": 1, "pad": "{}"}}"#,
        "a".repeat(1024 * 1024)
    );
    // (method, path, Content-Type, body, status, what the message must mention)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<Vec<u8>>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(b"{\"service\": ".to_vec()),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(b"not json".to_vec()),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(b"[1,2,3]".to_vec()),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(b"\"hello\"".to_vec()),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(b"null".to_vec()),
            400,
            "JSON object",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(Vec::new()),
            400,
            "empty",
        ),
        (
            "POST",
            "/api/v1/service",
            None,
            Some(hello(1).to_string().into_bytes()),
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/v1/service",
            Some("text/plain"),
            Some(hello(1).to_string().into_bytes()),
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/v1/service",
            Some("application/x-www-form-urlencoded"),
            Some(b"service=a".to_vec()),
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/v1/service",
            json_ct,
            Some(big.into_bytes()),
            413,
            "limit",
        ),
    ];
    for (method, path, content_type, body, status, fragment) in cases {
        let reply = api.raw(method, path, content_type, body).await;
        assert_eq!(
            reply.status, status,
            "{method} {path} {content_type:?}: {}",
            reply.body
        );
        assert_eq!(reply.body["code"], json!(status));
        let message = reply.body["message"].as_str().expect("message");
        assert!(
            message.contains(fragment),
            "{message:?} should mention {fragment:?}"
        );
    }

    let bodies = [
        (
            json!({"service": "hello-world", "image": "x", "replicas": "3"}),
            "'replicas' must be an integer",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replicas": 2.5}),
            "'replicas' must be an integer",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replicas": -1}),
            "between 0 and 1000",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replicas": 1001}),
            "between 0 and 1000",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replicas": true}),
            "'replicas' must be an integer",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replica": 3}),
            "unknown field 'replica'",
        ),
        (
            json!({"service": "hello-world", "image": "x", "replicas": 3, "extra": 1}),
            "unknown field 'extra'",
        ),
        (
            json!({"service": "hello-world", "replicas": 3}),
            "missing required field 'image'",
        ),
        (
            json!({"image": "x", "replicas": 3}),
            "missing required field 'service'",
        ),
        (
            json!({"service": "hello-world", "image": "x"}),
            "missing required field 'replicas'",
        ),
        (
            json!({"service": 7, "image": "x", "replicas": 3}),
            "'service' must be a string",
        ),
        (
            json!({"service": "hello-world", "image": ["x"], "replicas": 3}),
            "'image' must be a string",
        ),
        (
            json!({"service": "Hello-World", "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "-hello", "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "hello-", "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "hello_world", "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "", "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "a".repeat(64), "image": "x", "replicas": 3}),
            "invalid service name",
        ),
        (
            json!({"service": "hello-world", "image": "Bad Image", "replicas": 3}),
            "invalid image",
        ),
        (
            json!({"service": "hello-world", "image": "UPPER/case", "replicas": 3}),
            "invalid image",
        ),
        (
            json!({"service": "hello-world", "image": "", "replicas": 3}),
            "invalid image",
        ),
        (
            json!({"service": "hello-world", "image": "app:-tag", "replicas": 3}),
            "invalid image",
        ),
    ];
    for (body, fragment) in bodies {
        let reply = api.post("/api/v1/service", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let message = reply.body["message"].as_str().expect("message");
        assert!(
            message.contains(fragment),
            "{body}: {message:?} should mention {fragment:?}"
        );
    }

    let patches = [
        (json!({}), 400),
        (json!({"replicas": "2"}), 400),
        (json!({"replicas": 5000}), 400),
        (json!({"service": "other"}), 400),
        (json!({"image": "NOPE"}), 400),
    ];
    for (body, status) in patches {
        let reply = api
            .send_json("PATCH", "/api/v1/service/hello-world", &body)
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }

    let others = [
        ("GET", "/api/v1/tasks?servce=hello-world", 400),
        ("GET", "/api/v1/nowhere", 404),
        ("PUT", "/api/v1/stats", 405),
        ("DELETE", "/api/v1/state", 405),
        ("POST", "/api/v1/workers/ghost/heartbeat", 404),
        ("GET", "/api/v1/workers/ghost/tasks", 404),
    ];
    for (method, path, status) in others {
        let reply = api.raw(method, path, None, None).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        assert_eq!(reply.body["code"], json!(status));
        assert!(reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    let bad_agents = [
        json!({"name": "bad name", "address": "x:1"}),
        json!({"name": "w1"}),
        json!({"name": "w1", "address": "x:1", "capacity": -1}),
        json!({"name": "w1", "address": "x:1", "color": "red"}),
    ];
    for body in bad_agents {
        let reply = api.post("/api/v1/workers", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
    }

    assert_eq!(
        world(&api).await,
        before,
        "a refused request changed the cluster"
    );
}

#[tokio::test]
async fn delete_stops_every_task_and_forgets_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    assert_eq!(api.post("/api/v1/service", &hello(3)).await.status, 201);
    let other = json!({"service": "other", "image": "redis:alpine", "replicas": 1});
    assert_eq!(api.post("/api/v1/service", &other).await.status, 201);

    let reply = api
        .raw("DELETE", "/api/v1/service/hello-world", None, None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["service"], "hello-world");
    assert_eq!(api.get("/api/v1/service/hello-world").await.status, 404);
    let tasks = api.ok("/api/v1/tasks?service=hello-world").await;
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["desired_state"] == "shutdown"),
        "{tasks}"
    );
    let services = api.ok("/api/v1/services").await;
    assert_eq!(services.as_array().unwrap().len(), 1);
    assert_eq!(services[0]["service"], "other");
    // Deleting twice: the second time there is nothing to delete.
    assert_eq!(
        api.raw("DELETE", "/api/v1/service/hello-world", None, None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn patch_scales_without_touching_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    assert_eq!(api.post("/api/v1/service", &hello(3)).await.status, 201);
    let reply = api
        .send_json(
            "PATCH",
            "/api/v1/service/hello-world",
            &json!({"replicas": 1}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["replicas"], 1);
    assert_eq!(reply.body["image"], "crccheck/hello-world");
    let tasks = api.ok("/api/v1/tasks?service=hello-world").await;
    let wanted: Vec<u64> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "running")
        .map(|t| t["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(wanted, [0], "scale-down keeps the lowest slot");
}

#[tokio::test]
async fn services_are_listed_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    for name in ["zeta", "alpha", "mid"] {
        let body = json!({"service": name, "image": "redis", "replicas": 1});
        assert_eq!(api.post("/api/v1/service", &body).await.status, 201);
    }
    let names: Vec<Value> = api
        .ok("/api/v1/services")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("mid"), json!("zeta")]);
}

#[tokio::test]
async fn healthz_reports_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let health = manager.api().ok("/healthz").await;
    assert_eq!(health["status"], "ok");
    assert!(health["store"].as_str().unwrap().contains("embedded"));
}

#[tokio::test]
async fn prefer_return_minimal_answers_with_the_service_alone() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let body = json!({"service": "web", "image": "nginx", "replicas": 2});
    let response = mycluster_client::reqwest_builder()
        .build()
        .unwrap()
        .post(format!("{}/api/v1/service?wait=0", manager.url))
        .bearer_auth(common::TEST_TOKEN)
        .header("Content-Type", "application/json")
        .header("Prefer", "return=minimal")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["preference-applied"], "return=minimal");
    let doc: Value = response.json().await.unwrap();
    assert_eq!(
        keys(&doc),
        ["image", "last_updated", "replicas", "service"],
        "{doc}"
    );
    assert_eq!(doc["replicas"], 2);
    // Without the header, the original's answer: the state document.
    let reply = manager.api().post("/api/v1/service?wait=0", &body).await;
    assert_eq!(reply.status, 201);
    assert!(
        reply.body.get("cluster.servicesDef").is_some(),
        "{}",
        reply.body
    );
}
