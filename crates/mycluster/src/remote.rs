//! The client subcommands: each calls the manager's API and prints the answer.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use mycluster_client::Client;
use mycluster_core::wire::{
    RolloutDoc, ServiceDoc, ServicePatchRequest, ServiceRequest, Spread, StateDoc, TaskDoc,
    TaskState,
};

use crate::cli::{Global, ServiceCommand};
use crate::follow::{change_and_follow, Follow, Goal};
use crate::output::{json, print_endpoints, print_rollout, print_versions, table, unix_time};
use crate::{placement_flags, port_flags, spec_flags};

/// A client of the manager the flags or the saved settings point at, with its token.
pub fn client(global: &Global) -> anyhow::Result<Client> {
    let url = global.manager_url();
    let token = mycluster_setup::tokens::client_token(&url, global.token_file.as_deref())?;
    Ok(Client::new(&url, Duration::from_secs(30))?
        .with_pin(global.pin()?)?
        .with_token(token))
}

pub async fn service(global: &Global, command: ServiceCommand) -> anyhow::Result<()> {
    let client = client(global)?;
    match command {
        ServiceCommand::Create {
            name,
            image,
            replicas,
            env,
            health,
            update,
            ports,
            placement,
            wait,
            command,
        } => {
            if image.is_none() && command.is_empty() {
                bail!(
                    "service {name} needs something to run: --image IMAGE (docker workers), or a command after `--` (process workers), e.g. `mycluster service create {name} -- sleep 3600`"
                );
            }
            let vars = env_vars(&env)?;
            let more = placement_flags::create(&placement)?;
            let body = ServiceRequest {
                service: name.clone(),
                image: image.clone(),
                replicas,
                command: (!command.is_empty()).then(|| command.clone()),
                env: (!vars.is_empty()).then_some(vars),
                healthcheck: spec_flags::healthcheck(&health, None)?,
                update: spec_flags::update_policy(&update, None)?,
                ports: port_flags::create(&ports.publish)?,
                stop_grace_period: ports.stop_grace_period,
                proxy_protocol: ports.proxy_protocol,
                constraints: more.constraints,
                spread: more
                    .spread
                    .map(|s| Spread::try_from(s).map_err(anyhow::Error::msg))
                    .transpose()?,
                resources: more.resources,
                volumes: more.volumes,
                restart: more.restart,
                on_disconnect: more.on_disconnect,
            };
            let follow = Follow::new(wait, global)?;
            let change = client.put_service(&body);
            let (state, shown) = change_and_follow(
                &client,
                global,
                &name,
                follow,
                |_| Goal::Replicas(replicas),
                change,
            )
            .await?;
            if !global.json {
                let what = image.unwrap_or_else(|| command.join(" "));
                println!("Service {name} deployed: {what} x {replicas}{shown}");
                print_state(&state);
            }
        }
        ServiceCommand::Ls => {
            let services = client.services().await?;
            if global.json {
                return json(&services);
            }
            let state = client.state().await?;
            let mut t = table([
                "SERVICE",
                "IMAGE",
                "RUNNING",
                "REPLICAS",
                "PORTS",
                "LAST UPDATED",
            ]);
            for s in &services {
                t.add_row([
                    s.service.clone(),
                    runs(&s.image, &s.command),
                    running(&state, &s.service).to_string(),
                    s.replicas.to_string(),
                    port_flags::list(&s.ports).unwrap_or_default(),
                    unix_time(s.last_updated),
                ]);
            }
            println!("{t}");
        }
        ServiceCommand::Get { name } => {
            let service = client.service(&name).await?;
            if global.json {
                return json(&service);
            }
            print_service(&service);
        }
        ServiceCommand::Scale {
            name,
            replicas,
            wait,
        } => {
            let follow = Follow::new(wait, global)?;
            let change = client.patch_service(&name, None, Some(replicas));
            let (_, shown) = change_and_follow(
                &client,
                global,
                &name,
                follow,
                |s: &ServiceDoc| Goal::Replicas(s.replicas),
                change,
            )
            .await?;
            if !global.json {
                println!("Service {name} scaled to {replicas}{shown}");
            }
        }
        ServiceCommand::Update {
            name,
            image,
            env,
            health,
            update,
            ports,
            publish_rm,
            no_publish,
            placement,
            constraint_rm,
            volume_rm,
            wait,
            command,
        } => {
            if image.is_none()
                && env.is_empty()
                && command.is_empty()
                && !health.any()
                && !update.any()
                && !ports.any()
                && publish_rm.is_empty()
                && !no_publish
                && !placement.any()
                && constraint_rm.is_empty()
                && volume_rm.is_empty()
            {
                bail!(
                    "nothing to change in service {name}: give --image, --env, a command after `--`, a --health-*, --update-* or --restart-* flag, --publish, --publish-rm, --no-publish, --stop-grace-period, --proxy-protocol, --constraint(-rm), --spread, --reserve-*/--limit-* or --volume(-rm) (`mycluster service update --help`)"
                );
            }
            let vars = env_vars(&env)?;
            // The API replaces a whole health check or policy: flags not given keep the
            // service's.
            let current = client.service(&name).await?;
            let more = placement_flags::update(
                &placement,
                &constraint_rm,
                &volume_rm,
                &placement_flags::Current {
                    constraints: &current.constraints,
                    resources: current.resources,
                    volumes: &current.volumes,
                    restart: current.restart,
                },
            )?;
            let patch = ServicePatchRequest {
                image: image.clone(),
                command: (!command.is_empty()).then(|| command.clone()),
                env: (!vars.is_empty()).then_some(vars),
                healthcheck: spec_flags::healthcheck(&health, current.healthcheck.as_ref())?,
                update: spec_flags::update_policy(&update, current.update.as_ref())?,
                ports: port_flags::update(&ports.publish, &publish_rm, no_publish, &current.ports)?,
                stop_grace_period: ports.stop_grace_period,
                proxy_protocol: ports.proxy_protocol,
                constraints: more.constraints,
                spread: more.spread,
                resources: more.resources,
                volumes: more.volumes,
                restart: more.restart,
                on_disconnect: more.on_disconnect,
                ..ServicePatchRequest::default()
            };
            let follow = Follow::new(wait, global)?;
            let change = client.patch_service_with(&name, &patch);
            let (_, shown) = change_and_follow(
                &client,
                global,
                &name,
                follow,
                |s: &ServiceDoc| Goal::Replicas(s.replicas),
                change,
            )
            .await?;
            if !global.json {
                match image {
                    Some(image) => println!("Service {name} updated to {image}{shown}"),
                    None => println!("Service {name} updated{shown}"),
                }
            }
        }
        ServiceCommand::Rollback { name, wait } => {
            let change = client.rollback(&name);
            let (rollout, shown) = start_rollout(&client, global, &name, wait, change).await?;
            if !global.json {
                let from = rollout
                    .from_version
                    .map_or(String::new(), |v| format!(" (from version {v})"));
                println!(
                    "Service {name} rolled back: version {}{from}{shown}",
                    rollout.version
                );
            }
        }
        ServiceCommand::Restart { name, wait } => {
            let change = client.restart(&name);
            let (rollout, shown) = start_rollout(&client, global, &name, wait, change).await?;
            if !global.json {
                println!(
                    "Service {name} restarted: version {}{shown}",
                    rollout.version
                );
            }
        }
        ServiceCommand::Versions { name } => {
            let versions = client.versions(&name).await?;
            if global.json {
                return json(&versions);
            }
            print_versions(&versions);
        }
        ServiceCommand::Rollout { name } => {
            let rollout = client.rollout(&name).await?;
            if global.json {
                return json(&rollout);
            }
            print_rollout(&rollout);
        }
        ServiceCommand::Endpoints { name } => {
            let endpoints = client.service_endpoints(&name).await?;
            if global.json {
                return json(&endpoints);
            }
            print_endpoints(&endpoints);
        }
        ServiceCommand::Rm { name, volumes } => {
            crate::remote_admin::service_rm(&client, global, &name, volumes).await?
        }
        ServiceCommand::Ps { name } => tasks(global, Some(&name)).await?,
        ServiceCommand::Rebalance { name, dry_run } => {
            crate::remote_admin::rebalance(&client, global, name.as_deref(), dry_run).await?
        }
    }
    Ok(())
}

