//! The operator's client subcommands: the workers table, `worker drain|activate|rm|label`,
//! `service rebalance`, `service rm [--volumes]`, `volume ls|rm`. Each calls the
//! manager's API and prints the answer (the JSON document with `--json`).

use anyhow::bail;
use mycluster_client::Client;
use mycluster_core::service::{Amount, Bytes, Cpus};
use mycluster_core::wire::{LabelRequest, ServiceDoc, WorkerDoc};

use crate::cli::{Global, VolumeCommand, WorkerCommand};
use crate::output::{json, table, unix_time};
use crate::remote::client;

/// `mycluster workers`: the original's columns first, then drain, capacity and what is
/// reserved of it, and labels.
pub async fn workers(global: &Global) -> anyhow::Result<()> {
    let workers = client(global)?.workers().await?;
    if global.json {
        return json(&workers);
    }
    let mut t = table([
        "WORKER",
        "STATUS",
        "ADDRESS",
        "TASKS",
        "RUNNING",
        "LAST HEARTBEAT",
        "DRAIN",
        "CPUS (RESERVED/HAS)",
        "MEMORY (RESERVED/HAS)",
        "LABELS",
    ]);
    for w in &workers {
        t.add_row([
            w.worker.clone(),
            w.status.to_string(),
            w.address.clone(),
            w.tasks.to_string(),
            w.running.to_string(),
            w.last_heartbeat_age
                .map_or("never".to_string(), |age| format!("{age:.1}s ago")),
            if w.drain { "yes" } else { "no" }.to_string(),
            cpus(&w.reserved, &w.resources),
            memory(&w.reserved, &w.resources),
            labels(w),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `0.5/4`; `-` for what is not known (a worker that did not say what it has).
fn cpus(reserved: &Amount, has: &Amount) -> String {
    let show = |c: Option<Cpus>| c.map_or("-".to_string(), |c| c.to_string());
    format!(
        "{}/{}",
        show(Some(reserved.cpus.unwrap_or_default())),
        show(has.cpus)
    )
}

/// `256 MiB/8 GiB`.
fn memory(reserved: &Amount, has: &Amount) -> String {
    let reserved = reserved.memory.map_or("0".to_string(), |m| m.to_string());
    let has = has.memory.map_or("-".to_string(), |m: Bytes| m.to_string());
    format!("{reserved}/{has}")
}

fn labels(w: &WorkerDoc) -> String {
    if w.labels.is_empty() {
        return "-".into();
    }
    w.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `mycluster worker drain|activate|rm|label` (`ps` is `remote::worker_ps`).
pub async fn worker(global: &Global, command: WorkerCommand) -> anyhow::Result<()> {
    let client = client(global)?;
    let (doc, said) = match command {
        WorkerCommand::Ps { worker } => return crate::remote::worker_ps(global, &worker).await,
        WorkerCommand::Drain { worker } => {
            let doc = client.set_drain(&worker, true).await?;
            let said = format!(
                "Worker {worker} drained: it takes no new task, and its {} task(s) move elsewhere one at a time, each replacement healthy before the old one stops (`mycluster worker ps {worker}` shows what is left; a replica that cannot be placed elsewhere keeps running and its message says why)",
                doc.tasks
            );
            (doc, said)
        }
        WorkerCommand::Activate { worker } => {
            let doc = client.set_drain(&worker, false).await?;
            let said = format!(
                "Worker {worker} is active: it takes tasks again (`mycluster service rebalance` moves some back)"
            );
            (doc, said)
        }
        WorkerCommand::Rm { worker } => {
            let doc = client.remove_worker(&worker).await?;
            (doc, format!("Worker {worker} removed"))
        }
        WorkerCommand::Label { worker, changes } => {
            let request = label_changes(&changes)?;
            let doc = client.label_worker(&worker, &request).await?;
            let said = format!("Worker {worker} labels: {}", labels(&doc));
            (doc, said)
        }
    };
    if global.json {
        return json(&doc);
    }
    println!("{said}");
    Ok(())
}

/// `K=V` sets a label, `K-` removes one.
pub fn label_changes(changes: &[String]) -> anyhow::Result<LabelRequest> {
    let mut request = LabelRequest::default();
    for change in changes {
        if let Some((key, value)) = change.split_once('=') {
            if key.is_empty() {
                bail!("worker label {change}: use KEY=VALUE to set a label, KEY- to remove one");
            }
            request.set.insert(key.to_string(), value.to_string());
        } else if let Some(key) = change.strip_suffix('-').filter(|k| !k.is_empty()) {
            request.remove.push(key.to_string());
        } else {
            bail!("worker label {change}: use KEY=VALUE to set a label, KEY- to remove one");
        }
    }
    Ok(request)
}

/// `mycluster service rm NAME [--volumes]`.
pub async fn service_rm(
    client: &Client,
    global: &Global,
    name: &str,
    volumes: bool,
) -> anyhow::Result<()> {
    let service = client.delete_service_with(name, volumes).await?;
    if global.json {
        return json(&service);
    }
    for line in removed(&service) {
        println!("{line}");
    }
    Ok(())
}

/// What `service rm` prints: the service, and its volumes kept or being removed.
fn removed(service: &ServiceDoc) -> Vec<String> {
    let mut lines = vec![format!("Service {} removed", service.service)];
    if !service.kept_volumes.is_empty() {
        lines.push(format!(
            "kept volumes {} (remove them with `mycluster volume rm` or `service rm --volumes`)",
            service.kept_volumes.join(", ")
        ));
    }
    if !service.removed_volumes.is_empty() {
        lines.push(format!(
            "removing volumes {} (the agents of their host remove them once its tasks have stopped)",
            service.removed_volumes.join(", ")
        ));
    }
    lines
}

/// `mycluster service rebalance [NAME] [--dry-run]`: one line per move.
pub async fn rebalance(
    client: &Client,
    global: &Global,
    name: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let doc = client.rebalance(name, dry_run).await?;
    if global.json {
        return json(&doc);
    }
    let whose = name.map_or("every service".to_string(), |n| format!("service {n}"));
    if doc.moves.is_empty() {
        println!(
            "Nothing to move: the spread of {whose} is even (or a rollout or another move is under way)"
        );
        return Ok(());
    }
    for m in &doc.moves {
        println!("{}", m.line());
    }
    if dry_run {
        println!("(dry run: nothing was changed)");
    } else {
        println!(
            "Rebalancing {whose}: moves go on one replica at a time, each replacement healthy before the old one stops, until the spread is even"
        );
    }
    Ok(())
}

/// `mycluster volume ls|rm`.
pub async fn volume(global: &Global, command: VolumeCommand) -> anyhow::Result<()> {
    let client = client(global)?;
    match command {
        VolumeCommand::Ls => {
            let volumes = client.volumes().await?;
            if global.json {
                return json(&volumes);
            }
            let mut t = table([
                "VOLUME", "SERVICE", "SLOT", "HOST", "WORKER", "IN USE", "STATE", "CREATED",
            ]);
            for v in &volumes {
                t.add_row([
                    v.name.clone(),
                    v.service.clone(),
                    v.slot.to_string(),
                    if v.host.is_empty() { "-" } else { &v.host }.to_string(),
                    v.worker.clone(),
                    if v.in_use { "yes" } else { "no" }.to_string(),
                    if v.remove { "removing" } else { "kept" }.to_string(),
                    unix_time(v.created_at as u64),
                ]);
            }
            println!("{t}");
        }
        VolumeCommand::Rm { names } => {
            let mut marked = Vec::new();
            let mut failed = Vec::new();
            for name in &names {
                match client.remove_volume(name).await {
                    Ok(doc) => marked.push(doc),
                    Err(e) => failed.push(format!("{name}: {e}")),
                }
            }
            if global.json {
                json(&marked)?;
            } else {
                for doc in &marked {
                    println!(
                        "Volume {} is being removed (by the agents of its host, once no task uses it)",
                        doc.name
                    );
                }
            }
            if !failed.is_empty() {
                bail!(
                    "{} of {} volumes not removed: {}",
                    failed.len(),
                    names.len(),
                    failed.join("; ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_changes_set_and_remove() {
        let request =
            label_changes(&["disk=ssd".into(), "zone-".into(), "a=b=c".into()]).expect("valid");
        assert_eq!(request.set.get("disk").map(String::as_str), Some("ssd"));
        assert_eq!(request.set.get("a").map(String::as_str), Some("b=c"));
        assert_eq!(request.remove, ["zone"]);
        for bad in ["disk", "-", "=x"] {
            let e = label_changes(&[bad.into()]).expect_err(bad);
            assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        }
    }

    #[test]
    fn service_rm_names_the_volumes_kept_or_removed() {
        let service = mycluster_core::Service::updated(
            None,
            mycluster_core::ServiceSpec::from_json(
                &serde_json::json!({"service": "web", "image": "x", "replicas": 2}),
                &mycluster_core::Limits::default(),
            )
            .expect("valid"),
            0,
        );
        let mut doc = ServiceDoc::new(&service);
        assert_eq!(removed(&doc), ["Service web removed"]);
        doc.kept_volumes = vec!["web-data-0".into(), "web-data-1".into()];
        assert_eq!(
            removed(&doc)[1],
            "kept volumes web-data-0, web-data-1 (remove them with `mycluster volume rm` or `service rm --volumes`)"
        );
        doc.kept_volumes.clear();
        doc.removed_volumes = vec!["web-data-0".into()];
        assert!(removed(&doc)[1].starts_with("removing volumes web-data-0 "));
    }

    #[test]
    fn capacity_cells() {
        let has = Amount {
            cpus: Some(Cpus(4000)),
            memory: Some(Bytes(8 << 30)),
        };
        let reserved = Amount {
            cpus: Some(Cpus(500)),
            memory: Some(Bytes(256 << 20)),
        };
        assert_eq!(cpus(&reserved, &has), "0.5/4");
        assert_eq!(memory(&reserved, &has), "256 MiB/8 GiB");
        assert_eq!(cpus(&Amount::default(), &Amount::default()), "0/-");
        assert_eq!(memory(&Amount::default(), &Amount::default()), "0/-");
    }
}
