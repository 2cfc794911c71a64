//! MyCluster side by side with Docker Swarm on the same engine and the same locally built
//! image: the time from request to N running containers, and to replace a killed one.
//! One observer (the Engine API, polled every 50 ms) times both sides, and the sides
//! alternate, so a busy machine slows both alike; the ratio is the figure to read.
//!
//! Both sides get the image by its id. Given a tag, Swarm first asks a registry for it
//! on every task (here none answers, and each attempt fails on DNS), which is not what
//! is being compared; that case is measured too, as a third side.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use bollard::models::{LocalNodeState, ServiceSpec, SwarmInitRequest};
use bollard::query_parameters::{
    KillContainerOptions, LeaveSwarmOptionsBuilder, ListContainersOptionsBuilder,
    ListServicesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use mycluster_client::Client;
use mycluster_core::wire::{ServiceRequest, StateDoc, WorkerStatus};
use mycluster_setup::images::{ensure_demo, DEMO_IMAGE};
use reqwest::Method;
use serde_json::json;

use crate::error::chain;
use crate::error::BenchError;
use crate::figure::{report, Figure};
use crate::manager::ManagerProcess;

/// Our containers carry `mycluster.cluster=benchswarm`, and every service of either side
/// is named `benchswarm-...`: that is all cleanup ever touches.
const CLUSTER: &str = "benchswarm";
const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(120);
/// Swarm creates this bridge for its tasks and leaves it behind when the node leaves.
const GWBRIDGE: &str = "docker_gwbridge";

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ours,
    Swarm,
    /// Swarm given the image's tag rather than its id.
    SwarmByTag,
}

/// What a run needs to reach both sides.
struct Sides {
    docker: Docker,
    client: Client,
    /// The demo image's id, and its tag.
    id: String,
    tag: String,
}

/// A `mycluster agent` process (this binary, docker driver); killed when dropped.
pub(crate) struct Agent(Child);

