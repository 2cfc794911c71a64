//! Issue 18's container figure, side by side with Docker Swarm (`mycluster bench --only
//! liveness`): a replica's container is killed (`docker kill`: SIGKILL) and the time until
//! a replacement container of the same slot runs is measured, on a `mycluster setup`
//! cluster (manager, monitor and workers in containers, workloads in the workers' PID
//! namespaces, exactly as an operator gets it) and on Swarm services on the same engine.
//!
//! What is timed: from the engine's `die` event of the killed container to the `start`
//! event of the next container of its slot (named `<service>.<slot>.…` on both sides),
//! both as the engine timestamps them; and to that container's `create` event, which
//! splits the time into the orchestrator's reaction (die → create) and the engine's
//! start of the container (create → start), the same work on both sides. The observer
//! reads the engine's event stream from a moment before the kill, so it misses nothing
//! and its own polling is not in the figure. The sides take turns, one kill each per
//! run, so a busy machine slows all alike.
//!
//! The sides:
//! - ours: the cluster's agents follow the engine's events (issue 18), report the task
//!   failed at once, and the manager replaces a slot's first failure at once;
//! - Swarm as it comes (restart delay 5 s, its default);
//! - Swarm with `--restart-delay 0`, its fastest: what its own machinery takes.
//!
//! The victim is each service's longest-running container, and only once it has run
//! `SETTLED` (waited for if need be): a task that ran 30 s is a healthy run, so ours
//! treats each kill as a first failure (replaced at once), and not as a crash loop.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bollard::models::{ContainerSummary, EventMessage, ServiceSpec};
use bollard::query_parameters::{
    EventsOptionsBuilder, KillContainerOptions, ListContainersOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use mycluster_client::Client;
use mycluster_core::wire::{ServiceRequest, StateDoc};
use mycluster_setup::images::{ensure_demo, DEMO_IMAGE};
use mycluster_setup::settings::Settings;
use reqwest::Method;
use serde_json::json;

use crate::error::{chain, BenchError};
use crate::figure::{report, Figure};
use crate::manager::this_executable;
use crate::swarm;

/// The `setup` cluster's name; every service of either side is named `benchlive-...`:
/// that is all cleanup ever touches.
const CLUSTER: &str = "benchlive";
/// Replicas of each service.
const REPLICAS: usize = 4;
/// Workers of the `setup` cluster.
const WORKERS: &str = "2";
/// A victim has run at least this long: past ours' healthy run (30 s), so every kill is
/// a slot's first failure.
const SETTLED: Duration = Duration::from_secs(35);
/// The longest wait for anything (a replacement, a service to be up).
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ours,
    /// Swarm with its default restart delay (5 s).
    Swarm,
    /// Swarm with `--restart-delay 0`.
    SwarmNoDelay,
}

const SIDES: [Side; 3] = [Side::Ours, Side::Swarm, Side::SwarmNoDelay];

impl Side {
    fn service(self) -> String {
        match self {
            Side::Ours => format!("{CLUSTER}-ours"),
            Side::Swarm => format!("{CLUSTER}-swarm"),
            Side::SwarmNoDelay => format!("{CLUSTER}-swarm0"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Swarm => "swarm",
            Side::SwarmNoDelay => "swarm --restart-delay 0",
        }
    }

    /// The engine's label filter for the service's containers (all must match).
    fn labels(self) -> Vec<String> {
        match self {
            Side::Ours => vec![
                format!("mycluster.cluster={CLUSTER}"),
                format!("mycluster.service={}", self.service()),
            ],
            _ => vec![format!("com.docker.swarm.service.name={}", self.service())],
        }
    }
}

pub async fn run(quick: bool) -> Vec<Figure> {
    let docker = match swarm::connect().await {
        Ok(docker) => docker,
        Err(e) => return not_measured(&format!("no Docker engine: {}", chain(&e))),
    };
    let config = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return not_measured(&format!("no config dir: {e}")),
    };
    // Leftovers of an interrupted run.
    remove_cluster(config.path());
    let _ = swarm::remove_leftovers(&docker, CLUSTER).await;
    let (joined, had_gwbridge) = match swarm::join_swarm(&docker).await {
        Ok(done) => done,
        Err(e) => return not_measured(&format!("swarm mode: {}", chain(&e))),
    };
    let runs = if quick { 2 } else { 20 };
    let figures = match measure(&docker, config.path(), runs).await {
        Ok(figures) => figures,
        Err(e) => not_measured(&chain(&e)),
    };
    remove_cluster(config.path());
    if let Err(e) = swarm::remove_leftovers(&docker, CLUSTER).await {
        eprintln!("liveness bench: cleanup: {}", chain(&e));
    }
    swarm::leave_swarm(&docker, joined, had_gwbridge).await;
    figures
}

