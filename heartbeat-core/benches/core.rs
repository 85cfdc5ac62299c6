//! Criterion benchmarks of the core: token open/seal in both formats, the decision with
//! 1/10/100 stored sessions, and a whole heartbeat through the memory store.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use heartbeat_core::memory::MemorySessionStore;
use heartbeat_core::sessions::rules::{PlaybackPolicy, decide};
use heartbeat_core::token::legacy;
use heartbeat_core::{
    HeartbeatData, HeartbeatOutcome, Heartbeats, SessionRecord, Timestamp, TokenCodec, TokenFormat,
    UserSessions,
};

fn data() -> HeartbeatData {
    serde_json::from_str(
        r#"{"user_id":13,"asset_id":14,"heartbeat_cycle":3,"reject_strategy":"LEAST_RECENT",
        "cycle_lower_tolerance":0.3,"cycle_upper_tolerance":0.8,"timestamp":"2018-06-05T16:16:14.418Z",
        "session_limit":1,"checking_threshold":3,"sessions_edge":10}"#,
    )
    .unwrap()
}

fn tokens(c: &mut Criterion) {
    let data = data();
    let sealed = TokenCodec::new("topsecret").unwrap();
    let legacy_codec = sealed.clone().issuing(TokenFormat::Legacy);
    let sealed_token = sealed.seal(&data).unwrap();
    let own_legacy = legacy_codec.seal(&data).unwrap();
    let json = serde_json::to_vec(&data).unwrap();
    let foreign_legacy = legacy::seal_with(b"topsecret", &[7; 16], &[9; 16], &json);

    let mut group = c.benchmark_group("token");
    group.bench_function("seal v2", |b| {
        b.iter(|| sealed.seal(black_box(&data)).unwrap())
    });
    group.bench_function("open v2", |b| {
        b.iter(|| sealed.open(black_box(&sealed_token)).unwrap())
    });
    group.bench_function("seal legacy", |b| {
        b.iter(|| legacy_codec.seal(black_box(&data)).unwrap())
    });
    group.bench_function("open legacy (own salt)", |b| {
        b.iter(|| sealed.open(black_box(&own_legacy)).unwrap())
    });
    group.bench_function("open legacy (backend salt, PBKDF2)", |b| {
        b.iter(|| sealed.open(black_box(&foreign_legacy)).unwrap())
    });
    group.bench_function("refuse legacy (bad padding)", |b| {
        let mut bad = foreign_legacy.clone();
        bad.replace_range(bad.len() - 8.., "AAAAAAA=");
        b.iter(|| sealed.open(black_box(&bad)).unwrap_err())
    });
    // A key rotation (SHARED_KEY_PREVIOUS): one previous key.
    let rotated = TokenCodec::new("next secret")
        .unwrap()
        .with_previous_keys(["topsecret"])
        .unwrap();
    let stranger = TokenCodec::new("nobody's key").unwrap();
    let stranger_v2 = stranger.seal(&data).unwrap();
    group.bench_function("open v2 sealed with the previous key", |b| {
        b.iter(|| rotated.open(black_box(&sealed_token)).unwrap())
    });
    group.bench_function("refuse v2 (wrong key)", |b| {
        b.iter(|| sealed.open(black_box(&stranger_v2)).unwrap_err())
    });
    group.bench_function("refuse v2 (wrong key), one previous key", |b| {
        b.iter(|| rotated.open(black_box(&stranger_v2)).unwrap_err())
    });
    group.bench_function("refuse legacy (bad padding), one previous key", |b| {
        let mut bad = foreign_legacy.clone();
        bad.replace_range(bad.len() - 8.., "AAAAAAA=");
        b.iter(|| rotated.open(black_box(&bad)).unwrap_err())
    });
    group.finish();
}

fn decisions(c: &mut Criterion) {
    let now: Timestamp = "2018-06-05T16:16:17.418Z".parse().unwrap();
    let mut token = data();
    token.sessions_edge = Some(1000);
    let issued = token.timestamp.unwrap_or(now);
    token.session_id = Some("session-0000".into());
    let mut group = c.benchmark_group("decide");
    for count in [1usize, 10, 100] {
        let mut stored = UserSessions::default();
        for i in 0..count {
            stored.sessions.insert(
                format!("session-{i:04}"),
                SessionRecord {
                    timestamp: issued,
                    hit_counter: 5,
                    started_at: Some(issued.add_millis(i as i64)),
                    asset_id: None,
                    progress: None,
                    expires_at: None,
                    ended_by: None,
                    ended_at: None,
                    taken_over_by: None,
                    previous: None,
                    restarted_at: None,
                    restarted_before: None,
                    would_refuse: None,
                    notice_stream: None,
                    gone_at: None,
                    device: None,
                    device_family: None,
                    extra: Default::default(),
                },
            );
        }
        group.bench_with_input(BenchmarkId::from_parameter(count), &stored, |b, stored| {
            b.iter(|| {
                decide(
                    &PlaybackPolicy::default(),
                    black_box(now),
                    &token,
                    stored,
                    "fresh",
                    Some(1.0),
                )
            })
        });
    }
    group.finish();
}

fn heartbeat_memory(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let codec = TokenCodec::new("topsecret").unwrap();
    let heartbeats = Heartbeats::new(codec.clone(), MemorySessionStore::new());
    let mut user = 0i64;
    c.bench_function("heartbeat/memory (backend token, v2)", |b| {
        b.iter(|| {
            user += 1;
            let mut data = data();
            data.user_id = user.into();
            data.timestamp = Some(Timestamp::now());
            let token = codec.seal(&data).unwrap();
            let outcome = runtime
                .block_on(heartbeats.heartbeat(&token, Some(1.0)))
                .unwrap();
            assert!(matches!(outcome, HeartbeatOutcome::Accepted { .. }));
        })
    });
}

criterion_group!(benches, tokens, decisions, heartbeat_memory);
criterion_main!(benches);