/// Starts one docker agent named and labelled `cluster` (as Swarm has one node here) and
/// waits until the manager holds it ready.
pub(crate) async fn docker_agent(
    manager: &ManagerProcess,
    client: &Client,
    cluster: &str,
) -> Result<Agent, BenchError> {
    let agent = Agent(manager.spawn_agent(&[
        "--driver",
        "docker",
        "--cluster",
        cluster,
        "--name",
        cluster,
    ])?);
    let started = Instant::now();
    while !client
        .workers()
        .await
        .is_ok_and(|w| w.iter().any(|w| w.status == WorkerStatus::Ready))
    {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Failed(
                "the agent did not register within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(agent)
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(quick: bool) -> Vec<Figure> {
    let docker = match connect().await {
        Ok(docker) => docker,
        Err(e) => return not_measured(&format!("no Docker engine: {}", chain(&e))),
    };
    // Leftovers of an interrupted run would be counted as running.
    let _ = remove_leftovers(&docker, CLUSTER).await;
    let (joined, had_gwbridge) = match join_swarm(&docker).await {
        Ok(done) => done,
        Err(e) => return not_measured(&format!("swarm mode: {}", chain(&e))),
    };
    let figures = match measure(&docker, quick).await {
        Ok(figures) => figures,
        Err(e) => not_measured(&chain(&e)),
    };
    if let Err(e) = remove_leftovers(&docker, CLUSTER).await {
        eprintln!("swarm bench: cleanup: {}", chain(&e));
    }
    leave_swarm(&docker, joined, had_gwbridge).await;
    figures
}

/// Leaves swarm mode if `join_swarm` joined it, and removes Swarm's bridge if it made it:
/// the engine is left as it was found.
pub(crate) async fn leave_swarm(docker: &Docker, joined: bool, had_gwbridge: bool) {
    if joined {
        let leave = LeaveSwarmOptionsBuilder::new().force(true).build();
        if let Err(e) = docker.leave_swarm(Some(leave)).await {
            eprintln!("swarm bench: cannot leave the swarm it joined: {e}");
        }
        if !had_gwbridge {
            let _ = docker.remove_network(GWBRIDGE).await;
        }
    }
}

pub(crate) async fn connect() -> Result<Docker, BenchError> {
    let docker = Docker::connect_with_defaults()?;
    let agreed = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version());
    Ok(agreed
        .await
        .map_err(|e| BenchError::context("no answer within 10 s", e))??)
}

fn not_measured(reason: &str) -> Vec<Figure> {
    vec![report("swarm: side by side", "not measured", reason)]
}

/// Puts the engine in swarm mode unless it is already: returns whether we did (so we
/// leave again at the end), and whether Swarm's bridge network existed before.
pub(crate) async fn join_swarm(docker: &Docker) -> Result<(bool, bool), BenchError> {
    let info = docker
        .info()
        .await
        .map_err(|e| BenchError::context("cannot ask the engine", e))?;
    let state = info.swarm.and_then(|s| s.local_node_state);
    if state == Some(LocalNodeState::ACTIVE) {
        return Ok((false, true));
    }
    let had_gwbridge = docker.inspect_network(GWBRIDGE, None).await.is_ok();
    let init = SwarmInitRequest {
        listen_addr: Some("0.0.0.0:2377".into()),
        advertise_addr: Some("127.0.0.1".into()),
        ..Default::default()
    };
    docker.init_swarm(init).await.map_err(|e| {
        BenchError::context("docker swarm init --advertise-addr 127.0.0.1 failed", e)
    })?;
    Ok((true, had_gwbridge))
}

async fn measure(docker: &Docker, quick: bool) -> Result<Vec<Figure>, BenchError> {
    let sizes: &[usize] = if quick { &[3] } else { &[10, 50, 100] };
    let rounds = if quick { 1 } else { 3 };
    ensure_demo(false, &[])
        .await
        .map_err(|e| BenchError::context("cannot build the demo image", e))?;
    let manager = ManagerProcess::start(&[])?;
    let client = manager.client(Duration::from_secs(30))?;
    let agent = docker_agent(&manager, &client, CLUSTER).await?;
    let tag = DEMO_IMAGE.to_string();
    let id = docker.inspect_image(&tag).await?.id;
    let sides = Sides {
        docker: docker.clone(),
        client,
        id: id.ok_or_else(|| BenchError::Failed("the demo image has no id".into()))?,
        tag,
    };

    // times[size][running or replace][side]: one entry per round, None if not reached.
    let mut times = vec![<[[Vec<Option<f64>>; 3]; 2]>::default(); sizes.len()];
    for round in 1..=rounds {
        for (i, &n) in sizes.iter().enumerate() {
            for side in [Side::Ours, Side::Swarm, Side::SwarmByTag] {
                let name = format!("{CLUSTER}-{}-n{n}-r{round}", label(side));
                let [up, replaced] = sides.converge_and_replace(side, &name, n).await;
                // Removed before the next measurement, whatever happened, so the engine
                // runs only the containers being timed.
                sides.remove(side, &name).await?;
                times[i][0][side as usize].push(up);
                times[i][1][side as usize].push(replaced);
            }
        }
    }
    drop(agent);

    let mut figures = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let what = [format!("request -> {n}"), format!("kill 1 of {n} -> {n}")];
        for (k, what) in what.iter().enumerate() {
            let [ours, swarm, by_tag] = &times[i][k];
            let detail = format!("each round: ours {} s, swarm {} s", list(ours), list(swarm));
            let name = format!("swarm: {what} running");
            figures.push(report(&name, ratio(ours, swarm), detail));
            let detail = format!("Swarm given the tag: each round {} s", list(by_tag));
            let name = format!("swarm: {what} running (tag)");
            figures.push(report(&name, ratio(ours, by_tag), detail));
        }
    }
    Ok(figures)
}

impl Sides {
    /// Requests `n` replicas and times them to running, then kills one and times its
    /// replacement. A time is None if it was not reached.
    async fn converge_and_replace(&self, side: Side, name: &str, n: usize) -> [Option<f64>; 2] {
        let start = Instant::now();
        if let Err(e) = self.request(side, name, n).await {
            eprintln!("swarm bench: {name}: {}", chain(&e));
            return [None, None];
        }
        let up = self.wait_running(side, name, n, &[], start).await;
        let running = self.running(side, name).await.unwrap_or_default();
        let (Some(_), Some(victim)) = (up, running.first()) else {
            return [up, None];
        };
        let start = Instant::now();
        let kill = self
            .docker
            .kill_container(victim, None::<KillContainerOptions>);
        if let Err(e) = kill.await {
            eprintln!("swarm bench: cannot kill {victim}: {e}");
            return [up, None];
        }
        [up, self.wait_running(side, name, n, &running, start).await]
    }

    async fn request(&self, side: Side, name: &str, n: usize) -> Result<(), BenchError> {
        match side {
            Side::Ours => {
                // wait=0: the manager answers at once, so the observer alone times both.
                let body = ServiceRequest {
                    service: name.to_string(),
                    image: Some(self.id.clone()),
                    replicas: u32::try_from(n)?,
                    command: None,
                    env: None,
                    healthcheck: None,
                    update: None,
                    ports: None,
                    stop_grace_period: None,
                    proxy_protocol: None,
                    ..ServiceRequest::default()
                };
                let path = "/api/v1/service?wait=0";
                self.client
                    .request_with::<_, StateDoc>(Method::POST, path, &body)
                    .await?;
            }
            Side::Swarm | Side::SwarmByTag => {
                let image = if side == Side::Swarm {
                    &self.id
                } else {
                    &self.tag
                };
                // What `docker service create --detach --no-resolve-image` posts, minus
                // the CLI's own start-up: one HTTP request, as on our side.
                let spec = json!({
                    "Name": name,
                    "TaskTemplate": {"ContainerSpec": {"Image": image}},
                    "Mode": {"Replicated": {"Replicas": n}},
                });
                let spec: ServiceSpec = serde_json::from_value(spec)?;
                self.docker.create_service(spec, None).await?;
            }
        }
        Ok(())
    }

    /// Seconds from `start` until `n` containers of the service run; None after the
    /// deadline. After a kill, `before` is what ran then, the killed one first: it does
    /// not count, and a new container must be among the `n`, not merely one that was
    /// already running beside them.
    async fn wait_running(
        &self,
        side: Side,
        name: &str,
        n: usize,
        before: &[String],
        start: Instant,
    ) -> Option<f64> {
        let mut seen = 0;
        loop {
            if let Ok(ids) = self.running(side, name).await {
                seen = ids.iter().filter(|id| Some(*id) != before.first()).count();
                let new = before.is_empty() || ids.iter().any(|id| !before.contains(id));
                if seen >= n && new {
                    return Some(start.elapsed().as_secs_f64());
                }
            }
            if start.elapsed() > DEADLINE {
                eprintln!(
                    "swarm bench: {name}: {seen} of {n} running after {} s",
                    DEADLINE.as_secs()
                );
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ids of the service's running containers, as the engine sees them.
    async fn running(&self, side: Side, name: &str) -> Result<Vec<String>, BenchError> {
        let mut filters = service_filter(side, name);
        filters.insert("status".into(), vec!["running".into()]);
        containers(&self.docker, filters, false).await
    }

    /// Removes the service and waits until none of its containers is left (by force
    /// after a minute).
    async fn remove(&self, side: Side, name: &str) -> Result<(), BenchError> {
        let removed: Option<BenchError> = match side {
            Side::Ours => self.client.delete_service(name).await.err().map(Into::into),
            _ => self.docker.delete_service(name).await.err().map(Into::into),
        };
        if let Some(e) = removed {
            eprintln!("swarm bench: cannot remove {name}: {e}");
        }
        let started = Instant::now();
        loop {
            let left = containers(&self.docker, service_filter(side, name), true).await?;
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                force_remove(&self.docker, &left).await;
            }
            if started.elapsed() > Duration::from_secs(90) {
                return Err(BenchError::Failed(format!(
                    "{} containers of {name} are still there",
                    left.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn label(side: Side) -> &'static str {
    match side {
        Side::Ours => "ours",
        Side::Swarm => "swarm",
        Side::SwarmByTag => "swarmtag",
    }
}

fn service_filter(side: Side, name: &str) -> HashMap<String, Vec<String>> {
    let labels = match side {
        Side::Ours => vec![
            format!("mycluster.cluster={CLUSTER}"),
            format!("mycluster.service={name}"),
        ],
        _ => vec![format!("com.docker.swarm.service.name={name}")],
    };
    HashMap::from([("label".to_string(), labels)])
}

pub(crate) async fn containers(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
    all: bool,
) -> Result<Vec<String>, BenchError> {
    let options = ListContainersOptionsBuilder::new()
        .all(all)
        .filters(&filters)
        .build();
    let list = docker.list_containers(Some(options)).await?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Best effort: a container may be on its way out already.
pub(crate) async fn force_remove(docker: &Docker, ids: &[String]) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    for id in ids {
        let _ = docker.remove_container(id, Some(options.clone())).await;
    }
}

/// Removes the Swarm services named `<cluster>-...` and every container of ours (labelled
/// with the cluster) or theirs, and checks that none is left. Each bench has a cluster
/// name of its own (`benchswarm` here, `benchroll` for rollouts), so one does not remove
/// another's services when both run on the same engine.
pub(crate) async fn remove_leftovers(docker: &Docker, cluster: &str) -> Result<(), BenchError> {
    let filter = HashMap::from([("name".to_string(), vec![format!("{cluster}-")])]);
    let options = ListServicesOptionsBuilder::new().filters(&filter).build();
    // Not in swarm mode, the engine refuses to list services: then there are none.
    let services = docker
        .list_services(Some(options))
        .await
        .unwrap_or_default();
    for name in services.into_iter().filter_map(|s| s.spec?.name) {
        if let Err(e) = docker.delete_service(&name).await {
            eprintln!("swarm bench: cannot remove service {name}: {e}");
        }
    }
    let started = Instant::now();
    loop {
        let ours = HashMap::from([("label".into(), vec![format!("mycluster.cluster={cluster}")])]);
        let mut left = containers(docker, ours, true).await?;
        // The engine filters labels by value, not by prefix: Swarm's task containers of
        // our services are picked by name here, anyone else's are left alone.
        let key = "com.docker.swarm.service.name";
        let swarm = HashMap::from([("label".to_string(), vec![key.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&swarm)
            .build();
        for container in docker.list_containers(Some(options)).await? {
            let service = container.labels.as_ref().and_then(|l| l.get(key));
            if service.is_some_and(|s| s.starts_with(&format!("{cluster}-"))) {
                left.extend(container.id);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Failed(format!(
                "{} containers are still there",
                left.len()
            )));
        }
        force_remove(docker, &left).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn median(times: &[Option<f64>]) -> Option<f64> {
    let mut reached: Vec<f64> = times.iter().copied().collect::<Option<_>>()?;
    reached.sort_by(f64::total_cmp);
    reached.get(reached.len() / 2).copied()
}

/// The medians, `ours 1.23 s / swarm 4.56 s = 0.27`, or which side was not reached.
fn ratio(ours: &[Option<f64>], swarm: &[Option<f64>]) -> String {
    match (median(ours), median(swarm)) {
        (Some(a), Some(b)) => format!("ours {a:.2} s / swarm {b:.2} s = {:.2}", a / b),
        (a, b) => {
            let show =
                |t: Option<f64>| t.map_or("not reached".to_string(), |t| format!("{t:.2} s"));
            format!("ours {} / swarm {}", show(a), show(b))
        }
    }
}

/// Each round's time, `-` where it was not reached.
fn list(times: &[Option<f64>]) -> String {
    let show = |t: &Option<f64>| t.map_or("-".into(), |t| format!("{t:.2}"));
    times.iter().map(show).collect::<Vec<String>>().join(" ")
}
