//! Service writes: `POST /api/v1/service` (create or replace), `PATCH` (some fields) and
//! `DELETE`. Each reconciles the one service it wrote.

use crate::commands::{self, CommandError};
use crate::rollout::{Base, RolloutKind};
use crate::service::{ServicePatch, ServicePost, Volume};
use crate::{Change, Service, ServiceSpec, Txn};

use super::{Applied, Command, Context, Scope};

/// Creates a service, or replaces the spec of the one of the same name. Answers whether
/// it was created.
pub struct PutService(pub ServiceSpec);

impl Command for PutService {
    type Outcome = bool;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<bool>, CommandError> {
        let name = self.0.name.clone();
        let created = commands::put_service(txn, self.0, ctx.now, ctx.limits)?;
        Ok(Applied::new(created, Scope::Services(vec![name])))
    }
}

/// `POST /api/v1/service`: creates a service, or replaces the spec of the one of the
/// same name, keeping its health check and update policy when the body left them out
/// (see `ServicePost`). Answers whether it was created.
pub struct PostService(pub ServicePost);

impl Command for PostService {
    type Outcome = bool;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<bool>, CommandError> {
        let old = txn
            .state
            .services
            .get(&self.0.spec.name)
            .map(|s| s.spec.clone());
        PutService(self.0.over(old.as_ref())).apply(txn, ctx)
    }
}

/// Changes only the fields given, so scaling cannot undo a concurrent image update.
/// Answers the service as it is now.
pub struct PatchService {
    pub name: String,
    pub patch: ServicePatch,
}

impl Command for PatchService {
    type Outcome = Service;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Service>, CommandError> {
        let service = commands::patch_service(txn, &self.name, &self.patch, ctx.now, ctx.limits)?;
        Ok(Applied::new(service, Scope::Services(vec![self.name])))
    }
}

/// Removes a service; reconcile stops its tasks. Its volumes are kept (a mistake must
/// not lose data) unless `volumes` says to remove them too: then they are marked, and
/// the agents of their host remove them once the tasks are gone.
pub struct DeleteService {
    pub name: String,
    pub volumes: bool,
}

/// A service removed: as it was, and its volumes (kept, or marked for removal).
#[derive(Debug, Clone)]
pub struct DeletedService {
    pub service: Service,
    pub volumes: Vec<Volume>,
}

impl Command for DeleteService {
    type Outcome = DeletedService;

    fn apply(self, txn: &mut Txn, _ctx: &Context) -> Result<Applied<DeletedService>, CommandError> {
        let service = commands::delete_service(txn, &self.name)?;
        let mut volumes: Vec<Volume> = txn
            .state
            .volumes
            .values()
            .filter(|v| v.service == self.name)
            .cloned()
            .collect();
        if self.volumes {
            for volume in volumes.iter_mut().filter(|v| !v.remove) {
                volume.remove = true;
                txn.push(Change::PutVolume(volume.clone()));
            }
        }
        Ok(Applied::new(
            DeletedService { service, volumes },
            Scope::Services(vec![self.name]),
        ))
    }
}

/// Rolls the version before the current one out again (`mycluster service rollback`):
/// its whole spec, replicas included, as a new version. Answers the service as it is now.
pub struct RollbackService(pub String);

impl Command for RollbackService {
    type Outcome = Service;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Service>, CommandError> {
        let old = commands::existing_service(txn, &self.0)?;
        let Some(to) = old.previous_version() else {
            return Err(CommandError::Conflict(format!(
                "service {} has no previous version to roll back to (it has only version {})",
                self.0, old.version
            )));
        };
        let base = Base {
            version: to.version,
            spec: to.spec.clone(),
            generation: to.generation,
        };
        commands::check_ports(txn, &base.spec)?;
        commands::check_volumes(txn, &base.spec)?;
        let service = old.rolled_back(&base, to.spec.replicas, RolloutKind::Rollback, ctx.now);
        txn.push(Change::PutService(service.clone()));
        Ok(Applied::new(service, Scope::Services(vec![self.0])))
    }
}

/// Replaces every task of a service with a new one of the same spec, as a rollout
/// (`mycluster service restart`). Answers the service as it is now.
pub struct RestartService(pub String);

impl Command for RestartService {
    type Outcome = Service;

    fn apply(self, txn: &mut Txn, ctx: &Context) -> Result<Applied<Service>, CommandError> {
        let old = commands::existing_service(txn, &self.0)?;
        let service = old.restarted(ctx.now);
        txn.push(Change::PutService(service.clone()));
        Ok(Applied::new(service, Scope::Services(vec![self.0])))
    }
}
