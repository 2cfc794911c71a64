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
//! TLS: the manager serves TLS only on its port 5000 (the cluster network; published on
//! every address of the host as the TLS port, for other hosts) and plain HTTP too on its
//! local port 5001, published on the host's 127.0.0.1 only (the original page's `curl
//! http://localhost:<port>`). Its CA is made on its first start, in its volume (with
//! either store), so it outlives the container; setup then learns it (`ca`) and gives
//! the monitor its digest and the agents and ingress a join token that carries it. So
//! the manager is made (and answers) before the others.
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
use mycluster_tls::{JoinToken, Pin};

use crate::ca::{advertised_names, learn_ca};
use crate::converge::{
    converge, free_port, free_port_but, manager_publish, DEFAULT_TLS_PORT, MANAGER_LOCAL_PORT,
    MANAGER_TLS_PORT,
};
use crate::error::SetupError;
use crate::host::{ClusterHost, RoleContainer};
use crate::images::{ensure_demo, ensure_mycluster_image, ensure_redis_image, ORIGINAL_DEMO_IMAGE};
use crate::ps::print_ps;
use crate::secret::{generate, JOIN_TOKEN_ENV, METRICS_TOKEN_ENV, TOKEN_ENV};
use crate::settings::{save, settings_path, Settings};

/// The Docker network the ingress joins: the host's own.
const HOST_NETWORK: &str = "host";

