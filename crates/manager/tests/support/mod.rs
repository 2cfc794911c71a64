//! What the manager's API tests share: the router over a real cluster and a real
//! embedded store in a temporary directory, locked with the tokens a test gives.
// Each test binary uses what it needs of this.
#![allow(dead_code)]

use std::sync::Arc;

use mycluster_core::Limits;
use mycluster_manager::api::auth::{Auth, Token};
use mycluster_manager::api::{router, ApiConfig, AppState};
use mycluster_manager::cluster::Cluster;
use mycluster_store::{EmbeddedStore, Snapshot, Store};
use tokio_util::sync::CancellationToken;

/// The API with `config`, over a new empty cluster. Keep the directory: the store is in it.
pub async fn app(config: ApiConfig) -> (axum::Router, tempfile::TempDir) {
    seeded(config, None).await
}

/// The same, over a store that holds `seed` before the manager loads it.
pub async fn seeded(
    config: ApiConfig,
    seed: Option<Snapshot>,
) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), "test").await.unwrap());
    if let Some(seed) = seed {
        store.replace(&seed).await.unwrap();
    }
    let cluster = Arc::new(
        Cluster::load("test".into(), Limits::default(), store)
            .await
            .unwrap(),
    );
    let state = AppState::new(cluster, config, CancellationToken::new());
    (router(state), dir)
}

/// The API locked with the API token `api` and, if given, the join token `join`.
pub fn locked(api: &str, join: Option<&str>) -> ApiConfig {
    ApiConfig {
        auth: Auth::On {
            api: Token::parse(api, "api").unwrap(),
            join: join.map(|join| Token::parse(join, "join").unwrap()).into(),
        },
        ..ApiConfig::default()
    }
}
