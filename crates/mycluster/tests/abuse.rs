//! Durability under abuse: 10,000 mixed create/update/delete requests (some of them
//! invalid) from 50 concurrent clients, then a further burst cut short by `kill -9` of the
//! manager. After a restart on the same data dir, every acknowledged write is there and
//! nothing unacknowledged is half-there.
//!
//! Each client owns a few service names, so the history of every name is sequential and
//! the test knows exactly what it must hold. Every write makes its image, replicas and
//! env all say the same write number, so a service that mixed two writes shows it.
//! The operations come from a seeded RNG: the seed is printed, and `ABUSE_SEED=N` replays
//! the same requests (the moment of the kill is not replayed: it is a race on purpose).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, Manager, DEADLINE, TEST_TOKEN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: usize = 50;
/// 10,000 requests in all, every one answered.
const REQUESTS_PER_CLIENT: usize = 200;
const NAMES_PER_CLIENT: usize = 4;
/// The burst after them is killed once this many of its requests are answered, so that
/// most clients have one in flight when the manager dies.
const BURST_KILL_AFTER: usize = 2_000;
/// A bound on the burst, so a kill that never comes fails the test instead of hanging it.
const BURST_MAX_PER_CLIENT: usize = 1_000;
/// The manager's default limit; one more is refused.
const MAX_REPLICAS: u32 = 1000;

/// What a service name holds, as far as this test can see through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    image: String,
    replicas: u32,
    env: BTreeMap<String, String>,
}

impl Spec {
    /// Write number `k` in full: every field says `k`.
    fn write(k: u64) -> Spec {
        Spec {
            image: image(k),
            replicas: replicas(k),
            env: env(k),
        }
    }

    /// Reads a service document, checking the fields this test never sets stay unset.
    fn from_doc(doc: &Value) -> Spec {
        assert!(
            doc.get("command").is_none_or(Value::is_null),
            "a command appeared: {doc}"
        );
        let env = match doc.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(env) => serde_json::from_value(env.clone())
                .unwrap_or_else(|e| panic!("env is not a map of strings ({e}): {doc}")),
        };
        Spec {
            image: doc["image"]
                .as_str()
                .unwrap_or_else(|| panic!("no image: {doc}"))
                .to_string(),
            replicas: doc["replicas"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or_else(|| panic!("no replicas: {doc}")),
            env,
        }
    }

    fn body(&self, name: &str) -> Value {
        json!({"service": name, "image": self.image, "replicas": self.replicas, "env": self.env})
    }
}

fn image(k: u64) -> String {
    format!("img:v{k}")
}

fn replicas(k: u64) -> u32 {
    (k % 7) as u32
}

fn env(k: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("WRITE".to_string(), k.to_string())])
}

/// What a request does to its name when it is applied.
#[derive(Clone, Debug)]
enum Effect {
    /// `POST /api/v1/service`: create, or replace whole.
    Put(Spec),
    /// `PATCH /api/v1/service/<name>`: only the fields given change.
    Patch {
        image: Option<String>,
        replicas: Option<u32>,
        env: Option<BTreeMap<String, String>>,
    },
    Delete,
    /// Refused with a 4xx whatever the name holds; changes nothing.
    Refused(&'static str),
}

#[derive(Clone, Debug)]
struct Op {
    /// Which of the client's names.
    slot: usize,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    token: &'static str,
    effect: Effect,
}

impl Effect {
    /// What the name holds once this is applied to `before`.
    fn after(&self, before: &Option<Spec>) -> Option<Spec> {
        match self {
            Effect::Put(spec) => Some(spec.clone()),
            Effect::Patch {
                image,
                replicas,
                env,
            } => before.as_ref().map(|old| Spec {
                image: image.clone().unwrap_or_else(|| old.image.clone()),
                replicas: replicas.unwrap_or(old.replicas),
                env: env.clone().unwrap_or_else(|| old.env.clone()),
            }),
            Effect::Delete => None,
            Effect::Refused(_) => before.clone(),
        }
    }

    /// Whether applying it to `before` bumps the manager's request counter (creates and
    /// updates count, deletes and refusals do not).
    fn counted(&self, before: &Option<Spec>) -> bool {
        match self {
            Effect::Put(_) => true,
            Effect::Patch { .. } => before.is_some(),
            Effect::Delete | Effect::Refused(_) => false,
        }
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    put: usize,
    patched: usize,
    deleted: usize,
    not_found: usize,
    refused: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.put += other.put;
        self.patched += other.patched;
        self.deleted += other.deleted;
        self.not_found += other.not_found;
        self.refused += other.refused;
    }

