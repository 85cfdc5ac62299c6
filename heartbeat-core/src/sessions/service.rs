//! [`Heartbeats`]: codec + decision rules + store, the whole heartbeat use case in one type.

use crate::sessions::SessionWrite;
use crate::sessions::notice::{EndedBy, NoticeReason, SessionEnded, SessionNotice};
use crate::sessions::rules::{self, Accepted, Refused, SessionError, Verdict};
use crate::sessions::{Loaded, Retention, SessionStore};
use crate::sessions::{PlayRecord, ProgressRecord, SessionRecord, UserSessions};
use crate::store::{Commit, StoreError};
use crate::token::{InvalidToken, SealError, TokenCodec};
use crate::{Clock, HeartbeatData, Id, SystemClock, Timestamp};

/// Compare-and-set attempts per heartbeat before [`StoreError::Contention`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 32;

/// Why a heartbeat could not be decided. A refusal over the limit is not an error: it is
/// [`HeartbeatOutcome::Rejected`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// The token cannot be opened or does not hold valid heartbeat data (406).
    #[error(transparent)]
    InvalidToken(#[from] InvalidToken),
    /// The reported progress is not a finite non-negative number (400).
    #[error("progress must be a finite non-negative number")]
    InvalidProgress,
    /// A takeover or a watch named a session that is not active (404), or a takeover
    /// named the token's own session (400).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rotated token could not be sealed (500).
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Returned once per heartbeat, by value: boxing the accepted side would cost an
// allocation on the hot path to save a move of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum HeartbeatOutcome {
    /// Accepted: keep playing with the rotated token.
    Accepted {
        /// The rotated token to send with the next heartbeat.
        token: String,
        /// What the rotated token carries, and how the session was identified.
        accepted: Accepted,
    },
    /// Refused: the user has too many streams, or the session was ended by someone else;
    /// the player must stop (412).
    Rejected(Refused),
    /// The store could not be reached and [`HeartbeatConfig::fail_open`] is set: the
    /// token's data with `timestamp` set to now, sealed, and nothing counted or stored. The
    /// session keeps its id; a backend token stays one.
    FailedOpen {
        /// The rotated token to send with the next heartbeat.
        token: String,
        /// Why the store could not be used, for logs.
        cause: String,
    },
}

/// An active session, as an administrator sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActiveSession {
    /// The session.
    pub session_id: String,
    /// Its stored record.
    #[serde(flatten)]
    pub record: SessionRecord,
}

/// Settings of [`Heartbeats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// History and progress retention.
    pub retention: Retention,
    /// Compare-and-set attempts per operation before giving up with
    /// [`StoreError::Contention`].
    pub max_attempts: u32,
    /// When the store cannot be reached, accept heartbeats unchecked
    /// ([`HeartbeatOutcome::FailedOpen`]) instead of failing with
    /// [`HeartbeatError::Store`]: players keep playing through a store outage, without
    /// the limit. Off by default.
    pub fail_open: bool,
    /// How playbacks are guarded against replays (SPEC §3.2).
    pub playback: rules::PlaybackPolicy,
    /// How long after its notice stream's client went away a session that does not
    /// heartbeat ends as `gone` (SPEC §3.8, [`Heartbeats::stream_closed`]); `None`: never
    /// (it expires after its cycle and tolerance). `GONE_GRACE_SECS`, default
    /// [`DEFAULT_GONE_GRACE`].
    pub gone_grace: Option<std::time::Duration>,
}

/// The default [`HeartbeatConfig::gone_grace`]: 5 s, more than the 2 s an `EventSource`
/// waits before it reconnects.
pub const DEFAULT_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            fail_open: false,
            playback: rules::PlaybackPolicy::default(),
            gone_grace: Some(DEFAULT_GONE_GRACE),
        }
    }
}