/// The ingress's command: it follows the route table of the manager's API at `port`, the
/// API's local port on this host (the ingress shares the host's network), over TLS (its
/// join token pins the CA).
fn ingress_cmd(port: u16) -> Vec<String> {
    strings(&["ingress", "--manager", &format!("https://127.0.0.1:{port}")])
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

/// The manager's command: TLS on its port 5000 for the cluster network and other hosts,
/// plain HTTP too on its local port (published on the host's 127.0.0.1 only), its state
/// (and CA) in /data; the names its certificate carries; the cluster's policies as
/// flags, each only when it is not the default (a cluster set up before a flag existed
/// keeps its command, and so its container).
fn manager_command(settings: &Settings, store_url: &str, names: &[String]) -> Vec<String> {
    let mut cmd = strings(&[
        "manager",
        "--listen",
        &format!("0.0.0.0:{MANAGER_TLS_PORT}"),
        "--local-listen",
        &format!("0.0.0.0:{MANAGER_LOCAL_PORT}"),
        "--name",
        &settings.name,
        "--store",
        store_url,
        "--data-dir",
        "/data",
    ]);
    for name in names {
        cmd.extend(strings(&["--advertise-name", name]));
    }
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
/// number, and says what it found and what it changed. The manager comes first: the
/// others are given its CA's digest, which it makes on its first start.
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
    if settings.tls_port == 0 {
        // Saved before the API served TLS: the usual port if it is free, else one that is.
        settings.tls_port = match std::net::TcpListener::bind(("0.0.0.0", DEFAULT_TLS_PORT)) {
            Ok(_) if settings.port != DEFAULT_TLS_PORT => DEFAULT_TLS_PORT,
            _ => free_port_but(settings.port)?,
        };
        settings.tls_port_chosen = settings.tls_port != DEFAULT_TLS_PORT;
    }
    let api_env = format!("{TOKEN_ENV}={api_token}");
    let cluster = settings.name.clone();
    let (network, volume, manager, _, worker_prefix) = names(&cluster);
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
    if data != volume {
        // With Redis too, the manager keeps its CA (and so every join token) in a
        // volume of its own across re-creations of its container.
        host.ensure_volume(&volume, &labels(&cluster, "data"))
            .await?;
    }

    println!("[4/5] Containers");
    let existing = host.containers(&cluster).await?;
    let mut control = Vec::new();
    if let Some(redis_image) = &redis_image {
        // Every write fsynced before Redis answers: what the manager's 201 promises.
        control.push(RoleContainer {
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
    control.push(RoleContainer {
        name: manager.clone(),
        image: image.clone(),
        cmd: manager_command(&settings, &store_url, &advertised_names(&manager)),
        env: [api_env.clone(), format!("{JOIN_TOKEN_ENV}={join_token}")]
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
        binds: vec![format!("{volume}:/data")],
        publish: manager_publish(&settings),
    });
    for spec in &mut control {
        let what = converge(&host, spec, &existing, &mut settings).await?;
        println!("      {:<24} {what}", spec.name);
    }
    check_published(&host, &manager, &settings).await?;
    save(&settings)?;

    // The others trust the manager by its CA's digest: learnt from it once it answers.
    wait_for_manager(&settings).await?;
    let (_, pin) = learn_ca(&mut settings).await?;
    let mut others = role_specs(&settings, pin, &image, &network);
    for i in 1..=settings.workers {
        // A worker's credential outlives its container (see `worker_spec`).
        host.ensure_volume(
            &format!("{worker_prefix}{i}_data"),
            &labels(&cluster, "worker-data"),
        )
        .await?;
    }
    for spec in &mut others {
        let what = converge(&host, spec, &existing, &mut settings).await?;
        println!("      {:<24} {what}", spec.name);
    }

    // Workers beyond the wanted number: scaled away, with their workloads (their data
    // volumes stay, with their credentials, until the cluster is removed).
    for extra in existing
        .iter()
        .filter(|c| c.role == "worker" && !others.iter().any(|w| w.name == c.name))
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
         curl localhost:8080    (answered by each replica in turn)\n\
         {url} answers on this host only; other hosts reach the API over HTTPS on port {tls} \
         (`mycluster token --curl`), and join it with `mycluster join` (`mycluster token --join`).",
        settings_path(&settings.name).display(),
        url = settings.manager_url(),
        tls = settings.tls_port,
    );
    Ok(())
}

/// The monitor, the workers and the ingress, as they should be: each reaches the
/// manager over TLS and trusts it by `pin` (the monitor with the API token, the others
/// with the join token, which carries the pin: `MCJT1-<pin>-<secret>`).
fn role_specs(settings: &Settings, pin: Pin, image: &str, network: &str) -> Vec<RoleContainer> {
    let cluster = &settings.name;
    let (_, _, manager, monitor, worker_prefix) = names(cluster);
    let manager_url = format!("https://{manager}:{MANAGER_TLS_PORT}");
    let join = JoinToken {
        ca: pin,
        secret: settings.join_token.clone().unwrap_or_default(),
    };
    let join_env = format!("{JOIN_TOKEN_ENV}={join}");
    let mut specs = vec![RoleContainer {
        name: monitor,
        image: image.to_string(),
        cmd: strings(&["monitor"]),
        env: vec![
            format!("MYCLUSTER_MANAGER={manager_url}"),
            format!("MYCLUSTER_CA_SHA256={pin}"),
            format!(
                "{TOKEN_ENV}={}",
                settings.token.as_deref().unwrap_or_default()
            ),
        ],
        labels: labels(cluster, "monitor"),
        network: network.to_string(),
        ..RoleContainer::default()
    }];
    for i in 1..=settings.workers {
        let name = format!("{worker_prefix}{i}");
        specs.push(RoleContainer {
            name: name.clone(),
            image: image.to_string(),
            cmd: strings(&[
                "agent",
                "--name",
                &name,
                "--driver",
                "docker",
                "--cluster",
                cluster,
                "--pid-container",
                &name,
                "--network",
                network,
                // Its credential, given at its first registration, is kept in its own
                // volume: a worker made again (a new build) is still itself.
                "--data-dir",
                "/data",
                // Every worker keeps the control plane (see `keeper`).
                "--keep-cluster",
                cluster,
            ]),
            // Agents get the join token only: it cannot read or change services.
            env: vec![format!("MYCLUSTER_MANAGER={manager_url}"), join_env.clone()],
            labels: labels(cluster, "worker"),
            network: network.to_string(),
            // The agent drives the host's engine through its socket; no TCP port is opened.
            binds: vec![
                "/var/run/docker.sock:/var/run/docker.sock".into(),
                format!("{name}_data:/data"),
            ],
            ..RoleContainer::default()
        });
    }
    // Published ports are served on this host: the ingress joins its network, and has the
    // join token only (it reads the route table; it cannot read or change services).
    specs.push(RoleContainer {
        name: format!("{cluster}_ingress_1"),
        image: image.to_string(),
        cmd: ingress_cmd(settings.port),
        env: vec![join_env],
        labels: labels(cluster, "ingress"),
        network: HOST_NETWORK.into(),
        ..RoleContainer::default()
    });
    specs
}

/// Read back, not assumed: the ports are fixed when the container is made, and kept
/// across its restarts.
async fn check_published(
    host: &ClusterHost,
    manager: &str,
    settings: &Settings,
) -> Result<(), SetupError> {
    for (inside, port) in [
        (MANAGER_LOCAL_PORT, settings.port),
        (MANAGER_TLS_PORT, settings.tls_port),
    ] {
        let published = host
            .published_port(manager, inside)
            .await?
            .ok_or(SetupError::NotPublished)?;
        if published != port {
            return Err(SetupError::PortMismatch {
                manager: manager.to_string(),
                published,
                port,
            });
        }
    }
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// How long the manager, then the workers, have to become ready.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// Waits until the manager answers on its local port.
async fn wait_for_manager(settings: &Settings) -> Result<(), SetupError> {
    let client = Client::new(&settings.manager_url(), Duration::from_secs(5))?;
    let started = Instant::now();
    while client.health().await.is_err() {
        if started.elapsed() > READY_WITHIN {
            return Err(SetupError::NotReady(settings.name.clone()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
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
        if started.elapsed() > READY_WITHIN {
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
            tls_port: 5443,
            tls_port_chosen: false,
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
        let plain = manager_command(&settings(false, None), "embedded", &[]);
        assert_eq!(
            plain,
            strings(&[
                "manager",
                "--listen",
                "0.0.0.0:5000",
                "--local-listen",
                "0.0.0.0:5001",
                "--name",
                "c",
                "--store",
                "embedded",
                "--data-dir",
                "/data",
            ])
        );
        let given = manager_command(
            &settings(true, Some(7_500)),
            "embedded",
            &strings(&["c_manager_1"]),
        );
        assert_eq!(
            given[11..],
            strings(&[
                "--advertise-name",
                "c_manager_1",
                "--rebalance",
                "--lease",
                "7500ms"
            ])
        );
        // What the manager reads back.
        assert_eq!(
            mycluster_core::span::Span::parse("7500ms").map(|s| s.millis()),
            Ok(7_500)
        );
    }
}
