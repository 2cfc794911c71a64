//! How the CLI prints: readable tables by default, the raw JSON document with `--json`.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// A table with a header row, laid out for the terminal.
pub fn table(header: impl Into<comfy_table::Row>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use mycluster_core::time::{civil_from_days, unix_time};

use mycluster_core::service::Amount;
use mycluster_core::wire::{
    HealthCheck, Resources, RestartPolicy, RolloutDoc, ServiceEndpoints, TaskDoc, TaskState,
    UpdatePolicy, VersionsDoc, VolumeSpec,
};

/// `reserve 0.5 CPUs, 256 MiB; limit 1 CPUs, 512 MiB`.
pub fn describe_resources(r: &Resources) -> String {
    let amount = |a: &Amount| {
        let mut parts = Vec::new();
        if let Some(cpus) = a.cpus {
            parts.push(format!("{cpus} CPUs"));
        }
        if let Some(memory) = a.memory {
            parts.push(memory.to_string());
        }
        parts.join(", ")
    };
    let mut out = Vec::new();
    if !r.reservations.is_empty() {
        out.push(format!("reserve {}", amount(&r.reservations)));
    }
    if !r.limits.is_empty() {
        out.push(format!("limit {}", amount(&r.limits)));
    }
    out.join("; ")
}

/// `data:/data`, `/srv/www:/www:ro` (as `--volume` takes it).
pub fn describe_volume(v: &VolumeSpec) -> String {
    let ro = if v.read_only { ":ro" } else { "" };
    format!("{}:{}{ro}", v.source, v.target)
}

/// `on-failure, at most 3 restarts after failures in a row, delay 2s`.
pub fn describe_restart(r: &RestartPolicy) -> String {
    let attempts = match r.max_attempts {
        0 => "no limit of restarts".to_string(),
        n => format!("at most {n} restarts after failures in a row"),
    };
    format!("{}, {attempts}, delay {}", r.condition.as_str(), r.delay)
}

/// Whether the task is the last of a slot its restart policy leaves done (batch work
/// that completed): the manager no longer wants it running, and nothing replaced it.
fn done(task: &TaskDoc) -> bool {
    task.state == TaskState::Complete
        && task.desired_state == mycluster_core::wire::DesiredState::Shutdown
}

/// A task's state for a table: the last task of a slot that completed for good says it
/// is done (batch work).
pub fn task_state(task: &TaskDoc) -> String {
    match task.state {
        TaskState::Complete if done(task) => "complete (done)".to_string(),
        state if task.moving.is_some() && !state.is_terminal() => format!("{state} (moving)"),
        state => state.to_string(),
    }
}

/// `web: 2 running, 1 complete (done), 1 starting, 1 cannot be placed (see MESSAGE)`
/// under `service ps`.
pub fn tasks_summary(service: &str, tasks: &[TaskDoc]) -> String {
    let wanted = tasks
        .iter()
        .filter(|t| t.desired_state == mycluster_core::wire::DesiredState::Running);
    let count = |state: TaskState| wanted.clone().filter(|t| t.state == state).count();
    let unplaceable = |t: &&TaskDoc| {
        t.state == TaskState::Pending && mycluster_core::schedule::is_unplaceable(&t.message)
    };
    let starting = wanted
        .clone()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Pending | TaskState::Assigned | TaskState::Starting
            )
        })
        .filter(|t| !unplaceable(t))
        .count();
    let stuck = wanted.clone().filter(unplaceable).count();
    let complete = tasks
        .iter()
        .filter(|t| done(t))
        .map(|t| t.slot)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut parts = vec![format!("{} running", count(TaskState::Running))];
    if complete > 0 {
        parts.push(format!("{complete} complete (done)"));
    }
    if starting > 0 {
        parts.push(format!("{starting} starting"));
    }
    if stuck > 0 {
        parts.push(format!("{stuck} cannot be placed (see MESSAGE)"));
    }
    format!("{service}: {}", parts.join(", "))
}

