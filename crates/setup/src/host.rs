//! The Docker side of `mycluster setup` and `manage`: what docker-compose did for the
//! original — a network, a data volume and the role containers of one cluster — done
//! through the Engine API. Everything is found by the `mycluster.cluster` label, and
//! nothing without it is ever touched.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerUpdateBody, EventMessage, HostConfig,
    NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptions, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{Stream, StreamExt};

use mycluster_runtime::{connect_engine, LABEL_CLUSTER, LABEL_ROLE, LABEL_WORKER};

use crate::error::SetupError;
use crate::keeper::{Event, Now};

/// The restart policy of every role container: a crashed one (its process killed, the
/// engine restarted) comes back; one an operator stopped stays stopped. Workloads have
/// none: a task runs once, and its slot is replaced by the manager.
pub const ROLE_RESTART: RestartPolicyNameEnum = RestartPolicyNameEnum::UNLESS_STOPPED;

/// A container of the cluster's own (manager, monitor, worker, ingress), as setup
/// creates it.
#[derive(Clone, Debug, Default)]
pub struct RoleContainer {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// The network it joins (`host`: the host's own).
    pub network: String,
    pub binds: Vec<String>,
    /// The ports it publishes on the host.
    pub publish: Vec<Publish>,
}

/// A container port published on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub inside: u16,
    /// The host port; 0 lets the engine choose.
    pub outside: u16,
    /// The host address it is bound to (none: every address of the host).
    pub host_ip: Option<String>,
}

/// One of the cluster's containers as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterContainer {
    pub name: String,
    pub id: String,
    pub role: String,
    pub worker: Option<String>,
    pub image: String,
    /// running, exited, created...
    pub state: String,
    /// The engine's words: "Up 3 minutes", "Exited (137) 2 seconds ago".
    pub status: String,
}

pub struct ClusterHost {
    docker: Docker,
}

/// One event of the engine about a container of the cluster, as the keeper reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub event: Event,
    /// The container's full id (a name may be given to a new container meanwhile).
    pub id: String,
    pub name: String,
    pub role: String,
    /// When the engine emitted it, in nanoseconds since the epoch.
    pub time_nano: i64,
}

/// A container's port bindings as it was made with, or as they are now.
enum Bindings {
    Configured,
    Now,
}

fn engine(what: &str, e: DockerError) -> SetupError {
    SetupError::Engine(format!("{what}: {e}"))
}

fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A container event of the cluster's, read from the engine's message; `None` for
/// another cluster's (the filter is the engine's: checked again) or an action not
/// followed.
fn container_event(cluster: &str, message: EventMessage) -> Option<ContainerEvent> {
    let event = Event::parse(message.action.as_deref()?)?;
    let actor = message.actor?;
    let attributes = actor.attributes.unwrap_or_default();
    if attributes.get(LABEL_CLUSTER).map(String::as_str) != Some(cluster) {
        return None;
    }
    Some(ContainerEvent {
        event,
        id: actor.id?,
        name: attributes.get("name").cloned().unwrap_or_default(),
        role: attributes.get(LABEL_ROLE).cloned().unwrap_or_default(),
        time_nano: message
            .time_nano
            .or(message.time.map(|t| t.saturating_mul(1_000_000_000)))
            .unwrap_or_default(),
    })
}

fn cluster_filter(cluster: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_CLUSTER}={cluster}")],
    )])
}

impl ClusterHost {
    pub async fn connect() -> Result<ClusterHost, SetupError> {
        Ok(ClusterHost {
            docker: connect_engine().await?,
        })
    }

