//! What `ping` (and so `/readyz`) says of a real Redis Cluster: `Up` while every master
//! answers, `Degraded` while one master does not (paused with `CLIENT PAUSE`, as a master
//! that hangs), and `Up` again once it answers.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use heartbeat_core::SessionStore;
use heartbeat_core::store::StoreHealth;
use heartbeat_store_redis::testkit::RedisCluster;
use heartbeat_store_redis::{RedisConfig, RedisStore};

#[tokio::test(flavor = "multi_thread")]
async fn a_master_that_does_not_answer_degrades_the_store_and_no_more() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let store = RedisStore::connect(RedisConfig::new(cluster.url()))
        .await
        .unwrap();
    assert_eq!(store.ping().await.unwrap(), StoreHealth::Up);

    let master = cluster.master_of("any key");
    let paused = std::process::Command::new("redis-cli")
        .args(["-p", &master.to_string(), "client", "pause", "4000", "all"])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{paused:?}");
    assert_eq!(
        store.ping().await.unwrap(),
        StoreHealth::Degraded {
            answering: 2,
            total: 3
        }
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.ping().await {
            Ok(StoreHealth::Up) => break,
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(cluster);
}
