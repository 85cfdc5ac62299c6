//! The core's store conformance suite, unchanged, on a fresh sled database per test.

use heartbeat_core::testkit::Fixture;
use heartbeat_store_sled::{SledConfig, SledStore};

struct SledFixture {
    store: SledStore,
    _dir: tempfile::TempDir,
}

impl Fixture for SledFixture {
    type Sessions = SledStore;
    type Jobs = SledStore;
    type Bus = SledStore;

    // One process holds a sled database; its "clients" are clones of one handle.
    async fn sessions(&self) -> SledStore {
        self.store.clone()
    }
    async fn jobs(&self) -> SledStore {
        self.store.clone()
    }
    async fn bus(&self) -> SledStore {
        self.store.clone()
    }
}

async fn fresh() -> SledFixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SledStore::open(SledConfig::new(dir.path().join("db"))).expect("a new database");
    SledFixture { store, _dir: dir }
}

heartbeat_core::conformance_tests!(fresh);
