//! The player client: sends heartbeats on time with the rotated token, reports progress,
//! stops with a typed reason on 412 / 406, and retries transient failures without letting
//! its session expire.
//!
//! Timing: each heartbeat is sent `cycle + margin` after the answer to the previous accepted
//! one arrived, with `margin = min(upper_tolerance / 4, 250 ms)`. The server stores the time
//! it received that heartbeat, which is before its answer arrived here: so however long a
//! request took to arrive (a TLS handshake, mobile jitter), the next one is never early by
//! the server's clock (which it would treat as a new session). A failed heartbeat is
//! retried with backoff while `cycle + upper_tolerance` since the last accepted one was sent
//! has not passed. The player stops only on 412 (with the server's reason and the sessions
//! that keep playing) and 406; every other failure is retried (SPEC §3, §5).
//!
//! With [`PlayerOptions::follow_notices`], the player also holds the session's notice
//! stream (`GET /heartbeat/events`) and stops the moment its session is evicted, taken
//! over or displaced ([`StopReason::Ended`]) instead of at its next heartbeat. After a
//! refusal, [`Player::take_over`] ends one of the listed sessions and plays here instead
//! (SPEC §3.7).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use heartbeat_core::sessions::PlayingSession;
use heartbeat_core::sessions::notice::SessionEnded;
use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::retry::{self, Backoff};

/// Reads the position to report with each heartbeat.
pub type ProgressSource = Arc<dyn Fn() -> Option<f64> + Send + Sync>;

/// What the player needs.
#[derive(Clone)]
pub struct PlayerOptions {
    /// The server, e.g. `http://localhost:3000`.
    pub url: String,
    /// The first token, from the backend.
    pub token: String,
    /// `heartbeat_cycle` of the token.
    pub cycle: Duration,
    /// `cycle_upper_tolerance` of the token.
    pub upper_tolerance: Duration,
    /// Where the player is, reported with each heartbeat.
    pub progress: Option<ProgressSource>,
    /// Hold the session's notice stream and stop at once when the session is ended by
    /// someone else ([`StopReason::Ended`]). The stream is open before the first
    /// [`PlayerEvent::Accepted`] is sent. Needs v2 tokens (the server refuses to
    /// notify legacy ones); off, the player learns it at its next heartbeat.
    pub follow_notices: bool,
}

impl std::fmt::Debug for PlayerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlayerOptions")
            .field("url", &self.url)
            .field("cycle", &self.cycle)
            .field("upper_tolerance", &self.upper_tolerance)
            .field("follow_notices", &self.follow_notices)
            .finish_non_exhaustive()
    }
}

/// Why the server refused a heartbeat with 412: the `reason` of its answer (SPEC §3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// `over_limit`: the user plays on more devices than the limit allows.
    OverLimit,
    /// `family_limit`: the user plays on as many devices of this family as the plan allows.
    FamilyLimit,
    /// `asset_limit`: the user plays this asset on as many devices as the plan allows.
    AssetLimit,
    /// `sessions_edge`: the user has too many sessions open.
    SessionsEdge,
    /// `evicted`: an administrator ended this session.
    Evicted,
    /// `taken_over`: another device of the user took this session over.
    TakenOver,
    /// `replayed`: the token is one its playback has moved past (another device plays
    /// with the playback's latest token, or the backend token was presented again too
    /// soon). Start again with a fresh backend token.
    Replayed,
    /// `expired`: the token is too old to start or resume a playback (outside the
    /// server's start window). Start again with a fresh backend token.
    Expired,
    /// A reason this client does not know (or none: a Node.js server's 412), as sent.
    Other(String),
}

impl RefusalReason {
    fn from_wire(reason: Option<&str>) -> Self {
        match reason {
            Some("over_limit") => RefusalReason::OverLimit,
            Some("family_limit") => RefusalReason::FamilyLimit,
            Some("asset_limit") => RefusalReason::AssetLimit,
            Some("sessions_edge") => RefusalReason::SessionsEdge,
            Some("evicted") => RefusalReason::Evicted,
            Some("taken_over") => RefusalReason::TakenOver,
            Some("replayed") => RefusalReason::Replayed,
            Some("expired") => RefusalReason::Expired,
            other => RefusalReason::Other(other.unwrap_or_default().to_owned()),
        }
    }
}