/// `mycluster store reseed`: the running manager writes its state back into its store.
pub async fn reseed(global: &Global) -> anyhow::Result<()> {
    let done = client(global)?
        .reseed()
        .await
        .context("the store was not reseeded")?;
    if global.json {
        return json(&done);
    }
    println!(
        "Reseeded {} from the manager's memory: {} services, {} tasks, {} workers (index {})",
        done.store, done.services, done.tasks, done.workers, done.index
    );
    Ok(())
}

pub async fn state(global: &Global) -> anyhow::Result<()> {
    let state = client(global)?.state().await?;
    if global.json {
        return json(&state);
    }
    print_state(&state);
    Ok(())
}

pub async fn stats(global: &Global) -> anyhow::Result<()> {
    let stats = client(global)?.stats().await?;
    if global.json {
        return json(&stats);
    }
    let mut t = table(["STAT", "VALUE"]);
    t.add_row(["cluster.upTime".to_string(), stats.uptime]);
    for (key, value) in [
        ("services.totalOfRequests", stats.total_requests),
        ("services.totalOfContainers", stats.total_containers),
        ("workers.failures", stats.worker_failures),
        ("containers.relocated", stats.containers_relocated),
    ] {
        t.add_row([key.to_string(), value.to_string()]);
    }
    println!("{t}");
    Ok(())
}