/// The heartbeat service: opens the token, decides with the rules of SPEC §3.2 and applies
/// the decision to the store atomically (load, decide, compare-and-set, bounded retry).
///
/// ```
/// use heartbeat_core::memory::MemorySessionStore;
/// use heartbeat_core::{Clock, HeartbeatData, HeartbeatOutcome, Heartbeats, SystemClock, TokenCodec};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let codec = TokenCodec::new("shared secret")?;
/// let heartbeats = Heartbeats::new(codec.clone(), MemorySessionStore::new());
///
/// // The backend issues the first token (it starts a playback within an hour of its
/// // `timestamp`)...
/// let mut first: HeartbeatData = serde_json::from_str(r#"{"user_id":13,"asset_id":14,
///     "heartbeat_cycle":30,"cycle_upper_tolerance":10,
///     "session_limit":2,"checking_threshold":3,"sessions_edge":10}"#)?;
/// first.timestamp = Some(SystemClock.now());
/// let token = codec.seal(&first)?;
///
/// // ...and the player sends heartbeats with it, then with each rotated token.
/// let HeartbeatOutcome::Accepted { token: rotated, accepted } =
///     heartbeats.heartbeat(&token, Some(12.5)).await? else { panic!("refused") };
/// assert!(accepted.new_session.is_some());
/// assert_ne!(rotated, token);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Heartbeats<S, C = SystemClock> {
    pub(super) codec: TokenCodec,
    pub(super) store: S,
    pub(super) clock: C,
    config: HeartbeatConfig,
    refusals: RecentRefusals,
}

/// The refusals this instance stored lately, by session and by user: a session's refusal
/// is stored at most once per heartbeat cycle, and a user's at most
/// [`RecentRefusals::PER_USER`] times per cycle (SPEC §4), so that refused tokens replayed
/// in a loop, or many refused sessions of one user, cannot fill the refusal index.
/// Bounded: past [`RecentRefusals::CAPACITY`] keys the stale ones are forgotten (a
/// forgotten key's next refusal is stored again).
#[derive(Debug, Clone, Default)]
struct RecentRefusals {
    /// Per session: when its refusal was last stored.
    sessions: std::sync::Arc<dashmap::DashMap<String, i64>>,
    /// Per user: when its current window began, and the refusals stored in it.
    users: std::sync::Arc<dashmap::DashMap<String, (i64, u32)>>,
}

impl RecentRefusals {
    const CAPACITY: usize = 100_000;
    /// Refusals of one user stored per heartbeat cycle at most.
    const PER_USER: u32 = 8;

    /// Whether to store the refusal of `user`'s `session` at `now`: not when one was
    /// stored for that session less than `cycle_millis` ago, nor when the user's
    /// allowance for the cycle is used up. Records it when it says yes.
    fn record(&self, user: &Id, session: &str, now: Timestamp, cycle_millis: i64) -> bool {
        let now = now.unix_millis();
        if let Some(last) = self.sessions.get(session)
            && now - *last < cycle_millis
        {
            return false;
        }
        let user = user.to_string();
        let allowed = match self.users.get(&user).map(|entry| *entry) {
            Some((since, stored)) if now - since < cycle_millis => {
                (stored < Self::PER_USER).then_some((since, stored + 1))
            }
            _ => Some((now, 1)),
        };
        let Some(window) = allowed else {
            return false;
        };
        let cutoff = now - cycle_millis.max(1);
        forget_stale(&self.sessions, cutoff, |last| *last);
        forget_stale(&self.users, cutoff, |(since, _)| *since);
        self.sessions.insert(session.to_owned(), now);
        self.users.insert(user, window);
        true
    }
}

/// Keeps `map` under [`RecentRefusals::CAPACITY`] keys: past it, the entries older than
/// `cutoff` go, and all of them if that is not enough.
fn forget_stale<V>(map: &dashmap::DashMap<String, V>, cutoff: i64, at: impl Fn(&V) -> i64) {
    if map.len() >= RecentRefusals::CAPACITY {
        map.retain(|_, value| at(value) >= cutoff);
        if map.len() >= RecentRefusals::CAPACITY / 2 {
            map.clear();
        }
    }
}

impl<S: SessionStore> Heartbeats<S> {
    /// A service on the system clock with the default settings.
    pub fn new(codec: TokenCodec, store: S) -> Self {
        Self {
            codec,
            store,
            clock: SystemClock,
            config: HeartbeatConfig::default(),
            refusals: RecentRefusals::default(),
        }
    }
}

