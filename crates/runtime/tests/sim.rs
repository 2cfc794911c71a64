//! Runs the runtime conformance suite against the sim driver.

mod conformance;

use conformance::{spec, Driver};
use mycluster_core::service::Amount;
use mycluster_runtime::{Container, ContainerRuntime, Identity, SimRuntime, TaskSpec};

struct Sim;

#[async_trait::async_trait]
impl Driver for Sim {
    async fn runtime(&self, identity: Identity) -> Box<dyn ContainerRuntime> {
        Box::new(SimRuntime::new(identity))
    }

    fn long_running(&self, task_id: &str) -> TaskSpec {
        spec(task_id, Some("mycluster/hello-world"), None)
    }

    fn exiting(&self, _task_id: &str, _code: i64) -> Option<TaskSpec> {
        None
    }

    fn printing(&self, _task_id: &str, _text: &str) -> Option<TaskSpec> {
        None
    }

    fn exec_printing(&self, _code: i64) -> Option<Vec<String>> {
        None
    }

    fn exec_hanging(&self) -> Option<Vec<String>> {
        None
    }

    fn ignoring_sigterm(&self, _task_id: &str) -> Option<(TaskSpec, Vec<String>)> {
        None
    }

    /// Accepted, and nothing is done with them.
    fn limits_support(&self) -> Result<(), String> {
        Ok(())
    }

    async fn applied_limits(&self, _container: &Container) -> Option<Amount> {
        None
    }

    fn allocating(&self, _task_id: &str, _mib: u64) -> Option<TaskSpec> {
        None
    }

    fn counting(&self, _task_id: &str, _path: &str) -> Option<TaskSpec> {
        None
    }

    fn writing(&self, _task_id: &str, _path: &str) -> Option<TaskSpec> {
        None
    }

    /// Its containers end only when removed: nothing to announce.
    fn announces_exits(&self) -> bool {
        false
    }

    fn kill_from_outside(&self, _container: &Container) -> bool {
        false
    }
}

runtime_suite!(Sim);
