//! Where services are reached: the ingress's route table, long-polled by every ingress
//! (`GET /api/v1/endpoints`), and one service's replicas for discovery (`GET
//! /api/v1/service/<name>/endpoints`). Both are read off the committed state by
//! `core::endpoints`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use mycluster_core::endpoints;
use mycluster_core::identity::{self, Caller};
use mycluster_core::wire::{RouteTable, ServiceEndpoints};

use super::query::Params;
use super::{known, ApiError, AppState};

/// `GET /api/v1/endpoints[?version=V&wait=30s]`: the route table; with `version`, waits
/// (up to `wait`, default 30 s) until the table differs from that version. Agents' join
/// token may read it, so an ingress beside an agent needs no operator's secret.
pub async fn table(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<RouteTable>, ApiError> {
    // A worker's credential reads it too, while that worker exists.
    identity::check_member(&app.cluster.snapshot().state, &caller)?;
    let params = Params::parse(query, &["version", "wait"])?;
    let wait = params
        .duration("wait")?
        .unwrap_or(Duration::from_secs(30))
        .min(app.config.max_wait);
    let current = || {
        let routes = endpoints::routes(&app.cluster.snapshot().state);
        RouteTable {
            version: endpoints::version(&routes),
            routes,
        }
    };
    // Every commit may change the table (a task ran, turned healthy, was told to stop):
    // each wakes this poll, which answers only when the table did change. Watched before
    // the table is read, so a commit in between wakes it too.
    let mut commits = app.cluster.watch_commits();
    let mut table = current();
    let Some(known) = params.get("version") else {
        return Ok(Json(table));
    };
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    while table.version == known {
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    break;
                }
                table = current();
            }
            _ = &mut deadline => break,
            _ = app.stop.cancelled() => break,
        }
    }
    Ok(Json(table))
}

/// `GET /api/v1/service/<name>/endpoints`: the service's ports and the replicas that
/// serve each now.
pub async fn of_service(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<ServiceEndpoints>, ApiError> {
    let Path(name) = name?;
    let snapshot = app.cluster.snapshot();
    let service = known(&snapshot.state, &name)?;
    Ok(Json(ServiceEndpoints {
        service: service.spec.name.clone(),
        ports: service.spec.ports.clone(),
        endpoints: endpoints::of_service(&snapshot.state, service),
    }))
}
