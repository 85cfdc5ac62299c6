//! The core's store conformance suite, unchanged, against a real Redis Cluster (three
//! masters, three replicas). One cluster serves every test of this binary, each test in
//! its own key namespace; the cluster's nodes end with the test process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use heartbeat_core::testkit::Fixture;
use heartbeat_store_redis::testkit::RedisCluster;
use heartbeat_store_redis::{RedisConfig, RedisStore};

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

struct ClusterFixture {
    url: String,
    namespace: String,
}

impl ClusterFixture {
    async fn client(&self) -> RedisStore {
        let mut config = RedisConfig::new(&self.url);
        config.namespace = self.namespace.clone();
        RedisStore::connect(config)
            .await
            .expect("connects to the test cluster")
    }
}

impl Fixture for ClusterFixture {
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

async fn fresh() -> ClusterFixture {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = tokio::task::spawn_blocking(|| cluster().url())
        .await
        .expect("the cluster starts");
    ClusterFixture {
        url,
        namespace: format!("cluster-{}:", NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

heartbeat_core::conformance_tests!(fresh);
