//! The core's store conformance suite, unchanged, against a real Redis Cluster (three
//! masters, three replicas) and a real Sentinel group (one master, one replica, three
//! sentinels). One cluster and one group serve every test of this binary, each test in
//! its own key namespace; their processes end with the test process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use heartbeat_core::testkit::Fixture;
use heartbeat_store_redis::testkit::{RedisCluster, RedisSentinel};
use heartbeat_store_redis::{RedisConfig, RedisStore};

struct SharedFixture {
    url: String,
    namespace: String,
}

impl SharedFixture {
    /// A fixture on the Redis at the URL `start` gives (run once, off the async threads),
    /// in a namespace of its own.
    async fn new(start: fn() -> String) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = tokio::task::spawn_blocking(start)
            .await
            .expect("the Redis starts");
        Self {
            url,
            namespace: format!("conformance-{}:", NEXT.fetch_add(1, Ordering::Relaxed)),
        }
    }

    async fn client(&self) -> RedisStore {
        let mut config = RedisConfig::new(&self.url);
        config.namespace = self.namespace.clone();
        RedisStore::connect(config)
            .await
            .unwrap_or_else(|error| panic!("connects to {}: {error}", self.url))
    }
}

impl Fixture for SharedFixture {
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

mod cluster {
    use super::*;

    fn url() -> String {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(RedisCluster::start).url()
    }

    async fn fresh() -> SharedFixture {
        SharedFixture::new(url).await
    }

    heartbeat_core::conformance_tests!(fresh);
}

mod sentinel {
    use super::*;

    fn url() -> String {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(RedisSentinel::start).url()
    }

    async fn fresh() -> SharedFixture {
        SharedFixture::new(url).await
    }

    heartbeat_core::conformance_tests!(fresh);
}