/// Why the player stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// 412: this device must stop; the server says why.
    Refused {
        /// The `reason` of the answer.
        reason: RefusalReason,
        /// The limit that applied, when one did.
        limit: Option<u32>,
        /// The user's sessions that keep playing, to offer "watch here instead"
        /// ([`Player::take_over`]); empty for a legacy token or a Node.js server.
        sessions: Vec<PlayingSession>,
    },
    /// The session's notice stream said it was ended by someone else (evicted, taken
    /// over, displaced), before its next heartbeat.
    Ended(SessionEnded),
    /// [`Player::take_over`]: the session to take over is not active (any more).
    NotActive,
    /// 406: the token is not valid (expired key, tampering, another server's token).
    InvalidToken,
    /// [`Player::stop`] was called; the server was told (`POST /heartbeat/stop`).
    Closed,
    /// No heartbeat got through within `cycle + upper_tolerance`: the session is gone.
    Unreachable {
        /// The last failure.
        last_error: String,
    },
}

/// What happens, for the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PlayerEvent {
    /// A heartbeat was accepted (`beat` counts from 1).
    Accepted {
        /// Which heartbeat.
        beat: u64,
        /// The progress sent with it.
        progress: Option<f64>,
    },
    /// The heartbeat just accepted would have been refused were the server's limits
    /// enforced: they are report-only (SPEC §3.8), and playback goes on. Log it to
    /// measure sharing before limits are enforced.
    WouldRefuse {
        /// Which heartbeat.
        beat: u64,
        /// The `reason` enforced limits would have given.
        reason: RefusalReason,
        /// The limit that applied.
        limit: Option<u32>,
    },
    /// A heartbeat failed for a reason worth retrying.
    Retrying {
        /// Attempts so far for this heartbeat.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// The player stopped; no event follows.
    Stopped(StopReason),
}

/// A running player.
///
/// Dropping it lets go of the session as [`stop`](Self::stop) does, without waiting: the
/// player's task sends `POST /heartbeat/stop` and ends, so another device of the user may
/// play at once. That request is sent only while the tokio runtime runs; a runtime that
/// shuts down (the end of `main`) ends the task first, so await [`stop`](Self::stop)
/// before a program exits.
#[derive(Debug)]
pub struct Player {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<StopReason>,
    token: Arc<Mutex<String>>,
}

/// The player's events; ends after [`PlayerEvent::Stopped`].
#[derive(Debug)]
pub struct PlayerEvents {
    receiver: mpsc::UnboundedReceiver<PlayerEvent>,
}

impl Stream for PlayerEvents {
    type Item = PlayerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PlayerEvent>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        // The task tells the server and ends (`run` stops on this, or on the sender gone).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Player {
    /// Starts sending heartbeats (the first one at once). Call from a tokio runtime.
    pub fn start(options: PlayerOptions) -> (Player, PlayerEvents) {
        Self::start_at(options, Instant::now(), None)
    }

    /// "Watch here instead" (SPEC §3.7): ends `session_id` (one of the
    /// [`StopReason::Refused`] sessions) and plays here with `options.token`, continuing
    /// from the takeover's answer.
    ///
    /// Give it the refused player's token ([`Player::token`]): its session is the one
    /// admitted. A fresh backend token starts one more session instead, and the refused
    /// session, still counted until it expires, may rank before it.
    ///
    /// # Errors
    ///
    /// [`StopReason::NotActive`] when that session is not active,
    /// [`StopReason::Refused`] when another limit still refuses this device,
    /// [`StopReason::InvalidToken`] for an invalid or legacy token, and
    /// [`StopReason::Unreachable`] when the server did not answer.
    pub async fn take_over(
        mut options: PlayerOptions,
        session_id: &str,
    ) -> Result<(Player, PlayerEvents), StopReason> {
        let base = retry::base_url(&options.url)
            .map_err(|last_error| StopReason::Unreachable { last_error })?;
        let url = retry::endpoint(&base, &["heartbeat", "takeover"], &[]);
        let http = client(&options);
        let mut body = json!({ "heartbeat_token": options.token, "session_id": session_id });
        if let Some(progress) = options.progress.as_ref().and_then(|source| source()) {
            body["progress"] = json!(progress);
        }
        let sent_at = Instant::now();
        match send(&http, &url, &body).await {
            Answer::Accepted(token, _) => {
                options.token = token;
                let next = Instant::now() + options.cycle + margin(&options);
                Ok(Self::start_at(options, next, Some(sent_at)))
            }
            Answer::Stop(reason) => Err(reason),
            Answer::Transient(last_error) => Err(StopReason::Unreachable { last_error }),
        }
    }

