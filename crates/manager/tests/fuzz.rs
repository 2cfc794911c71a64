//! Fuzzing of request parsing and validation with proptest: arbitrary methods, paths,
//! query strings, headers and bodies sent to the real router in-process, and arbitrary
//! JSON given to the pure validators. Nothing may panic or answer 5xx; every answer is
//! JSON and every refusal the error document with its status; a refused request changes
//! nothing; what is accepted reads back, and memory and store agree at the end.
//!
//! Each property prints its seed; `FUZZ_SEED=N` replays it and `FUZZ_CASES=N` runs it
//! longer. A failure prints proptest's minimal failing input.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Uri};
use axum::Router;
use mycluster_core::commands::validate_worker_name;
use mycluster_core::image::validate_image;
use mycluster_core::service::{validate_service_name, ServicePatch};
use mycluster_core::wire::ServiceDoc;
use mycluster_core::{Limits, Service, ServiceSpec, Task};
use mycluster_manager::api::auth::{Auth, Token};
use mycluster_manager::api::{router, AppState};
use mycluster_manager::{ApiConfig, Cluster};
use mycluster_store::{EmbeddedStore, Store};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const API_TOKEN: &str = "fuzz-api-token-0123456789abcdef";
const JOIN_TOKEN: &str = "fuzz-join-token-0123456789abcdef";
/// Cases per property that goes through the router; the pure ones are cheap and get more.
const HTTP_CASES: u32 = 256;
const PURE_CASES: u32 = 1024;
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Names the service properties reuse, so updates and deletes find something.
const SERVICES: [&str; 3] = ["fuzz-a", "fuzz-b", "fuzz-c"];
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];

// ---------------------------------------------------------------------------------------
// The router under test, and what every answer must look like.

struct Fixture {
    runtime: tokio::runtime::Runtime,
    app: Router,
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    /// How many answers of each status, to show what the fuzzing reached.
    statuses: std::sync::Mutex<BTreeMap<u16, usize>>,
    _dir: tempfile::TempDir,
}

/// A request as the fuzzer built it. Shown as text, so a failing input can be read and
/// replayed with curl.
#[derive(Clone)]
struct Fuzzed {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl fmt::Debug for Fuzzed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.method, shorten(self.target.as_bytes()))?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", shorten(value))?;
        }
        write!(f, "\n{}", shorten(&self.body))
    }
}

/// Bytes as text, cut in the middle when long (the length is kept).
fn shorten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() <= 400 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(200).collect();
    let tail: String = text.chars().skip(text.chars().count() - 100).collect();
    format!("{head:?} … {tail:?} ({} bytes)", bytes.len())
}

/// Text shown shortened.
#[derive(Clone)]
struct Short(String);

impl fmt::Debug for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shorten(self.0.as_bytes()))
    }
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JSON value shown as JSON.
#[derive(Clone)]
struct Json(Value);

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shorten(self.0.to_string().as_bytes()))
    }
}

