//! Bringing a cluster up to its saved settings (`setup`, and `manage --command up`): the
//! original's docker-compose cluster on one host, through the Docker Engine API and
//! offline. A cluster is a network, a data volume, `<name>_manager_1` (publishing the
//! API), `<name>_monitor_1`, `<name>_worker_1..N` (agents driving the host's engine,
//! their workloads in the worker's PID namespace) and `<name>_ingress_1` (on the host's
//! network, so the services' published ports are this host's ports: it reaches the
//! manager at the API's published port, and the replicas at their addresses on the
//! cluster network, which the host routes to). Its settings are saved (see `settings`)
//! so `manage` and the CLI find it.
//!
//! Healing: every role container is made with the restart policy `unless-stopped`
//! (`host::ROLE_RESTART`; workloads have none), and each worker runs `mycluster agent
//! --keep-cluster NAME`, the `keeper` of the control plane. A cluster made before
//! either keeps its containers and state: a role container without the policy is given
//! it in place (`docker update --restart`, said as "restart policy set"), running or
//! not; a worker whose command lacks `--keep-cluster` is made again (its command
//! changed), like a worker of another build, and its replicas are replaced, as after
//! a worker's loss.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mycluster_client::Client;
use mycluster_core::span::Span;
use mycluster_runtime::{LABEL_CLUSTER, LABEL_ROLE};

use crate::error::SetupError;
use crate::host::{ClusterHost, RoleContainer};
use crate::images::{ensure_demo, ensure_mycluster_image, ensure_redis_image, ORIGINAL_DEMO_IMAGE};
use crate::ps::print_ps;
use crate::secret::{generate, JOIN_TOKEN_ENV, METRICS_TOKEN_ENV, TOKEN_ENV};
use crate::settings::{save, settings_path, Settings};

/// The Docker network the ingress joins: the host's own.
const HOST_NETWORK: &str = "host";

/// The ingress's command: it follows the route table of the manager's API at `port`, the
/// API's port on this host (the ingress shares the host's network).
fn ingress_cmd(port: u16) -> Vec<String> {
    strings(&["ingress", "--manager", &format!("http://127.0.0.1:{port}")])
}

/// Docker names: what `setupCluster.sh` would have called them.
fn names(cluster: &str) -> (String, String, String, String, String) {
    (
        format!("{cluster}_default"),
        format!("{cluster}_data"),
        format!("{cluster}_manager_1"),
        format!("{cluster}_monitor_1"),
        format!("{cluster}_worker_"),
    )
}

fn labels(cluster: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ])
}

/// The manager's command: the cluster's policies are flags, each only when it is not
/// the default (a cluster set up before a flag existed keeps its command, and so its
/// container).
fn manager_command(settings: &Settings, store_url: &str) -> Vec<String> {
    let mut cmd = strings(&[
        "manager",
        "--listen",
        "0.0.0.0:5000",
        "--name",
        &settings.name,
        "--store",
        store_url,
    ]);
    if settings.rebalance {
        cmd.push("--rebalance".into());
    }
    if let Some(lease) = settings.lease_ms {
        cmd.extend(strings(&["--lease", &Span(lease).to_string()]));
    }
    for dir in &settings.allow_bind {
        cmd.extend(strings(&["--allow-bind", dir]));
    }
    cmd
}

