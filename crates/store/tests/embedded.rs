//! Runs the store conformance suite against the embedded (redb) backend.

mod conformance;

use conformance::Backend;
use mycluster_store::{EmbeddedStore, Store, StoreError};

struct Embedded;

#[async_trait::async_trait]
impl Backend for Embedded {
    type Place = tempfile::TempDir;

    async fn place(&self) -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    async fn open(
        &self,
        place: &tempfile::TempDir,
        cluster: &str,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(EmbeddedStore::open(place.path(), cluster).await?))
    }
}

conformance_suite!(Embedded);

/// Specific to a file-backed store: a second process (or manager) must not open the same
/// file while the first holds it.
#[tokio::test]
async fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(dir.path(), "test").await.expect("open");
    match EmbeddedStore::open(dir.path(), "test").await {
        Err(StoreError::Config(message)) => assert!(message.contains("already open"), "{message}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a store that is in use"),
    }
}
