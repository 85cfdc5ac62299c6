//! The store conformance suite against the in-memory stores.

#![allow(clippy::unwrap_used)]

use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
use heartbeat_core::testkit::Fixture;

struct Memory {
    sessions: MemorySessionStore,
    jobs: MemoryJobStore,
    bus: MemoryEventBus,
}

impl Fixture for Memory {
    type Sessions = MemorySessionStore;
    type Jobs = MemoryJobStore;
    type Bus = MemoryEventBus;

    async fn sessions(&self) -> MemorySessionStore {
        self.sessions.clone()
    }

    async fn jobs(&self) -> MemoryJobStore {
        self.jobs.clone()
    }

    async fn bus(&self) -> MemoryEventBus {
        self.bus.clone()
    }
}

async fn memory() -> Memory {
    Memory {
        sessions: MemorySessionStore::new(),
        jobs: MemoryJobStore::new(),
        bus: MemoryEventBus::new(),
    }
}

heartbeat_core::conformance_tests!(memory);
