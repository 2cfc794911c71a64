//! Requests through the ingress (`mycluster bench --only ingress`): requests per second
//! and p50/p99 latency under `wrk`, on the same engine and the same locally built image
//! (`mycluster/hello-world`, by id), for three sides:
//! - **direct**: straight to one replica (its container's address, port 8000): what the
//!   two others add to;
//! - **ours**: a `mycluster ingress --manager URL` process on this host, in front of 3
//!   replicas run by a real manager and one `mycluster agent --driver docker`;
//! - **Swarm**: Docker Swarm's routing mesh (`docker service create -p P:8000
//!   --replicas 3`), which balances in the kernel (IPVS).
//!
//! Each measurement is `wrk -t2 -c32 --latency`, twice per side: with keep-alive (wrk's
//! default, 10 s: 32 connections reused, so the ingress balances 32 connections once)
//! and with `Connection: close` (5 s: a new connection per request, each balanced anew:
//! what a failover test's client does). The sides alternate within each round, so a busy
//! machine slows all alike. wrk reaches the ingress and the mesh at this host's address on
//! the replicas' network, as it reaches the replica at the replica's, never on loopback
//! (where the kernel reuses ports in TIME_WAIT, elsewhere not), and a new-connection run
//! does not start while many of the last one's connections to its destination are in
//! TIME_WAIT here (`wrk::drain`), so all sides have the same ports.
//! What differs between the sides: ours is a user-space proxy that copies every byte
//! (two more sockets per connection, and a process competing with wrk and the replicas
//! for this machine's cores), Swarm's mesh rewrites packets in the kernel (IPVS).
//!
//! `--quick` (CI) measures one round of 1 s runs and leaves Swarm out (its swarm init,
//! mesh set up and leave would double the part's time); the full run has three rounds.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::ServiceSpec;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use mycluster_client::Client;
use mycluster_core::service::{PortSpec, Protocol};
use mycluster_core::wire::ServiceRequest;
use mycluster_setup::images::{ensure_demo, DEMO_IMAGE};
use mycluster_setup::secret::{JOIN_TOKEN_ENV, TOKEN_ENV};
use serde_json::json;

use crate::error::{chain, BenchError};
use crate::figure::{report, Figure};
use crate::manager::{die_with_parent, rss_mib, this_executable, ManagerProcess};
use crate::swarm;
use crate::wrk::{self, Connections};

/// Our containers carry `mycluster.cluster=benchingress`, and every service of either
/// side is named `benchingress-...`: all that cleanup touches (not the other benches').
const CLUSTER: &str = "benchingress";
const OURS: &str = "benchingress-ours";
const SWARM: &str = "benchingress-swarm";
const REPLICAS: usize = 3;
/// Where `mycluster hello` listens in the demo image.
const TARGET: u16 = 8000;
const DEADLINE: Duration = Duration::from_secs(120);
/// The mesh is up within seconds where the kernel has IPVS; where it has not, it never
/// answers.
const MESH_DEADLINE: Duration = Duration::from_secs(30);
/// Requests made one connection each to see the balancing before the load.
const SPREAD_REQUESTS: usize = 30;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Side {
    Direct,
    Ours,
    Swarm,
}

impl Side {
    fn describe(self) -> &'static str {
        match self {
            Side::Direct => "direct to 1 replica",
            Side::Ours => "our ingress",
            Side::Swarm => "swarm mesh",
        }
    }
}

pub async fn run(quick: bool) -> Vec<Figure> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return not_measured("the ingress benchmark needs wrk (apt-get install wrk)");
    }
    let docker = match swarm::connect().await {
        Ok(docker) => docker,
        Err(e) => return not_measured(&format!("no Docker engine: {}", chain(&e))),
    };
    // Leftovers of an interrupted run would take the replicas' place or the ports.
    let _ = swarm::remove_leftovers(&docker, CLUSTER).await;
    let swarm_mode = if quick {
        None
    } else {
        match swarm::join_swarm(&docker).await {
            Ok(done) => Some(Ok(done)),
            Err(e) => Some(Err(format!("swarm mode: {}", chain(&e)))),
        }
    };
    let figures = match measure(&docker, quick, swarm_mode.as_ref()).await {
        Ok(figures) => figures,
        Err(e) => not_measured(&chain(&e)),
    };
    if let Err(e) = swarm::remove_leftovers(&docker, CLUSTER).await {
        eprintln!("ingress bench: cleanup: {}", chain(&e));
    }
    if let Some(Ok((joined, had_gwbridge))) = swarm_mode {
        swarm::leave_swarm(&docker, joined, had_gwbridge).await;
    }
    figures
}