    /// Starts with the first heartbeat at `first`; `accepted` is when the token was last
    /// accepted, if it was.
    fn start_at(
        options: PlayerOptions,
        first: Instant,
        accepted: Option<Instant>,
    ) -> (Player, PlayerEvents) {
        let (events, receiver) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let token = Arc::new(Mutex::new(options.token.clone()));
        let schedule = Schedule {
            next: first,
            last_accepted: accepted,
        };
        let task = tokio::spawn(run(options, Arc::clone(&token), events, stopped, schedule));
        (
            Player {
                stop: Some(stop),
                task,
                token,
            },
            PlayerEvents { receiver },
        )
    }

    /// The token the next heartbeat will carry.
    pub fn token(&self) -> String {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when the player has stopped by itself (412, 406, unreachable...).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ends the session (`POST /heartbeat/stop`) and waits for the player to stop.
    pub async fn stop(mut self) -> StopReason {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(StopReason::Closed)
    }

    /// Waits until the player stops by itself (412, 406, unreachable...).
    pub async fn finished(mut self) -> StopReason {
        let reason = (&mut self.task).await.unwrap_or(StopReason::Closed);
        self.stop = None;
        reason
    }
}

/// How a heartbeat request ended.
enum Answer {
    /// 200: the rotated token, and what report-only limits would have refused it for.
    Accepted(String, Option<(RefusalReason, Option<u32>)>),
    Stop(StopReason),
    Transient(String),
}

/// When the next heartbeat goes, and when the last one was accepted.
struct Schedule {
    next: Instant,
    last_accepted: Option<Instant>,
}

/// The HTTP client of a player: requests time out after the upper tolerance (at least 1 s).
fn client(options: &PlayerOptions) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(options.upper_tolerance.max(Duration::from_secs(1)))
        .build()
        .unwrap_or_default()
}

/// How long after an answer the next heartbeat goes, past the cycle.
fn margin(options: &PlayerOptions) -> Duration {
    (options.upper_tolerance / 4).min(Duration::from_millis(250))
}

/// A heartbeat body: the token and, when known, the progress.
fn heartbeat_body(token: &str, progress: Option<f64>) -> Value {
    let mut body = json!({ "heartbeat_token": token });
    if let Some(progress) = progress {
        body["progress"] = json!(progress);
    }
    body
}

/// The `limit` of a refusal (or of a `would_refuse`), when it names one.
fn limit_of(refusal: &Value) -> Option<u32> {
    refusal["limit"]
        .as_u64()
        .and_then(|limit| u32::try_from(limit).ok())
}

async fn send(http: &reqwest::Client, url: &Url, body: &Value) -> Answer {
    let response = match http.post(url.clone()).json(body).send().await {
        Ok(response) => response,
        Err(error) => return Answer::Transient(error.to_string()),
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match status {
        200 => {
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            match body["heartbeat_token"].as_str() {
                Some(token) => {
                    let would_refuse = &body["would_refuse"];
                    let would_refuse = would_refuse["reason"].as_str().map(|reason| {
                        (
                            RefusalReason::from_wire(Some(reason)),
                            limit_of(would_refuse),
                        )
                    });
                    Answer::Accepted(token.to_owned(), would_refuse)
                }
                None => Answer::Transient(format!("200 without a token: {text}")),
            }
        }
        412 => {
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            Answer::Stop(StopReason::Refused {
                reason: RefusalReason::from_wire(body["reason"].as_str()),
                limit: limit_of(&body),
                sessions: serde_json::from_value(body["sessions"].clone()).unwrap_or_default(),
            })
        }
        406 => Answer::Stop(StopReason::InvalidToken),
        404 => Answer::Stop(StopReason::NotActive),
        // Anything else may pass: a proxy's error page, a server restarting.
        _ => Answer::Transient(format!("HTTP {status}: {text}")),
    }
}

/// The `ended` notices of one session, as its stream sends them.
type Notices = Pin<Box<dyn Stream<Item = SessionEnded> + Send>>;

/// Opens the notice stream of the session of `token`; `None` when it cannot be opened
/// (the session is not active yet or any more, a legacy token, the server is away): the
/// next accepted heartbeat tries again.
async fn open_notices(url: &Url, token: &str) -> Option<Notices> {
    // No overall timeout: the stream stays open as long as the session plays.
    let response = reqwest::Client::new()
        .get(url.clone())
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .ok()
        .filter(|response| response.status() == 200)?;
    let notices = response
        .bytes_stream()
        .eventsource()
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| {
            let ended = event
                .ok()
                .filter(|event| event.event == "ended")
                .and_then(|event| serde_json::from_str(&event.data).ok());
            std::future::ready(ended)
        });
    Some(Box::pin(notices))
}