fn not_measured(reason: &str) -> Vec<Figure> {
    vec![report(
        "liveness: kill 1 -> its slot running",
        "not measured",
        reason,
    )]
}

/// `mycluster ARGS` with the bench's own config dir (so the operator's saved clusters
/// and current cluster are not touched); its output, or why it failed.
fn mycluster(config: &Path, args: &[&str]) -> Result<String, BenchError> {
    let output = Command::new(this_executable()?)
        .args(args)
        .env("MYCLUSTER_CONFIG_DIR", config)
        .env_remove("MYCLUSTER_MANAGER")
        .env_remove("MYCLUSTER_TOKEN")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(text)
    } else {
        Err(BenchError::Failed(format!(
            "mycluster {} failed: {}",
            args.join(" "),
            text.trim()
        )))
    }
}

/// `mycluster manage --command rm`: every container, network and volume of the cluster.
fn remove_cluster(config: &Path) {
    let _ = mycluster(config, &["manage", "--command", "rm", "--name", CLUSTER]);
}

async fn measure(docker: &Docker, config: &Path, runs: usize) -> Result<Vec<Figure>, BenchError> {
    ensure_demo(false, &[])
        .await
        .map_err(|e| BenchError::context("cannot build the demo image", e))?;
    let image = docker
        .inspect_image(DEMO_IMAGE)
        .await?
        .id
        .ok_or_else(|| BenchError::Failed("the demo image has no id".into()))?;
    let started = Instant::now();
    mycluster(
        config,
        &[
            "setup",
            "--name",
            CLUSTER,
            "--workers",
            WORKERS,
            "--port",
            "0",
        ],
    )?;
    println!(
        "liveness: `mycluster setup --name {CLUSTER} --workers {WORKERS}` ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let client = cluster_client(config)?;
    for side in SIDES {
        create(docker, &client, side, &image).await?;
    }
    for side in SIDES {
        wait_all_running(docker, side).await?;
    }
    // times[side]: one per run, None where the replacement was not seen.
    let mut times: [Vec<Option<Timing>>; 3] = Default::default();
    for run in 1..=runs {
        for (i, side) in SIDES.into_iter().enumerate() {
            wait_all_running(docker, side).await?;
            let took = kill_and_time(docker, side).await?;
            let shown = took.map_or("not reached".into(), |t| {
                format!(
                    "created after {:.3} s, running after {:.3} s",
                    t.created, t.started
                )
            });
            println!("liveness: run {run:2}, {}: {shown}", side.describe());
            times[i].push(took);
        }
    }
    let mut figures = Vec::new();
    for (i, side) in SIDES.into_iter().enumerate() {
        let started: Vec<Option<f64>> = times[i].iter().map(|t| t.map(|t| t.started)).collect();
        let created: Vec<Option<f64>> = times[i].iter().map(|t| t.map(|t| t.created)).collect();
        let name = format!("liveness: kill 1 -> its slot running ({})", side.describe());
        figures.push(report(&name, summary(&started), each(&started)));
        let name = format!("liveness: kill 1 -> its slot created ({})", side.describe());
        figures.push(report(&name, summary(&created), each(&created)));
    }
    Ok(figures)
}

/// A client of the `setup` cluster's API, with its token, from its saved settings.
fn cluster_client(config: &Path) -> Result<Client, BenchError> {
    let path = config.join("clusters").join(format!("{CLUSTER}.json"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BenchError::context(format!("cannot read {}", path.display()), e))?;
    let settings: Settings = serde_json::from_str(&text)?;
    Ok(
        Client::new(&settings.manager_url(), Duration::from_secs(30))?
            .with_token(settings.token.clone()),
    )
}

/// Creates the side's service of `REPLICAS` replicas of the demo image (by id).
async fn create(
    docker: &Docker,
    client: &Client,
    side: Side,
    image: &str,
) -> Result<(), BenchError> {
    let name = side.service();
    match side {
        Side::Ours => {
            let body = ServiceRequest {
                service: name,
                image: Some(image.to_string()),
                replicas: u32::try_from(REPLICAS)?,
                ..ServiceRequest::default()
            };
            client
                .request_with::<_, StateDoc>(Method::POST, "/api/v1/service?wait=0", &body)
                .await?;
        }
        Side::Swarm | Side::SwarmNoDelay => {
            let mut template = json!({"ContainerSpec": {"Image": image}});
            if side == Side::SwarmNoDelay {
                template["RestartPolicy"] = json!({"Condition": "any", "Delay": 0});
            }
            let spec = json!({
                "Name": name,
                "TaskTemplate": template,
                "Mode": {"Replicated": {"Replicas": REPLICAS}},
            });
            let spec: ServiceSpec = serde_json::from_value(spec)?;
            docker.create_service(spec, None).await?;
        }
    }
    Ok(())
}

/// The side's running containers, as the engine lists them.
async fn running(docker: &Docker, side: Side) -> Result<Vec<ContainerSummary>, BenchError> {
    let filters = HashMap::from([
        ("label".to_string(), side.labels()),
        ("status".to_string(), vec!["running".to_string()]),
    ]);
    let options = ListContainersOptionsBuilder::new()
        .filters(&filters)
        .build();
    Ok(docker.list_containers(Some(options)).await?)
}

/// Waits until `REPLICAS` containers of the side run, one per slot.
async fn wait_all_running(docker: &Docker, side: Side) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        let list = running(docker, side).await?;
        let mut slots: Vec<u32> = list.iter().filter_map(slot_of).collect();
        slots.sort_unstable();
        slots.dedup();
        if slots.len() >= REPLICAS {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(BenchError::Failed(format!(
                "{}: {} of {REPLICAS} slots running after {} s",
                side.service(),
                slots.len(),
                DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `<service>.<slot>.<task>`, the name both sides give a container: its slot (Swarm
/// counts slots from 1, ours from 0; only equality matters here).
fn slot_of(container: &ContainerSummary) -> Option<u32> {
    let name = container.names.as_ref()?.first()?;
    slot_in(name.trim_start_matches('/'))
}

fn slot_in(name: &str) -> Option<u32> {
    let mut parts = name.split('.');
    let (_service, slot) = (parts.next()?, parts.next()?);
    parts.next()?;
    slot.parse().ok()
}

/// One kill, timed by the engine's events: seconds from the killed container's `die` to
/// its slot's next container's `create` (the orchestrator's reaction) and to its `start`
/// (the replacement runs).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    created: f64,
    started: f64,
}

/// Kills the side's longest-running container (once it has run `SETTLED`) and times its
/// slot's next container; None if none started within `DEADLINE`.
async fn kill_and_time(docker: &Docker, side: Side) -> Result<Option<Timing>, BenchError> {
    let victim = loop {
        let mut list = running(docker, side).await?;
        list.sort_by_key(|c| c.created.unwrap_or(i64::MAX));
        let oldest = list
            .into_iter()
            .find(|c| c.id.is_some() && slot_of(c).is_some());
        let Some(oldest) = oldest else {
            return Err(BenchError::Failed(format!(
                "{}: no running container to kill",
                side.service()
            )));
        };
        let age = unix_now().saturating_sub(oldest.created.unwrap_or(0));
        let wait = SETTLED
            .as_secs()
            .saturating_sub(u64::try_from(age).unwrap_or(0));
        if wait == 0 {
            break oldest;
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    };
    let (Some(id), Some(slot)) = (victim.id.clone(), slot_of(&victim)) else {
        return Err(BenchError::Failed("the victim has no id".into()));
    };
    let prefix = format!("{}.{slot}.", side.service());
    // Read from a second before the kill: the engine replays what the stream's own
    // connection would otherwise miss.
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            ["die", "create", "start"].map(String::from).to_vec(),
        ),
        ("label".to_string(), side.labels()),
    ]);
    let since = (unix_now() - 1).to_string();
    let options = EventsOptionsBuilder::default()
        .since(&since)
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(options));
    docker
        .kill_container(&id, None::<KillContainerOptions>)
        .await
        .map_err(|e| BenchError::context(format!("cannot kill {id}"), e))?;
    let mut died: Option<i64> = None;
    let mut created: Option<(String, i64)> = None;
    let seconds = |from: i64, to: i64| (to - from) as f64 / 1e9;
    let timed = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            let event = event?;
            let (Some(at), Some(action), Some(actor)) =
                (event.time_nano, event.action.as_deref(), actor_id(&event))
            else {
                continue;
            };
            let of_slot = actor != id && actor_name(&event).is_some_and(|n| n.starts_with(&prefix));
            match (action, died) {
                ("die", _) if actor == id => died = Some(at),
                ("create", Some(died)) if of_slot && at >= died => {
                    created = Some((actor.to_string(), at));
                }
                ("start", Some(died)) if of_slot && at >= died => {
                    // Its create, if it was seen (else the start stands for both).
                    let made = match &created {
                        Some((which, made)) if which == actor => *made,
                        _ => at,
                    };
                    return Ok::<_, BenchError>(Some(Timing {
                        created: seconds(died, made),
                        started: seconds(died, at),
                    }));
                }
                _ => {}
            }
        }
        Ok(None)
    })
    .await;
    timed.unwrap_or(Ok(None))
}

