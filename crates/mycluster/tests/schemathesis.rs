//! Schema-based fuzzing of the real manager: schemathesis (PyPI, installed by `.ci/run`)
//! generates requests from the OpenAPI document and checks every answer — no 5xx, every
//! status documented, every body matching its schema, auth enforced where declared.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Api, Manager, TEST_JOIN_TOKEN, TEST_TOKEN};
use serde_json::json;

/// `schemathesis` on PATH, or in the virtualenv `.ci/run` makes.
fn schemathesis() -> Option<String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/venv/bin/schemathesis");
    if venv.exists() {
        return Some(venv.display().to_string());
    }
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "schemathesis".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_answer_outside_the_schema() {
    let Some(schemathesis) = schemathesis() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("schemathesis is not installed, and CI=true: .ci/run installs it");
        }
        eprintln!("SKIP: schemathesis is not installed (pip install schemathesis)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Waits kept short: schemathesis calls the long-poll and POST ?wait= many times.
    let manager = Manager::start(dir.path(), &["--max-wait", "0.5"]);
    // Something to find: a worker and a service.
    let join = Api::with_token(&manager.url, Some(TEST_JOIN_TOKEN));
    let worker = json!({"name": "w1", "address": "127.0.0.1:9", "driver": "sim"});
    assert_eq!(join.post("/api/v1/workers", &worker).await.status, 201);
    let service = json!({"service": "web", "image": "nginx", "replicas": 2});
    assert_eq!(
        manager
            .api()
            .post("/api/v1/service?wait=0", &service)
            .await
            .status,
        201
    );

    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manager/src/api/openapi.json");
    let url = manager.url.clone();
    let work = dir.path().to_path_buf();
    // A request that breaks the schema may be refused as too large (413: a list at its
    // maxItems of long strings passes the body limit) rather than as invalid (400):
    // both are refusals, and the server is right either way. Read from the working dir.
    std::fs::write(
        work.join("schemathesis.toml"),
        "[checks.negative_data_rejection]\nexpected-statuses = [\"400\", \"401\", \"403\", \"404\", \"405\", \"406\", \"409\", \"413\", \"415\", \"422\", \"428\", \"429\", \"431\"]\n",
    )
    .expect("schemathesis config");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            // It keeps reports in the working directory.
            .current_dir(work)
            .arg("run")
            .arg(&document)
            .args(["--url", &url])
            .args(["-H", &format!("Authorization: Bearer {TEST_TOKEN}")])
            .args(["--checks", "all"])
            // OpenAPI 3.0 cannot say "the first command item is not empty" or constrain
            // map keys, so schemathesis takes some refused requests for schema-valid.
            // The server is right to refuse them (its message says why); every other
            // check — no 5xx, documented statuses, bodies matching their schemas, auth
            // enforced — runs.
            .args(["--exclude-checks", "positive_data_acceptance"])
            // The event stream and a service's logs stay open when asked to follow
            // (`follow=true`, the events' default), which a generated request may ask: it
            // would hold schemathesis until its request timeout. Their answers (the
            // streams, 400, 404, 410) are checked by `tests/events.rs` and `tests/logs.rs`.
            .args(["--exclude-path", "/api/v1/events"])
            .args(["--exclude-path", "/api/v1/service/{name}/logs"])
            .args(["--max-response-time", "30"])
            .args(["--max-examples", "25"])
            .args(["--generation-database", "none"])
            .args(["--request-timeout", "70"])
            .arg("--no-color")
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    let log = manager.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // The manager is still whole afterwards.
    assert_eq!(manager.api().get("/api/v1/stats").await.status, 200);
}
