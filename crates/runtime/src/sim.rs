//! The `sim` driver: containers that exist only in memory and start at once. For scale
//! tests and benchmarks of the control plane; never a claim about real containers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::{
    Container, ContainerRuntime, ContainerState, ExecOutcome, Identity, RuntimeError, TaskSpec,
};

pub struct SimRuntime {
    identity: Identity,
    containers: Mutex<BTreeMap<String, Container>>,
    next: AtomicU64,
}

impl SimRuntime {
    pub fn new(identity: Identity) -> SimRuntime {
        SimRuntime {
            identity,
            containers: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Ends a simulated container as if it had exited with `code`.
    pub fn exit(&self, task_id: &str, code: i64) -> bool {
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        match containers.get_mut(task_id) {
            Some(container) => {
                container.state = ContainerState::Exited { code, error: None };
                true
            }
            None => false,
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn is_running(&self, container: &Container) -> bool {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        containers
            .get(&container.task_id)
            .is_some_and(|c| c.id == container.id && c.state == ContainerState::Running)
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for SimRuntime {
    fn driver(&self) -> mycluster_core::Driver {
        mycluster_core::Driver::Sim
    }

    fn check(&self, spec: &TaskSpec) -> Result<(), RuntimeError> {
        if spec.image.is_none() && spec.command.is_none() {
            return Err(RuntimeError::Unsupported(
                "a task needs an image or a command".into(),
            ));
        }
        Ok(())
    }

    async fn start(&self, spec: &TaskSpec) -> Result<String, RuntimeError> {
        self.check(spec)?;
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if containers.contains_key(&spec.task_id) {
            return Err(RuntimeError::StartFailed(format!(
                "a container for task {} already exists",
                spec.task_id
            )));
        }
        let id = format!("sim-{:012}", self.next.fetch_add(1, Ordering::Relaxed));
        containers.insert(
            spec.task_id.clone(),
            Container {
                task_id: spec.task_id.clone(),
                id: id.clone(),
                name: spec.container_name(),
                state: ContainerState::Running,
            },
        );
        Ok(id)
    }

    /// Gone at once: nothing runs that a grace period would wait for.
    async fn remove(
        &self,
        container: &Container,
        _grace: Option<Duration>,
    ) -> Result<(), RuntimeError> {
        let mut containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        if containers
            .get(&container.task_id)
            .is_some_and(|c| c.id == container.id)
        {
            containers.remove(&container.task_id);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        let containers = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(containers.values().cloned().collect())
    }

    /// Simulated containers "listen" on this host: an address exists, nothing answers.
    async fn address(&self, container: &Container) -> Result<Option<IpAddr>, RuntimeError> {
        Ok(self
            .is_running(container)
            .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }

    /// Every command succeeds at once in a simulated container: exec health checks of
    /// sim tasks always pass, so scale tests see tasks turn healthy.
    async fn exec(
        &self,
        container: &Container,
        _argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        if !self.is_running(container) {
            return Err(RuntimeError::StartFailed(format!(
                "cannot exec in {}: it is not running",
                container.name
            )));
        }
        Ok(ExecOutcome {
            code: 0,
            output: String::new(),
        })
    }
}
