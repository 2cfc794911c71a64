//! What the agent's unit tests share: a task as the manager would list it, to adjust
//! with struct update syntax.

use mycluster_core::wire::{DesiredState, TaskDoc, TaskState};

/// Task `id` of service `web`, slot 0, wanted running and assigned to `w1`, running
/// image `img`, with no ports.
pub fn task_doc(id: &str) -> TaskDoc {
    TaskDoc {
        healthcheck: None,
        health: None,
        health_message: None,
        id: id.into(),
        service: "web".into(),
        slot: 0,
        image: Some("img".into()),
        command: None,
        env: Default::default(),
        worker: Some("w1".into()),
        desired_state: DesiredState::Running,
        state: TaskState::Assigned,
        message: String::new(),
        container_id: None,
        exit_code: None,
        error: None,
        created_at: 0.0,
        updated_at: 0.0,
        ports: Vec::new(),
        address: None,
        stop_grace_period: mycluster_core::service::DEFAULT_STOP_GRACE_PERIOD,
        resources: Default::default(),
        mounts: Vec::new(),
        moving: None,
        on_disconnect: Default::default(),
    }
}
