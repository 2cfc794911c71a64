//! Rolling updates side by side with Docker Swarm (`mycluster bench --only rollout`): the
//! time to roll N replicas to a new image, `parallelism` at a time, and the fewest
//! replicas running meanwhile, ours against `docker service update --image` on the same
//! engine. Each side is run in both orders (start-first, ours by default; stop-first,
//! Swarm's default). One observer times both sides: the Engine API, polled every 50 ms,
//! as in `swarm`; a rollout is over when N containers of the new image run and no old
//! one does. The sides alternate within a run, so a busy machine slows both alike.
//!
//! What differs between the sides, and cannot be made the same:
//! - Ours counts a new task without a health check healthy once it has run `monitor`,
//!   and starts the next slot only then; Swarm moves on as soon as the new task runs,
//!   and its `--update-monitor` only watches for failures. Both are given the same
//!   monitor (`MONITOR`), which ours spends once per batch and Swarm does not.
//! - Swarm is updated through the Engine API (what `docker service update --detach
//!   --image` posts: the service's spec with a new image, at its version), so the CLI's
//!   own start-up is not timed, as our side is one HTTP request too.
//! - Both sides get the images by id, so Swarm asks no registry (see `swarm`).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bollard::models::ServiceSpec;
use bollard::query_parameters::{ListContainersOptionsBuilder, UpdateServiceOptions};
use bollard::Docker;
use mycluster_client::Client;
use mycluster_setup::images::{ensure_demo, DEMO_IMAGE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::error::{chain, BenchError};
use crate::figure::{report, Figure};
use crate::manager::ManagerProcess;
use crate::swarm;

/// Our containers carry `mycluster.cluster=benchroll`, and every service of either side
/// is named `benchroll-...`: that is all cleanup ever touches (not `swarm`'s `benchswarm`,
/// so the two benches do not remove each other's services on a shared engine).
const CLUSTER: &str = "benchroll";
const POLL: Duration = Duration::from_millis(50);
/// A rollout of 50 replicas one at a time takes about a minute on 2 cores: this leaves
/// room for a slow machine without waiting forever on a stuck one.
const DEADLINE: Duration = Duration::from_secs(600);
/// Both sides' monitor (see the module's comment).
const MONITOR: &str = "1s";
const MONITOR_NANOS: i64 = 1_000_000_000;
/// The new image: the demo image with one more label, so a different image id.
const V2_TAG: &str = "mycluster/hello-world:bench-rollout-v2";

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ours,
    Swarm,
}

#[derive(Clone, Copy, PartialEq)]
enum Order {
    StartFirst,
    StopFirst,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::StartFirst => "start-first",
            Order::StopFirst => "stop-first",
        }
    }
}

/// The sides in the order they run in each case: alternating.
const VARIANTS: [(Side, Order); 4] = [
    (Side::Ours, Order::StartFirst),
    (Side::Swarm, Order::StopFirst),
    (Side::Ours, Order::StopFirst),
    (Side::Swarm, Order::StartFirst),
];

/// One rollout as the engine saw it.
struct Outcome {
    /// Seconds from the update request to N new containers running and no old one;
    /// None if not reached.
    seconds: Option<f64>,
    /// The fewest containers of the service running at one sample during the rollout.
    min_running: usize,
}

/// What a run needs to reach both sides.
struct Sides {
    docker: Docker,
    client: Client,
    /// Image ids: the version running, and the one rolled out.
    v1: String,
    v2: String,
}

pub async fn run(quick: bool) -> Vec<Figure> {
    let docker = match swarm::connect().await {
        Ok(docker) => docker,
        Err(e) => return not_measured(&format!("no Docker engine: {}", chain(&e))),
    };
    // Leftovers of an interrupted run would be counted as running.
    let _ = swarm::remove_leftovers(&docker, CLUSTER).await;
    let (joined, had_gwbridge) = match swarm::join_swarm(&docker).await {
        Ok(done) => done,
        Err(e) => return not_measured(&format!("swarm mode: {}", chain(&e))),
    };
    let figures = match measure(&docker, quick).await {
        Ok(figures) => figures,
        Err(e) => not_measured(&chain(&e)),
    };
    if let Err(e) = swarm::remove_leftovers(&docker, CLUSTER).await {
        eprintln!("rollout bench: cleanup: {}", chain(&e));
    }
    swarm::leave_swarm(&docker, joined, had_gwbridge).await;
    figures
}

fn not_measured(reason: &str) -> Vec<Figure> {
    vec![report("rollout: side by side", "not measured", reason)]
}