/// The next notice of `notices`; pending for ever when there is no stream, and after it
/// ended (it is opened again after the next accepted heartbeat).
async fn next_notice(notices: &mut Option<Notices>) -> SessionEnded {
    if let Some(stream) = notices.as_mut()
        && let Some(ended) = stream.next().await
    {
        return ended;
    }
    *notices = None;
    std::future::pending().await
}

async fn run(
    options: PlayerOptions,
    token: Arc<Mutex<String>>,
    events: mpsc::UnboundedSender<PlayerEvent>,
    mut stopped: oneshot::Receiver<()>,
    schedule: Schedule,
) -> StopReason {
    let http = client(&options);
    let base = match retry::base_url(&options.url) {
        Ok(base) => base,
        Err(reason) => {
            let _ = events.send(PlayerEvent::Stopped(StopReason::Unreachable {
                last_error: reason.clone(),
            }));
            return StopReason::Unreachable { last_error: reason };
        }
    };
    let beat_url = retry::endpoint(&base, &["heartbeat"], &[]);
    let stop_url = retry::endpoint(&base, &["heartbeat", "stop"], &[]);
    let notices_url = retry::endpoint(&base, &["heartbeat", "events"], &[]);
    let margin = margin(&options);
    let current = || token.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let finish = |reason: StopReason| {
        let _ = events.send(PlayerEvent::Stopped(reason.clone()));
        reason
    };
    let Schedule {
        mut next,
        mut last_accepted,
    } = schedule;
    let mut notices: Option<Notices> = None;
    if options.follow_notices && last_accepted.is_some() {
        notices = open_notices(&notices_url, &current()).await;
    }
    let mut beat = 0_u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = &mut stopped => {
                let progress = options.progress.as_ref().and_then(|source| source());
                let _ = send(&http, &stop_url, &heartbeat_body(&current(), progress)).await;
                return finish(StopReason::Closed);
            }
            ended = next_notice(&mut notices) => return finish(StopReason::Ended(ended)),
        }
        let deadline = last_accepted.map_or_else(
            || Instant::now() + options.upper_tolerance,
            |at| at + options.cycle + options.upper_tolerance,
        );
        let mut attempt = 0_u32;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let sent_at = Instant::now();
            let progress = options.progress.as_ref().and_then(|source| source());
            match send(&http, &beat_url, &heartbeat_body(&current(), progress)).await {
                Answer::Accepted(rotated, would_refuse) => {
                    if options.follow_notices && notices.is_none() {
                        notices = open_notices(&notices_url, &rotated).await;
                    }
                    *token.lock().unwrap_or_else(PoisonError::into_inner) = rotated;
                    beat += 1;
                    // The session lives from when the server received the heartbeat, which
                    // is after it was sent; the next one goes a cycle after the answer
                    // came, which is after the server received this one.
                    last_accepted = Some(sent_at);
                    next = Instant::now() + options.cycle + margin;
                    let _ = events.send(PlayerEvent::Accepted { beat, progress });
                    if let Some((reason, limit)) = would_refuse {
                        let _ = events.send(PlayerEvent::WouldRefuse {
                            beat,
                            reason,
                            limit,
                        });
                    }
                    break;
                }
                Answer::Stop(reason) => return finish(reason),
                Answer::Transient(error) => {
                    attempt += 1;
                    let retry_at = Instant::now() + backoff.next_delay();
                    if retry_at >= deadline {
                        return finish(StopReason::Unreachable { last_error: error });
                    }
                    let _ = events.send(PlayerEvent::Retrying { attempt, error });
                    tokio::select! {
                        () = tokio::time::sleep_until(retry_at) => {}
                        _ = &mut stopped => return finish(StopReason::Closed),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RefusalReason;
    use heartbeat_core::sessions::RejectReason;

    /// Every refusal code the server can send is a typed reason here: a new code in the
    /// core fails this test until the client knows it.
    #[test]
    fn every_server_refusal_code_is_typed() {
        for code in RejectReason::CODES {
            let reason = RefusalReason::from_wire(Some(code));
            assert!(
                !matches!(reason, RefusalReason::Other(_)),
                "{code} is not typed"
            );
        }
    }
}
