//! openraft's storage conformance suite, run against both stores.

use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::StorageError;
use tandem_raft_store::sled_store;
use tandem_raft_store::MemLogStore;
use tandem_raft_store::SledLogStore;
use tandem_raft_store::StateMachineStore;
use tandem_raft_store::TypeConfig;
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, SledLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = sled_store::open(dir.path()).expect("open sled store");
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore> for MemBuilder {
    async fn build(&self) -> Result<((), MemLogStore, StateMachineStore), StorageError<TypeConfig>> {
        Ok(((), MemLogStore::new(), StateMachineStore::in_memory()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_store_passes_the_openraft_storage_suite() {
    Suite::test_all(SledBuilder).await.expect("sled store conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_openraft_storage_suite() {
    Suite::test_all(MemBuilder).await.expect("memory store conformance");
}