/// Builds the new image (if missing) on top of the demo image: same content, one more
/// label, so both sides see a new image id and no registry is involved.
fn build_v2() -> Result<(), BenchError> {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", V2_TAG, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::context("cannot run docker build", e))?;
    let dockerfile = format!("FROM {DEMO_IMAGE}\nLABEL mycluster.bench=rollout-v2\n");
    child
        .stdin
        .take()
        .ok_or_else(|| BenchError::Failed("no stdin for docker build".into()))?
        .write_all(dockerfile.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(BenchError::Failed(format!(
            "docker build of {V2_TAG} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

async fn measure(docker: &Docker, quick: bool) -> Result<Vec<Figure>, BenchError> {
    // (replicas, parallelism). From an environment variable, to measure part of the
    // grid (e.g. `MYCLUSTER_BENCH_ROLLOUT=10x1,50x5`).
    let cases = match std::env::var("MYCLUSTER_BENCH_ROLLOUT") {
        Ok(spec) => parse_cases(&spec)?,
        // Quick: one batch of two, enough to keep the bench from rotting in CI.
        Err(_) if quick => vec![(2, 2)],
        Err(_) => vec![(10, 1), (10, 5), (50, 5), (50, 1)],
    };
    ensure_demo(false, &[])
        .await
        .map_err(|e| BenchError::context("cannot build the demo image", e))?;
    build_v2()?;
    let id = |image: bollard::models::ImageInspect| {
        image
            .id
            .ok_or_else(|| BenchError::Failed("an image without an id".into()))
    };
    let v1 = id(docker.inspect_image(DEMO_IMAGE).await?)?;
    let v2 = id(docker.inspect_image(V2_TAG).await?)?;

    let manager = ManagerProcess::start(&[])?;
    let client = manager.client(Duration::from_secs(30))?;
    // One agent, as Swarm has one node here.
    let _agent = swarm::docker_agent(&manager, &client, CLUSTER).await?;
    let sides = Sides {
        docker: docker.clone(),
        client,
        v1,
        v2,
    };

    let mut figures = Vec::new();
    for &(n, parallelism) in &cases {
        for (side, order) in VARIANTS {
            let name = format!(
                "{CLUSTER}-{}-{}-n{n}-p{parallelism}",
                label(side),
                order.as_str()
            );
            let outcome = sides.roll(side, order, &name, n, parallelism).await;
            // Removed before the next measurement, whatever happened, so the engine runs
            // only the containers being timed.
            sides.remove(side, &name).await?;
            let value = match outcome.seconds {
                Some(s) => format!("{s:.2} s, min {} run", outcome.min_running),
                None => format!("not reached, min {} run", outcome.min_running),
            };
            let what = format!(
                "rollout: {n} @{parallelism} {} {}",
                label(side),
                order.as_str()
            );
            let detail = format!(
                "{n} replicas to a new image, parallelism {parallelism}, monitor {MONITOR}; \
                 fewest running during it: {} of {n}",
                outcome.min_running
            );
            figures.push(report(&what, value, detail));
        }
    }
    Ok(figures)
}

fn parse_cases(spec: &str) -> Result<Vec<(usize, u32)>, BenchError> {
    spec.split(',')
        .map(|case| {
            let (n, p) = case.trim().split_once('x').ok_or_else(|| {
                BenchError::Failed(format!("MYCLUSTER_BENCH_ROLLOUT: {case:?} is not NxP"))
            })?;
            let number = |text: &str| {
                text.parse::<u32>().map_err(|e| {
                    BenchError::context(format!("MYCLUSTER_BENCH_ROLLOUT: {case:?}"), e)
                })
            };
            Ok((number(n)? as usize, number(p)?))
        })
        .collect()
}

fn label(side: Side) -> &'static str {
    match side {
        Side::Ours => "ours",
        Side::Swarm => "swarm",
    }
}

impl Sides {
    /// Creates the service on v1, waits until it is settled, then rolls it to v2 and
    /// times it from the engine.
    async fn roll(
        &self,
        side: Side,
        order: Order,
        name: &str,
        n: usize,
        parallelism: u32,
    ) -> Outcome {
        let not_reached = Outcome {
            seconds: None,
            min_running: 0,
        };
        if let Err(e) = self.create(side, order, name, n, parallelism).await {
            eprintln!("rollout bench: {name}: {}", chain(&e));
            return not_reached;
        }
        if let Err(e) = self.settled(side, name, n).await {
            eprintln!("rollout bench: {name}: {}", chain(&e));
            return not_reached;
        }
        let start = Instant::now();
        if let Err(e) = self.update(side, name).await {
            eprintln!("rollout bench: {name}: update: {}", chain(&e));
            return not_reached;
        }
        let mut min_running = n;
        let mut seen = (0, 0);
        loop {
            match self.running(side, name).await {
                Ok(running) => {
                    min_running = min_running.min(running.len());
                    let new = running.iter().filter(|image| **image == self.v2).count();
                    seen = (new, running.len() - new);
                    if new >= n && new == running.len() {
                        return Outcome {
                            seconds: Some(start.elapsed().as_secs_f64()),
                            min_running,
                        };
                    }
                }
                Err(e) => eprintln!("rollout bench: {name}: {}", chain(&e)),
            }
            if start.elapsed() > DEADLINE {
                eprintln!(
                    "rollout bench: {name}: {} new and {} old running after {} s",
                    seen.0,
                    seen.1,
                    DEADLINE.as_secs()
                );
                return Outcome {
                    seconds: None,
                    min_running,
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn create(
        &self,
        side: Side,
        order: Order,
        name: &str,
        n: usize,
        parallelism: u32,
    ) -> Result<(), BenchError> {
        match side {
            Side::Ours => {
                let body = json!({
                    "service": name,
                    "image": self.v1,
                    "replicas": n,
                    "update": {
                        "parallelism": parallelism,
                        "order": order.as_str(),
                        "monitor": MONITOR,
                    },
                });
                self.client
                    .request_with::<_, Value>(Method::POST, "/api/v1/service?wait=0", &body)
                    .await?;
            }
            Side::Swarm => {
                // What `docker service create --update-parallelism P --update-order O
                // --update-monitor 1s` posts; delay 0 and failure action pause are its
                // defaults, written out.
                let spec = json!({
                    "Name": name,
                    "TaskTemplate": {"ContainerSpec": {"Image": self.v1}},
                    "Mode": {"Replicated": {"Replicas": n}},
                    "UpdateConfig": {
                        "Parallelism": parallelism,
                        "Delay": 0,
                        "FailureAction": "pause",
                        "Monitor": MONITOR_NANOS,
                        "MaxFailureRatio": 0,
                        "Order": order.as_str(),
                    },
                });
                let spec: ServiceSpec = serde_json::from_value(spec)?;
                self.docker.create_service(spec, None).await?;
            }
        }
        Ok(())
    }

    /// Waits until N containers of v1 run, and (ours) every task is healthy, so that the
    /// rollout starts from a settled service on both sides; then one monitor more on both
    /// sides, so neither is still watching its first tasks.
    async fn settled(&self, side: Side, name: &str, n: usize) -> Result<(), BenchError> {
        let started = Instant::now();
        loop {
            let running = self.running(side, name).await?;
            let engine = running.len() == n && running.iter().all(|image| *image == self.v1);
            let manager = match side {
                Side::Swarm => true,
                Side::Ours => {
                    let tasks = self.client.tasks(Some(name), None).await?;
                    let healthy = tasks
                        .iter()
                        .filter(|t| {
                            t.health == Some(mycluster_core::service::Health::Healthy)
                                && t.state == mycluster_core::TaskState::Running
                        })
                        .count();
                    healthy == n
                }
            };
            if engine && manager {
                break;
            }
            if started.elapsed() > DEADLINE {
                return Err(BenchError::Failed(format!(
                    "{name}: not settled on the old image after {} s",
                    DEADLINE.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(Duration::from_nanos(MONITOR_NANOS as u64)).await;
        Ok(())
    }

    async fn update(&self, side: Side, name: &str) -> Result<(), BenchError> {
        match side {
            Side::Ours => {
                self.client
                    .patch_service(name, Some(&self.v2), None)
                    .await?;
            }
            Side::Swarm => {
                // `docker service update --image`: the current spec, new image, at the
                // version read.
                let service = self.docker.inspect_service(name, None).await?;
                let version = service
                    .version
                    .and_then(|v| v.index)
                    .ok_or_else(|| BenchError::Failed(format!("{name} has no version")))?;
                let mut spec = service
                    .spec
                    .ok_or_else(|| BenchError::Failed(format!("{name} has no spec")))?;
                let container = spec
                    .task_template
                    .as_mut()
                    .and_then(|t| t.container_spec.as_mut())
                    .ok_or_else(|| BenchError::Failed(format!("{name} has no container")))?;
                container.image = Some(self.v2.clone());
                let options = UpdateServiceOptions {
                    version: i32::try_from(version)?,
                    ..Default::default()
                };
                self.docker
                    .update_service(name, spec, options, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// The image ids of the service's running containers, as the engine sees them.
    async fn running(&self, side: Side, name: &str) -> Result<Vec<String>, BenchError> {
        let mut filters = filter(side, name);
        filters.insert("status".into(), vec!["running".into()]);
        let options = ListContainersOptionsBuilder::new()
            .all(false)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list
            .into_iter()
            .map(|c| c.image_id.unwrap_or_default())
            .collect())
    }

    /// Removes the service and waits until none of its containers is left (by force
    /// after a minute).
    async fn remove(&self, side: Side, name: &str) -> Result<(), BenchError> {
        let removed: Option<BenchError> = match side {
            Side::Ours => self.client.delete_service(name).await.err().map(Into::into),
            Side::Swarm => self.docker.delete_service(name).await.err().map(Into::into),
        };
        if let Some(e) = removed {
            eprintln!("rollout bench: cannot remove {name}: {e}");
        }
        let started = Instant::now();
        loop {
            let left = swarm::containers(&self.docker, filter(side, name), true).await?;
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                swarm::force_remove(&self.docker, &left).await;
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

fn filter(side: Side, name: &str) -> HashMap<String, Vec<String>> {
    let labels = match side {
        Side::Ours => vec![
            format!("mycluster.cluster={CLUSTER}"),
            format!("mycluster.service={name}"),
        ],
        Side::Swarm => vec![format!("com.docker.swarm.service.name={name}")],
    };
    HashMap::from([("label".to_string(), labels)])
}