struct Answer {
    status: u16,
    body: Value,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cluster, store) = runtime.block_on(async {
            let store: Arc<dyn Store> =
                Arc::new(EmbeddedStore::open(dir.path(), "fuzz").await.unwrap());
            let cluster = Cluster::load("fuzz".into(), Limits::default(), store.clone())
                .await
                .unwrap();
            (Arc::new(cluster), store)
        });
        let config = ApiConfig {
            auth: Auth::On {
                api: Token::parse(API_TOKEN, "the API token").unwrap(),
                join: Some(Token::parse(JOIN_TOKEN, "the join token").unwrap()).into(),
            },
            max_body_bytes: MAX_BODY_BYTES,
            // Long-polls and `?wait=` end soon: the fuzzer wants answers, not waits.
            max_wait: Duration::from_millis(100),
            ..ApiConfig::default()
        };
        let app = router(AppState::new(
            cluster.clone(),
            config,
            CancellationToken::new(),
        ));
        Fixture {
            runtime,
            app,
            cluster,
            store,
            statuses: Default::default(),
            _dir: dir,
        }
    }

    /// Gives the fuzzer something to hit: the pool's services and workers exist.
    fn populate(&self) {
        self.runtime.block_on(async {
            for name in WORKERS {
                let body = json!({"name": name, "address": "127.0.0.1:7001", "driver": "sim"});
                let answer = self
                    .send(&operator("POST", "/api/v1/workers", Some(&body)))
                    .await
                    .expect("a registration");
                assert_eq!(answer.status, 201, "{}", answer.body);
            }
            for name in SERVICES {
                let body = json!({"service": name, "image": "redis:alpine", "replicas": 2});
                let answer = self
                    .send(&operator("POST", "/api/v1/service?wait=0", Some(&body)))
                    .await
                    .expect("a create");
                assert_eq!(answer.status, 201, "{}", answer.body);
            }
        });
    }

    fn index(&self) -> u64 {
        self.cluster.snapshot().index
    }

    /// Sends a request and checks what every answer must be: no 5xx, JSON, and for a
    /// refusal exactly `{"message": ..., "code": <status>}` with nothing changed.
    async fn send(&self, request: &Fuzzed) -> Result<Answer, TestCaseError> {
        let before = self.index();
        let method = Method::from_bytes(request.method.as_bytes()).expect("a method token");
        let mut builder = Request::builder()
            .method(method)
            .uri(request.target.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(
                name.as_str(),
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        let http_request = builder
            .body(Body::from(request.body.clone()))
            .expect("a request");
        let response = self
            .app
            .clone()
            .oneshot(http_request)
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        // The dashboard (`/`, `/ui…`) answers a page, a script or a redirect: not JSON,
        // but always under its strict content policy, and never for a change.
        let dashboard = response.headers().contains_key("content-security-policy")
            && matches!(status, 200 | 304 | 307)
            && (request.method == "GET" || request.method == "HEAD")
            && request.target.parse::<Uri>().is_ok_and(|uri| {
                let path = uri.path();
                path == "/" || path == "/ui" || path.starts_with("/ui/")
            });
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| TestCaseError::fail(format!("{status}: the body failed: {e}")))?;
        let shown = shorten(&bytes);
        if dashboard {
            prop_assert_eq!(self.index(), before, "a dashboard page changed the state");
            return Ok(Answer {
                status,
                body: Value::Null,
            });
        }
        prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "answered {status}: {shown}"
        );
        // A HEAD answer has its body stripped.
        if bytes.is_empty() && request.method == "HEAD" {
            return Ok(Answer {
                status,
                body: Value::Null,
            });
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e}): {shown}")))?;
        prop_assert!(
            content_type.starts_with("application/json"),
            "{status} with Content-Type {content_type:?}: {shown}"
        );
        if status >= 400 {
            let fields = body.as_object().map(|o| o.len());
            prop_assert_eq!(fields, Some(2), "{}: {}", status, shown);
            prop_assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{status}: {shown}"
            );
            prop_assert_eq!(&body["code"], &json!(status), "{}", shown);
            prop_assert_eq!(
                self.index(),
                before,
                "a refused request changed the state: {}",
                shown
            );
        }
        Ok(Answer { status, body })
    }

    /// A service as `GET /api/v1/service/<name>` shows it, or `None` on 404.
    async fn service(&self, name: &str) -> Result<Option<ServiceSpec>, TestCaseError> {
        let answer = self
            .send(&operator("GET", &format!("/api/v1/service/{name}"), None))
            .await?;
        match answer.status {
            200 => Ok(Some(doc_spec(&answer.body)?)),
            404 => Ok(None),
            other => Err(TestCaseError::fail(format!(
                "GET {name}: {other} {}",
                answer.body
            ))),
        }
    }

    /// After a property: memory and store hold the same, and every listed service reads
    /// back alone as it is listed.
    fn check_consistent(&self) {
        self.runtime.block_on(async {
            let snapshot = self.cluster.snapshot();
            let mut stored = self.store.load().await.expect("the store loads");
            assert_eq!(stored.head.index, snapshot.index, "store and memory indexes");
            stored
                .services
                .sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            stored.tasks.sort_by(|a, b| a.id.cmp(&b.id));
            stored.workers.sort_by(|a, b| a.name.cmp(&b.name));
            let state = &snapshot.state;
            let services: Vec<Service> = state.services.values().cloned().collect();
            let tasks: Vec<Task> = state.tasks.values().map(|t| Task::clone(t)).collect();
            let workers: Vec<_> = state.workers.values().cloned().collect();
            assert_eq!(stored.services, services, "services in store and memory");
            assert_eq!(stored.tasks, tasks, "tasks in store and memory");
            assert_eq!(stored.workers, workers, "workers in store and memory");
            assert_eq!(
                stored.counters, state.counters,
                "counters in store and memory"
            );

            let list = self
                .send(&operator("GET", "/api/v1/services", None))
                .await
                .expect("the list answers");
            assert_eq!(list.status, 200);
            let docs = list.body.as_array().expect("a list").clone();
            assert_eq!(docs.len(), services.len(), "{}", list.body);
            for doc in docs {
                let name = doc["service"].as_str().expect("a name").to_string();
                let alone = self
                    .send(&operator("GET", &format!("/api/v1/service/{name}"), None))
                    .await
                    .expect("the service answers");
                assert_eq!(alone.status, 200, "{name}: {}", alone.body);
                assert_eq!(alone.body, doc, "{name} read alone and in the list");
            }
            println!(
                "fuzz: consistent at index {}: {} services, {} tasks, {} workers; answers by status: {:?}",
                snapshot.index,
                services.len(),
                tasks.len(),
                workers.len(),
                self.statuses.lock().unwrap()
            );
        });
    }
}

/// The spec a service document shows.
fn doc_spec(doc: &Value) -> Result<ServiceSpec, TestCaseError> {
    let doc: ServiceDoc = serde_json::from_value(doc.clone())
        .map_err(|e| TestCaseError::fail(format!("not a service document ({e}): {doc}")))?;
    Ok(ServiceSpec {
        healthcheck: None,
        update: Default::default(),
        name: doc.service,
        image: doc.image,
        replicas: doc.replicas,
        command: doc.command,
        env: doc.env,
        ports: Vec::new(),
        stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
        proxy_protocol: false,
        constraints: Vec::new(),
        spread: None,
        resources: Default::default(),
        volumes: Vec::new(),
        restart: Default::default(),
        on_disconnect: Default::default(),
    })
}

/// A request with the API token and, with a body, a JSON Content-Type.
fn operator(method: &str, target: &str, body: Option<&Value>) -> Fuzzed {
    with_token(API_TOKEN, method, target, body)
}

