//! Conformance checks for sessions that end as `gone` (SPEC §3.8 "A closed player lets go
//! at once"): the notice stream on one instance, the crash, the next device on another.

use std::time::Duration;

use super::Fixture;
use super::sessions::{accept, backend_data, reject, seal, service, start};
use crate::sessions::analytics::{IndexKey, SETTLE_MILLIS};
use crate::sessions::{NoticeStream, StreamRelease};
use crate::{
    DEFAULT_GONE_GRACE, EndReason, HeartbeatConfig, Heartbeats, Id, ManualClock, SessionStore,
};

/// The grace of these checks: the default, 5 s.
const GRACE: Duration = DEFAULT_GONE_GRACE;

/// The stream's release: the server hands it over when the stream's client went away.
fn release(stream: &mut NoticeStream) -> StreamRelease {
    stream
        .take_release()
        .expect("a stream of an active session can let it go")
}

async fn active<S: SessionStore>(heartbeats: &Heartbeats<S, ManualClock>, user: i64) -> usize {
    heartbeats
        .active_sessions(&Id::Int(user))
        .await
        .unwrap()
        .len()
}

/// A session whose notice stream closed (on instance A) and that does not heartbeat within
/// the grace ends as `gone` at the grace's end: the next device of the user plays on
/// instance B, and the history and the export say `gone`. A heartbeat within the grace, or
/// a stream that reconnects within it, keeps the session; the late close of a stream that
/// was replaced changes nothing; with the setting off, a closed stream changes nothing.
pub async fn a_session_whose_stream_closed_ends_as_gone<F: Fixture>(fixture: &F) {
    let clock = ManualClock::new(start());
    let a = service(fixture.sessions().await, &clock);
    let b = service(fixture.sessions().await, &clock);
    let user = 13;
    let data = backend_data(user, 1, 1, 10, "MOST_RECENT");

    // The TV plays and follows its notices on A; its tab crashes: the stream closes.
    let (tv, tv_session) = accept(&a, &seal(&a, &data), None).await;
    let mut stream = a.watch(&tv).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(a.stream_closed(release(&mut stream)).await.unwrap());
    // Within the grace the TV still holds the slot.
    clock.advance(GRACE - Duration::from_secs(1));
    assert_eq!(active(&b, user).await, 1);
    // The grace ends: the TV is gone, the phone plays on B past its counted heartbeats.
    clock.advance(Duration::from_secs(1) + Duration::from_millis(1));
    assert_eq!(active(&b, user).await, 0);
    let (phone, _) = accept(&b, &seal(&b, &data), None).await;
    clock.advance(Duration::from_secs(30));
    let (phone, _) = accept(&b, &phone, None).await;
    let history = b.history(&Id::Int(user), 10).await.unwrap();
    let tv_entry = history
        .iter()
        .find(|entry| entry.session_id == tv_session.session_id)
        .unwrap();
    assert_eq!(tv_entry.ended_by, Some(EndReason::Gone));
    assert_eq!(
        tv_entry.ended_at,
        Some(start().add_millis(1000 + i64::try_from(GRACE.as_millis()).unwrap()))
    );
    // The export lists it as gone, at the grace's end.
    clock.advance(Duration::from_millis(SETTLE_MILLIS as u64));
    let page = b
        .finished_sessions(&IndexKey::start(), None, 100)
        .await
        .unwrap();
    assert!(
        page.sessions
            .iter()
            .any(|session| session.record.session_id == tv_session.session_id
                && session.record.ended_by == Some(EndReason::Gone)),
        "{:?}",
        page.sessions
    );

    // A token the playback has moved past opens no stream: it could otherwise let the
    // session go, or hold the user's stream slots. Only the current token does.
    let spent = phone.clone();
    clock.advance(Duration::from_secs(30));
    let (phone, _) = accept(&b, &phone, None).await;
    assert!(matches!(
        a.watch(&spent).await,
        Err(crate::HeartbeatError::Session(
            crate::sessions::rules::SessionError::Spent
        ))
    ));
    // A heartbeat within the grace keeps the phone, as does a stream that reconnects.
    let mut first = a.watch(&phone).await.unwrap();
    let first = release(&mut first);
    assert!(b.stream_closed(first.clone()).await.unwrap());
    clock.advance(Duration::from_secs(2));
    let (phone, _) = accept(&b, &phone, None).await;
    clock.advance(GRACE);
    assert_eq!(active(&a, user).await, 1, "it heartbeat within the grace");
    let mut second = a.watch(&phone).await.unwrap();
    let second = release(&mut second);
    assert!(a.stream_closed(second.clone()).await.unwrap());
    clock.advance(Duration::from_secs(2));
    let mut third = b.watch(&phone).await.unwrap();
    // The replaced streams' closes, late: nothing changes.
    assert!(!a.stream_closed(first).await.unwrap());
    assert!(!a.stream_closed(second).await.unwrap());
    clock.advance(GRACE);
    assert_eq!(active(&a, user).await, 1, "its stream reconnected");
    // The TV's token comes back (it was alive after all): its playback resumes, counted
    // at once and newest, so under MOST_RECENT it is refused while the phone plays.
    clock.advance(Duration::from_secs(20));
    let (phone, _) = accept(&b, &phone, None).await;
    assert_eq!(
        reject(&a, &tv).await.code(),
        "over_limit",
        "a gone session is an ended playback"
    );

    // The setting off: a stream cannot let its session go, and a release from an
    // instance with it on is ignored.
    let off = service(fixture.sessions().await, &clock).with_config(HeartbeatConfig {
        gone_grace: None,
        ..HeartbeatConfig::default()
    });
    assert!(release_of(&off, &phone).await.is_none());
    assert!(!off.stream_closed(release(&mut third)).await.unwrap());
    clock.advance(GRACE * 2);
    assert_eq!(active(&off, user).await, 1);
}

/// The release of a fresh stream of `token`'s session on `heartbeats`.
async fn release_of<S: SessionStore + Clone>(
    heartbeats: &Heartbeats<S, ManualClock>,
    token: &str,
) -> Option<StreamRelease> {
    heartbeats.watch(token).await.unwrap().take_release()
}

/// A session stopped on instance B closes its notice streams on instance A at once,
/// without an event (its player knows), not at their next re-read of the session (a
/// session life later).
pub async fn a_stopped_session_closes_its_streams_at_once<F: Fixture>(fixture: &F) {
    use futures_util::StreamExt;
    let clock = ManualClock::new(start());
    let a = service(fixture.sessions().await, &clock);
    let b = service(fixture.sessions().await, &clock);
    let data = backend_data(21, 1, 1, 10, "MOST_RECENT");
    let (tv, _) = accept(&a, &seal(&a, &data), None).await;
    let mut stream = a.watch(&tv).await.unwrap();
    assert!(b.stop(&tv, None).await.unwrap());
    let ended = tokio::time::timeout(super::EVENT_WAIT, stream.next())
        .await
        .expect("the stream closes at once, not at its re-read (40 s)");
    assert_eq!(ended, None, "without an event");
}