/// Creates what is missing, starts what is stopped, scales the workers to the wanted
/// number, and says what it found and what it changed.
pub(crate) async fn bring_up(mut settings: Settings) -> Result<(), SetupError> {
    if settings.dev {
        return Err(SetupError::DevCluster(settings.name));
    }
    // Settings saved before clusters had tokens get theirs now.
    let api_token = settings.token.get_or_insert_with(generate).clone();
    let join_token = settings.join_token.get_or_insert_with(generate).clone();
    if settings.port == 0 {
        // Saved by an earlier version, which let the engine choose at each start.
        settings.port = free_port()?;
        settings.port_chosen = true;
    }
    let api_env = format!("{TOKEN_ENV}={api_token}");
    let join_env = format!("{JOIN_TOKEN_ENV}={join_token}");
    let cluster = settings.name.clone();
    let (network, volume, manager, monitor, worker_prefix) = names(&cluster);
    let ingress = format!("{cluster}_ingress_1");
    println!(
        "Setting up cluster '{cluster}': a manager, a monitor, {} workers and an ingress",
        settings.workers
    );
    let host = ClusterHost::connect().await?;

    print!("[1/5] Images ... ");
    let (image, built) = ensure_mycluster_image().await?;
    let mut done = built.into_iter().collect::<Vec<_>>();
    done.extend(ensure_demo(false, &[ORIGINAL_DEMO_IMAGE.to_string()]).await?);
    let redis_image = match (settings.store.as_str(), &settings.redis_image) {
        ("redis", Some(given)) => Some(given.clone()),
        ("redis", None) => {
            let (tag, built) = ensure_redis_image().await?;
            done.extend(built);
            Some(tag)
        }
        _ => None,
    };
    println!(
        "{}",
        if done.is_empty() {
            format!("{image} present")
        } else {
            done.join("; ")
        }
    );
    settings.image = image.clone();

    let created = host
        .ensure_network(&network, &labels(&cluster, "network"))
        .await?;
    println!(
        "[2/5] Network {network} {}",
        if created { "created" } else { "exists" }
    );
    let (store_url, data) = match &redis_image {
        Some(_) => (
            format!("redis://{cluster}_redis_1:6379"),
            format!("{cluster}_redis"),
        ),
        None => ("embedded".to_string(), volume.clone()),
    };
    let created = host.ensure_volume(&data, &labels(&cluster, "data")).await?;
    println!(
        "[3/5] Volume {data} (the {} store) {}",
        settings.store,
        if created { "created" } else { "exists" }
    );

    println!("[4/5] Containers");
    let existing = host.containers(&cluster).await?;
    let manager_url_inside = format!("http://{manager}:5000");
    let mut wanted = Vec::new();
    if let Some(redis_image) = &redis_image {
        // Every write fsynced before Redis answers: what the manager's 201 promises.
        wanted.push(RoleContainer {
            name: format!("{cluster}_redis_1"),
            image: redis_image.clone(),
            cmd: strings(&[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                "/data",
                "--bind",
                "0.0.0.0",
                "--protected-mode",
                "no",
            ]),
            labels: labels(&cluster, "redis"),
            network: network.clone(),
            binds: vec![format!("{data}:/data")],
            ..RoleContainer::default()
        });
    }
    let mut manager_cmd = manager_command(&settings, &store_url);
    let mut manager_binds = Vec::new();
    if redis_image.is_none() {
        manager_cmd.extend(strings(&["--data-dir", "/data"]));
        manager_binds.push(format!("{volume}:/data"));
    }
    wanted.push(RoleContainer {
        name: manager.clone(),
        image: image.clone(),
        cmd: manager_cmd,
        env: [api_env.clone(), join_env.clone()]
            .into_iter()
            .chain(
                settings
                    .metrics_token
                    .as_ref()
                    .map(|t| format!("{METRICS_TOKEN_ENV}={t}")),
            )
            .collect(),
        labels: labels(&cluster, "manager"),
        network: network.clone(),
        binds: manager_binds,
        publish: Some((5000, settings.port)),
    });
    wanted.push(RoleContainer {
        name: monitor.clone(),
        image: image.clone(),
        cmd: strings(&["monitor"]),
        env: vec![format!("MYCLUSTER_MANAGER={manager_url_inside}"), api_env],
        labels: labels(&cluster, "monitor"),
        network: network.clone(),
        ..RoleContainer::default()
    });
    for i in 1..=settings.workers {
        let name = format!("{worker_prefix}{i}");
        wanted.push(RoleContainer {
            name: name.clone(),
            image: image.clone(),
            cmd: strings(&[
                "agent",
                "--name",
                &name,
                "--driver",
                "docker",
                "--cluster",
                &cluster,
                "--pid-container",
                &name,
                "--network",
                &network,
                // Every worker keeps the control plane (see `keeper`).
                "--keep-cluster",
                &cluster,
            ]),
            // Agents get the join token only: it cannot read or change services.
            env: vec![
                format!("MYCLUSTER_MANAGER={manager_url_inside}"),
                join_env.clone(),
            ],
            labels: labels(&cluster, "worker"),
            network: network.clone(),
            // The agent drives the host's engine through its socket; no TCP port is opened.
            binds: vec!["/var/run/docker.sock:/var/run/docker.sock".into()],
            ..RoleContainer::default()
        });
    }
    // Published ports are served on this host: the ingress joins its network, and has the
    // join token only (it reads the route table; it cannot read or change services).
    wanted.push(RoleContainer {
        name: ingress.clone(),
        image: image.clone(),
        cmd: ingress_cmd(settings.port),
        env: vec![join_env.clone()],
        labels: labels(&cluster, "ingress"),
        network: HOST_NETWORK.into(),
        ..RoleContainer::default()
    });
    for spec in &mut wanted {
        if spec.name == ingress {
            // The API's port as it is now: making the manager may have moved it.
            spec.cmd = ingress_cmd(settings.port);
        }
        let found = existing.iter().find(|c| c.name == spec.name);
        let moved_port = match (found, spec.publish) {
            (Some(_), Some((inside, outside))) => {
                host.configured_port(&spec.name, inside).await? != Some(outside)
            }
            _ => false,
        };
        let what = match found {
            Some(_) if moved_port => {
                // Made to publish on another (or an engine-chosen) port: its state is in
                // the volume (or Redis), so it is made again on the saved one.
                host.remove(&spec.name).await?;
                run_role(&host, spec, &mut settings).await?;
                format!("recreated (API on port {})", settings.port)
            }
            Some(c) if c.image != spec.image && c.role != "workload" => {
                // Another build of mycluster: replace the container, keep the volume.
                host.remove(&spec.name).await?;
                run_role(&host, spec, &mut settings).await?;
                format!("recreated (image {} -> {})", c.image, spec.image)
            }
            Some(_) if host.configured_cmd(&spec.name).await? != Some(spec.cmd.clone()) => {
                // Made with another command (the ingress, for an API on another port).
                host.remove(&spec.name).await?;
                run_role(&host, spec, &mut settings).await?;
                "recreated (its command changed)".to_string()
            }
            Some(c) => {
                // Made before role containers had their restart policy: given it in
                // place (`docker update --restart`), running or not.
                let policy = match host.has_role_restart(&spec.name).await? {
                    true => "",
                    false => {
                        host.set_role_restart(&spec.name).await?;
                        " (restart policy set: unless-stopped)"
                    }
                };
                if c.state == "running" {
                    format!("exists, running{policy}")
                } else {
                    start_existing(&host, spec, &mut settings)
                        .await
                        .map(|what| format!("{what}{policy}"))?
                }
            }
            None => {
                run_role(&host, spec, &mut settings).await?;
                "created".to_string()
            }
        };
        println!("      {:<24} {what}", spec.name);
    }

    // Workers beyond the wanted number: scaled away, with their workloads.
    for extra in existing
        .iter()
        .filter(|c| c.role == "worker" && !wanted.iter().any(|w| w.name == c.name))
    {
        host.remove(&extra.name).await?;
        for workload in existing
            .iter()
            .filter(|c| c.worker.as_deref() == Some(extra.name.as_str()))
        {
            host.remove(&workload.name).await?;
        }
        println!(
            "      {:<24} removed (the cluster now has {} workers)",
            extra.name, settings.workers
        );
    }

    // Read back, not assumed: the port is fixed when the container is made, and kept
    // across its restarts.
    let published = host
        .published_port(&manager, 5000)
        .await?
        .ok_or(SetupError::NotPublished)?;
    if published != settings.port {
        return Err(SetupError::PortMismatch {
            manager,
            published,
            port: settings.port,
        });
    }
    save(&settings)?;
    print!(
        "[5/5] Waiting for the manager at {} ... ",
        settings.manager_url()
    );
    let ready = wait_for_workers(&settings).await?;
    println!("ready, {ready} workers");
    println!();
    print_ps(&host.containers(&cluster).await?);
    println!(
        "\nThe API wants the cluster's token (saved, mode 0600, in {}):\n  \
         export MYCLUSTER_TOKEN=$(mycluster token)\n\
         Try:\n  curl -H \"Authorization: Bearer $MYCLUSTER_TOKEN\" -H \"Content-Type: application/json\" -X GET {url}/api/v1/state\n  \
         curl -H \"Authorization: Bearer $MYCLUSTER_TOKEN\" -H \"Content-Type: application/json\" -X POST -d '{{\"service\": \"hello-world\", \"image\": \"crccheck/hello-world\", \"replicas\": 3}}' {url}/api/v1/service\n  \
         mycluster state        (the CLI now talks to this cluster, with its token)\n  \
         mycluster manage --command stop|up|ps|rm\n\
         Services' published ports are served on this host (by {ingress}), e.g.:\n  \
         curl -H \"Authorization: Bearer $MYCLUSTER_TOKEN\" -H \"Content-Type: application/json\" -X POST -d '{{\"service\": \"web\", \"image\": \"mycluster/hello-world\", \"replicas\": 3, \"ports\": [{{\"published\": 8080, \"target\": 8000}}]}}' {url}/api/v1/service\n  \
         curl localhost:8080    (answered by each replica in turn)",
        settings_path(&settings.name).display(),
        url = settings.manager_url()
    );
    Ok(())
}

