//! The `docker` driver: a task is a container of the Docker engine (unix socket or
//! `DOCKER_HOST`), created from the service's image and marked with our labels.
//!
//! Only containers carrying this runtime's cluster and worker labels are listed, replaced
//! or removed; anything else on the engine is left alone, even when it holds a name we
//! want. With `pid_container` set, workloads join the worker container's PID namespace,
//! so stopping the worker kills them as a lost node would (see docs/ARCHITECTURE.md). On
//! a user-defined `network`, each workload carries its service's name as an alias, so
//! other workloads reach a service by its name (the engine's DNS answers every replica).
//!
//! A task's limits become the container's CPU quota and memory limit; its mounts, the
//! container's mounts, named volumes made first when missing (see `volumes`).
//!
//! Exits are pushed: the driver follows the engine's event stream for its containers'
//! `die` and `oom` (see `events`), and announces each through `exits`.

mod engine;
mod events;
mod logs;
mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum,
    HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use crate::exits::ExitFeed;
use crate::network;
use crate::{
    BoundedOutput, Container, ContainerRuntime, ContainerState, ExecOutcome, Exit, HostFacts,
    Identity, RuntimeError, TaskSpec, LABEL_CLUSTER, LABEL_ROLE, LABEL_SERVICE, LABEL_TASK,
    LABEL_WORKER,
};
pub use engine::connect_engine;
use engine::{
    cannot_reach, engine_error, engine_host, handshake, is_transport, message, split_reference,
    status,
};

/// The `mycluster.role` of the containers this driver creates.
const ROLE_WORKLOAD: &str = "workload";

/// bollard's default per-request timeout; a stop is allowed its grace on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A driver choice must not wait long for an engine that does not answer.
const AVAILABLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How workload containers are wired up on this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerOptions {
    /// Workloads join this container's PID namespace (`--pid container:<name>`): when it
    /// stops, the kernel kills them all.
    pub pid_container: Option<String>,
    /// Workloads are attached to this network (`--network <name>`).
    pub network: Option<String>,
    /// How long a stopped container gets between SIGTERM and SIGKILL when the stop gives
    /// no grace of its own (a container no task speaks for).
    pub stop_grace: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            pid_container: None,
            network: None,
            stop_grace: Duration::from_secs(5),
        }
    }
}

pub struct DockerRuntime {
    docker: Docker,
    identity: Identity,
    options: DockerOptions,
    /// The exits heard from the engine's events (see `events`), once someone listens.
    exits: ExitFeed,
}

impl DockerRuntime {
    /// Connects to the engine the way the docker CLI would (`DOCKER_HOST`, else the local
    /// socket), agrees on an API version and checks that the engine answers.
    pub async fn connect(
        identity: Identity,
        options: DockerOptions,
    ) -> Result<DockerRuntime, RuntimeError> {
        let host = engine_host();
        let docker = Docker::connect_with_defaults().map_err(|e| cannot_reach(&host, e))?;
        let docker = handshake(docker, &host).await?;
        let docker = docker.with_timeout(REQUEST_TIMEOUT + options.stop_grace);
        Ok(DockerRuntime {
            docker,
            identity,
            options,
            exits: ExitFeed::new(),
        })
    }