    fn total(&self) -> usize {
        self.put + self.patched + self.deleted + self.not_found + self.refused
    }
}

struct Client {
    id: usize,
    names: Vec<String>,
    /// What each name holds after the last acknowledged request on it.
    acked: Vec<Option<Spec>>,
    /// The request left unanswered when the manager died (the state before it is in
    /// `acked`): it may have been applied or not, but only whole.
    in_flight: Option<Op>,
    /// Acknowledged creates and updates, which the request counter must show.
    counted: u64,
    tally: Tally,
    writes: u64,
    rng: StdRng,
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(id: usize, seed: u64, url: &str) -> Client {
        Client {
            id,
            names: (0..NAMES_PER_CLIENT)
                .map(|j| format!("abuse-c{id}-n{j}"))
                .collect(),
            acked: vec![None; NAMES_PER_CLIENT],
            in_flight: None,
            counted: 0,
            tally: Tally::default(),
            writes: 0,
            rng: StdRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            // Its own client, so its own connections: 50 clients are 50 connections.
            http: mycluster_client::reqwest_builder()
                .timeout(DEADLINE)
                .build()
                .expect("client"),
            url: url.to_string(),
        }
    }

    /// The next request: mostly valid writes, a fifth refused ones. A write that is
    /// accepted always changes what its name holds (a fresh write number, or a different
    /// replica count), so whether an unanswered one was applied can be told afterwards.
    fn next_op(&mut self) -> Op {
        self.writes += 1;
        let k = self.writes;
        let slot = self.rng.random_range(0..NAMES_PER_CLIENT);
        let name = self.names[slot].clone();
        let service_path = format!("/api/v1/service/{name}");
        let json_op = |method, path: String, body: Value, effect| Op {
            slot,
            method,
            path,
            content_type: Some("application/json"),
            body: Some(body.to_string().into_bytes()),
            token: TEST_TOKEN,
            effect,
        };
        let roll = self.rng.random_range(0..100);
        if roll < 30 {
            let spec = Spec::write(k);
            return json_op(
                "POST",
                "/api/v1/service?wait=0".into(),
                spec.body(&name),
                Effect::Put(spec),
            );
        }
        if roll < 65 {
            let current = self.acked[slot].as_ref().map_or(0, |s| s.replicas);
            // Never the count it has, so a replicas-only update is visible.
            let other_replicas = (current + self.rng.random_range(1..7)) % 7;
            let (image, replicas, env) = match self.rng.random_range(0..4) {
                0 => (Some(image(k)), Some(replicas(k)), Some(env(k))),
                1 => (Some(image(k)), None, None),
                2 => (None, Some(other_replicas), None),
                _ => (Some(image(k)), Some(other_replicas), None),
            };
            let mut body = serde_json::Map::new();
            if let Some(image) = &image {
                body.insert("image".into(), json!(image));
            }
            if let Some(replicas) = replicas {
                body.insert("replicas".into(), json!(replicas));
            }
            if let Some(env) = &env {
                body.insert("env".into(), json!(env));
            }
            return json_op(
                "PATCH",
                service_path,
                Value::Object(body),
                Effect::Patch {
                    image,
                    replicas,
                    env,
                },
            );
        }
        if roll < 80 {
            return Op {
                slot,
                method: "DELETE",
                path: service_path,
                content_type: None,
                body: None,
                token: TEST_TOKEN,
                effect: Effect::Delete,
            };
        }
        // Refused requests carry a fresh write number too: if one were applied, even in
        // part, the name would show it.
        let post = "/api/v1/service?wait=0".to_string();
        let spec = Spec::write(k).body(&name);
        let with = |field: &str, value: Value| {
            let mut body = spec.clone();
            body[field] = value;
            body
        };
        match self.rng.random_range(0..12) {
            0 => {
                let text = spec.to_string();
                let mut op = json_op("POST", post, json!(null), Effect::Refused("truncated JSON"));
                op.body = Some(text.as_bytes()[..text.len() - 1].to_vec());
                op
            }
            1 => json_op(
                "POST",
                post,
                with("replicas", json!(MAX_REPLICAS + 1)),
                Effect::Refused("replicas over the limit"),
            ),
            2 => json_op(
                "POST",
                post,
                with("replicas", json!(-1)),
                Effect::Refused("negative replicas"),
            ),
            3 => json_op(
                "POST",
                post,
                with("replicas", json!("3")),
                Effect::Refused("replicas as a string"),
            ),
            4 => json_op(
                "POST",
                post,
                with("replica", json!(2)),
                Effect::Refused("an unknown field"),
            ),
            5 => json_op(
                "POST",
                post,
                with("image", json!(format!("Img:V{k}"))),
                Effect::Refused("an invalid image"),
            ),
            6 => {
                let mut op = json_op("POST", post, spec, Effect::Refused("a text/plain body"));
                op.content_type = Some("text/plain");
                op
            }
            7 => {
                let mut op = json_op("POST", post, spec, Effect::Refused("a wrong token"));
                op.token = "not-the-token-0123456789abcdef";
                op
            }
            8 => json_op(
                "PATCH",
                service_path,
                json!({"replicas": 2, "imag": image(k)}),
                Effect::Refused("a PATCH with an unknown field"),
            ),
            9 => json_op(
                "PATCH",
                service_path,
                json!({}),
                Effect::Refused("an empty PATCH"),
            ),
            10 => json_op(
                "PATCH",
                service_path,
                json!({"image": image(k), "replicas": MAX_REPLICAS + 1}),
                Effect::Refused("a PATCH over the replica limit"),
            ),
            _ => json_op(
                "PATCH",
                service_path,
                json!({"image": image(k), "env": [format!("WRITE={k}")]}),
                Effect::Refused("a PATCH with env as a list"),
            ),
        }
    }

