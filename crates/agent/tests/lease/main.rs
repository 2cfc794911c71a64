//! Leases and fencing, end to end: a real manager (in this process, an embedded store in
//! a temporary dir), agents of this process on the process driver, each talking to the
//! manager through a relay the test cuts and heals (a silent network split) or points at
//! a restarted manager. A sampler lists every agent's containers every 50 ms.
//!
//! - A cut-off agent stops its `on_disconnect: "stop"` task once its lease ran out and
//!   reports it failed when the link heals; its `replace` task runs on throughout.
//! - A manager restart shorter than the lease stops nothing; an agent that is stopped
//!   (SIGTERM) tells the manager it leaves and stops its `stop` task.
//! - A worker declared down while cut off: its `replace` task runs elsewhere and the
//!   cut-off copy is killed when the link heals; its `stop` task never has two copies.
//!
//! Its own `main` (no libtest harness): the process driver runs each task under a
//! supervisor, which is this very program started as `<test> supervise` (as the binary's
//! `mycluster supervise`). Names are unique per run, so runs in parallel do not meet.
//! Nothing asserts speed: each wait has a generous deadline, and what was measured is
//! printed.

mod scenarios;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

type Scenario = fn() -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("supervise") {
        std::process::exit(mycluster_runtime::supervise::run());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,mycluster_agent=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let all: [(&str, Scenario); 3] = [
        ("a_cut_off_agent_stops_its_stop_task_after_the_lease_and_keeps_its_replace_task", || {
            Box::pin(scenarios::cut_off_agent_stops_its_stop_task_after_the_lease())
        }),
        ("a_manager_restart_shorter_than_the_lease_stops_nothing_and_sigterm_leaves", || {
            Box::pin(scenarios::manager_restart_stops_nothing_and_sigterm_leaves())
        }),
        ("a_worker_declared_down_while_cut_off_kills_its_copy_on_return_and_never_doubles_a_stop_task", || {
            Box::pin(scenarios::declared_down_while_cut_off())
        }),
    ];
    // Like libtest: arguments that are not flags filter the scenarios by name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, scenario) in all {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        eprintln!("test {name} ...");
        // A panic ends the scenario's task, not the program.
        match runtime.block_on(async { tokio::spawn(scenario()).await }) {
            Ok(()) => eprintln!("test {name} ... ok"),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    eprintln!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