pub async fn tasks(global: &Global, service: Option<&str>) -> anyhow::Result<()> {
    let client = client(global)?;
    if let Some(service) = service {
        // A typo should not look like a service with no tasks.
        client
            .service(service)
            .await
            .with_context(|| format!("cannot list the tasks of {service}"))?;
    }
    let tasks = client.tasks(service, None).await?;
    if global.json {
        return json(&tasks);
    }
    // Where tasks are reached, only when some are: the table is wide already.
    let addresses = tasks.iter().any(|t| t.address.is_some());
    let mut header = vec![
        "TASK", "SERVICE", "SLOT", "WORKER", "DESIRED", "STATE", "HEALTH",
    ];
    if addresses {
        header.push("ADDRESS");
    }
    header.push("MESSAGE");
    let mut t = table(header);
    for task in &tasks {
        // Why the last probe failed says more than the state's message.
        let message = match &task.health_message {
            Some(why) if !why.is_empty() => format!("{} (health: {why})", task.message),
            _ => task.message.clone(),
        };
        let mut row = vec![
            task.id.clone(),
            task.service.clone(),
            task.slot.to_string(),
            task.worker.clone().unwrap_or_else(|| "-".into()),
            task.desired_state.to_string(),
            crate::output::task_state(task),
            task.health.map_or("-".to_string(), |h| h.to_string()),
        ];
        if addresses {
            row.push(reached_at(task));
        }
        row.push(message.trim().to_string());
        t.add_row(row);
    }
    println!("{t}");
    if let Some(service) = service {
        println!("{}", crate::output::tasks_summary(service, &tasks));
    }
    Ok(())
}

/// Where a task is reached, for a table cell: `172.18.0.5:8000`, one per port (with the
/// target when the agent gave the task another port: `127.0.0.1:41234->8000`), its
/// address alone when it names no port, `-` before it runs.
fn reached_at(task: &TaskDoc) -> String {
    let Some(address) = task.address else {
        return "-".into();
    };
    let reached: Vec<String> = task
        .ports
        .iter()
        .map(|p| {
            let port = p.port.unwrap_or(p.target);
            let at = std::net::SocketAddr::new(address, port);
            if port == p.target {
                at.to_string()
            } else {
                format!("{at}->{}", p.target)
            }
        })
        .collect();
    if reached.is_empty() {
        address.to_string()
    } else {
        reached.join(", ")
    }
}

/// What a service runs, for a table cell: its image, else its command.
fn runs(image: &Option<String>, command: &Option<Vec<String>>) -> String {
    match (image, command) {
        (Some(image), _) => image.clone(),
        (None, Some(command)) => command.join(" "),
        (None, None) => "-".into(),
    }
}

fn running(state: &StateDoc, service: &str) -> usize {
    state
        .workers
        .iter()
        .flat_map(|w| &w.instances)
        .filter(|i| i.service == service)
        .map(|i| i.running)
        .sum()
}