fn with_token(token: &str, method: &str, target: &str, body: Option<&Value>) -> Fuzzed {
    let mut headers = vec![(
        "authorization".to_string(),
        format!("Bearer {token}").into_bytes(),
    )];
    if body.is_some() {
        headers.push(("content-type".into(), b"application/json".to_vec()));
    }
    Fuzzed {
        method: method.into(),
        target: target.into(),
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    }
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("FUZZ_SEED must be a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Runs `test` on `cases` values of `strategy` from a printed seed; on failure panics
/// with proptest's minimal failing input. Nothing is written to disk.
fn check<S: Strategy>(
    property: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let seed = seed();
    println!("fuzz: {property}: seed {seed} (FUZZ_SEED={seed} replays it)");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    // `FUZZ_CASES=N` fuzzes longer than the test suite does.
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let started = std::time::Instant::now();
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{property} (seed {seed}):\n{failure}");
    }
    println!(
        "fuzz: {property}: {cases} cases in {:.1?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Strategies: JSON, near-valid bodies, and the parts of a request.

/// Values that sit on the edges of what the validators take.
fn edge_values() -> Vec<Value> {
    let hex64 = "0123456789abcdef".repeat(4);
    vec![
        json!(null),
        json!(true),
        json!(0),
        json!(1),
        json!(1000),
        json!(1001),
        json!(-1),
        json!(3.0),
        json!(-0.0),
        json!(1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("3"),
        json!(""),
        json!(" "),
        json!([]),
        json!({}),
        json!("A"),
        json!("-a"),
        json!("a-"),
        json!("a".repeat(63)),
        json!("a".repeat(64)),
        json!("ünïcödé"),
        json!("a\u{0}b"),
        json!("redis:alpine"),
        json!("Bad Image"),
        json!("UPPER/case"),
        json!(format!("localhost:5000/a/b:1.0@sha256:{hex64}")),
        json!("[::1]:5000/app"),
        json!("[::1/app"),
        json!("[]:5000/app"),
        json!("a:"),
        json!(":a"),
        json!("@sha256:"),
        json!("a@"),
        json!("a/"),
        json!("/"),
        json!("a".repeat(600)),
        json!(format!("x:{}", "a".repeat(200))),
        json!(format!("{}/x", "a.".repeat(130))),
        json!("é/x:y"),
        json!([""]),
        json!(["a\u{0}"]),
        json!(vec!["x"; 257]),
        json!(["a".repeat(70_000)]),
        json!([1]),
        json!(["sleep", "60"]),
        json!(["", "x"]),
        json!({"1A": "x"}),
        json!({"A": 1}),
        json!({"A": "\u{0}"}),
        json!({"": "x"}),
        json!({"Ä": "x"}),
        json!({"A": "x".repeat(40_000)}),
        Value::Object((0..257).map(|i| (format!("V{i}"), json!("x"))).collect()),
        json!({"zone": "a", "": ""}),
        json!("running"),
        json!("pending"),
        json!("lost"),
        json!("sim"),
        json!("w1"),
        json!("fuzz-a"),
        json!("💥"),
    ]
}

/// Object keys: the fields the API knows, near misses, and anything.
fn key() -> BoxedStrategy<String> {
    prop_oneof![
        2 => select(vec![
            "service", "image", "replicas", "command", "env", "name", "address", "labels",
            "capacity", "driver", "tasks", "id", "state", "container_id", "exit_code", "error",
            "message", "replica", "Service", "images", "",
        ])
        .prop_map(String::from),
        1 => any::<String>(),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        select(edge_values()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A value for a field: usually an edge, sometimes anything.
fn field_value() -> BoxedStrategy<Value> {
    prop_oneof![3 => select(edge_values()), 2 => json_value()].boxed()
}

#[derive(Clone, Debug)]
enum Mutation {
    None,
    Set(&'static str, Value),
    Remove(&'static str),
    Add(String, Value),
}

/// One change to a valid body: a field set to something else, removed, or one added.
fn mutation(fields: &'static [&'static str]) -> BoxedStrategy<Mutation> {
    prop_oneof![
        1 => Just(Mutation::None),
        5 => (select(fields), field_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        1 => select(fields).prop_map(Mutation::Remove),
        1 => (key(), field_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
    .boxed()
}

fn mutate(mut body: Value, mutation: Mutation) -> Value {
    let object = body.as_object_mut().expect("an object");
    match mutation {
        Mutation::None => {}
        Mutation::Set(field, value) => {
            object.insert(field.into(), value);
        }
        Mutation::Remove(field) => {
            object.remove(field);
        }
        Mutation::Add(field, value) => {
            object.insert(field, value);
        }
    }
    body
}

const SPEC_FIELDS: &[&str] = &["service", "image", "replicas", "command", "env"];
const PATCH_FIELDS: &[&str] = &["image", "replicas", "command", "env"];
const REGISTRATION_FIELDS: &[&str] = &["name", "address", "labels", "capacity", "driver"];
const REPORT_FIELDS: &[&str] = &[
    "id",
    "state",
    "container_id",
    "exit_code",
    "error",
    "message",
];

/// A valid `POST /api/v1/service` body with at most one field spoiled.
fn near_spec() -> BoxedStrategy<Value> {
    (
        select(SERVICES.to_vec()),
        select(vec!["redis:alpine", "img:v1", "localhost:5000/a/b:2", "x"]),
        0u32..5,
        option::of(Just(json!(["sleep", "60"]))),
        option::of(Just(json!({"MODE": "fuzz"}))),
        mutation(SPEC_FIELDS),
    )
        .prop_map(|(name, image, replicas, command, env, change)| {
            let mut body = json!({"service": name, "image": image, "replicas": replicas});
            if let Some(command) = command {
                body["command"] = command;
            }
            if let Some(env) = env {
                body["env"] = env;
            }
            mutate(body, change)
        })
        .boxed()
}

/// A valid `PATCH /api/v1/service/<name>` body with at most one field spoiled.
fn near_patch() -> BoxedStrategy<Value> {
    (
        option::of(select(vec!["redis:7", "img:v2"])),
        option::of(0u32..5),
        mutation(PATCH_FIELDS),
    )
        .prop_map(|(image, replicas, change)| {
            let mut body = json!({});
            if let Some(image) = image {
                body["image"] = json!(image);
            }
            if let Some(replicas) = replicas {
                body["replicas"] = json!(replicas);
            }
            mutate(body, change)
        })
        .boxed()
}

/// A valid agent registration with at most one field spoiled.
fn near_registration() -> BoxedStrategy<Value> {
    (select(WORKERS.to_vec()), mutation(REGISTRATION_FIELDS))
        .prop_map(|(name, change)| {
            let body = json!({
                "name": name, "address": "127.0.0.1:7001", "labels": {"zone": "a"},
                "capacity": 4, "driver": "sim",
            });
            mutate(body, change)
        })
        .boxed()
}

/// An agent's status report. `@task:N` stands for the id of the Nth task at the time it is
/// sent (the agent property fills it in), so reports can hit real tasks.
fn near_report() -> BoxedStrategy<Value> {
    let one = (
        0usize..8,
        select(vec![
            "running", "starting", "complete", "failed", "shutdown", "pending", "lost",
        ]),
        mutation(REPORT_FIELDS),
    )
        .prop_map(|(task, state, change)| {
            let report = json!({
                "id": format!("@task:{task}"), "state": state, "container_id": "c-1",
                "exit_code": 0, "error": null, "message": "fuzzed",
            });
            mutate(report, change)
        });
    (vec(one, 0..4), option::of(field_value()))
        .prop_map(|(tasks, instead)| json!({"tasks": instead.unwrap_or(json!(tasks))}))
        .boxed()
}

/// Any request body: bytes, JSON, near-valid documents, broken JSON, too large, too deep.
fn body() -> BoxedStrategy<Vec<u8>> {
    let near = prop_oneof![
        near_spec(),
        near_patch(),
        near_registration(),
        near_report()
    ];
    prop_oneof![
        2 => Just(Vec::new()),
        3 => vec(any::<u8>(), 0..256),
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        6 => near.clone().prop_map(|v| v.to_string().into_bytes()),
        // Valid JSON cut short, or with one byte changed.
        2 => (near, any::<prop::sample::Index>(), any::<u8>(), any::<bool>()).prop_map(
            |(v, at, byte, cut)| {
                let mut bytes = v.to_string().into_bytes();
                let i = at.index(bytes.len());
                if cut { bytes.truncate(i) } else { bytes[i] = byte }
                bytes
            }
        ),
        1 => Just(vec![b' '; MAX_BODY_BYTES + 1]),
        1 => (1usize..3000).prop_map(|depth| {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }),
    ]
    .boxed()
}

/// Percent-encodes everything but the unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One path segment: a plausible name, a trap, anything (encoded), or very long.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9-]{1,12}",
        1 => select(SERVICES.to_vec()).prop_map(String::from),
        1 => select(WORKERS.to_vec()).prop_map(String::from),
        3 => select(vec![
            "", ".", "..", "%", "%zz", "%FF", "%00", "%2F", "a%2Fb", "%2e%2e", "%C3%28",
            "%E2%82", "~", "@:!$&'()*+,;=", "Fuzz-A", "a_b", "%F0%9F%92%A5", "%20",
        ])
        .prop_map(String::from),
        2 => any::<String>().prop_map(|s| encode(&s)),
        1 => (1usize..20_000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

fn path() -> BoxedStrategy<String> {
    let fixed = select(vec![
        "/healthz",
        "/api/v1/openapi.json",
        "/api/v1/stats",
        "/api/v1/state",
        "/api/v1/service",
        "/api/v1/services",
        "/api/v1/tasks",
        "/api/v1/workers",
        "/",
        "/api",
        "/api/v1",
        "/api/v2/stats",
        "/API/V1/STATS",
    ])
    .prop_map(String::from);
    let actions = prop_oneof![
        select(vec!["heartbeat", "tasks", "status", "down"]).prop_map(String::from),
        segment(),
    ];
    let real = prop_oneof![
        3 => fixed,
        3 => segment().prop_map(|s| format!("/api/v1/service/{s}")),
        2 => segment().prop_map(|s| format!("/api/v1/workers/{s}")),
        3 => (segment(), actions).prop_map(|(s, a)| format!("/api/v1/workers/{s}/{a}")),
        1 => vec(segment(), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ];
    (
        real,
        select(vec![
            "",
            "",
            "",
            "",
            "/",
            "//",
            "/..",
            "/./x",
            "/%2e%2e/stats",
        ]),
        select(vec![
            "",
            "",
            "",
            "",
            "",
            "http://example.com",
            "http://[::1]:5000",
        ]),
    )
        .prop_map(|(path, suffix, origin)| format!("{origin}{path}{suffix}"))
        .boxed()
}

fn query() -> BoxedStrategy<Option<String>> {
    let key = prop_oneof![
        4 => select(vec!["wait", "index", "service", "worker", "silent_for"]).prop_map(String::from),
        1 => "[a-z_]{1,8}",
        1 => any::<String>(),
    ];
    let value = prop_oneof![
        4 => select(vec![
            "0", "5s", "500ms", "2m", "1h", "-1", "1.5s", "", "s", "ms", "0ms",
            "18446744073709551615", "18446744073709551616", "18446744073709551615m",
            "18446744073709551615ms", "99999999999999999999ms", "fuzz-a", "w1", "💥",
        ])
        .prop_map(String::from),
        2 => "[0-9]{1,25}(s|ms|m|h)?",
        1 => any::<String>(),
    ];
    prop_oneof![
        3 => Just(None),
        4 => vec((key, value), 1..4).prop_map(|pairs| {
            let pairs: Vec<String> =
                pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            Some(pairs.join("&"))
        }),
        1 => select(vec![
            "", "&&", "=", "a=b=c", "wait", "wait=", "=5s", "wait=5s&wait=0", "%", "%zz=1",
            "wait=%FF", "index=1&index=2", "+=+", "wait=1%20s", "wait=0#frag",
        ])
        .prop_map(|q| Some(q.to_string())),
    ]
    .boxed()
}

/// Bytes a header value may hold (no controls but tab, no DEL).
fn header_bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..64)
        .prop_map(|bytes| {
            bytes
                .into_iter()
                .map(|b| {
                    if (b < 32 && b != b'\t') || b == 127 {
                        b'x'
                    } else {
                        b
                    }
                })
                .collect()
        })
        .boxed()
}

fn authorization() -> BoxedStrategy<Option<Vec<u8>>> {
    let text = |s: String| Some(s.into_bytes());
    prop_oneof![
        16 => Just(text(format!("Bearer {API_TOKEN}"))),
        1 => Just(None),
        1 => Just(text(format!("bearer {API_TOKEN}"))),
        1 => Just(text(format!("Bearer \t {API_TOKEN}  "))),
        2 => Just(text(format!("Bearer {JOIN_TOKEN}"))),
        1 => Just(text("Bearer wrong-token-0123456789abcdef".into())),
        1 => Just(text(format!("Bearer {}", &API_TOKEN[..API_TOKEN.len() - 1]))),
        1 => Just(text(format!("Basic {API_TOKEN}"))),
        1 => Just(text("Bearer ".into())),
        1 => Just(text("Bearer".into())),
        1 => header_bytes().prop_map(Some),
    ]
    .boxed()
}

fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        6 => Just(Some(b"application/json".to_vec())),
        1 => Just(None),
        3 => select(vec![
            "application/json; charset=utf-8", "application/merge-patch+json", "APPLICATION/JSON",
            "text/plain", "application/", "+json", "application/json;", ";", "",
            "application/jsonx", "multipart/form-data; boundary=x",
        ])
        .prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => header_bytes().prop_map(Some),
    ]
    .boxed()
}

/// Headers beyond the two that matter: a lying Content-Length, a second Authorization,
/// a huge one.
fn extra_headers() -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let one = prop_oneof![
        select(vec![
            "0",
            "5",
            "1048577",
            "99999999999999999999",
            "abc",
            "-1",
            ""
        ])
        .prop_map(|v| ("content-length".to_string(), v.as_bytes().to_vec())),
        header_bytes().prop_map(|v| ("authorization".to_string(), v)),
        (1usize..20_000).prop_map(|n| ("x-fuzz".to_string(), vec![b'a'; n])),
        header_bytes().prop_map(|v| ("accept".to_string(), v)),
    ];
    prop_oneof![4 => Just(Vec::new()), 1 => vec(one, 1..3)].boxed()
}

fn method() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(vec!["GET", "POST", "PATCH", "DELETE"]),
        2 => select(vec![
            "PUT", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "PROPFIND", "FOO-BAR", "X",
        ]),
    ]
    .prop_map(String::from)
    .boxed()
}

/// A real endpoint with its own method, so half the requests get past routing.
fn route() -> BoxedStrategy<(String, String)> {
    let name = || {
        prop_oneof![
            3 => select(SERVICES.to_vec()).prop_map(String::from),
            2 => select(WORKERS.to_vec()).prop_map(String::from),
            1 => segment(),
        ]
    };
    let fixed = select(vec![
        ("GET", "/healthz"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/state"),
        ("GET", "/api/v1/services"),
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/workers"),
        ("POST", "/api/v1/workers"),
        ("POST", "/api/v1/service"),
        ("POST", "/api/v1/service"),
        ("POST", "/api/v1/service"),
    ])
    .prop_map(|(m, p)| (m.to_string(), p.to_string()));
    let named = (
        select(vec![
            ("GET", "/api/v1/service/"),
            ("PATCH", "/api/v1/service/"),
            ("DELETE", "/api/v1/service/"),
            ("GET", "/api/v1/workers/"),
        ]),
        name(),
    )
        .prop_map(|((m, p), n)| (m.to_string(), format!("{p}{n}")));
    let action = (
        select(vec![
            ("POST", "heartbeat"),
            ("GET", "tasks"),
            ("POST", "status"),
            ("POST", "down"),
        ]),
        name(),
    )
        .prop_map(|((m, a), n)| (m.to_string(), format!("/api/v1/workers/{n}/{a}")));
    prop_oneof![2 => fixed, 2 => named, 1 => action].boxed()
}

/// Any request, with the URI the http crate must be able to parse (as a server's would).
fn any_request() -> impl Strategy<Value = Fuzzed> {
    (
        prop_oneof![(method(), path()), route()],
        query(),
        authorization(),
        content_type(),
        extra_headers(),
        body(),
    )
        .prop_map(|((method, path), query, auth, content_type, extra, body)| {
            let target = match query {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            let mut headers = Vec::new();
            if let Some(auth) = auth {
                headers.push(("authorization".to_string(), auth));
            }
            if let Some(content_type) = content_type {
                headers.push(("content-type".to_string(), content_type));
            }
            headers.extend(extra);
            Fuzzed {
                method,
                target,
                headers,
                body,
            }
        })
        .prop_filter("a URI the http crate parses", |r| {
            r.target.parse::<Uri>().is_ok()
        })
}

// ---------------------------------------------------------------------------------------
// Properties through the router.

#[test]
fn any_request_gets_a_json_answer_and_a_refused_one_changes_nothing() {
    let fixture = Fixture::new();
    fixture.populate();
    check("any request", HTTP_CASES, any_request(), |request| {
        fixture.runtime.block_on(fixture.send(&request)).map(|_| ())
    });
    fixture.check_consistent();
}

#[derive(Clone, Debug)]
enum ServiceOp {
    Post { wait: bool, body: Json },
    Patch { name: &'static str, body: Json },
    Delete { name: &'static str },
    Get { name: &'static str },
}

fn service_op() -> impl Strategy<Value = ServiceOp> {
    let name = || select(SERVICES.to_vec());
    prop_oneof![
        5 => (any::<bool>(), prop_oneof![4 => near_spec(), 1 => json_value()])
            .prop_map(|(wait, body)| ServiceOp::Post { wait, body: Json(body) }),
        4 => (name(), prop_oneof![4 => near_patch(), 1 => json_value()])
            .prop_map(|(name, body)| ServiceOp::Patch { name, body: Json(body) }),
        1 => name().prop_map(|name| ServiceOp::Delete { name }),
        1 => name().prop_map(|name| ServiceOp::Get { name }),
    ]
}

/// Checks one service request against the pure validators and the state before it:
/// the API accepts exactly what they accept, says what they say, and stores what it was
/// sent. Returns whether it counts as a create or update.
async fn service_op_agrees(fixture: &Fixture, op: &ServiceOp) -> Result<bool, TestCaseError> {
    let limits = Limits::default();
    // The validators judge the body as the server reads it: serde_json parses some floats
    // one ulp off what it printed, and the refusal quotes the number it read.
    let as_read = |body: &Json| -> Value {
        serde_json::from_slice(body.0.to_string().as_bytes()).expect("JSON it printed")
    };
    let existing = |name: &str| {
        fixture
            .cluster
            .snapshot()
            .state
            .services
            .get(name)
            .map(|s| s.spec.clone())
    };
    let refused_as = |answer: &Answer, why: String| -> Result<bool, TestCaseError> {
        prop_assert_eq!(answer.status, 400, "{}", answer.body);
        prop_assert_eq!(answer.body["message"].as_str(), Some(why.as_str()));
        Ok(false)
    };
    match op {
        ServiceOp::Post { wait, body } => {
            let target = if *wait {
                "/api/v1/service?wait=0"
            } else {
                "/api/v1/service"
            };
            let answer = fixture
                .send(&operator("POST", target, Some(&body.0)))
                .await?;
            match ServiceSpec::from_json(&as_read(body), &limits) {
                Err(e) => refused_as(&answer, e.to_string()),
                Ok(spec) => {
                    prop_assert_eq!(answer.status, 201, "{}", answer.body);
                    prop_assert_eq!(fixture.service(&spec.name).await?, Some(spec));
                    Ok(true)
                }
            }
        }
        ServiceOp::Patch { name, body } => {
            let before = existing(name);
            let target = format!("/api/v1/service/{name}");
            let answer = fixture
                .send(&operator("PATCH", &target, Some(&body.0)))
                .await?;
            match (ServicePatch::from_json(&as_read(body), &limits), before) {
                (Err(e), _) => refused_as(&answer, e.to_string()),
                (Ok(_), None) => {
                    prop_assert_eq!(answer.status, 404, "{}", answer.body);
                    Ok(false)
                }
                (Ok(patch), Some(before)) => {
                    prop_assert_eq!(answer.status, 200, "{}", answer.body);
                    let after = patch.apply(&before);
                    prop_assert_eq!(doc_spec(&answer.body)?, after.clone());
                    prop_assert_eq!(fixture.service(name).await?, Some(after));
                    Ok(true)
                }
            }
        }
        ServiceOp::Delete { name } => {
            let before = existing(name);
            let target = format!("/api/v1/service/{name}");
            let answer = fixture.send(&operator("DELETE", &target, None)).await?;
            match before {
                None => prop_assert_eq!(answer.status, 404, "{}", answer.body),
                Some(before) => {
                    prop_assert_eq!(answer.status, 200, "{}", answer.body);
                    prop_assert_eq!(doc_spec(&answer.body)?, before);
                }
            }
            prop_assert_eq!(fixture.service(name).await?, None);
            Ok(false)
        }
        ServiceOp::Get { name } => {
            let before = existing(name);
            prop_assert_eq!(fixture.service(name).await?, before);
            Ok(false)
        }
    }
}

#[test]
fn service_writes_do_what_the_validators_say_and_read_back() {
    let fixture = Fixture::new();
    let counted = AtomicU64::new(0);
    check("service writes", HTTP_CASES, service_op(), |op| {
        let counts = fixture.runtime.block_on(service_op_agrees(&fixture, &op))?;
        counted.fetch_add(u64::from(counts), Ordering::Relaxed);
        Ok(())
    });
    fixture.check_consistent();
    assert_eq!(
        fixture.cluster.snapshot().state.counters.total_requests,
        counted.load(Ordering::Relaxed),
        "every accepted create and update is counted, and nothing else"
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Operator,
    Agent,
}

#[derive(Clone, Debug)]
enum AgentOp {
    Register(Role, Json),
    Heartbeat(Role, Short),
    Tasks(Role, Short, Option<String>),
    Report(Role, Short, Json),
    Down(Role, Short, Option<String>),
    GetWorker(Role, Short),
    /// So that there are tasks to place, long-poll for and report on.
    CreateService(Json),
}

fn agent_op() -> impl Strategy<Value = AgentOp> {
    let role = || prop_oneof![Just(Role::Operator), Just(Role::Agent)];
    let worker = || {
        prop_oneof![4 => select(WORKERS.to_vec()).prop_map(String::from), 1 => segment()]
            .prop_map(Short)
    };
    let tasks_query = prop_oneof![
        Just(None),
        (
            option::of(select(vec![
                "0",
                "1",
                "5",
                "1000000",
                "18446744073709551615",
                "-1",
                "x"
            ])),
            option::of(select(vec![
                "0",
                "10ms",
                "1s",
                "18446744073709551615m",
                "bad"
            ])),
        )
            .prop_map(|(index, wait)| {
                let mut pairs = Vec::new();
                if let Some(index) = index {
                    pairs.push(format!("index={index}"));
                }
                if let Some(wait) = wait {
                    pairs.push(format!("wait={wait}"));
                }
                Some(pairs.join("&"))
            }),
    ];
    let down_query = option::of(
        select(vec![
            "silent_for=0",
            "silent_for=1h",
            "silent_for=x",
            "silent_for=18446744073709551615s",
            "other=1",
        ])
        .prop_map(String::from),
    );
    prop_oneof![
        3 => (role(), prop_oneof![4 => near_registration(), 1 => json_value()])
            .prop_map(|(r, b)| AgentOp::Register(r, Json(b))),
        2 => (role(), worker()).prop_map(|(r, w)| AgentOp::Heartbeat(r, w)),
        2 => (role(), worker(), tasks_query).prop_map(|(r, w, q)| AgentOp::Tasks(r, w, q)),
        4 => (role(), worker(), prop_oneof![4 => near_report(), 1 => json_value()])
            .prop_map(|(r, w, b)| AgentOp::Report(r, w, Json(b))),
        1 => (role(), worker(), down_query).prop_map(|(r, w, q)| AgentOp::Down(r, w, q)),
        1 => (role(), worker()).prop_map(|(r, w)| AgentOp::GetWorker(r, w)),
        2 => near_spec().prop_map(|b| AgentOp::CreateService(Json(b))),
    ]
}

/// Puts real task ids where a report says `@task:N`.
fn fill_in_tasks(value: &mut Value, ids: &[String]) {
    match value {
        Value::String(s) => {
            if let Some(n) = s
                .strip_prefix("@task:")
                .and_then(|n| n.parse::<usize>().ok())
            {
                if !ids.is_empty() {
                    *s = ids[n % ids.len()].clone();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_in_tasks(v, ids)),
        Value::Object(fields) => fields.values_mut().for_each(|v| fill_in_tasks(v, ids)),
        _ => {}
    }
}

async fn agent_op_behaves(fixture: &Fixture, op: &AgentOp) -> Result<(), TestCaseError> {
    let token = |role: &Role| match role {
        Role::Operator => API_TOKEN,
        Role::Agent => JOIN_TOKEN,
    };
    let with_query = |path: String, query: &Option<String>| match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let (request, operators_only) = match op {
        AgentOp::Register(role, body) => (
            with_token(token(role), "POST", "/api/v1/workers", Some(&body.0)),
            false,
        ),
        AgentOp::Heartbeat(role, worker) => (
            with_token(
                token(role),
                "POST",
                &format!("/api/v1/workers/{worker}/heartbeat"),
                None,
            ),
            false,
        ),
        AgentOp::Tasks(role, worker, query) => (
            with_token(
                token(role),
                "GET",
                &with_query(format!("/api/v1/workers/{worker}/tasks"), query),
                None,
            ),
            false,
        ),
        AgentOp::Report(role, worker, body) => {
            let ids: Vec<String> = fixture
                .cluster
                .snapshot()
                .state
                .tasks
                .keys()
                .cloned()
                .collect();
            let mut body = body.0.clone();
            fill_in_tasks(&mut body, &ids);
            let target = format!("/api/v1/workers/{worker}/status");
            (with_token(token(role), "POST", &target, Some(&body)), false)
        }
        AgentOp::Down(role, worker, query) => (
            with_token(
                token(role),
                "POST",
                &with_query(format!("/api/v1/workers/{worker}/down"), query),
                None,
            ),
            true,
        ),
        AgentOp::GetWorker(role, worker) => (
            with_token(
                token(role),
                "GET",
                &format!("/api/v1/workers/{worker}"),
                None,
            ),
            true,
        ),
        AgentOp::CreateService(body) => (
            operator("POST", "/api/v1/service?wait=0", Some(&body.0)),
            false,
        ),
    };
    if request.target.parse::<Uri>().is_err() {
        return Ok(());
    }
    let answer = fixture.send(&request).await?;
    let joined = request.headers[0].1 == format!("Bearer {JOIN_TOKEN}").into_bytes();
    // Only the header-size check comes before the token's.
    if operators_only && joined && answer.status != 431 {
        prop_assert_eq!(answer.status, 403, "{}", answer.body);
    }
    if let (AgentOp::Register(..), 201) = (op, answer.status) {
        let name = answer.body["worker"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let known = fixture.cluster.snapshot().state.workers.contains_key(&name);
        prop_assert!(known, "registered {} but it is not known", answer.body);
    }
    Ok(())
}

#[test]
fn agent_requests_never_break_the_manager() {
    let fixture = Fixture::new();
    check("agent requests", HTTP_CASES, agent_op(), |op| {
        fixture.runtime.block_on(agent_op_behaves(&fixture, &op))
    });
    fixture.check_consistent();
}

// ---------------------------------------------------------------------------------------
// Properties of the pure validators.

/// What `GET /api/v1/service/<name>` would show for `spec`, as a body to POST again.
fn as_posted(spec: &ServiceSpec) -> Value {
    let service = Service::updated(None, spec.clone(), 1_000);
    let mut doc = serde_json::to_value(ServiceDoc::new(&service)).unwrap();
    doc.as_object_mut().unwrap().remove("last_updated");
    doc
}

#[test]
fn an_accepted_spec_round_trips() {
    let body = prop_oneof![3 => near_spec(), 1 => json_value()];
    check(
        "ServiceSpec::from_json",
        PURE_CASES,
        (body, 0u32..2000),
        |(body, max_replicas)| {
            let limits = Limits {
                max_replicas,
                ..Limits::default()
            };
            let Ok(spec) = ServiceSpec::from_json(&body, &limits) else {
                return Ok(());
            };
            prop_assert!(validate_service_name(&spec.name).is_ok());
            if let Some(image) = &spec.image {
                prop_assert!(validate_image(image).is_ok());
            }
            prop_assert!(spec.replicas <= max_replicas);
            // What the API shows of it can be posted back, and means the same.
            let shown = as_posted(&spec);
            prop_assert_eq!(
                ServiceSpec::from_json(&shown, &limits),
                Ok(spec.clone()),
                "{}",
                shown
            );
            // And it survives the store's encoding.
            let stored = serde_json::to_string(&spec).unwrap();
            prop_assert_eq!(serde_json::from_str::<ServiceSpec>(&stored).unwrap(), spec);
            Ok(())
        },
    );
}

#[test]
fn an_accepted_patch_keeps_a_spec_valid() {
    let body = prop_oneof![3 => near_patch(), 1 => json_value()];
    check(
        "ServicePatch::from_json",
        PURE_CASES,
        (body, near_spec()),
        |(body, base)| {
            let limits = Limits::default();
            let (Ok(patch), Ok(spec)) = (
                ServicePatch::from_json(&body, &limits),
                ServiceSpec::from_json(&base, &limits),
            ) else {
                return Ok(());
            };
            prop_assert_ne!(patch.clone(), ServicePatch::default());
            let after = patch.apply(&spec);
            prop_assert_eq!(&after.name, &spec.name);
            let shown = as_posted(&after);
            prop_assert_eq!(
                ServiceSpec::from_json(&shown, &limits),
                Ok(after),
                "{}",
                shown
            );
            Ok(())
        },
    );
}

/// Image references built from Docker's grammar (see crates/core/src/image.rs).
fn grammatical_image() -> impl Strategy<Value = String> {
    let alnum = || "[a-z0-9]{1,4}";
    let separated = |separators: Vec<&'static str>| {
        (alnum(), vec((select(separators), alnum()), 0..3))
            .prop_map(|(first, rest)| rest.into_iter().fold(first, |s, (sep, a)| s + sep + &a))
    };
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,4}[a-zA-Z0-9])?";
    let domain = prop_oneof![
        Just("localhost".to_string()),
        (label, vec(label, 1..3)).prop_map(|(first, rest)| format!("{first}.{}", rest.join("."))),
        // An IPv6 host holds a ':', which is how it is told from a path component.
        "\\[[0-9a-f]{0,4}:[0-9a-f:]{0,8}\\]",
    ];
    (
        option::of((domain, option::of("[0-9]{1,5}"))),
        // Without a host, a first component with '.' would read as one.
        separated(vec!["_", "__", "-", "--"]),
        vec(separated(vec![".", "_", "__", "-", "---"]), 0..3),
        option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        option::of("[0-9a-fA-F]{32,70}"),
    )
        .prop_map(|(domain, first, rest, tag, digest)| {
            let mut name = match domain {
                Some((host, Some(port))) => format!("{host}:{port}/"),
                Some((host, None)) => format!("{host}/"),
                None => String::new(),
            };
            name.push_str(&first);
            for component in rest {
                name = format!("{name}/{component}");
            }
            if let Some(tag) = tag {
                name = format!("{name}:{tag}");
            }
            if let Some(digest) = digest {
                name = format!("{name}@sha256:{digest}");
            }
            name
        })
}

#[test]
fn image_references_never_panic_and_the_grammar_is_accepted() {
    let arbitrary = prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9:/@._\\[\\]+-]{0,40}",
        grammatical_image().prop_map(|s| format!("{s}:")),
        (
            grammatical_image(),
            any::<prop::sample::Index>(),
            any::<char>()
        )
            .prop_map(|(s, at, c)| {
                let mut chars: Vec<char> = s.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                chars.into_iter().collect()
            }),
    ];
    check(
        "validate_image",
        PURE_CASES,
        (grammatical_image(), arbitrary),
        |(good, anything)| {
            prop_assert_eq!(validate_image(&good), Ok(()), "{:?}", good);
            if validate_image(&anything).is_ok() {
                prop_assert!(!anything.is_empty() && anything.len() <= 512);
                prop_assert!(
                    !anything
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control()),
                    "{:?}",
                    anything
                );
                let name = anything.split('@').next().unwrap();
                prop_assert!(!name.split('/').any(str::is_empty), "{:?}", anything);
            }
            Ok(())
        },
    );
}

#[test]
fn names_are_dns_labels_and_worker_names() {
    let names = prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        "[a-zA-Z0-9_.-]{0,130}",
        any::<String>(),
    ];
    check("name validation", PURE_CASES, names, |name| {
        let label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        prop_assert_eq!(validate_service_name(&name).is_ok(), label, "{:?}", name);
        let worker = (1..=128).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        prop_assert_eq!(validate_worker_name(&name).is_ok(), worker, "{:?}", name);
        // A refusal names the name, whatever it holds.
        if let Err(e) = validate_service_name(&name) {
            prop_assert!(e.to_string().contains("invalid service name"));
        }
        Ok(())
    });
}

/// The bodies above reach the limits they are meant to: a sanity check of the
/// generators, so a property cannot pass by never getting near the edges.
#[test]
fn the_generators_reach_accepted_and_refused_specs() {
    let mut runner = TestRunner::deterministic();
    let strategy = near_spec();
    let (mut accepted, mut refused) = (0, 0);
    let mut env_refusals: BTreeMap<bool, usize> = BTreeMap::new();
    for _ in 0..500 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        match ServiceSpec::from_json(&body, &Limits::default()) {
            Ok(_) => accepted += 1,
            Err(e) => {
                refused += 1;
                *env_refusals
                    .entry(e.to_string().contains("'env'"))
                    .or_default() += 1;
            }
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
    assert!(
        env_refusals.get(&true).copied().unwrap_or(0) > 5,
        "{env_refusals:?}"
    );
}