fn not_measured(reason: &str) -> Vec<Figure> {
    vec![report("ingress: req/s and latency", "not measured", reason)]
}

async fn measure(
    docker: &Docker,
    quick: bool,
    swarm_mode: Option<&Result<(bool, bool), String>>,
) -> Result<Vec<Figure>, BenchError> {
    // Keep-alive and new-connection runs' seconds: a new-connection run must stay under
    // the ephemeral ports one destination has (see `drain`).
    let (rounds, seconds) = if quick { (1, [1, 1]) } else { (3, [10, 5]) };
    ensure_demo(false, &[])
        .await
        .map_err(|e| BenchError::context("cannot build the demo image", e))?;
    let image = docker
        .inspect_image(DEMO_IMAGE)
        .await?
        .id
        .ok_or_else(|| BenchError::Failed("the demo image has no id".into()))?;
    let manager = ManagerProcess::start(&[])?;
    let client = manager.client(Duration::from_secs(30))?;
    let _agent = swarm::docker_agent(&manager, &client, CLUSTER).await?;

    // Each side's address, or why it is not measured. The ingress and the mesh are
    // reached at this host's address on the replicas' network, not on loopback: the
    // kernel reuses ports in TIME_WAIT on loopback only, which would favour them over
    // the direct side in the new-connection runs.
    let ours_port = free_port()?;
    create_ours(docker, &client, &image, ours_port).await?;
    let (direct, host) = addresses(docker).await?;
    let ours = SocketAddrV4::new(host, ours_port);
    let mut urls: Vec<(Side, Result<SocketAddrV4, String>)> = vec![(Side::Direct, Ok(direct))];
    let ingress = match Ingress::start(&manager, &client, ours).await {
        Ok(ingress) => {
            urls.push((Side::Ours, Ok(ours)));
            Some(ingress)
        }
        Err(e) => {
            urls.push((Side::Ours, Err(chain(&e))));
            None
        }
    };
    match swarm_mode {
        None => {}
        Some(Err(why)) => urls.push((Side::Swarm, Err(why.clone()))),
        Some(Ok(_)) => {
            let url = swarm_side(docker, &image, host)
                .await
                .map_err(|e| chain(&e));
            urls.push((Side::Swarm, url));
        }
    }

    let mut figures = Vec::new();
    // The balancing before the load: one connection per request, as a new user's.
    for (side, url) in &urls {
        if let (Side::Ours | Side::Swarm, Ok(at)) = (side, url) {
            let served = served_by(&http(*at), SPREAD_REQUESTS).await;
            figures.push(report(
                &format!("ingress: {SPREAD_REQUESTS} new conns -> {}", side.describe()),
                format!("served by {} of {REPLICAS}", served.len()),
                format!(
                    "distinct X-Served-By over {SPREAD_REQUESTS} GETs, one connection each, {REPLICAS} replicas"
                ),
            ));
        }
    }

    let mut runs: HashMap<(Connections, Side), Vec<wrk::Run>> = HashMap::new();
    for _ in 0..rounds {
        for (i, connections) in [Connections::KeepAlive, Connections::Close]
            .into_iter()
            .enumerate()
        {
            for (side, url) in &urls {
                if let Ok(at) = url {
                    if connections == Connections::Close {
                        wrk::drain(*at).await;
                    }
                    let run = wrk::run(&http(*at), seconds[i], connections, &[]).await?;
                    runs.entry((connections, *side)).or_default().push(run);
                }
            }
        }
    }
    for (i, connections) in [Connections::KeepAlive, Connections::Close]
        .into_iter()
        .enumerate()
    {
        let command = format!("wrk -t2 -c32 -d{}s --latency", seconds[i]);
        let direct = runs
            .get(&(connections, Side::Direct))
            .and_then(|r| wrk::median(r))
            .map(|r| r.rps);
        for (side, url) in &urls {
            let name = format!("ingress: {} -> {}", connections.describe(), side.describe());
            let Ok(_) = url else { continue };
            let Some(all) = runs.get(&(connections, *side)) else {
                continue;
            };
            let Some(mid) = wrk::median(all) else {
                continue;
            };
            let each: Vec<String> = all.iter().map(|r| format!("{:.0}", r.rps)).collect();
            let errors: u64 = all.iter().map(|r| r.errors).sum();
            let share = match direct {
                Some(d) if *side != Side::Direct && d > 0.0 => {
                    format!(" ({:.2} of direct)", mid.rps / d)
                }
                _ => String::new(),
            };
            let behind = match side {
                Side::Direct => String::new(),
                _ => format!("; {REPLICAS} replicas behind it"),
            };
            let header = match connections {
                Connections::KeepAlive => "",
                Connections::Close => " -H 'Connection: close'",
            };
            figures.push(report(
                &name,
                format!("{:.0} req/s{share}", mid.rps),
                format!(
                    "p50 {}, p99 {} (median round); rounds {} req/s; {errors} errors; {command}{header}{behind}",
                    mid.p50,
                    mid.p99,
                    each.join(" ")
                ),
            ));
        }
    }
    for (side, url) in &urls {
        if let Err(why) = url {
            figures.push(report(
                &format!("ingress: {}", side.describe()),
                "not measured",
                why.clone(),
            ));
        }
    }
    if let Some(ingress) = &ingress {
        let (now, peak) = rss_mib(ingress.pid());
        figures.push(report(
            "ingress: RSS after the load",
            format!("{now:.1} MiB"),
            format!(
                "peak {peak:.1} MiB; `mycluster ingress`, one published port, {REPLICAS} replicas"
            ),
        ));
    }
    Ok(figures)
}