    /// Sends `op`; `Err` if no full answer came back (the manager died).
    async fn send(&self, op: &Op) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let method = reqwest::Method::from_bytes(op.method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{}", self.url, op.path))
            .bearer_auth(op.token);
        if let Some(content_type) = op.content_type {
            request = request.header("Content-Type", content_type);
        }
        if let Some(body) = &op.body {
            request = request.body(body.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok((status, body.to_vec()))
    }

    /// Checks the answer against what the name held, and records the new state.
    fn acknowledged(&mut self, op: &Op, status: u16, body: &[u8]) {
        let before = self.acked[op.slot].clone();
        let name = &self.names[op.slot];
        let doc: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
            panic!(
                "{} {} answered {status} with a body that is not JSON: {}",
                op.method,
                op.path,
                String::from_utf8_lossy(body)
            )
        });
        let context = || format!("{} {} ({:?}) on {before:?}", op.method, op.path, op.effect);
        let after = op.effect.after(&before);
        match (&op.effect, &before) {
            (Effect::Put(_), _) => {
                assert_eq!(status, 201, "{}: {doc}", context());
                self.tally.put += 1;
            }
            (Effect::Patch { .. } | Effect::Delete, None) => {
                assert_eq!(status, 404, "{}: {doc}", context());
                self.tally.not_found += 1;
            }
            (Effect::Patch { .. }, Some(_)) => {
                assert_eq!(status, 200, "{}: {doc}", context());
                assert_eq!(doc["service"], json!(name), "{}", context());
                assert_eq!(Some(Spec::from_doc(&doc)), after, "{}", context());
                self.tally.patched += 1;
            }
            (Effect::Delete, Some(_)) => {
                assert_eq!(status, 200, "{}: {doc}", context());
                // The answer is the service as it was.
                assert_eq!(Some(Spec::from_doc(&doc)), before, "{}", context());
                self.tally.deleted += 1;
            }
            (Effect::Refused(what), _) => {
                assert!(
                    (400..500).contains(&status),
                    "{what} must be refused with a 4xx: {}: {status} {doc}",
                    context()
                );
                assert_error_doc(status, &doc);
                self.tally.refused += 1;
            }
        }
        if op.effect.counted(&before) {
            self.counted += 1;
        }
        self.acked[op.slot] = after;
    }

