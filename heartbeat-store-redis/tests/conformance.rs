//! The core's store conformance suite, unchanged, against a real `redis-server` started for
//! each test.

mod fixture;

use fixture::RedisFixture;
use heartbeat_store_redis::testkit::RedisServer;

async fn fresh() -> RedisFixture {
    RedisFixture::own(RedisServer::start(), false)
}

heartbeat_core::conformance_tests!(fresh);

/// The same suite with one key per script, as on Redis Cluster.
mod one_script_per_key {
    use super::*;

    async fn fresh() -> RedisFixture {
        RedisFixture::own(RedisServer::start(), true)
    }

    heartbeat_core::conformance_tests!(fresh);
}