/// A port free on this host now, for a side to publish.
fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port())
}

/// Our service: the demo image by id, 3 replicas, `port` published to 8000.
/// Waits until its containers run.
async fn create_ours(
    docker: &Docker,
    client: &Client,
    image: &str,
    port: u16,
) -> Result<(), BenchError> {
    let body = ServiceRequest {
        service: OURS.to_string(),
        image: Some(image.to_string()),
        replicas: u32::try_from(REPLICAS)?,
        command: None,
        env: None,
        healthcheck: None,
        update: None,
        ports: Some(vec![PortSpec {
            published: Some(port),
            target: TARGET,
            protocol: Protocol::Tcp,
        }]),
        stop_grace_period: None,
        proxy_protocol: None,
        ..ServiceRequest::default()
    };
    client.put_service(&body).await?;
    let started = Instant::now();
    loop {
        let running = swarm::containers(docker, ours_filter(), false).await?.len();
        if running >= REPLICAS {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(BenchError::Failed(format!(
                "{running} of our {REPLICAS} replicas run after {} s",
                DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every replica of ours is an endpoint of the service: what the ingress
/// balances over.
async fn wait_endpoints(client: &Client) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        let endpoints = client.service_endpoints(OURS).await?.endpoints;
        if endpoints.len() >= REPLICAS {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Failed(format!(
                "{} of our {REPLICAS} running replicas are endpoints after 60 s (`GET /api/v1/service/{OURS}/endpoints`: a task is one once its agent reports it running with an address)",
                endpoints.len(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Our service's running containers, by label.
fn ours_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([
        (
            "label".to_string(),
            vec![
                format!("mycluster.cluster={CLUSTER}"),
                format!("mycluster.service={OURS}"),
            ],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ])
}

/// One of our replicas' container address, as the engine gives it: what the direct side
/// loads (the same container for every round); and this host's address on that
/// container's network (its gateway), where wrk reaches the ingress and the mesh, which
/// listen on every address, off loopback as it reaches the replica.
async fn addresses(docker: &Docker) -> Result<(SocketAddrV4, Ipv4Addr), BenchError> {
    let mut ids = swarm::containers(docker, ours_filter(), false).await?;
    ids.sort();
    let id = ids
        .first()
        .ok_or_else(|| BenchError::Failed(format!("no container of {OURS} runs")))?;
    let inspected = docker.inspect_container(id, None).await?;
    let networks = inspected
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default();
    let ipv4 = |text: &Option<String>| text.as_deref()?.parse::<Ipv4Addr>().ok();
    networks
        .values()
        .find_map(|n| Some((ipv4(&n.ip_address)?, ipv4(&n.gateway)?)))
        .map(|(ip, gateway)| (SocketAddrV4::new(ip, TARGET), gateway))
        .ok_or_else(|| {
            BenchError::Failed(format!(
                "container {id} has no IPv4 address with a gateway on its network"
            ))
        })
}

fn http(at: SocketAddrV4) -> String {
    format!("http://{at}/")
}

/// A `mycluster ingress` process (this binary) in front of the manager's route table;
/// killed when dropped. Its last lines of log say why it failed, if it did.
struct Ingress {
    child: Child,
}

impl Ingress {
    /// Starts it once every replica is an endpoint (so what is measured is a full
    /// table), and waits until it answers on `port` (60 s).
    async fn start(
        manager: &ManagerProcess,
        client: &Client,
        at: SocketAddrV4,
    ) -> Result<Ingress, BenchError> {
        wait_endpoints(client).await?;
        let mut command = Command::new(this_executable()?);
        let mut child = die_with_parent(&mut command)
            .args(["ingress", "--manager", &manager.url])
            .env(TOKEN_ENV, &manager.token)
            .env(JOIN_TOKEN_ENV, &manager.join_token)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::context("cannot start `mycluster ingress`", e))?;
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock() {
                        log.push(line);
                    }
                }
            });
        }
        let mut ingress = Ingress { child };
        let url = http(at);
        let started = Instant::now();
        loop {
            if !served_by(&url, 1).await.is_empty() {
                return Ok(ingress);
            }
            let last = || {
                log.lock()
                    .ok()
                    .and_then(|l| l.last().cloned())
                    .unwrap_or_else(|| "nothing logged".into())
            };
            if let Ok(Some(status)) = ingress.child.try_wait() {
                return Err(BenchError::Failed(format!(
                    "`mycluster ingress --manager URL` exited ({status}): {}",
                    last()
                )));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(BenchError::Failed(format!(
                    "`mycluster ingress` did not answer at {at} within 60 s; its log: {}",
                    last()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Swarm's side: the same image by id, 3 replicas, a free port published through the
/// routing mesh; its URL once the mesh answers.
async fn swarm_side(
    docker: &Docker,
    image: &str,
    host: Ipv4Addr,
) -> Result<SocketAddrV4, BenchError> {
    let port = free_port()?;
    // What `docker service create --detach --no-resolve-image -p PORT:8000 --replicas 3`
    // posts.
    let spec = json!({
        "Name": SWARM,
        "TaskTemplate": {"ContainerSpec": {"Image": image}},
        "Mode": {"Replicated": {"Replicas": REPLICAS}},
        "EndpointSpec": {"Ports": [{
            "Protocol": "tcp", "TargetPort": TARGET, "PublishedPort": port,
            "PublishMode": "ingress"
        }]},
    });
    let spec: ServiceSpec = serde_json::from_value(spec)?;
    docker.create_service(spec, None).await?;
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("com.docker.swarm.service.name={SWARM}")],
    )]);
    let started = Instant::now();
    loop {
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let running = docker.list_containers(Some(options)).await?.len();
        if running >= REPLICAS {
            break;
        }
        if started.elapsed() > DEADLINE {
            return Err(BenchError::Failed(format!(
                "{running} of Swarm's {REPLICAS} replicas run after {} s",
                DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = SocketAddrV4::new(host, port);
    let started = Instant::now();
    while served_by(&http(at), 1).await.is_empty() {
        if started.elapsed() > MESH_DEADLINE {
            // The mesh is IPVS: without it in the kernel the engine only logs so.
            let ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
            let why = if ipvs {
                ""
            } else {
                " (this kernel has no IPVS, which the mesh balances with: the engine logs 'Could not get ipvs family information from the kernel')"
            };
            return Err(BenchError::Failed(format!(
                "Swarm's routing mesh did not answer at {at} within {} s, with {REPLICAS} replicas running{why}",
                MESH_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(at)
}

/// The distinct replicas (`X-Served-By`) that answered `n` GETs of `url`, each on a new
/// connection (the balancing is per connection). Failed requests count for nothing.
async fn served_by(url: &str, n: usize) -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    let Ok(http) = mycluster_client::reqwest_builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
    else {
        return served;
    };
    for _ in 0..n {
        let Ok(response) = http.get(url).send().await else {
            continue;
        };
        if !response.status().is_success() {
            continue;
        }
        if let Some(name) = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
        {
            served.insert(name.to_string());
        }
    }
    served
}
