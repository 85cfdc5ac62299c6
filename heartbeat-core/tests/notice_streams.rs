//! A watched session's stream (SPEC §3.7) when nobody else ends the session: it closes
//! without a notice once the session is stopped or expired, found by its periodic re-read
//! (tokio's clock paused, so the session life passes at once).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use heartbeat_core::memory::MemorySessionStore;
use heartbeat_core::testkit::sessions::{accept, backend_data, seal, service, start};
use heartbeat_core::{Id, ManualClock};

#[tokio::test(start_paused = true)]
async fn a_stream_closes_quietly_when_its_session_stops_or_expires() {
    let clock = ManualClock::new(start());
    let heartbeats = service(MemorySessionStore::new(), &clock);
    let data = backend_data(13, 2, 1, 10, "LEAST_RECENT");

    let (stopped, _) = accept(&heartbeats, &seal(&heartbeats, &data), None).await;
    let mut stream = heartbeats.watch(&stopped).await.unwrap();
    assert!(heartbeats.stop(&stopped, None).await.unwrap());
    // Paused: the 40 s re-read comes as soon as nothing else can run.
    let ended = tokio::time::timeout(Duration::from_secs(300), stream.next()).await;
    assert_eq!(ended, Ok(None), "no notice for a stop, then the end");

    let (expiring, _) = accept(&heartbeats, &seal(&heartbeats, &data), None).await;
    let mut stream = heartbeats.watch(&expiring).await.unwrap();
    clock.advance(Duration::from_secs(41));
    let ended = tokio::time::timeout(Duration::from_secs(300), stream.next()).await;
    assert_eq!(ended, Ok(None), "no notice for an expiry, then the end");

    // A session that plays on keeps its stream open through re-reads.
    let (playing, id) = accept(&heartbeats, &seal(&heartbeats, &data), None).await;
    let mut stream = heartbeats.watch(&playing).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(100), stream.next()).await;
    assert!(waited.is_err(), "still open after two re-reads: {waited:?}");
    assert!(
        heartbeats
            .evict(&Id::Int(13), &id.session_id)
            .await
            .unwrap()
    );
    assert!(stream.next().await.is_some(), "then told of its eviction");
}