    /// Creates the network unless it exists; returns whether it was created.
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<bool, SetupError> {
        if self.docker.inspect_network(name, None).await.is_ok() {
            return Ok(false);
        }
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| engine(&format!("cannot create network {name}"), e))?;
        Ok(true)
    }

    /// Creates the volume unless it exists; returns whether it was created.
    pub async fn ensure_volume(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<bool, SetupError> {
        if self.docker.inspect_volume(name).await.is_ok() {
            return Ok(false);
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| engine(&format!("cannot create volume {name}"), e))?;
        Ok(true)
    }

    /// Creates and starts a role container.
    pub async fn run(&self, spec: &RoleContainer) -> Result<String, SetupError> {
        let port_bindings = (!spec.publish.is_empty()).then(|| {
            spec.publish
                .iter()
                .map(|p| {
                    (
                        format!("{}/tcp", p.inside),
                        Some(vec![PortBinding {
                            host_ip: p.host_ip.clone(),
                            host_port: Some(if p.outside == 0 {
                                String::new()
                            } else {
                                p.outside.to_string()
                            }),
                        }]),
                    )
                })
                .collect::<HashMap<_, _>>()
        });
        // On the host's network a container has the host's name, as it has its network.
        let on_host = spec.network == "host";
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            hostname: (!on_host).then(|| spec.name.clone()),
            exposed_ports: (!spec.publish.is_empty()).then(|| {
                spec.publish
                    .iter()
                    .map(|p| format!("{}/tcp", p.inside))
                    .collect()
            }),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
                port_bindings,
                restart_policy: Some(RestartPolicy {
                    name: Some(ROLE_RESTART),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| engine(&format!("cannot create {}", spec.name), e))?;
        self.start(&spec.name).await?;
        Ok(created.id)
    }

    pub async fn start(&self, name: &str) -> Result<(), SetupError> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| engine(&format!("cannot start {name}"), e))
    }

    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), SetupError> {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs() as i32)
            .build();
        match self.docker.stop_container(name, Some(options)).await {
            Err(e) if !not_found(&e) => Err(engine(&format!("cannot stop {name}"), e)),
            _ => Ok(()),
        }
    }

    pub async fn remove(&self, name: &str) -> Result<(), SetupError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(false)
            .build();
        match self.docker.remove_container(name, Some(options)).await {
            Err(e) if !not_found(&e) => Err(engine(&format!("cannot remove {name}"), e)),
            _ => Ok(()),
        }
    }

    /// Every container of the cluster (its roles and its workloads), by name.
    pub async fn containers(&self, cluster: &str) -> Result<Vec<ClusterContainer>, SetupError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&cluster_filter(cluster))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("cannot list containers", e))?;
        let mut out: Vec<ClusterContainer> = summaries
            .into_iter()
            .filter(|s| {
                s.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_CLUSTER))
                    .is_some_and(|c| c == cluster)
            })
            .map(|s| {
                let labels = s.labels.unwrap_or_default();
                ClusterContainer {
                    name: s
                        .names
                        .and_then(|n| n.first().cloned())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    id: s.id.unwrap_or_default().chars().take(12).collect(),
                    role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
                    worker: labels.get(LABEL_WORKER).cloned(),
                    image: s.image.unwrap_or_default(),
                    state: s.state.map(|s| s.to_string()).unwrap_or_default(),
                    status: s.status.unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether a container has the role containers' restart policy.
    pub async fn has_role_restart(&self, name: &str) -> Result<bool, SetupError> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine(&format!("cannot inspect {name}"), e))?;
        Ok(inspect
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            == Some(ROLE_RESTART))
    }

    /// Gives a container made before role containers had it the restart policy, in
    /// place (`docker update --restart`): it keeps running.
    pub async fn set_role_restart(&self, name: &str) -> Result<(), SetupError> {
        let update = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(ROLE_RESTART),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(name, update)
            .await
            .map_err(|e| engine(&format!("cannot set the restart policy of {name}"), e))
    }

    /// A container's state now (by id or name), for the keeper.
    pub async fn now(&self, id: &str) -> Result<Now, SetupError> {
        let inspect = match self.docker.inspect_container(id, None).await {
            Ok(inspect) => inspect,
            Err(e) if not_found(&e) => return Ok(Now::Gone),
            Err(e) => return Err(engine(&format!("cannot inspect {id}"), e)),
        };
        let state = inspect.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::PAUSED) => {
                Now::Running
            }
            Some(ContainerStateStatusEnum::RESTARTING) => Now::Restarting,
            // Being removed: as good as gone.
            Some(ContainerStateStatusEnum::REMOVING) => Now::Gone,
            _ if state.restarting == Some(true) => Now::Restarting,
            _ => Now::Down,
        })
    }

    /// Starts a container by id; one that runs already (another keeper was first) or
    /// is gone is no error.
    pub async fn start_again(&self, id: &str) -> Result<(), SetupError> {
        match self.docker.start_container(id, None).await {
            Err(e) if !not_found(&e) => Err(engine(&format!("cannot start {id}"), e)),
            _ => Ok(()),
        }
    }

    /// The engine's events about the cluster's containers (`die`, `stop`, `destroy`,
    /// `start`), from `since` (nanoseconds since the epoch: events the engine still
    /// remembers are replayed) or from now. The stream ends when the engine closes it
    /// (it restarts, it goes away).
    pub fn container_events(
        &self,
        cluster: &str,
        since: Option<i64>,
    ) -> impl Stream<Item = Result<ContainerEvent, SetupError>> + Send + Unpin {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_CLUSTER}={cluster}")],
            ),
            (
                "event".to_string(),
                Event::ACTIONS.iter().map(|a| a.to_string()).collect(),
            ),
        ]);
        let options = EventsOptions {
            since: since.map(|nanos| {
                format!(
                    "{}.{:09}",
                    nanos.div_euclid(1_000_000_000),
                    nanos.rem_euclid(1_000_000_000)
                )
            }),
            until: None,
            filters: Some(filters),
        };
        let cluster = cluster.to_string();
        self.docker
            .events(Some(options))
            .filter_map(move |item| {
                let read = match item {
                    Ok(message) => container_event(&cluster, message).map(Ok),
                    Err(e) => Some(Err(engine("the engine's event stream failed", e))),
                };
                std::future::ready(read)
            })
            .boxed()
    }

    /// The command a container was made with (its `Cmd`, after the entrypoint).
    pub async fn configured_cmd(&self, name: &str) -> Result<Option<Vec<String>>, SetupError> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine(&format!("cannot inspect {name}"), e))?;
        Ok(inspect.config.and_then(|c| c.cmd))
    }

    /// How a container's `port` is configured to be published: the host address (none:
    /// every address) and port (0 when the engine picks one at each start); `None` when
    /// it is not published.
    pub async fn configured_binding(
        &self,
        name: &str,
        port: u16,
    ) -> Result<Option<(Option<String>, u16)>, SetupError> {
        let bindings = self.port_bindings(name, port, Bindings::Configured).await?;
        Ok(bindings.and_then(|b| b.into_iter().next()).map(|b| {
            (
                b.host_ip.filter(|ip| !ip.is_empty() && ip != "0.0.0.0"),
                b.host_port.and_then(|p| p.parse().ok()).unwrap_or(0),
            )
        }))
    }

    /// Whether a container was made with every one of `env` in its environment (the
    /// engine adds entries of the image's own, so it is no equality).
    pub async fn has_env(&self, name: &str, env: &[String]) -> Result<bool, SetupError> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine(&format!("cannot inspect {name}"), e))?;
        let made = inspect.config.and_then(|c| c.env).unwrap_or_default();
        Ok(env.iter().all(|e| made.contains(e)))
    }

    /// The host port a container's `port` is published on now.
    pub async fn published_port(&self, name: &str, port: u16) -> Result<Option<u16>, SetupError> {
        let bindings = self.port_bindings(name, port, Bindings::Now).await?;
        Ok(bindings
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse().ok()))
    }

    async fn port_bindings(
        &self,
        name: &str,
        port: u16,
        which: Bindings,
    ) -> Result<Option<Vec<PortBinding>>, SetupError> {
        let inspect = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine(&format!("cannot inspect {name}"), e))?;
        let ports = match which {
            Bindings::Configured => inspect.host_config.and_then(|h| h.port_bindings),
            Bindings::Now => inspect.network_settings.and_then(|n| n.ports),
        };
        Ok(ports.and_then(|ports| ports.get(&format!("{port}/tcp")).cloned().flatten()))
    }

    /// Removes the cluster's networks and volumes (by label); returns their names.
    pub async fn remove_networks_and_volumes(
        &self,
        cluster: &str,
    ) -> Result<Vec<String>, SetupError> {
        let mut removed = Vec::new();
        let options = ListNetworksOptionsBuilder::default()
            .filters(&cluster_filter(cluster))
            .build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| engine("cannot list networks", e))?;
        for network in networks {
            let ours = network
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_CLUSTER))
                .is_some_and(|c| c == cluster);
            if let (true, Some(name)) = (ours, network.name) {
                match self.docker.remove_network(&name).await {
                    Err(e) if !not_found(&e) => {
                        return Err(engine(&format!("cannot remove network {name}"), e))
                    }
                    _ => removed.push(format!("network {name}")),
                }
            }
        }
        let options = ListVolumesOptionsBuilder::default()
            .filters(&cluster_filter(cluster))
            .build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| engine("cannot list volumes", e))?;
        for volume in volumes.volumes.unwrap_or_default() {
            if volume
                .labels
                .get(LABEL_CLUSTER)
                .is_some_and(|c| c == cluster)
            {
                match self
                    .docker
                    .remove_volume(&volume.name, None::<RemoveVolumeOptions>)
                    .await
                {
                    Err(e) if !not_found(&e) => {
                        return Err(engine(&format!("cannot remove volume {}", volume.name), e))
                    }
                    _ => removed.push(format!("volume {}", volume.name)),
                }
            }
        }
        Ok(removed)
    }
}
