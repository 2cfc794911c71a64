//! `mycluster bench --quick` runs every part to the end and prints its figures, so the
//! benchmarks cannot rot. Nothing about speed is asserted.

mod common;

use std::process::Command;

#[test]
fn bench_quick_runs_every_part() {
    let wrk = Command::new("wrk").arg("--version").output().is_ok();
    let mut args = vec!["bench", "--quick"];
    if !wrk {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("wrk is not installed, and CI=true: the API benchmark must run");
        }
        eprintln!("SKIP the API part: wrk is not installed (apt-get install wrk)");
        args.extend(["--only", "sched", "--only", "footprint", "--only", "sim"]);
    }
    let output = Command::new(common::BIN)
        .args(&args)
        .output()
        .expect("run mycluster bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for figure in [
        "placements/s",
        "binary size",
        "manager idle RSS",
        "agent idle RSS",
        "sim: request -> all replicas running",
        "sim: manager peak RSS",
        "sim: 10% of workers killed -> all running",
    ] {
        assert!(stdout.contains(figure), "missing {figure}:\n{stdout}");
    }
    assert!(!stdout.contains("not reached"), "{stdout}");
    if wrk {
        assert!(
            stdout.contains("GET /api/v1/state") && stdout.contains("req/s"),
            "{stdout}"
        );
        // The ingress part: wrk straight to a replica and through `mycluster ingress`,
        // and 30 new connections spread over the 3 replicas.
        for figure in [
            "ingress: keep-alive -> direct to 1 replica",
            "ingress: keep-alive -> our ingress",
            "ingress: new conns -> our ingress",
            "ingress: 30 new conns -> our ingress",
        ] {
            let line = stdout.lines().find(|l| l.starts_with(figure));
            assert!(
                line.is_some_and(|l| !l.contains("not measured")),
                "{figure} not measured:\n{stdout}"
            );
        }
        assert!(stdout.contains("served by 3 of 3"), "{stdout}");
    }
}
