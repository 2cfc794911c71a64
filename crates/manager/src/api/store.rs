//! The store endpoint: `POST /api/v1/store/reseed`, the operator's way back when the
//! store lost the manager's history (emptied, evicted, restored from an old copy) and
//! the manager stopped writing. It writes the state the manager holds in memory back
//! into the store, whatever the store holds now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use mycluster_core::wire::ReseedDoc;
use mycluster_store::StoreError;

use super::{ApiError, AppState};

/// `POST /api/v1/store/reseed`: 200 with what was written; 409 if another manager holds
/// the cluster (reseeding would overwrite its changes); 503 if the store cannot be
/// written now.
pub async fn reseed(State(app): State<AppState>) -> Result<Json<ReseedDoc>, ApiError> {
    match app.cluster.reseed().await {
        Ok((head, snapshot)) => Ok(Json(ReseedDoc {
            store: app.cluster.store().describe(),
            index: head.index,
            services: snapshot.state.services.len(),
            tasks: snapshot.state.tasks.len(),
            workers: snapshot.state.workers.len(),
        })),
        Err(StoreError::Held(why)) => Err(ApiError::new(StatusCode::CONFLICT, why)),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store was not reseeded: {e}"),
        )),
    }
}
