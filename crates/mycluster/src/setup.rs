//! `mycluster setup` and `mycluster manage`: the original's docker-compose cluster on one
//! host, through the Docker Engine API and offline. A cluster is a network, a data
//! volume, `<name>_manager_1` (publishing the API), `<name>_monitor_1` and
//! `<name>_worker_1..N` (agents driving the host's engine, their workloads in the
//! worker's PID namespace). Its settings are saved (see `settings`) so `manage` and the
//! CLI find it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cli::{ManageArgs, ManageCommand, SetupArgs, StoreKind};
use crate::output::table;
use crate::settings::{current, forget, load_settings, save, settings_path, Settings};
use anyhow::{bail, Context};
use mycluster_client::Client;
use mycluster_runtime::{ClusterContainer, ClusterHost, RoleContainer, LABEL_CLUSTER, LABEL_ROLE};

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

fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!("invalid cluster name '{name}': 1-40 letters, digits, '-' or '_', starting with a letter or digit");
    }
    Ok(())
}

pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    validate_name(&args.name)?;
    if args.workers == 0 || args.workers > 100 {
        bail!("--workers must be between 1 and 100");
    }
    let previous = load_settings(&args.name);
    // A cluster keeps its port when set up again; 0 asks for a free one, chosen now and
    // saved (the engine would choose another at each start of the manager container,
    // and the CLI would lose it).
    let kept = previous.as_ref().map(|p| p.port).filter(|p| *p != 0);
    let chosen_before = previous.as_ref().is_some_and(|p| p.port_chosen);
    let (port, port_chosen) = match (args.port, kept) {
        (Some(0), Some(kept)) | (None, Some(kept)) => (kept, chosen_before),
        (Some(0), None) => (free_port()?, true),
        (Some(port), _) => (port, false),
        (None, None) => (5000, false),
    };
    if let Some(previous) = &previous {
        let store = if args.store == StoreKind::Redis {
            "redis"
        } else {
            "embedded"
        };
        if previous.store != store {
            bail!(
                "cluster '{}' keeps its state in the {} store: run `mycluster store copy` to move it, or remove the cluster first",
                args.name,
                previous.store
            );
        }
    }
    let settings = Settings {
        name: args.name.clone(),
        workers: args.workers,
        store: match args.store {
            StoreKind::Redis => "redis".into(),
            StoreKind::Embedded => "embedded".into(),
        },
        port,
        port_chosen,
        image: String::new(),
        redis_image: args.redis_image.clone(),
        // A cluster keeps its tokens when set up again.
        token: Some(
            previous
                .as_ref()
                .and_then(|p| p.token.clone())
                .unwrap_or_else(crate::tokens::generate),
        ),
        join_token: Some(
            previous
                .as_ref()
                .and_then(|p| p.join_token.clone())
                .unwrap_or_else(crate::tokens::generate),
        ),
        dev: false,
    };
    bring_up(settings).await
}

