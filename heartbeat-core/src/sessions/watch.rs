//! `GET /heartbeat/events` (SPEC §3.7): a stream that ends when someone else ends the
//! token's session, fed by the store's notices and re-reading the session so that a lost
//! notice is late, never lost.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use crate::live::LiveStream;
use crate::sessions::notice::{NoticeReason, SessionEnded, SessionNotice};
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
    /// [`SessionError::NotActive`] when the token names no active session;
    /// [`SessionError::Spent`] when the session has moved past the token (only its
    /// current token opens a stream; the stream then lasts across the heartbeats that
    /// follow).
    pub async fn watch(&self, token: &str) -> Result<NoticeStream, HeartbeatError>
    where
        S: Clone,
        C: Clone,
    {
        let data = self.codec.open_authenticated(token)?;
        let session_id = data.session_id.clone().ok_or(SessionError::NotActive)?;
        // Listen first, then read: a notice sent in between is not missed.
        let live = self.store.watch(&data.user_id, &session_id).await?;
        let loaded = self.store.load(&data.user_id).await?;
        match rules::watched(self.clock.now(), &data, &loaded.sessions) {
            Watched::Playing if !rules::is_current(&data, &loaded.sessions) => {
                return Err(SessionError::Spent.into());
            }
            Watched::Playing => {}
            Watched::Ended(ended) => {
                return Ok(NoticeStream::new(futures_util::stream::iter([ended]), None));
            }
            Watched::NotActive => return Err(SessionError::NotActive.into()),
        }
        // The session's latest stream, whose closing lets the session go (SPEC §3.8).
        let release = match self.config().gone_grace {
            Some(_) => self.stream_opened(&data).await?,
            None => None,
        };
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
        let ended = futures_util::stream::unfold(Some(watch), |watch| async move {
            let mut watch = watch?;
            let ended = watch.next_ending().await?;
            Some((ended, None))
        });
        Ok(NoticeStream::new(ended, release))
    }

    /// Marks a new notice stream of the session of `data` as its latest (SPEC §3.8),
    /// clearing a pending `gone_at`; `None` when the session is not active.
    async fn stream_opened(
        &self,
        data: &HeartbeatData,
    ) -> Result<Option<StreamRelease>, StoreError> {
        // Random, so that streams opened on other instances are told apart.
        let stream = format!("{:016x}", rand::random::<u64>());
        let policy = &self.config().playback;
        let opened = self
            .update(&data.user_id, |now, stored| {
                let write = rules::stream_opened(policy, now, data, stored, &stream);
                let opened = write.is_some();
                (write, opened)
            })
            .await?;
        Ok(opened.then(|| StreamRelease {
            data: data.clone(),
            stream,
        }))
    }

    /// The notice stream `release` names closed (its client went away, SPEC §3.8): unless
    /// a heartbeat comes or another stream of the session opens within
    /// [`HeartbeatConfig::gone_grace`](crate::HeartbeatConfig::gone_grace), the session
    /// ends as `gone` and its slot is free. Returns whether the session was marked (it is
    /// active, and no other stream opened since this one).
    pub async fn stream_closed(&self, release: StreamRelease) -> Result<bool, StoreError> {
        let Some(grace) = self.config().gone_grace else {
            return Ok(false);
        };
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let policy = &self.config().playback;
        let data = &release.data;
        self.update(&data.user_id, |now, stored| {
            let write = rules::stream_closed(policy, now, data, stored, &release.stream, grace);
            let marked = write.is_some();
            (write, marked)
        })
        .await
    }
}

/// The stream [`Heartbeats::watch`] returns: the session's ending, if someone else ends
/// it. When its client goes away, hand [`take_release`](Self::take_release)'s value to
/// [`Heartbeats::stream_closed`] (not when the server closes it: its client reconnects).
pub struct NoticeStream {
    ended: Pin<Box<dyn Stream<Item = SessionEnded> + Send>>,
    release: Option<StreamRelease>,
}

impl NoticeStream {
    fn new(
        ended: impl Stream<Item = SessionEnded> + Send + 'static,
        release: Option<StreamRelease>,
    ) -> Self {
        NoticeStream {
            ended: Box::pin(ended),
            release,
        }
    }

    /// What [`Heartbeats::stream_closed`] needs once the stream's client has gone away;
    /// `None` when the session cannot end as `gone` (the setting is off, or the session
    /// had already ended when the stream opened).
    pub fn take_release(&mut self) -> Option<StreamRelease> {
        self.release.take()
    }
}

impl Stream for NoticeStream {
    type Item = SessionEnded;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SessionEnded>> {
        self.ended.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for NoticeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeStream")
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

/// A notice stream as the session's record names it: what
/// [`Heartbeats::stream_closed`] needs to let the session go when the stream's client has
/// gone away (SPEC §3.8).
#[derive(Debug, Clone)]
pub struct StreamRelease {
    data: HeartbeatData,
    stream: String,
}

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
                    // Stopped: the session is over, and its player knows.
                    Some(Ok(notice)) if notice.ended.reason == NoticeReason::Stopped => {
                        return None;
                    }
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
                Ok(Watched::NotActive) => return None,
                // A store failure: the session is still watched; try again later.
                Ok(Watched::Playing) | Err(_) => {}
            }
        }
    }
}
