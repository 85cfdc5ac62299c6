//! Instruction counts of the heartbeat's parts under callgrind (gungraun): token open and
//! seal in each format the server issues, the token's JSON and compact read and write,
//! `decide`, and one compare-and-set commit on the memory store. Unlike wall-clock time
//! these do not drift with the machine's load, so a 5 % change shows. Run: `cargo bench -p heartbeat-core --bench instructions` (needs
//! valgrind and `gungraun-runner` 0.20.0: `cargo install gungraun-runner --version 0.20.0`;
//! scripts/test installs both). Compare two builds: run it on the first, then on the
//! second; gungraun prints each figure beside the previous run's.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use heartbeat_core::memory::MemorySessionStore;
use heartbeat_core::sessions::rules::{PlaybackPolicy, decide};
use heartbeat_core::sessions::{Decision, Loaded, Retention, SessionWrite};
use heartbeat_core::store::Commit;
use heartbeat_core::{
    HeartbeatData, Id, SessionStore, Timestamp, TokenCodec, TokenFormat, UserSessions,
};

const DATA: &str = r#"{"user_id":13,"asset_id":14,"heartbeat_cycle":3,"reject_strategy":"LEAST_RECENT",
    "cycle_lower_tolerance":0.3,"cycle_upper_tolerance":0.8,"timestamp":"2018-06-05T16:16:14.418Z",
    "session_limit":1,"checking_threshold":3,"sessions_edge":10}"#;

fn data() -> HeartbeatData {
    serde_json::from_str(DATA).unwrap()
}

/// A codec issuing `format`, and the data to seal.
fn issuing(format: TokenFormat) -> (TokenCodec, HeartbeatData) {
    (
        TokenCodec::new("topsecret").unwrap().issuing(format),
        data(),
    )
}

/// A codec issuing `format`, and a token it sealed.
fn issued(format: TokenFormat) -> (TokenCodec, String) {
    let (codec, data) = issuing(format);
    let token = codec.seal(&data).unwrap();
    (codec, token)
}

fn json_text() -> Vec<u8> {
    serde_json::to_vec(&data()).unwrap()
}

fn now() -> Timestamp {
    "2018-06-05T16:16:17.418Z".parse().unwrap()
}

#[library_benchmark]
#[bench::v2(args = (TokenFormat::Sealed), setup = issuing)]
#[bench::b1(args = (TokenFormat::Backend), setup = issuing)]
#[bench::v3(args = (TokenFormat::Compact), setup = issuing)]
fn token_seal((codec, data): (TokenCodec, HeartbeatData)) -> String {
    black_box(codec.seal(black_box(&data)).unwrap())
}

#[library_benchmark]
#[bench::v2(args = (TokenFormat::Sealed), setup = issued)]
#[bench::b1(args = (TokenFormat::Backend), setup = issued)]
#[bench::v3(args = (TokenFormat::Compact), setup = issued)]
fn token_open((codec, token): (TokenCodec, String)) -> HeartbeatData {
    black_box(codec.open(black_box(&token)).unwrap())
}

#[library_benchmark]
#[bench::token_data(setup = json_text)]
fn json_read(json: Vec<u8>) -> HeartbeatData {
    // What opening a token does with its plaintext.
    black_box(HeartbeatData::from_json_slice(black_box(&json)).unwrap())
}

#[library_benchmark]
#[bench::token_data(setup = data)]
fn json_write(data: HeartbeatData) -> Vec<u8> {
    // What sealing a token does with its data.
    black_box(black_box(&data).to_json_vec())
}

fn compact_payload() -> Vec<u8> {
    data().to_compact_vec()
}

#[library_benchmark]
#[bench::token_data(setup = compact_payload)]
fn compact_read(payload: Vec<u8>) -> HeartbeatData {
    // What opening a `v3.` token does with its plaintext.
    black_box(HeartbeatData::from_compact_slice(black_box(&payload)).unwrap())
}

#[library_benchmark]
#[bench::token_data(setup = data)]
fn compact_write(data: HeartbeatData) -> Vec<u8> {
    // What sealing a `v3.` token does with its data.
    black_box(black_box(&data).to_compact_vec())
}

#[library_benchmark]
#[bench::new_session(setup = data)]
fn rules_decide(token: HeartbeatData) -> Decision {
    black_box(decide(
        &PlaybackPolicy::default(),
        black_box(now()),
        &token,
        &UserSessions::default(),
        "fresh",
        Some(1.0),
    ))
}

/// A memory store, the loaded state of a new user and the write `decide` made for it.
struct CommitCase {
    runtime: tokio::runtime::Runtime,
    store: MemorySessionStore,
    user: Id,
    loaded: Loaded<u64>,
    write: SessionWrite,
}

fn commit_case() -> CommitCase {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemorySessionStore::new();
    let user = Id::Int(13);
    let loaded = runtime.block_on(store.load(&user)).unwrap();
    let decision = decide(
        &PlaybackPolicy::default(),
        now(),
        &data(),
        &loaded.sessions,
        "fresh",
        Some(1.0),
    );
    let write = decision
        .write
        .for_store(&user, &loaded.sessions, now(), &Retention::default());
    CommitCase {
        runtime,
        store,
        user,
        loaded,
        write,
    }
}

#[library_benchmark]
#[bench::memory(setup = commit_case)]
fn store_commit(case: CommitCase) -> Commit {
    let retention = Retention::default();
    let commit = case
        .store
        .commit(&case.user, &case.loaded.version, &case.write, &retention);
    black_box(case.runtime.block_on(commit).unwrap())
}

library_benchmark_group!(
    name = heartbeat_parts;
    benchmarks = token_seal, token_open, json_read, json_write, compact_read, compact_write,
        rules_decide, store_commit
);

main!(library_benchmark_groups = heartbeat_parts);