impl<S: SessionStore, C: Clock> Heartbeats<S, C> {
    /// The same service reading time from `clock`.
    pub fn with_clock<C2: Clock>(self, clock: C2) -> Heartbeats<S, C2> {
        Heartbeats {
            codec: self.codec,
            store: self.store,
            clock,
            config: self.config,
            refusals: self.refusals,
        }
    }

    /// The same service with other settings.
    pub fn with_config(mut self, config: HeartbeatConfig) -> Self {
        self.config = config;
        self
    }

    /// The token codec.
    pub fn codec(&self) -> &TokenCodec {
        &self.codec
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The settings.
    pub fn config(&self) -> &HeartbeatConfig {
        &self.config
    }

    /// Handles one heartbeat: `progress` is the position the player reports, if any.
    ///
    /// The token is opened first (an invalid token is [`HeartbeatError::InvalidToken`]
    /// whatever the progress), then the progress checked. A store failure is
    /// [`HeartbeatError::Store`], or [`HeartbeatOutcome::FailedOpen`] with
    /// [`HeartbeatConfig::fail_open`].
    pub async fn heartbeat(
        &self,
        token: &str,
        progress: Option<f64>,
    ) -> Result<HeartbeatOutcome, HeartbeatError> {
        let data = self.codec.open(token)?;
        let progress = check_progress(progress)?;
        let policy = &self.config.playback;
        let outcome = self
            .decide_heartbeat(token, &data, |now, stored, playback_id| {
                Ok(rules::decide(
                    policy,
                    now,
                    &data,
                    stored,
                    playback_id,
                    progress,
                ))
            })
            .await;
        match outcome.map(|outcome| shown_to(&data, outcome)) {
            Err(HeartbeatError::Store(error)) if self.config.fail_open => {
                Ok(HeartbeatOutcome::FailedOpen {
                    token: self.rotate_unchecked(&data)?,
                    cause: error.to_string(),
                })
            }
            other => other,
        }
    }

    /// Decides (with `decide`: a heartbeat or a takeover) and stores one heartbeat whose
    /// progress is already checked, then tells the players it displaced or took over.
    ///
    /// A backend token's playback is named by the token ([`TokenCodec::token_session_id`]),
    /// so presenting the same token again finds that playback (SPEC §3.2). The answer is
    /// sealed before anything is stored: a token that cannot be sealed changes nothing.
    async fn decide_heartbeat(
        &self,
        token: &str,
        data: &HeartbeatData,
        decide: impl Fn(Timestamp, &UserSessions, &str) -> Result<rules::Decision, SessionError>,
    ) -> Result<HeartbeatOutcome, HeartbeatError> {
        let verdict = self
            .update(&data.user_id, |now, stored| {
                // Only a backend token needs the id of the playback it starts (a keyed
                // hash of the token); a session token names its own.
                let fresh_id = if data.session_id.is_some() {
                    String::new()
                } else {
                    self.codec.token_session_id(token, data)
                };
                let mut decision = match decide(now, stored, &fresh_id) {
                    Ok(decision) => decision,
                    Err(error) => return (None, Err(HeartbeatError::from(error))),
                };
                // The refusal index keeps a session's refusal at most once per cycle.
                let cycle = data.heartbeat_cycle.as_millis();
                if let Some(refusal) = &decision.write.refusal
                    && !self
                        .refusals
                        .record(&data.user_id, &refusal.nonce, now, cycle)
                {
                    decision.write.refusal = None;
                }
                let taken_over = decision.write.ended.iter().find_map(|entry| {
                    entry
                        .taken_over_by
                        .as_ref()
                        .map(|_| entry.session_id.clone())
                });
                let answer = match decision.verdict {
                    Verdict::Accept(accepted) => match self.codec.seal(&accepted.token_data) {
                        Ok(sealed) => Ok((accepted, sealed)),
                        Err(error) => return (None, Err(HeartbeatError::from(error))),
                    },
                    Verdict::Reject(refused) => Err(refused),
                };
                (Some(decision.write), Ok((answer, taken_over)))
            })
            .await??;
        match verdict {
            (Ok((accepted, token)), taken_over) => {
                let by = EndedBy {
                    session_id: accepted.session_id.clone(),
                    device: data.device.clone(),
                };
                let notices = accepted
                    .displaced
                    .iter()
                    .map(|id| (id, NoticeReason::Displaced))
                    .chain(taken_over.iter().map(|id| (id, NoticeReason::TakenOver)));
                for (session_id, reason) in notices {
                    self.tell(&data.user_id, session_id, reason, Some(by.clone()))
                        .await;
                }
                Ok(HeartbeatOutcome::Accepted { token, accepted })
            }
            (Err(refused), _) => Ok(HeartbeatOutcome::Rejected(refused)),
        }
    }

    /// Tells the streams watching `session_id` that it ended (SPEC §3.7). Best effort: a
    /// watcher that misses the notice finds the ending when it re-reads the session
    /// ([`watch`](Self::watch)), and its player at its next heartbeat.
    async fn tell(&self, user: &Id, session_id: &str, reason: NoticeReason, by: Option<EndedBy>) {
        let notice = SessionNotice {
            user_id: user.clone(),
            ended: SessionEnded {
                session_id: session_id.to_owned(),
                reason,
                by,
            },
        };
        // The write is applied already: failing the caller now would not undo it.
        let _ = self.store.notify(&notice).await;
    }

    /// "Watch here instead" (SPEC §3.7): ends the user's session `session_id` as
    /// `taken_over` and admits the token's session, in one atomic step; answers like
    /// [`heartbeat`](Self::heartbeat). Needs an authenticated (v2) token.
    ///
    /// # Errors
    ///
    /// [`HeartbeatError::InvalidToken`] for a legacy or invalid token;
    /// [`SessionError::NotActive`] when that session is not active (nothing changes);
    /// [`SessionError::OwnSession`] when it is the token's own.
    pub async fn take_over(
        &self,
        token: &str,
        session_id: &str,
        progress: Option<f64>,
    ) -> Result<HeartbeatOutcome, HeartbeatError> {
        let data = self.codec.open_authenticated(token)?;
        let progress = check_progress(progress)?;
        let policy = &self.config.playback;
        self.decide_heartbeat(token, &data, |now, stored, playback_id| {
            rules::take_over(
                policy,
                now,
                &data,
                stored,
                session_id,
                playback_id,
                progress,
            )
        })
        .await
    }

    /// Ends the token's session now: its slot is free at once and it goes to the play
    /// history as stopped. Returns whether an active session was stopped (a stale or
    /// unknown session changes nothing but the expiry of others).
    pub async fn stop(&self, token: &str, progress: Option<f64>) -> Result<bool, HeartbeatError> {
        let progress = check_progress(progress)?;
        let data = self.codec.open(token)?;
        let stopped = self
            .update(&data.user_id, |now, stored| {
                let (write, stopped) =
                    rules::stop(&self.config.playback, now, &data, stored, progress);
                (Some(write), stopped)
            })
            .await?;
        // Its notice streams (on any instance) close now, not at their next re-read.
        if let (true, Some(session_id)) = (stopped, &data.session_id) {
            self.tell(&data.user_id, session_id, NoticeReason::Stopped, None)
                .await;
        }
        Ok(stopped)
    }

    /// Removes one of the user's sessions (an administrator's eviction). Returns whether it
    /// was active.
    pub async fn evict(&self, user: &Id, session_id: &str) -> Result<bool, StoreError> {
        let evicted = self
            .update(user, |now, stored| {
                let write = rules::evict(now, stored, session_id);
                let evicted = write.is_some();
                (write, evicted)
            })
            .await?;
        if evicted {
            self.tell(user, session_id, NoticeReason::Evicted, None)
                .await;
        }
        Ok(evicted)
    }

    /// The user's active sessions (not past their `expires_at`, not ended by someone else),
    /// oldest first.
    pub async fn active_sessions(&self, user: &Id) -> Result<Vec<ActiveSession>, StoreError> {
        let now = self.clock.now();
        let loaded = self.store.load(user).await?;
        let mut sessions: Vec<ActiveSession> = loaded
            .sessions
            .sessions
            .iter()
            .filter(|(_, record)| record.plays_at(now))
            .map(|(session_id, record)| ActiveSession {
                session_id: session_id.clone(),
                record: record.clone(),
            })
            .collect();
        sessions.sort_by_key(|session| (session.record.order_key(), session.session_id.clone()));
        Ok(sessions)
    }

    /// Where the user stopped in an asset (none once it is older than the retention).
    pub async fn progress(
        &self,
        user: &Id,
        asset: &Id,
    ) -> Result<Option<ProgressRecord>, StoreError> {
        let oldest_kept = self
            .clock
            .now()
            .add_millis(-self.config.retention.retention_millis());
        Ok(self
            .store
            .progress(user, asset)
            .await?
            .filter(|record| record.updated_at >= oldest_kept))
    }

    /// The user's play history (SPEC §3.6), newest first: active sessions, then every
    /// finished one, including those that timed out while nobody looked
    /// ([`rules::history_view`]).
    pub async fn history(&self, user: &Id, limit: usize) -> Result<Vec<PlayRecord>, StoreError> {
        let retention = self.config.retention;
        let (ended, loaded) = futures_util::future::try_join(
            self.store.history(user, retention.history_cap),
            self.store.load(user),
        )
        .await?;
        Ok(rules::history_view(
            self.clock.now(),
            ended,
            &loaded.sessions,
            &retention,
            limit.min(retention.history_cap),
        ))
    }

    /// The fail-open answer: the token's data with `timestamp` set to now, sealed.
    fn rotate_unchecked(&self, data: &HeartbeatData) -> Result<String, SealError> {
        let mut rotated = data.clone();
        rotated.timestamp = Some(self.clock.now());
        self.codec.seal(&rotated)
    }

    /// Seals a token for a backend (the first token of a session).
    pub fn issue(&self, data: &HeartbeatData) -> Result<String, SealError> {
        self.codec.seal(data)
    }

    /// The compare-and-set loop: load, decide with `now`, commit if unchanged, retry.
    /// `decide` returns the write (none: nothing to store) and the result to hand back.
    pub(super) async fn update<T>(
        &self,
        user: &Id,
        mut decide: impl FnMut(Timestamp, &UserSessions) -> (Option<SessionWrite>, T),
    ) -> Result<T, StoreError> {
        for _ in 0..self.config.max_attempts {
            let Loaded { sessions, version } = self.store.load(user).await?;
            let now = self.clock.now();
            let (write, result) = decide(now, &sessions);
            let Some(write) = write.filter(|write| !write.is_empty()) else {
                return Ok(result);
            };
            let write = write.for_store(user, &sessions, now, &self.config.retention);
            // Let go of the loaded sessions before the commit: a store that keeps them in
            // memory then changes its copy in place.
            drop(sessions);
            match self
                .store
                .commit(user, &version, &write, &self.config.retention)
                .await?
            {
                Commit::Applied => return Ok(result),
                Commit::Conflict => continue,
            }
        }
        Err(StoreError::Contention {
            key: user.to_string(),
            attempts: self.config.max_attempts,
        })
    }
}

/// What a refusal shows the sender of a token with `data`: the playing sessions only to
/// an authenticated session (a legacy token can be forged, SPEC §3.3, §3.7).
fn shown_to(data: &HeartbeatData, outcome: HeartbeatOutcome) -> HeartbeatOutcome {
    match outcome {
        HeartbeatOutcome::Rejected(mut refused) if !data.provenance.is_authenticated() => {
            refused.playing = None;
            HeartbeatOutcome::Rejected(refused)
        }
        other => other,
    }
}

fn check_progress(progress: Option<f64>) -> Result<Option<f64>, HeartbeatError> {
    match progress {
        Some(p) if !(p.is_finite() && p >= 0.0) => Err(HeartbeatError::InvalidProgress),
        other => Ok(other),
    }
}