/// `http :8000/healthz every 5s, timeout 2s, 3 retries, start period 0s`.
pub fn describe_check(check: &HealthCheck) -> String {
    format!(
        "{} every {}, timeout {}, {} retries, start period {}",
        check.probe, check.interval, check.timeout, check.retries, check.start_period
    )
}

/// `parallelism 1, start-first, delay 0s, monitor 5s, on failure rollback (ratio 0)`.
pub fn describe_policy(policy: &UpdatePolicy) -> String {
    format!(
        "parallelism {}, {}, delay {}, monitor {}, on failure {} (max failure ratio {})",
        policy.parallelism,
        policy.order.as_str(),
        policy.delay,
        policy.monitor,
        policy.failure_action.as_str(),
        policy.max_failure_ratio.0
    )
}

/// `mycluster service versions`: newest first, the current one marked.
pub fn print_versions(doc: &VersionsDoc) {
    let mut t = table([
        "VERSION",
        "CAUSE",
        "CREATED",
        "RUNS",
        "REPLICAS",
        "HEALTHCHECK",
    ]);
    for v in &doc.versions {
        let mark = if v.version == doc.current { " *" } else { "" };
        let runs = match (&v.spec.image, &v.spec.command) {
            (Some(image), _) => image.clone(),
            (None, Some(command)) => command.join(" "),
            (None, None) => "-".into(),
        };
        t.add_row([
            format!("{}{mark}", v.version),
            v.cause.clone(),
            unix_time(v.created_at as u64),
            runs,
            v.spec.replicas.to_string(),
            v.spec
                .healthcheck
                .as_ref()
                .map_or("-".to_string(), |c| c.probe.to_string()),
        ]);
    }
    println!("{t}");
}

/// `mycluster service rollout`: the rollout's fields, and a bar.
pub fn print_rollout(r: &RolloutDoc) {
    println!(
        "{}",
        crate::follow::bar_line(
            &r.service,
            r.updated,
            r.total,
            &format!("updated, {}", r.state.as_str())
        )
    );
    let mut t = table(["FIELD", "VALUE"]);
    t.add_row(["kind".to_string(), crate::follow::what(r.kind).to_string()]);
    t.add_row(["state".to_string(), r.state.as_str().to_string()]);
    let from = r.from_version.map_or("-".to_string(), |v| v.to_string());
    t.add_row([
        "version".to_string(),
        format!("{} (from {from})", r.version),
    ]);
    t.add_row([
        "updated".to_string(),
        format!("{} of {}", r.updated, r.total),
    ]);
    t.add_row(["failures".to_string(), r.failures.to_string()]);
    if let Some(reason) = &r.reason {
        t.add_row(["reason".to_string(), reason.clone()]);
    }
    t.add_row(["started".to_string(), unix_time(r.started_at as u64)]);
    t.add_row(["updated_at".to_string(), unix_time(r.updated_at as u64)]);
    println!("{t}");
}

/// `mycluster service endpoints`: the service's ports, then a row per replica and port.
pub fn print_endpoints(doc: &ServiceEndpoints) {
    match crate::port_flags::list(&doc.ports) {
        Some(ports) => println!("Service {}: {ports}", doc.service),
        None => {
            println!(
                "Service {0} names no port: `mycluster service update {0} --publish PUBLISHED:TARGET` publishes one",
                doc.service
            );
            return;
        }
    }
    let mut t = table(["TASK", "SLOT", "WORKER", "ADDRESS", "PORT", "TARGET"]);
    for e in &doc.endpoints {
        t.add_row([
            e.task.clone(),
            e.slot.to_string(),
            e.worker.clone(),
            e.address.to_string(),
            e.port.to_string(),
            e.target.to_string(),
        ]);
    }
    println!("{t}");
    if doc.endpoints.is_empty() {
        println!(
            "No replica serves yet (`mycluster tasks --service {}` says why)",
            doc.service
        );
    }
}
