//! The core's store conformance suite, unchanged, against a real `redis-server` started for
//! each test. Every `Fixture` call connects a new, independent client, as separate server
//! instances would.

use heartbeat_core::testkit::Fixture;
use heartbeat_store_redis::testkit::RedisServer;
use heartbeat_store_redis::{RedisConfig, RedisStore};

struct RedisFixture {
    server: RedisServer,
    one_script_per_key: bool,
}

impl RedisFixture {
    async fn client(&self) -> RedisStore {
        let mut config = RedisConfig::new(self.server.url());
        config.namespace = "conformance:".into();
        config.one_script_per_key = self.one_script_per_key;
        RedisStore::connect(config)
            .await
            .expect("connects to the test redis-server")
    }
}

impl Fixture for RedisFixture {
    type Sessions = RedisStore;
    type Jobs = RedisStore;
    type Bus = RedisStore;

    async fn sessions(&self) -> RedisStore {
        self.client().await
    }
    async fn jobs(&self) -> RedisStore {
        self.client().await
    }
    async fn bus(&self) -> RedisStore {
        self.client().await
    }
}

async fn fresh() -> RedisFixture {
    RedisFixture {
        server: RedisServer::start(),
        one_script_per_key: false,
    }
}

heartbeat_core::conformance_tests!(fresh);

/// The same suite with one key per script, as on Redis Cluster.
mod one_script_per_key {
    use super::*;

    async fn fresh() -> RedisFixture {
        RedisFixture {
            server: RedisServer::start(),
            one_script_per_key: true,
        }
    }

    heartbeat_core::conformance_tests!(fresh);
}