/// A port free on this host now, for the API when `--port 0` asks setup to choose:
/// tried at random below the kernel's ephemeral range, where neither the engine nor
/// outgoing connections pick ports of their own.
pub(crate) fn free_port() -> Result<u16, SetupError> {
    for _ in 0..100 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).map_err(SetupError::NoFreePort)?;
    Ok(listener.local_addr()?.port())
}

/// Starts a role container that exists and is stopped; says what it did. One whose
/// port setup chose was taken meanwhile is made again on another.
async fn start_existing(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> Result<String, SetupError> {
    match host.start(&spec.name).await {
        Ok(()) => Ok("exists, started".to_string()),
        Err(e) if settings.port_chosen && port_taken(&e) && spec.publish.is_some() => {
            host.remove(&spec.name).await?;
            run_role(host, spec, settings).await?;
            Ok(format!(
                "recreated (its port was taken: API on port {})",
                settings.port
            ))
        }
        Err(e) => Err(e),
    }
}

/// Creates and starts a role container. A port setup chose that was taken meanwhile
/// (another program, another cluster set up at the same moment) is chosen again.
async fn run_role(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> Result<(), SetupError> {
    let mut tries = 0;
    loop {
        match host.run(spec).await {
            Ok(_) => return Ok(()),
            Err(e) if settings.port_chosen && port_taken(&e) && tries < 5 => {
                tries += 1;
                host.remove(&spec.name).await?;
                settings.port = free_port()?;
                spec.publish = spec.publish.map(|(inside, _)| (inside, settings.port));
            }
            Err(e) => return Err(e),
        }
    }
}

fn port_taken(e: &SetupError) -> bool {
    e.to_string().contains("port is already allocated")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits until the manager answers and every worker is ready; returns how many are.
async fn wait_for_workers(settings: &Settings) -> Result<usize, SetupError> {
    let client = Client::new(&settings.manager_url(), Duration::from_secs(5))?
        .with_token(settings.token.clone());
    let started = Instant::now();
    loop {
        if let Ok(workers) = client.workers().await {
            let ready = workers
                .iter()
                .filter(|w| w.status == mycluster_core::WorkerStatus::Ready)
                .filter(|w| {
                    w.worker
                        .strip_prefix(&format!("{}_worker_", settings.name))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n <= settings.workers)
                })
                .count();
            if ready == settings.workers as usize {
                return Ok(ready);
            }
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err(SetupError::NotReady(settings.name.clone()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rebalance: bool, lease_ms: Option<u64>) -> Settings {
        Settings {
            name: "c".into(),
            workers: 1,
            store: "embedded".into(),
            port: 5000,
            port_chosen: false,
            image: String::new(),
            redis_image: None,
            token: None,
            join_token: None,
            dev: false,
            rebalance,
            allow_bind: Vec::new(),
            lease_ms,
            metrics_token: None,
            ca_sha256: None,
        }
    }

    #[test]
    fn the_managers_policies_are_flags_only_when_not_the_default() {
        let plain = manager_command(&settings(false, None), "embedded");
        assert_eq!(
            plain,
            strings(&[
                "manager",
                "--listen",
                "0.0.0.0:5000",
                "--name",
                "c",
                "--store",
                "embedded"
            ])
        );
        let given = manager_command(&settings(true, Some(7_500)), "embedded");
        assert_eq!(given[7..], strings(&["--rebalance", "--lease", "7500ms"]));
        // What the manager reads back.
        assert_eq!(
            mycluster_core::span::Span::parse("7500ms").map(|s| s.millis()),
            Ok(7_500)
        );
    }
}
