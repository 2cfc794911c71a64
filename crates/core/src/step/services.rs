//! Service writes: `POST /api/v1/service` (create or replace), `PATCH` (some fields) and
//! `DELETE`. Each reconciles the one service it wrote.

use crate::commands::{self, CommandError};
use crate::service::ServicePatch;
use crate::{Service, ServiceSpec, Txn};

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

/// Removes a service; reconcile stops its tasks. Answers the service as it was.
pub struct DeleteService(pub String);

impl Command for DeleteService {
    type Outcome = Service;

    fn apply(self, txn: &mut Txn, _ctx: &Context) -> Result<Applied<Service>, CommandError> {
        let service = commands::delete_service(txn, &self.0)?;
        Ok(Applied::new(service, Scope::Services(vec![self.0])))
    }
}
