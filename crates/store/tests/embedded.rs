//! Runs the store conformance suite against the embedded (redb) backend.

mod conformance;

use conformance::{at, Backend};
use mycluster_core::Change;
use mycluster_store::{Create, EmbeddedStore, Store, StoreError};

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
        Err(StoreError::Held(message)) => assert!(message.contains("already open"), "{message}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a store that is in use"),
    }
}

/// A store file with some history, closed: what the damage tests start from.
async fn written_store(tasks: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), "test").await.expect("open");
    let changes: Vec<Change> = (0..tasks)
        .map(|i| Change::PutTask(conformance::task(&format!("t{i:05}"), "web", i)))
        .collect();
    store.commit(at(0), at(1), changes).await.expect("commit");
    dir
}

/// Opening must refuse the file as damage, naming it and saying what to do (and never
/// start an empty cluster in its place).
async fn assert_refused_as_damage(dir: &std::path::Path) {
    let file = EmbeddedStore::file_in(dir);
    for create in [Create::IfMissing, Create::No] {
        match EmbeddedStore::open_with(dir, "test", create).await {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains(&file.display().to_string()), "{message}");
                assert!(message.contains("Restore it from a copy"), "{message}");
                assert!(message.contains("--init"), "{message}");
            }
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(store) => panic!(
                "a damaged file was opened: {:?}",
                store.load().await.map(|s| s.head)
            ),
        }
    }
}

#[tokio::test]
async fn an_empty_file_is_refused_unless_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(EmbeddedStore::file_in(dir.path()), b"").expect("write");
    match EmbeddedStore::open_with(dir.path(), "test", Create::IfMissing).await {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("is empty (0 bytes)"), "{message}");
            assert!(message.contains("--init"), "{message}");
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("a 0-byte file started an empty cluster"),
    }
    // Asked for explicitly, an empty file starts a new cluster.
    let store = EmbeddedStore::open_with(dir.path(), "test", Create::Init)
        .await
        .expect("--init");
    assert_eq!(store.load().await.expect("load").head, at(0));
}

#[tokio::test]
async fn a_missing_file_is_refused_where_the_cluster_existed() {
    let dir = tempfile::tempdir().expect("tempdir");
    match EmbeddedStore::open_with(dir.path(), "test", Create::No).await {
        Err(StoreError::Config(message)) => {
            assert!(
                message.contains("store mycluster.redb is missing"),
                "{message}"
            );
            assert!(message.contains("--init"), "{message}");
        }
        Err(other) => panic!("expected Config, got {other}"),
        Ok(_) => panic!("a missing store was started afresh"),
    }
    assert!(!EmbeddedStore::file_in(dir.path()).exists());
    EmbeddedStore::open_with(dir.path(), "test", Create::Init)
        .await
        .expect("--init makes it");
}

#[tokio::test]
async fn init_never_erases_a_store() {
    let dir = written_store(3).await;
    let store = EmbeddedStore::open_with(dir.path(), "test", Create::Init)
        .await
        .expect("open");
    assert_eq!(store.load().await.expect("load").tasks.len(), 3);
}

#[tokio::test]
async fn a_truncated_file_is_refused() {
    let dir = written_store(200).await;
    let file = EmbeddedStore::file_in(dir.path());
    let len = std::fs::metadata(&file).expect("metadata").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.set_len(len / 3).expect("truncate");
    drop(f);
    assert_refused_as_damage(dir.path()).await;
}

#[tokio::test]
async fn a_bad_header_is_refused() {
    let dir = written_store(200).await;
    let file = EmbeddedStore::file_in(dir.path());
    let mut bytes = std::fs::read(&file).expect("read");
    for (i, b) in bytes.iter_mut().take(512).enumerate() {
        *b = (i * 37 % 251) as u8;
    }
    std::fs::write(&file, bytes).expect("write");
    assert_refused_as_damage(dir.path()).await;
}

#[tokio::test]
async fn a_damaged_page_is_refused_not_a_panic() {
    let dir = written_store(2000).await;
    let file = EmbeddedStore::file_in(dir.path());
    let mut bytes = std::fs::read(&file).expect("read");
    // Past the header, into the pages the tasks were written to.
    let len = bytes.len();
    for (i, b) in bytes[len / 2..len / 2 + 4096].iter_mut().enumerate() {
        *b = b.wrapping_add(1 + (i % 7) as u8);
    }
    std::fs::write(&file, bytes).expect("write");
    assert_refused_as_damage(dir.path()).await;
}
