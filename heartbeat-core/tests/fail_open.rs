//! Fail-open (`HeartbeatConfig::fail_open`): what a heartbeat answers while the store
//! cannot be reached. The store here is one that is down, as a Redis behind a broken
//! network is: every call fails with `StoreError::Unavailable`.

#![allow(clippy::unwrap_used)]

use heartbeat_core::sessions::analytics::{Index, IndexKey};
use std::time::Duration;

use heartbeat_core::live::LiveStream;
use heartbeat_core::sessions::SessionWrite;
use heartbeat_core::sessions::notice::SessionNotice;
use heartbeat_core::sessions::{AnalyticsStore, Loaded, NoticeBus, Retention};
use heartbeat_core::store::Commit;
use heartbeat_core::testkit::sessions::{backend_data, start};
use heartbeat_core::{
    Clock, HeartbeatConfig, HeartbeatError, HeartbeatOutcome, Heartbeats, Id, ManualClock,
    PlayRecord, ProgressRecord, SessionStore, StoreError, TokenCodec,
};

/// A store whose every call fails as an unreachable one does.
struct Down;

fn down() -> StoreError {
    StoreError::unavailable(
        "connection refused",
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    )
}

impl SessionStore for Down {
    type Version = ();

    async fn load(&self, _: &Id) -> Result<Loaded<()>, StoreError> {
        Err(down())
    }

    async fn commit(
        &self,
        _: &Id,
        _: &(),
        _: &SessionWrite,
        _: &Retention,
    ) -> Result<Commit, StoreError> {
        Err(down())
    }

    async fn progress(&self, _: &Id, _: &Id) -> Result<Option<ProgressRecord>, StoreError> {
        Err(down())
    }

    async fn history(&self, _: &Id, _: usize) -> Result<Vec<PlayRecord>, StoreError> {
        Err(down())
    }

    async fn ping(&self) -> Result<heartbeat_core::store::StoreHealth, StoreError> {
        Err(down())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Err(down())
    }
}

impl AnalyticsStore for Down {
    async fn index_range(
        &self,
        _: Index,
        _: &IndexKey,
        _: &IndexKey,
        _: usize,
    ) -> Result<Vec<IndexKey>, StoreError> {
        Err(down())
    }

    async fn index_count(&self, _: Index, _: &IndexKey) -> Result<u64, StoreError> {
        Err(down())
    }
}

impl NoticeBus for Down {
    async fn notify(&self, _: &SessionNotice) -> Result<(), StoreError> {
        Err(down())
    }

    async fn watch(&self, _: &Id, _: &str) -> Result<LiveStream<SessionNotice>, StoreError> {
        Err(down())
    }
}

fn service(fail_open: bool, clock: &ManualClock) -> Heartbeats<Down, ManualClock> {
    Heartbeats::new(TokenCodec::new("fail-open key").unwrap(), Down)
        .with_config(HeartbeatConfig {
            fail_open,
            ..HeartbeatConfig::default()
        })
        .with_clock(clock.clone())
}

#[tokio::test]
async fn a_store_outage_is_an_error_unless_failing_open() {
    let clock = ManualClock::new(start());
    let heartbeats = service(false, &clock);
    let token = heartbeats
        .codec()
        .seal(&backend_data(13, 1, 1, 5, "LEAST_RECENT"))
        .unwrap();
    let error = heartbeats.heartbeat(&token, Some(3.0)).await.unwrap_err();
    assert!(
        matches!(error, HeartbeatError::Store(StoreError::Unavailable { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn failing_open_rotates_the_token_without_counting() {
    let clock = ManualClock::new(start());
    let heartbeats = service(true, &clock);
    let mut data = backend_data(13, 1, 1, 5, "LEAST_RECENT");
    data.session_id = Some("a-playing-session".into());
    let token = heartbeats.codec().seal(&data).unwrap();
    clock.advance(Duration::from_secs(30));

    let outcome = heartbeats.heartbeat(&token, Some(3.0)).await.unwrap();
    let HeartbeatOutcome::FailedOpen {
        token: rotated,
        cause,
    } = outcome
    else {
        panic!("expected a fail-open answer, got {outcome:?}");
    };
    assert!(cause.contains("connection refused"), "{cause}");
    let reopened = heartbeats.codec().open(&rotated).unwrap();
    // The same session, stamped now: the player's next heartbeat is on time for it.
    assert_eq!(reopened.session_id.as_deref(), Some("a-playing-session"));
    assert_eq!(reopened.timestamp, Some(clock.now()));
    assert_eq!(
        reopened,
        heartbeat_core::HeartbeatData {
            timestamp: Some(clock.now()),
            ..data
        }
    );
}

#[tokio::test]
async fn failing_open_still_refuses_bad_tokens_and_bad_progress() {
    let clock = ManualClock::new(start());
    let heartbeats = service(true, &clock);
    let error = heartbeats.heartbeat("not a token", None).await.unwrap_err();
    assert!(
        matches!(error, HeartbeatError::InvalidToken(_)),
        "{error:?}"
    );
    let token = heartbeats
        .codec()
        .seal(&backend_data(13, 1, 1, 5, "LEAST_RECENT"))
        .unwrap();
    let error = heartbeats.heartbeat(&token, Some(-1.0)).await.unwrap_err();
    assert!(
        matches!(error, HeartbeatError::InvalidProgress),
        "{error:?}"
    );
    // An invalid token is refused as such, whatever the progress says.
    let error = heartbeats
        .heartbeat("not a token", Some(-1.0))
        .await
        .unwrap_err();
    assert!(
        matches!(error, HeartbeatError::InvalidToken(_)),
        "{error:?}"
    );
}
