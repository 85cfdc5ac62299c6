//! A custom Rust backend that embeds heartbeat-core with the in-memory store: no HTTP.
//!
//! The backend mints the first token of each playback; two devices of one user play under
//! a limit of one stream; the older device is refused at its next heartbeat (the default
//! `LEAST_RECENT` strategy); the newer one stops and the play history and progress show it.
//!
//! Run with `cargo run -p heartbeat-examples --example embed_core`.

use std::time::Duration;

use heartbeat_core::memory::MemorySessionStore;
use heartbeat_core::{
    Clock, HeartbeatData, HeartbeatOutcome, Heartbeats, Id, ManualClock, Timestamp, TokenCodec,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let codec = TokenCodec::new("a shared key known to the backend and the heartbeat service")?;
    // A manual clock lets the example move through minutes of playback at once.
    let clock = ManualClock::new(Timestamp::now());
    let heartbeats =
        Heartbeats::new(codec.clone(), MemorySessionStore::new()).with_clock(clock.clone());

    // 1. The backend mints the first token when the user presses play.
    let first_token = |now: Timestamp| -> Result<String, Box<dyn std::error::Error>> {
        let data = HeartbeatData::builder(13, "movie-14")
            .cycle(30.0)
            .upper_tolerance(10.0)
            .timestamp(now)
            .session_limit(1)
            .checking_threshold(1)
            .sessions_edge(10)
            .build()?;
        Ok(codec.seal(&data)?)
    };

    // 2. The TV starts playing, the phone five seconds later.
    let tv = accept(&heartbeats, &first_token(clock.now())?, 0.0).await?;
    clock.advance(Duration::from_secs(5));
    let phone = accept(&heartbeats, &first_token(clock.now())?, 0.0).await?;
    println!("tv and phone are playing");

    // 3. One cycle later both send their next heartbeat.
    clock.advance(Duration::from_secs(30));
    match heartbeats.heartbeat(&tv, Some(30.0)).await? {
        HeartbeatOutcome::Rejected(refused) => {
            println!("tv refused (412): {:?}", refused.reason)
        }
        other => return Err(format!("the tv should have been refused: {other:?}").into()),
    }
    let phone = accept(&heartbeats, &phone, 25.0).await?;
    println!("phone keeps playing");

    // 4. The phone stops for good; its slot is free at once.
    heartbeats.stop(&phone, Some(31.5)).await?;
    let user = Id::Int(13);
    let asset = Id::from("movie-14");
    let progress = heartbeats
        .progress(&user, &asset)
        .await?
        .ok_or("no progress recorded")?;
    println!("progress of user 13 in movie-14: {} s", progress.progress);
    for entry in heartbeats.history(&user, 10).await? {
        match entry.ended_by {
            Some(reason) => println!(
                "history: session {} ended by {} after {} heartbeats",
                entry.session_id,
                reason.code(),
                entry.hit_counter
            ),
            None => println!(
                "history: session {} still active after {} heartbeats",
                entry.session_id, entry.hit_counter
            ),
        }
    }
    Ok(())
}

async fn accept<S: heartbeat_core::SessionStore, C: Clock>(
    heartbeats: &Heartbeats<S, C>,
    token: &str,
    progress: f64,
) -> Result<String, Box<dyn std::error::Error>> {
    match heartbeats.heartbeat(token, Some(progress)).await? {
        HeartbeatOutcome::Accepted { token, .. } => Ok(token),
        other => Err(format!("not accepted: {other:?}").into()),
    }
}