fn actor_id(event: &EventMessage) -> Option<&str> {
    event.actor.as_ref()?.id.as_deref()
}

fn actor_name(event: &EventMessage) -> Option<&str> {
    event
        .actor
        .as_ref()?
        .attributes
        .as_ref()?
        .get("name")
        .map(String::as_str)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `median 0.123 s, p90 0.456 s (20 runs)`, or how many were not reached.
fn summary(times: &[Option<f64>]) -> String {
    let mut reached: Vec<f64> = times.iter().flatten().copied().collect();
    if reached.is_empty() {
        return "not reached".into();
    }
    reached.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = (reached.len() as f64 * p).ceil() as usize;
        reached[rank.clamp(1, reached.len()) - 1]
    };
    let missed = times.len() - reached.len();
    let missed = if missed > 0 {
        format!(", {missed} not reached")
    } else {
        String::new()
    };
    format!(
        "median {:.3} s, p90 {:.3} s ({} runs{missed})",
        pct(0.5),
        pct(0.9),
        times.len()
    )
}

/// Each run's time, `-` where it was not reached.
fn each(times: &[Option<f64>]) -> String {
    let show = |t: &Option<f64>| t.map_or("-".into(), |t| format!("{t:.3}"));
    let runs: Vec<String> = times.iter().map(show).collect();
    format!("each run: {} s", runs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_read_from_either_sides_container_name() {
        assert_eq!(slot_in("benchlive-ours.3.ab12cd34"), Some(3));
        assert_eq!(
            slot_in("benchlive-swarm.1.k2v8x0a9b7c6d5e4f3g2h1i0j"),
            Some(1)
        );
        assert_eq!(slot_in("benchlive_worker_1"), None);
        assert_eq!(slot_in("benchlive-ours.x.ab"), None);
    }

    #[test]
    fn the_summary_gives_the_median_and_the_p90() {
        let times: Vec<Option<f64>> = (1..=20).map(|i| Some(f64::from(i) / 10.0)).collect();
        assert_eq!(summary(&times), "median 1.000 s, p90 1.800 s (20 runs)");
        assert_eq!(
            summary(&[Some(0.2), None]),
            "median 0.200 s, p90 0.200 s (2 runs, 1 not reached)"
        );
        assert_eq!(summary(&[None]), "not reached");
    }
}
