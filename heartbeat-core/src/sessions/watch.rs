//! `GET /heartbeat/events` (SPEC §3.7): a stream that ends when someone else ends the
//! token's session, fed by the store's notices and re-reading the session so that a lost
//! notice is late, never lost.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::live::LiveStream;
use crate::sessions::notice::{SessionEnded, SessionNotice};
use crate::sessions::rules::{self, SessionError, Watched};
use crate::sessions::{HeartbeatError, Heartbeats, SessionStore};
use crate::store::StoreError;
use crate::{Clock, HeartbeatData};

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// The pushed notice of the token's session (`GET /heartbeat/events`, SPEC §3.7): a
    /// stream that yields one [`SessionEnded`] when the session is evicted, taken over or
    /// displaced (at once if it already is), then ends. It also ends, without an item,
    /// when the session stops being active otherwise (stopped, expired). Needs an
    /// authenticated (v2) token.
    ///
    /// The stream listens to the store's notices ([`NoticeBus::watch`](crate::sessions::NoticeBus::watch)) and re-reads
    /// the session when notices may have been missed and once per session life
    /// (`heartbeat_cycle + cycle_upper_tolerance`, within 1 s to 60 s), so a lost notice
    /// is late, never lost.
    ///
    /// # Errors
    ///
    /// [`HeartbeatError::InvalidToken`] for a legacy or invalid token;
    /// [`SessionError::NotActive`] when the token names no active session.
    pub async fn watch(&self, token: &str) -> Result<NoticeStream, HeartbeatError>
    where
        S: Clone,
        C: Clone,
    {
        let data = self.codec.open_authenticated(token)?;
        let session_id = data.session_id.clone().ok_or(SessionError::NotActive)?;
        // Listen first, then read: a notice sent in between is not missed.
        let live = self.store.watch(&data.user_id, &session_id).await?;
        match watched(&self.store, &self.clock, &data).await? {
            Watched::Playing => {}
            Watched::Ended(ended) => return Ok(Box::pin(futures_util::stream::iter([ended]))),
            Watched::Gone => return Err(SessionError::NotActive.into()),
        }
        let recheck = Duration::from_millis(
            u64::try_from(data.session_life_millis().clamp(1_000, 60_000)).unwrap_or(60_000),
        );
        // What the stream keeps while it waits: the store and clock (shared handles), the
        // token's data and the live notices; not the codec and its keys.
        let watch = Watch {
            store: self.store.clone(),
            clock: self.clock.clone(),
            data,
            live,
            recheck,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            Some(watch),
            |watch| async move {
                let mut watch = watch?;
                let ended = watch.next_ending().await?;
                Some((ended, None))
            },
        )))
    }
}

/// The stream [`Heartbeats::watch`] returns.
pub type NoticeStream = Pin<Box<dyn Stream<Item = SessionEnded> + Send>>;

/// Where the session of `data` stands now in `store` (SPEC §3.7).
async fn watched<S: SessionStore, C: Clock>(
    store: &S,
    clock: &C,
    data: &HeartbeatData,
) -> Result<Watched, StoreError> {
    let loaded = store.load(&data.user_id).await?;
    Ok(rules::watched(clock.now(), data, &loaded.sessions))
}

/// One watched session: its live notices and how often to re-read it.
struct Watch<S, C> {
    store: S,
    clock: C,
    data: HeartbeatData,
    live: LiveStream<SessionNotice>,
    recheck: Duration,
}

impl<S: SessionStore, C: Clock> Watch<S, C> {
    /// Waits until the session ends: `Some` when someone else ended it, `None` when it is
    /// no longer active for another reason.
    async fn next_ending(&mut self) -> Option<SessionEnded> {
        let mut live_open = true;
        loop {
            let notice = async {
                if live_open {
                    self.live.next().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                delivered = notice => match delivered {
                    Some(Ok(notice)) => return Some(notice.ended),
                    // Notices may have been missed: read the state below.
                    Some(Err(_)) => {}
                    // The notice source is gone: from now on the timer alone.
                    None => live_open = false,
                },
                () = tokio::time::sleep(self.recheck) => {}
            }
            match watched(&self.store, &self.clock, &self.data).await {
                Ok(Watched::Ended(ended)) => return Some(ended),
                Ok(Watched::Gone) => return None,
                // A store failure: the session is still watched; try again later.
                Ok(Watched::Playing) | Err(_) => {}
            }
        }
    }
}