    /// Whether a Docker engine answers at the default address: cheap enough to pick a
    /// default driver with.
    pub async fn available() -> bool {
        let Ok(docker) = Docker::connect_with_defaults() else {
            return false;
        };
        matches!(
            tokio::time::timeout(AVAILABLE_TIMEOUT, docker.ping()).await,
            Ok(Ok(_))
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn options(&self) -> &DockerOptions {
        &self.options
    }

    fn is_ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels.is_some_and(|labels| {
            labels.get(LABEL_CLUSTER) == Some(&self.identity.cluster)
                && labels.get(LABEL_WORKER) == Some(&self.identity.worker)
        })
    }

    /// Pulls `image` unless the engine already has it.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine_error(&format!("cannot inspect image {image}"), e)),
        }
        tracing::info!("docker driver: pulling image {image}");
        let (from_image, tag) = split_reference(image);
        let mut options = CreateImageOptionsBuilder::default().from_image(from_image);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let mut progress = self.docker.create_image(Some(options.build()), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(RuntimeError::ImageUnavailable(format!(
                    "image {image} is not available locally and could not be pulled: {}",
                    message(&e)
                )));
            }
        }
        Ok(())
    }

    /// Creates the task's container; a leftover of the same task holding the name (an
    /// agent that died between create and report) is replaced once.
    async fn create(&self, spec: &TaskSpec, image: &str) -> Result<String, RuntimeError> {
        let name = spec.container_name();
        let labels = HashMap::from([
            (LABEL_CLUSTER.to_string(), self.identity.cluster.clone()),
            (LABEL_ROLE.to_string(), ROLE_WORKLOAD.to_string()),
            (LABEL_SERVICE.to_string(), spec.service.clone()),
            (LABEL_TASK.to_string(), spec.task_id.clone()),
            (LABEL_WORKER.to_string(), self.identity.worker.clone()),
        ]);
        let mut host_config = HostConfig {
            pid_mode: self
                .options
                .pid_container
                .as_ref()
                .map(|worker| format!("container:{worker}")),
            network_mode: self.options.network.clone(),
            mounts: volumes::mounts(spec),
            ..Default::default()
        };
        volumes::apply_limits(&mut host_config, &spec.resources);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(host_config),
            networking_config: network::aliases(self.options.network.as_deref(), &spec.service),
            ..Default::default()
        };
        let mut replaced = false;
        loop {
            let options = CreateContainerOptionsBuilder::default().name(&name).build();
            match self
                .docker
                .create_container(Some(options), body.clone())
                .await
            {
                Ok(created) => return Ok(created.id),
                Err(e) if status(&e) == Some(409) && !replaced => {
                    self.replace_leftover(&name, spec).await?;
                    replaced = true;
                }
                Err(e) if is_transport(&e) => {
                    return Err(engine_error(&format!("cannot create container {name}"), e))
                }
                Err(e) => {
                    return Err(RuntimeError::StartFailed(format!(
                        "cannot create container {name}: {}",
                        message(&e)
                    )))
                }
            }
        }
    }

    /// Removes the container holding `name` if it is this worker's, for the same task.
    async fn replace_leftover(&self, name: &str, spec: &TaskSpec) -> Result<(), RuntimeError> {
        let existing = match self.docker.inspect_container(name, None).await {
            Ok(existing) => existing,
            // Gone since the conflict: the retry will tell.
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(engine_error(&format!("cannot inspect container {name}"), e)),
        };
        let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
        let same_task = labels.and_then(|l| l.get(LABEL_TASK)) == Some(&spec.task_id);
        if !self.is_ours(labels) || !same_task {
            return Err(RuntimeError::StartFailed(format!(
                "the container name {name} is taken by a container that is not this worker's \
                 for task {}; it is left alone",
                spec.task_id
            )));
        }
        let id = existing.id.as_deref().unwrap_or(name);
        tracing::warn!("docker driver: replacing leftover container {name} ({id})");
        self.force_remove(id).await
    }

    async fn force_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // Someone else (a concurrent remove) is already at it.
            Err(e) if status(&e) == Some(409) && message(&e).contains("already in progress") => {
                Ok(())
            }
            Err(e) => Err(engine_error(&format!("cannot remove container {id}"), e)),
        }
    }

    /// The state of one listed container; `None` if it vanished meanwhile.
    async fn observe(&self, summary: ContainerSummary) -> Result<Option<Container>, RuntimeError> {
        let (Some(id), Some(task_id)) = (
            summary.id,
            summary
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TASK))
                .cloned(),
        ) else {
            return Ok(None);
        };
        let name = summary
            .names
            .as_ref()
            .and_then(|names| names.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let state = match summary.state {
            Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
            // A paused, restarting or stopping container still holds its task: reporting
            // it gone would make the agent start a second one.
            Some(
                ContainerSummaryStateEnum::RUNNING
                | ContainerSummaryStateEnum::PAUSED
                | ContainerSummaryStateEnum::RESTARTING
                | ContainerSummaryStateEnum::STOPPING,
            ) => ContainerState::Running,
            // The summary has no exit code: only inspect knows it (and OOM kills).
            _ => match self.exit_state(&id).await? {
                Some(state) => state,
                None => return Ok(None),
            },
        };
        Ok(Some(Container {
            task_id,
            id,
            name,
            state,
        }))
    }

    async fn exit_state(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let inspected = match self.docker.inspect_container(id, None).await {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine_error(&format!("cannot inspect container {id}"), e)),
        };
        let state = inspected.state.unwrap_or_default();
        Ok(Some(match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
            Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
            _ => {
                let error = if state.oom_killed == Some(true) {
                    Some("OOM killed".to_string())
                } else {
                    state.error.filter(|e| !e.is_empty())
                };
                ContainerState::Exited {
                    code: state.exit_code.unwrap_or(-1),
                    error,
                }
            }
        }))
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    fn driver(&self) -> mycluster_core::Driver {
        mycluster_core::Driver::Docker
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        match &spec.image {
            Some(image) if !image.trim().is_empty() => Ok(()),
            _ => {
                let has = if spec.command.is_some() {
                    "only a command"
                } else {
                    "none"
                };
                Err(RuntimeError::Unsupported(format!(
                    "the docker driver needs an image, and service {} has {has}: run it on a \
                     process worker, or give it an image",
                    spec.service
                )))
            }
        }
    }

    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        self.check(spec)?;
        let image = spec.image.as_deref().unwrap_or_default().trim();
        self.ensure_image(image).await?;
        volumes::ensure(&self.docker, &self.identity, spec).await?;
        let id = self.create(spec, image).await?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            // A created-but-unstartable container would only be in the way of the retry.
            if let Err(cleanup) = self.force_remove(&id).await {
                tracing::warn!("docker driver: cannot remove unstarted container {id}: {cleanup}");
            }
            let name = spec.container_name();
            return Err(if is_transport(&e) {
                engine_error(&format!("cannot start container {name}"), e)
            } else {
                RuntimeError::StartFailed(format!("cannot start container {name}: {}", message(&e)))
            });
        }
        Ok(id)
    }

    async fn remove(
        &self,
        container: &Container,
        grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        if container.id.is_empty() {
            return Ok(());
        }
        let inspected = match self.docker.inspect_container(&container.id, None).await {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => {
                return Err(engine_error(
                    &format!("cannot inspect container {}", container.id),
                    e,
                ))
            }
        };
        let labels = inspected.config.as_ref().and_then(|c| c.labels.as_ref());
        if !self.is_ours(labels) {
            return Err(RuntimeError::Unsupported(format!(
                "container {} ({}) is not one of worker {}'s in cluster {}: left alone",
                container.name, container.id, self.identity.worker, self.identity.cluster
            )));
        }
        let id = inspected.id.as_deref().unwrap_or(&container.id);
        let grace = grace.unwrap_or(self.options.stop_grace);
        // The engine counts whole seconds: a part of one is rounded up, never cut.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(seconds).unwrap_or(i32::MAX))
            .build();
        // The engine answers a stop once the container ended: the request may take the
        // whole grace on top of the usual time.
        let docker = self.docker.clone().with_timeout(
            REQUEST_TIMEOUT.saturating_add(Duration::from_secs(seconds.min(u64::from(u32::MAX)))),
        );
        // bollard already reports 304 (stopped before) as success.
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => return Ok(()),
            // The forced remove below kills it anyway.
            Err(e) => tracing::warn!("docker driver: cannot stop container {id}: {e}"),
        }
        self.force_remove(id).await
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_CLUSTER}={}", self.identity.cluster),
                format!("{LABEL_WORKER}={}", self.identity.worker),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("cannot list containers", e))?;
        let mut containers = Vec::with_capacity(summaries.len());
        for summary in summaries {
            // The filter already did this; a label check costs nothing and keeps the
            // promise even if an engine ignored a filter.
            if !self.is_ours(summary.labels.as_ref()) {
                continue;
            }
            if let Some(container) = self.observe(summary).await? {
                containers.push(container);
            }
        }
        containers.sort_by(|a, b| a.task_id.cmp(&b.task_id).then(a.id.cmp(&b.id)));
        Ok(containers)
    }

    /// The container's IP on the workloads' network (`DockerOptions::network`), else on
    /// the default bridge, else on its first network; loopback for `--network host`.
    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        if container.id.is_empty() {
            return Ok(None);
        }
        let inspected = match self.docker.inspect_container(&container.id, None).await {
            Ok(inspected) => inspected,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => {
                return Err(engine_error(
                    &format!("cannot inspect container {}", container.id),
                    e,
                ))
            }
        };
        let networks = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default();
        Ok(network::pick_address(
            &networks,
            self.options.network.as_deref(),
        ))
    }

    /// Docker exec, its output attached. The engine has no way to kill an exec: one that
    /// outlives its timeout goes on inside the container (as with Docker's own health
    /// checks), only its output is no longer read.
    async fn exec(
        &self,
        container: &Container,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let attempt = async {
            let options = CreateExecOptions {
                cmd: Some(argv.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let created = self.docker.create_exec(&container.id, options).await?;
            let mut output = BoundedOutput::default();
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self.docker.start_exec(&created.id, None).await?
            {
                while let Some(chunk) = stream.next().await {
                    output.push(&chunk?.into_bytes());
                }
            }
            // The stream can end a moment before the engine notes the exit code.
            loop {
                let inspected = self.docker.inspect_exec(&created.id).await?;
                match (inspected.running, inspected.exit_code) {
                    (Some(true), _) | (_, None) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    (_, Some(code)) => {
                        return Ok::<_, DockerError>(ExecOutcome {
                            code,
                            output: output.text(),
                        })
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) if is_transport(&e) => Err(engine_error(
                &format!("cannot exec in container {}", container.name),
                e,
            )),
            Ok(Err(e)) => Err(RuntimeError::StartFailed(format!(
                "cannot exec in container {}: {}",
                container.name,
                message(&e)
            ))),
            Err(_) => Err(RuntimeError::TimedOut(format!(
                "'{}' did not end within {:?}",
                argv.first().map(String::as_str).unwrap_or_default(),
                timeout
            ))),
        }
    }

    /// The engine's host (`docker info`): where this driver's containers run, which may
    /// not be where the agent runs.
    async fn host(&self) -> Result<HostFacts, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine_error("cannot read the engine's info", e))?;
        Ok(HostFacts {
            id: info.id.unwrap_or_default(),
            cpus: info
                .ncpu
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(|n| mycluster_core::service::Cpus(n.saturating_mul(1000))),
            memory: info
                .mem_total
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(mycluster_core::service::Bytes),
        })
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        volumes::remove(&self.docker, &self.identity, name).await
    }

    /// The engine's logs of the container (see `logs`).
    async fn logs(
        &self,
        container: &Container,
        options: &crate::LogOptions,
    ) -> Result<crate::LogLines, RuntimeError> {
        Ok(logs::logs(&self.docker, container, options))
    }

    /// The `die` and `oom` events of this worker's containers, from the engine's event
    /// stream (followed from the first subscription on; see `events`).
    fn exits(&self) -> Option<tokio::sync::broadcast::Receiver<Exit>> {
        let (docker, identity) = (self.docker.clone(), self.identity.clone());
        self.exits
            .subscribe(|sender, stop| events::follow(docker, identity, sender, stop))
    }
}