fn print_service(service: &ServiceDoc) {
    let mut t = table(["FIELD", "VALUE"]);
    t.add_row(["service".to_string(), service.service.clone()]);
    t.add_row([
        "image".to_string(),
        service.image.clone().unwrap_or_else(|| "-".into()),
    ]);
    if let Some(command) = &service.command {
        t.add_row(["command".to_string(), command.join(" ")]);
    }
    for (name, value) in &service.env {
        t.add_row(["env".to_string(), format!("{name}={value}")]);
    }
    t.add_row(["replicas".to_string(), service.replicas.to_string()]);
    if let Some(check) = &service.healthcheck {
        t.add_row([
            "healthcheck".to_string(),
            crate::output::describe_check(check),
        ]);
    }
    if let Some(update) = &service.update {
        t.add_row(["update".to_string(), crate::output::describe_policy(update)]);
    }
    if let Some(ports) = port_flags::list(&service.ports) {
        t.add_row(["ports".to_string(), ports]);
    }
    let grace = service
        .stop_grace_period
        .unwrap_or(mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD);
    t.add_row(["stop_grace_period".to_string(), grace.to_string()]);
    if service.proxy_protocol {
        t.add_row(["proxy_protocol".to_string(), "true".to_string()]);
    }
    for constraint in &service.constraints {
        t.add_row(["constraint".to_string(), constraint.to_string()]);
    }
    if let Some(spread) = &service.spread {
        t.add_row(["spread".to_string(), spread.0.to_string()]);
    }
    if !service.resources.is_empty() {
        t.add_row([
            "resources".to_string(),
            crate::output::describe_resources(&service.resources),
        ]);
    }
    for volume in &service.volumes {
        t.add_row(["volume".to_string(), crate::output::describe_volume(volume)]);
    }
    if let Some(restart) = &service.restart {
        t.add_row([
            "restart".to_string(),
            crate::output::describe_restart(restart),
        ]);
    }
    t.add_row(["last_updated".to_string(), unix_time(service.last_updated)]);
    println!("{t}");
}

fn print_state(state: &StateDoc) {
    println!(
        "Cluster {}: {} workers, {} services",
        state.name,
        state.num_workers,
        state.services.len()
    );
    let mut t = table(["WORKER", "STATUS", "SERVICE", "IMAGE", "RUNNING"]);
    for worker in &state.workers {
        if worker.instances.is_empty() {
            t.add_row([
                worker.worker.clone(),
                worker.status.to_string(),
                "-".into(),
                "-".into(),
                "0".into(),
            ]);
        }
        for instance in &worker.instances {
            t.add_row([
                worker.worker.clone(),
                worker.status.to_string(),
                instance.service.clone(),
                instance.image.clone().unwrap_or_else(|| "-".into()),
                instance.running.to_string(),
            ]);
        }
    }
    if !state.workers.is_empty() {
        println!("{t}");
    }
    let mut s = table([
        "SERVICE",
        "IMAGE",
        "REPLICAS",
        "RUNNING",
        "PORTS",
        "LAST UPDATED",
    ]);
    for service in &state.services {
        s.add_row([
            service.service.clone(),
            runs(&service.image, &service.command),
            service.replicas.to_string(),
            running(state, &service.service).to_string(),
            port_flags::list(&service.ports).unwrap_or_default(),
            unix_time(service.last_updated),
        ]);
    }
    if !state.services.is_empty() {
        println!("{s}");
    }
}

/// `mycluster worker ps <worker>`: the worker's containers, from what its agent reports.
pub async fn worker_ps(global: &Global, worker: &str) -> anyhow::Result<()> {
    let client = client(global)?;
    let tasks = client.tasks(None, Some(worker)).await?;
    if tasks.is_empty() {
        // A typo should not look like an idle worker.
        let workers = client.workers().await?;
        if !workers.iter().any(|w| w.worker == worker) {
            anyhow::bail!("Worker {worker} is not registered in this cluster.");
        }
    }
    if global.json {
        return json(&tasks);
    }
    let mut t = table([
        "CONTAINER ID",
        "NAME",
        "IMAGE",
        "STATE",
        "DESIRED",
        "MESSAGE",
    ]);
    for task in tasks.iter().filter(|t| t.state != TaskState::Pending) {
        let short: String = task.id.chars().take(8).collect();
        t.add_row([
            task.container_id
                .clone()
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_else(|| "-".into()),
            format!("{}.{}.{short}", task.service, task.slot),
            runs(&task.image, &task.command),
            task.state.to_string(),
            task.desired_state.to_string(),
            task.message.clone(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `--env NAME=VALUE` flags as a map.
fn env_vars(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: use NAME=VALUE"))?;
        vars.insert(key.to_string(), value.to_string());
    }
    Ok(vars)
}

/// Makes a change that answers with its rollout (`rollback`, `restart`) and follows that
/// rollout to its end.
async fn start_rollout(
    client: &Client,
    global: &Global,
    name: &str,
    wait: crate::service_args::WaitArgs,
    change: impl std::future::Future<Output = Result<RolloutDoc, mycluster_client::ClientError>>,
) -> anyhow::Result<(RolloutDoc, String)> {
    let follow = Follow::new(wait, global)?;
    change_and_follow(
        client,
        global,
        name,
        follow,
        |r: &RolloutDoc| Goal::Rollout(r.version),
        change,
    )
    .await
}