/// Creates what is missing, starts what is stopped, scales the workers to the wanted
/// number, and says what it found and what it changed.
async fn bring_up(mut settings: Settings) -> anyhow::Result<()> {
    if settings.dev {
        bail!(
            "cluster '{}' is a `mycluster dev` cluster: it runs in that process (stop it with Ctrl-C)",
            settings.name
        );
    }
    // Settings saved before clusters had tokens get theirs now.
    let api_token = settings
        .token
        .get_or_insert_with(crate::tokens::generate)
        .clone();
    let join_token = settings
        .join_token
        .get_or_insert_with(crate::tokens::generate)
        .clone();
    if settings.port == 0 {
        // Saved by an earlier version, which let the engine choose at each start.
        settings.port = free_port()?;
        settings.port_chosen = true;
    }
    let api_env = format!("{}={api_token}", crate::tokens::TOKEN_ENV);
    let join_env = format!("{}={join_token}", crate::tokens::JOIN_TOKEN_ENV);
    let cluster = settings.name.clone();
    let (network, volume, manager, monitor, worker_prefix) = names(&cluster);
    println!(
        "Setting up cluster '{cluster}': a manager, a monitor and {} workers",
        settings.workers
    );
    let host = ClusterHost::connect().await?;

    print!("[1/5] Images ... ");
    let (image, built) = crate::image::ensure_mycluster_image().await?;
    let mut done = built.into_iter().collect::<Vec<_>>();
    done.extend(
        crate::image::ensure_demo(false, &[crate::image::ORIGINAL_DEMO_IMAGE.to_string()]).await?,
    );
    let redis_image = match (settings.store.as_str(), &settings.redis_image) {
        ("redis", Some(given)) => Some(given.clone()),
        ("redis", None) => {
            let (tag, built) = crate::image::ensure_redis_image().await?;
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
    let mut manager_cmd = strings(&[
        "manager",
        "--listen",
        "0.0.0.0:5000",
        "--name",
        &cluster,
        "--store",
        &store_url,
    ]);
    let mut manager_binds = Vec::new();
    if redis_image.is_none() {
        manager_cmd.extend(strings(&["--data-dir", "/data"]));
        manager_binds.push(format!("{volume}:/data"));
    }
    wanted.push(RoleContainer {
        name: manager.clone(),
        image: image.clone(),
        cmd: manager_cmd,
        env: vec![api_env.clone(), join_env.clone()],
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
    for spec in &mut wanted {
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
            Some(c) if c.state == "running" => "exists, running".to_string(),
            Some(_) => match host.start(&spec.name).await {
                Ok(()) => "exists, started".to_string(),
                Err(e) if settings.port_chosen && port_taken(&e) && spec.publish.is_some() => {
                    host.remove(&spec.name).await?;
                    run_role(&host, spec, &mut settings).await?;
                    format!(
                        "recreated (its port was taken: API on port {})",
                        settings.port
                    )
                }
                Err(e) => return Err(e.into()),
            },
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
        .context("the manager's port was not published")?;
    if published != settings.port {
        bail!(
            "{manager} publishes its API on port {published}, not {}: remove it (`docker rm -f {manager}`) and run this again",
            settings.port
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
         mycluster manage --command stop|up|ps|rm",
        settings_path(&settings.name).display(),
        url = settings.manager_url()
    );
    Ok(())
}

/// A port free on this host now, for the API when `--port 0` asks setup to choose:
/// tried at random below the kernel's ephemeral range, where neither the engine nor
/// outgoing connections pick ports of their own.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind(("0.0.0.0", 0))
        .context("cannot find a free port for the API")?;
    Ok(listener.local_addr()?.port())
}

/// Creates and starts a role container. A port setup chose that was taken meanwhile
/// (another program, another cluster set up at the same moment) is chosen again.
async fn run_role(
    host: &ClusterHost,
    spec: &mut RoleContainer,
    settings: &mut Settings,
) -> anyhow::Result<()> {
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
            Err(e) => return Err(e.into()),
        }
    }
}

fn port_taken(e: &mycluster_runtime::RuntimeError) -> bool {
    e.to_string().contains("port is already allocated")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits until the manager answers and every worker is ready; returns how many are.
async fn wait_for_workers(settings: &Settings) -> anyhow::Result<usize> {
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
            bail!(
                "the cluster did not become ready within 90 s: see `docker logs {}_manager_1` and the workers' logs",
                settings.name
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_ps(containers: &[ClusterContainer]) {
    let mut t = table(["CONTAINER ID", "NAME", "ROLE", "STATUS", "IMAGE"]);
    for c in containers {
        t.add_row([
            c.id.clone(),
            c.name.clone(),
            c.role.clone(),
            c.status.clone(),
            c.image.clone(),
        ]);
    }
    println!("{t}");
}

pub async fn manage(args: ManageArgs) -> anyhow::Result<()> {
    let name = match args.name.clone() {
        Some(name) => name,
        None => current().map(|s| s.name).context(
            "no cluster was set up on this machine: give --name, or run mycluster setup",
        )?,
    };
    validate_name(&name)?;
    let host = ClusterHost::connect().await?;
    let containers = host.containers(&name).await?;
    match args.command {
        ManageCommand::Ps => {
            if containers.is_empty() {
                println!("Cluster '{name}' has no containers");
            } else {
                print_ps(&containers);
            }
        }
        ManageCommand::Stop => {
            // The monitor first, so it does not relocate work from workers being stopped;
            // the manager last, so agents can report until the end.
            let order = ["monitor", "worker", "workload", "manager", "redis"];
            for role in order {
                for c in containers
                    .iter()
                    .filter(|c| c.role == role && c.state == "running")
                {
                    host.stop(&c.name, Duration::from_secs(5)).await?;
                    println!("Stopped {}", c.name);
                }
            }
            println!("Cluster '{name}' stopped; `mycluster manage --command up` starts it again");
        }
        ManageCommand::Up => {
            let settings = load_settings(&name).with_context(|| {
                format!("cluster '{name}' was not set up on this machine: run mycluster setup --name {name}")
            })?;
            bring_up(settings).await?;
        }
        ManageCommand::Rm => {
            for c in &containers {
                host.remove(&c.name).await?;
                println!("Removed {}", c.name);
            }
            for what in host.remove_networks_and_volumes(&name).await? {
                println!("Removed {what}");
            }
            forget(&name);
            println!("Cluster '{name}' removed");
        }
    }
    Ok(())
}
