//! `mycluster service rollback|restart|versions|rollout` and the --health-*/--update-*
//! flags against a real manager (no workers: nothing runs, so nothing is waited for):
//! what they print, and one line plus a non-zero exit for each error.

mod common;

use common::{cli, Manager};
use serde_json::Value;

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

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    lines[0]
}

#[tokio::test]
async fn rollback_restart_versions_and_rollout_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.clone();

    let (code, _, err) = run(
        &url,
        &[
            "service",
            "create",
            "web",
            "--image",
            "nginx:1",
            "--replicas",
            "2",
            "--health-http",
            "8000/healthz",
            "--health-retries",
            "5",
            "--update-order",
            "stop-first",
            "--update-parallelism",
            "2",
            "--detach",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let service = manager.api().ok("/api/v1/service/web").await;
    assert_eq!(service["healthcheck"]["http"]["path"], "/healthz");
    assert_eq!(service["healthcheck"]["retries"], 5);
    assert_eq!(service["update"]["parallelism"], 2);

    // Nothing to roll back to yet.
    let (code, _, err) = run(&url, &["service", "rollback", "web", "--detach"]).await;
    assert_eq!(code, 1);
    let line = one_line(&err);
    assert!(
        line.starts_with("error: ") && line.contains("no previous version"),
        "{line}"
    );

    // Only the flags given change: the order stays stop-first.
    let (code, _, err) = run(
        &url,
        &[
            "service",
            "update",
            "web",
            "--image",
            "nginx:2",
            "--update-delay",
            "1s",
            "--detach=true",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let service = manager.api().ok("/api/v1/service/web").await;
    assert_eq!(
        (
            &service["image"],
            &service["update"]["order"],
            &service["update"]["delay"]
        ),
        (
            &Value::from("nginx:2"),
            &Value::from("stop-first"),
            &Value::from("1s")
        )
    );

    let (code, out, err) = run(&url, &["service", "rollback", "web", "--detach", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rollout: Value = serde_json::from_str(&out).expect("--json prints the rollout");
    assert_eq!(
        (&rollout["kind"], &rollout["version"]),
        (&Value::from("rollback"), &Value::from(3))
    );

    let (code, out, err) = run(&url, &["service", "restart", "web", "--detach"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restarted: version 4"), "{out}");

    let (code, out, _) = run(&url, &["service", "versions", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("4 *") && out.contains("rollback to version 1") && out.contains("nginx:2"),
        "{out}"
    );

    let (code, out, _) = run(&url, &["service", "rollout", "web"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("web: [") && out.contains("restart") && out.contains("in_progress"),
        "{out}"
    );

    let (code, out, _) = run(&url, &["tasks", "--service", "web"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("HEALTH"), "{out}");
}

#[tokio::test]
async fn each_error_is_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::start(dir.path(), &[]);
    let url = manager.url.clone();

    for args in [
        vec!["service", "rollback", "nobody"],
        vec!["service", "restart", "nobody"],
        vec!["service", "versions", "nobody"],
        vec!["service", "rollout", "nobody"],
    ] {
        let (code, _, err) = run(&url, &args).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        let line = one_line(&err);
        assert!(
            line.contains("Service nobody was not registered"),
            "{args:?}: {line}"
        );
    }
    for (args, expected) in [
        (vec!["service", "update", "nobody"], "nothing to change"),
        (
            vec![
                "service",
                "create",
                "web",
                "--image",
                "nginx:1",
                "--health-interval",
                "2s",
            ],
            "need a probe",
        ),
        (
            vec![
                "service",
                "create",
                "web",
                "--image",
                "nginx:1",
                "--health-http",
                "web",
            ],
            "--health-http web",
        ),
        (
            vec![
                "service",
                "create",
                "web",
                "--image",
                "nginx:1",
                "--update-delay",
                "soon",
            ],
            "--update-delay",
        ),
        (
            vec![
                "service",
                "create",
                "web",
                "--image",
                "nginx:1",
                "--update-max-failure-ratio",
                "2",
            ],
            "from 0 to 1",
        ),
    ] {
        let (code, _, err) = run(&url, &args).await;
        assert_eq!(code, 1, "{args:?}: {err}");
        let line = one_line(&err);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    // Usage errors: exit 2, one line.
    for args in [
        vec![
            "service",
            "create",
            "web",
            "--image",
            "x",
            "--update-order",
            "sideways",
        ],
        vec![
            "service",
            "create",
            "web",
            "--image",
            "x",
            "--health-tcp",
            "80",
            "--health-cmd",
            "true",
        ],
    ] {
        let (code, _, err) = run(&url, &args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        one_line(&err);
    }
    let services = manager.api().ok("/api/v1/services").await;
    assert_eq!(services, serde_json::json!([]), "nothing was created");
}