    /// Sends up to `n` requests. Until the manager may die, every one must be answered;
    /// after, the first unanswered one is kept as in flight and the client stops.
    async fn run(mut self, n: usize, answered: Arc<AtomicUsize>, may_die: bool) -> Client {
        for _ in 0..n {
            let op = self.next_op();
            match self.send(&op).await {
                Ok((status, body)) => {
                    self.acknowledged(&op, status, &body);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    assert!(
                        may_die,
                        "client {}: {} {} got no answer from a live manager: {e:?}",
                        self.id, op.method, op.path
                    );
                    self.in_flight = Some(op);
                    break;
                }
            }
        }
        self
    }
}

/// A refusal is the API's error document: a message, and the status again.
fn assert_error_doc(status: u16, doc: &Value) {
    let object = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"));
    assert_eq!(object.len(), 2, "{doc}");
    assert!(
        doc["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
    assert_eq!(doc["code"], json!(status), "{doc}");
}

async fn run_all(
    clients: Vec<Client>,
    n: usize,
    answered: &Arc<AtomicUsize>,
    may_die: bool,
) -> Vec<tokio::task::JoinHandle<Client>> {
    clients
        .into_iter()
        .map(|client| tokio::spawn(client.run(n, answered.clone(), may_die)))
        .collect()
}

async fn join(running: Vec<tokio::task::JoinHandle<Client>>) -> Vec<Client> {
    let mut clients = Vec::new();
    for client in running {
        clients.push(client.await.expect("a client failed (see its panic above)"));
    }
    clients
}

/// Compares what the manager holds with what the clients were told, allowing for each
/// unanswered request either outcome — but only whole. Returns how many of the
/// unanswered requests turned out applied.
async fn verify(api: &Api, clients: &[Client]) -> usize {
    let mut stored: BTreeMap<String, Spec> = BTreeMap::new();
    for doc in api.ok("/api/v1/services").await.as_array().expect("a list") {
        let name = doc["service"].as_str().expect("a name").to_string();
        assert!(
            stored.insert(name.clone(), Spec::from_doc(doc)).is_none(),
            "{name} is listed twice"
        );
    }
    let mut applied = 0;
    let mut counted = 0;
    let mut wanted: BTreeMap<String, Spec> = BTreeMap::new();
    for client in clients {
        counted += client.counted;
        for (slot, name) in client.names.iter().enumerate() {
            let acked = &client.acked[slot];
            let found = stored.remove(name);
            let in_flight = client.in_flight.as_ref().filter(|op| op.slot == slot);
            match in_flight {
                Some(op) if found != *acked => {
                    let whole = op.effect.after(acked);
                    assert_eq!(
                        found, whole,
                        "{name}: neither the last acknowledged state {acked:?} nor the \
                         unanswered {} {} ({:?}) applied whole",
                        op.method, op.path, op.effect
                    );
                    applied += 1;
                    counted += u64::from(op.effect.counted(acked));
                }
                _ => assert_eq!(
                    found,
                    *acked,
                    "{name}: not the last acknowledged state (in flight: {:?})",
                    in_flight.map(|op| &op.effect)
                ),
            }
            let reply = api.get(&format!("/api/v1/service/{name}")).await;
            match &found {
                Some(spec) => {
                    assert_eq!(reply.status, 200, "{name}: {}", reply.body);
                    assert_eq!(Spec::from_doc(&reply.body), *spec, "{name}");
                    wanted.insert(name.clone(), spec.clone());
                }
                None => assert_eq!(reply.status, 404, "{name}: {}", reply.body),
            }
        }
    }
    assert!(
        stored.is_empty(),
        "services nobody was told of and none in flight: {:?}",
        stored.keys().collect::<Vec<_>>()
    );
    // A write and its count are one commit: one without the other would be half-there.
    let stats = api.ok("/api/v1/stats").await;
    assert_eq!(
        stats["services.totalOfRequests"],
        json!(counted),
        "acknowledged creates and updates, plus those in flight that applied"
    );
    tasks_match(api, &wanted).await;
    applied
}

/// Every service has one active task per replica, running what it says now, and no
/// deleted name has any.
async fn tasks_match(api: &Api, wanted: &BTreeMap<String, Spec>) {
    let started = Instant::now();
    loop {
        let Some(mismatch) = task_mismatch(api, wanted).await else {
            return;
        };
        assert!(
            started.elapsed() < DEADLINE,
            "tasks do not match their services: {mismatch}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn task_mismatch(api: &Api, wanted: &BTreeMap<String, Spec>) -> Option<String> {
    let mut active: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for task in api.ok("/api/v1/tasks").await.as_array().expect("a list") {
        let finished = ["complete", "failed", "lost", "shutdown"]
            .contains(&task["state"].as_str().unwrap_or(""));
        if task["desired_state"] == "running" && !finished {
            let service = task["service"].as_str().expect("a service").to_string();
            active.entry(service).or_default().push(task.clone());
        }
    }
    for (name, spec) in wanted {
        let tasks = active.remove(name).unwrap_or_default();
        let mut slots: Vec<u64> = tasks.iter().filter_map(|t| t["slot"].as_u64()).collect();
        slots.sort();
        if slots != (0..u64::from(spec.replicas)).collect::<Vec<_>>() {
            return Some(format!("{name} wants {spec:?}, has slots {slots:?}"));
        }
        for task in &tasks {
            let env: BTreeMap<String, String> =
                serde_json::from_value(task.get("env").cloned().unwrap_or(json!({})))
                    .unwrap_or_default();
            if task["image"] != json!(spec.image) || env != spec.env {
                return Some(format!("{name} wants {spec:?}, has task {task}"));
            }
        }
    }
    if !active.is_empty() {
        return Some(format!(
            "active tasks of services that do not exist: {:?}",
            active.keys().collect::<Vec<_>>()
        ));
    }
    None
}

fn seed() -> u64 {
    std::env::var("ABUSE_SEED")
        .ok()
        .map(|s| s.parse().expect("ABUSE_SEED must be a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_requests_then_kill_9_mid_burst_keep_every_acknowledged_write() {
    let seed = seed();
    println!("abuse: seed {seed} (ABUSE_SEED={seed} replays the requests)");
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|id| Client::new(id, seed, &manager.url))
        .collect();

    // Phase 1: 10,000 requests, every one answered and checked as it comes back.
    let started = Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let clients = join(run_all(clients, REQUESTS_PER_CLIENT, &answered, false).await).await;
    let mut tally = Tally::default();
    clients.iter().for_each(|c| tally.add(&c.tally));
    assert_eq!(tally.total(), CLIENTS * REQUESTS_PER_CLIENT);
    println!(
        "abuse: phase 1: {} requests in {:.1?}: {tally:?}",
        tally.total(),
        started.elapsed()
    );
    // Nothing was in flight: the manager holds exactly what the clients were told.
    assert_eq!(verify(&api, &clients).await, 0);

    // Phase 2: the same clients go on, and the manager dies under them.
    let started = Instant::now();
    let answered = Arc::new(AtomicUsize::new(0));
    let running = run_all(clients, BURST_MAX_PER_CLIENT, &answered, true).await;
    while answered.load(Ordering::Relaxed) < BURST_KILL_AFTER {
        assert!(
            started.elapsed() < DEADLINE,
            "the burst did not get {BURST_KILL_AFTER} answers"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    manager.kill9();
    let clients = join(running).await;
    let in_flight = clients.iter().filter(|c| c.in_flight.is_some()).count();
    assert!(
        clients.iter().all(|c| c.in_flight.is_some()
            || c.tally.total() == REQUESTS_PER_CLIENT + BURST_MAX_PER_CLIENT),
        "a client stopped without the manager dying"
    );
    println!(
        "abuse: phase 2: {} answered in {:.1?}, then kill -9 with {in_flight} requests unanswered",
        answered.load(Ordering::Relaxed),
        started.elapsed()
    );

    // A restart on the same data dir: it must be accepted, and hold exactly what was
    // acknowledged, give or take the unanswered requests — each whole or not at all.
    let started = Instant::now();
    let manager = Manager::start(dir.path(), &[]);
    let api = manager.api();
    let stats = api.get("/api/v1/stats").await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    let applied = verify(&api, &clients).await;
    println!(
        "abuse: after the restart ({:.1?}): every acknowledged write is there; {applied} of \
         the {in_flight} unanswered requests applied whole, the others not at all",
        started.elapsed()
    );

    // And it goes on taking writes.
    let body = json!({"service": "after-restart", "image": "img:v1", "replicas": 1});
    assert_eq!(api.post("/api/v1/service?wait=0", &body).await.status, 201);
    assert_eq!(api.get("/api/v1/service/after-restart").await.status, 200);
}
