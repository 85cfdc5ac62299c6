//! Heartbeats per second through each store, with one harness so the numbers compare:
//! a batch of 64 concurrent heartbeats of 64 users (backend tokens sealed beforehand) on a
//! two-worker runtime. Redis is a real `redis-server` started on a free port; sled syncs
//! every acknowledged write (group commit).
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use heartbeat_core::memory::MemorySessionStore;
use heartbeat_core::{HeartbeatData, HeartbeatOutcome, Heartbeats, SessionStore, TokenCodec};
use heartbeat_store_redis::testkit::RedisServer;
use heartbeat_store_redis::{RedisConfig, RedisStore};
use heartbeat_store_sled::{SledConfig, SledStore};

const IN_FLIGHT: usize = 64;

fn tokens(codec: &TokenCodec, next_user: &mut i64) -> Vec<String> {
    (0..IN_FLIGHT)
        .map(|_| {
            *next_user += 1;
            let data = HeartbeatData::builder(*next_user, 14)
                .session_limit(2)
                .checking_threshold(2)
                .sessions_edge(3)
                .build()
                .unwrap();
            codec.seal(&data).unwrap()
        })
        .collect()
}

fn bench_store<S: SessionStore>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: S,
) {
    let codec = TokenCodec::new("bench key").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), store);
    let mut next_user = 0;
    let mut group = c.benchmark_group("store heartbeat");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function(name, |b| {
        b.iter_batched(
            || tokens(&codec, &mut next_user),
            |batch| {
                runtime.block_on(async {
                    let answers = join_all(
                        batch
                            .iter()
                            .map(|token| heartbeats.heartbeat(token, Some(1.0))),
                    )
                    .await;
                    for answer in answers {
                        assert!(matches!(answer.unwrap(), HeartbeatOutcome::Accepted { .. }));
                    }
                });
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_store(c, &runtime, "memory", MemorySessionStore::new());

    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(SledConfig::new(dir.path().join("bench.sled"))).unwrap();
    bench_store(c, &runtime, "sled (sync writes)", sled);
    let mut relaxed = SledConfig::new(dir.path().join("relaxed.sled"));
    relaxed.sync_writes = false;
    bench_store(
        c,
        &runtime,
        "sled (flush every 500 ms)",
        SledStore::open(relaxed).unwrap(),
    );

    let server = RedisServer::start();
    let redis = runtime
        .block_on(RedisStore::connect(RedisConfig::new(server.url())))
        .unwrap();
    bench_store(c, &runtime, "redis (local redis-server)", redis);
}

criterion_group!(benches, stores);
criterion_main!(benches);
