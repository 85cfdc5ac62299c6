//! The core's store conformance suite, unchanged, against a real Redis Cluster (three
//! masters, three replicas) and a real Sentinel group (one master, one replica, three
//! sentinels). One cluster and one group serve every test of this binary, each test in
//! its own key namespace; their processes end with the test process.

mod fixture;

use std::sync::OnceLock;

use fixture::RedisFixture;
use heartbeat_store_redis::testkit::{RedisCluster, RedisSentinel};

mod cluster {
    use super::*;

    fn url() -> String {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER.get_or_init(RedisCluster::start).url()
    }

    async fn fresh() -> RedisFixture {
        RedisFixture::shared(url).await
    }

    heartbeat_core::conformance_tests!(fresh);
}

mod sentinel {
    use super::*;

    fn url() -> String {
        static GROUP: OnceLock<RedisSentinel> = OnceLock::new();
        GROUP.get_or_init(RedisSentinel::start).url()
    }

    async fn fresh() -> RedisFixture {
        RedisFixture::shared(url).await
    }

    heartbeat_core::conformance_tests!(fresh);
}
