//! The jobs client: the abilities of the HeyGen TypeScript client in async Rust. One SSE
//! connection per client carries every job it listens to; polling takes over when the
//! stream breaks (with `fallback`, or in [`Mode::Auto`]) and hands back when it returns.
//!
//! It never misses a completion: a listener checks its job's status once when it attaches,
//! every listener is checked again whenever the client (re)connects its stream or changes
//! backend, and the stream resumes with `Last-Event-ID`. Each listener gets its final status
//! exactly once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use heartbeat_core::jobs::JobId;
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::retry::{self, Backoff};

/// How the client learns job statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SSE, falling back to polling while the stream is down (whatever `fallback` says).
    Auto,
    /// SSE only (falls back to polling only with `fallback: true`).
    Sse,
    /// Polling `GET /status/<id>` every `poll_interval`.
    Poll,
}

/// Client options. `mode` has no default: the caller chooses.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server, e.g. `http://localhost:3000`.
    pub url: String,
    /// How statuses are learnt.
    pub mode: Mode,
    /// Log what the client does (through `tracing`, target `heartbeat_client`).
    pub logging: bool,
    /// In [`Mode::Sse`], poll while the stream is broken.
    pub fallback: bool,
    /// Time between polls.
    pub poll_interval: Duration,
    /// The owner (`uuid`) this client creates and watches jobs as; a random UUID when
    /// `None`.
    pub owner: Option<String>,
    /// The server's SSE keep-alive interval (`SSE_KEEPALIVE_SECS`, 15 s by default): a
    /// stream silent for two of them is taken as broken (a half-open connection) and
    /// reconnected.
    pub keepalive: Duration,
    /// The longest a request (create, status check, opening the stream) may take.
    pub request_timeout: Duration,
}

impl Options {
    /// Options for `url` in `mode`, with `logging: false`, `fallback: false`,
    /// `poll_interval: 1 s`, a random owner, `keepalive: 15 s` and `request_timeout: 10 s`.
    pub fn new(url: impl Into<String>, mode: Mode) -> Self {
        Self {
            url: url.into(),
            mode,
            logging: false,
            fallback: false,
            poll_interval: Duration::from_secs(1),
            owner: None,
            keepalive: Duration::from_secs(15),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A job's status as the HeyGen protocol tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Not finished yet.
    Pending,
    /// Done.
    Completed,
    /// Gave up (a worker said so).
    Failed,
}

impl JobStatus {
    /// True for `Completed` and `Failed`.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Pending)
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "pending" => Some(JobStatus::Pending),
            "completed" => Some(JobStatus::Completed),
            "failed" => Some(JobStatus::Failed),
            _ => None,
        }
    }
}

/// The error a [`ClientError`] was caused by (a `reqwest` or JSON error), kept as its
/// source. Shared, since one failure can reach several listeners.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong. Two errors are equal when they are of the same kind with the same
/// message or job (their sources are not compared).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The SSE connection could not be opened or broke.
    #[error("SSE connection failed: {message}")]
    Sse {
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Cause>,
    },
    /// The server does not know the job, or it belongs to another owner (404 / 401).
    #[error("job {0} not found (unknown, or created by another owner)")]
    JobNotFound(JobId),
    /// The server answered something this client cannot read.
    #[error("cannot read the server's message: {message}")]
    MessageParse {
        /// What could not be read.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Cause>,
    },
    /// [`JobsClient::stop`] for a job nobody listens to.
    #[error("no listener for job {0}")]
    ListenerNotFound(JobId),
    /// A request failed (connection, or an unexpected status).
    #[error("HTTP request failed: {message}")]
    Http {
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Cause>,
    },
    /// The client was dropped while a listener waited.
    #[error("the jobs client was closed")]
    Closed,
}

impl ClientError {
    fn sse(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Sse {
            message: message.into(),
            source,
        }
    }

    fn parse(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::MessageParse {
            message: message.into(),
            source,
        }
    }

    fn http(message: impl Into<String>, source: Option<Cause>) -> Self {
        Self::Http {
            message: message.into(),
            source,
        }
    }

    /// A failed request, with its `reqwest` error as the source.
    fn request(what: &str, error: reqwest::Error) -> Self {
        Self::http(format!("{what}: {error}"), Some(Arc::new(error)))
    }
}

impl PartialEq for ClientError {
    fn eq(&self, other: &Self) -> bool {
        use ClientError::*;
        match (self, other) {
            (Sse { message: a, .. }, Sse { message: b, .. })
            | (MessageParse { message: a, .. }, MessageParse { message: b, .. })
            | (Http { message: a, .. }, Http { message: b, .. }) => a == b,
            (JobNotFound(a), JobNotFound(b)) | (ListenerNotFound(a), ListenerNotFound(b)) => a == b,
            (Closed, Closed) => true,
            _ => false,
        }
    }
}

impl Eq for ClientError {}

type Delivery = Result<JobStatus, ClientError>;

struct Shared {
    http: reqwest::Client,
    base: Url,
    owner: String,
    logging: bool,
    request_timeout: Duration,
    listeners: Mutex<HashMap<JobId, Vec<mpsc::UnboundedSender<Delivery>>>>,
}

impl Shared {
    fn listeners(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<JobId, Vec<mpsc::UnboundedSender<Delivery>>>> {
        // Plain data: a panic elsewhere cannot leave the map half-written.
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        if self.logging {
            tracing::info!(target: "heartbeat_client", owner = %self.owner, "{message}");
        }
    }

    /// Hands `delivery` to the job's listeners; a final status or an error ends them.
    fn deliver(&self, id: JobId, delivery: Delivery) {
        let ends = delivery.as_ref().map_or(true, |status| status.is_final());
        let mut listeners = self.listeners();
        let Some(senders) = listeners.get_mut(&id) else {
            return;
        };
        senders.retain(|sender| sender.send(delivery.clone()).is_ok());
        if ends || senders.is_empty() {
            listeners.remove(&id);
        }
    }

    fn watched(&self) -> Vec<JobId> {
        let mut listeners = self.listeners();
        listeners.retain(|_, senders| {
            senders.retain(|sender| !sender.is_closed());
            !senders.is_empty()
        });
        listeners.keys().copied().collect()
    }

    /// `<base>/<segments…>?uuid=<owner>`.
    fn url(&self, segments: &[&str]) -> Url {
        retry::endpoint(&self.base, segments, &[("uuid", &self.owner)])
    }

    fn status_url(&self, id: JobId) -> Url {
        self.url(&["status", &id.to_string()])
    }

    /// True while someone listens to job `id`.
    fn is_watched(&self, id: JobId) -> bool {
        self.listeners()
            .get(&id)
            .is_some_and(|senders| senders.iter().any(|sender| !sender.is_closed()))
    }

    /// Asks the server for one job's status until it answers (a failure is retried with
    /// backoff), or nobody listens any more: the check made when a listener attaches must
    /// not be lost to a 503 or a timeout, since in SSE mode nothing else asks again.
    async fn check_until_answered(&self, id: JobId) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        while !self.check(id).await && self.is_watched(id) {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Asks the server for one job's status; returns whether it answered (transient
    /// failures are logged, not delivered).
    async fn check(&self, id: JobId) -> bool {
        let request = self
            .http
            .get(self.status_url(id))
            .timeout(self.request_timeout);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.log(format_args!("status of job {id}: {error}"));
                return false;
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                self.log(format_args!("status of job {id}: {error}"));
                return false;
            }
        };
        let delivery = match status.as_u16() {
            200 => JobStatus::parse(&text)
                .ok_or_else(|| ClientError::parse(format!("status `{text}` of job {id}"), None)),
            401 | 404 => Err(ClientError::JobNotFound(id)),
            _ => {
                self.log(format_args!("status of job {id}: HTTP {status}"));
                return false;
            }
        };
        if delivery != Ok(JobStatus::Pending) {
            if let Ok(status) = &delivery {
                self.log(format_args!("job {id} is {status:?} (polled)"));
            }
            self.deliver(id, delivery);
        }
        true
    }

    /// Delivers `error` to every listener (they end).
    fn fail_all(&self, error: &ClientError) {
        let ids: Vec<JobId> = self.listeners().keys().copied().collect();
        for id in ids {
            self.deliver(id, Err(error.clone()));
        }
    }

    async fn check_all(&self) {
        let ids = self.watched();
        futures_util::future::join_all(ids.into_iter().map(|id| self.check(id))).await;
    }
}

enum Command {
    Check(JobId),
    Mode(Mode),
}

/// A client of a server speaking the HeyGen jobs protocol. Dropping it stops its
/// background task and ends its listeners with [`ClientError::Closed`].
pub struct JobsClient {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for JobsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsClient")
            .field("url", &self.shared.base)
            .field("owner", &self.shared.owner)
            .finish_non_exhaustive()
    }
}

impl Drop for JobsClient {
    fn drop(&mut self) {
        self.driver.abort();
        self.shared.listeners().clear();
    }
}

impl JobsClient {
    /// A client with `options`; its background task starts at once (call from a tokio
    /// runtime).
    ///
    /// # Errors
    ///
    /// [`ClientError::Http`] when the URL is not `http://` or `https://`.
    pub fn new(options: Options) -> Result<Self, ClientError> {
        let base =
            retry::base_url(&options.url).map_err(|reason| ClientError::http(reason, None))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| ClientError::request("cannot build the HTTP client", error))?;
        let shared = Arc::new(Shared {
            http,
            base,
            owner: options
                .owner
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            logging: options.logging,
            request_timeout: options.request_timeout,
            listeners: Mutex::new(HashMap::new()),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            mode: options.mode,
            fallback: options.fallback,
            poll_interval: options.poll_interval.max(Duration::from_millis(10)),
            stream: None,
            last_event_id: None,
            next_attempt: Instant::now(),
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            idle_timeout: options
                .keepalive
                .saturating_mul(2)
                .max(Duration::from_millis(100)),
        };
        let driver = tokio::spawn(driver.run(receiver));
        Ok(Self {
            shared,
            commands,
            driver,
        })
    }

    /// The owner (`uuid`) of this client's jobs.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// Creates a job; returns its id.
    ///
    /// # Errors
    ///
    /// [`ClientError::Http`] when the request fails, [`ClientError::MessageParse`] when
    /// the answer is not an id.
    pub async fn create_job(&self) -> Result<JobId, ClientError> {
        let response = self
            .shared
            .http
            .post(self.shared.url(&["create"]))
            .timeout(self.shared.request_timeout)
            .send()
            .await
            .map_err(|error| ClientError::request("POST /create", error))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|error| ClientError::request("POST /create", error))?;
        if status.as_u16() != 201 && status.as_u16() != 200 {
            return Err(ClientError::http(
                format!("POST /create answered {status}: {text}"),
                None,
            ));
        }
        let id = text
            .trim()
            .parse()
            .map_err(|error: heartbeat_core::jobs::JobError| {
                ClientError::parse(format!("job id `{text}`"), Some(Arc::new(error)))
            })?;
        self.shared.log(format_args!("created job {id}"));
        Ok(id)
    }

    /// The statuses of job `id` as they become known; the stream ends after the final one
    /// (or an error such as [`ClientError::JobNotFound`]).
    pub fn listen(&self, id: JobId) -> JobListener {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared.listeners().entry(id).or_default().push(sender);
        // Registered first, then checked: a completion before this call is still seen.
        let _ = self.commands.send(Command::Check(id));
        self.shared.log(format_args!("listening to job {id}"));
        JobListener {
            receiver,
            done: false,
        }
    }

    /// Calls `callback` with each status of job `id` until the final one.
    pub fn listen_with(
        &self,
        id: JobId,
        mut callback: impl FnMut(Result<JobStatus, ClientError>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let mut listener = self.listen(id);
        tokio::spawn(async move {
            while let Some(delivery) = listener.next().await {
                callback(delivery);
            }
        })
    }

    /// Waits until job `id` is finished; returns its final status.
    ///
    /// # Errors
    ///
    /// [`ClientError::JobNotFound`], or [`ClientError::Closed`] when the client is dropped
    /// or the listener stopped.
    pub async fn wait_for_job(&self, id: JobId) -> Result<JobStatus, ClientError> {
        let mut listener = self.listen(id);
        while let Some(delivery) = listener.next().await {
            let status = delivery?;
            if status.is_final() {
                return Ok(status);
            }
        }
        Err(ClientError::Closed)
    }

    /// Stops listening to job `id` (its listeners' streams end).
    ///
    /// # Errors
    ///
    /// [`ClientError::ListenerNotFound`] when nobody listens to it.
    pub fn stop(&self, id: JobId) -> Result<(), ClientError> {
        match self.shared.listeners().remove(&id) {
            Some(_) => Ok(()),
            None => Err(ClientError::ListenerNotFound(id)),
        }
    }

    /// Moves every active listener to `mode`; each is checked once right away so that
    /// nothing completed during the switch is lost.
    pub fn change_backend(&self, mode: Mode) {
        self.shared.log(format_args!("switching to {mode:?}"));
        let _ = self.commands.send(Command::Mode(mode));
    }

    /// Jobs being listened to now.
    pub fn listening(&self) -> Vec<JobId> {
        self.shared.watched()
    }
}

/// The statuses of one job: a `Stream` that ends after the final status.
#[derive(Debug)]
pub struct JobListener {
    receiver: mpsc::UnboundedReceiver<Delivery>,
    done: bool,
}

impl Stream for JobListener {
    type Item = Result<JobStatus, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = self.receiver.poll_recv(cx);
        match &next {
            Poll::Ready(Some(Ok(status))) if !status.is_final() => {}
            Poll::Ready(_) => self.done = true,
            Poll::Pending => {}
        }
        match next {
            // The sender went away without a final status: the client was dropped or
            // `stop` was called.
            Poll::Ready(None) => Poll::Ready(Some(Err(ClientError::Closed))),
            other => other,
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Why the bytes of an SSE stream stopped.
#[derive(Debug, thiserror::Error)]
enum SseFailure {
    #[error(transparent)]
    Transport(reqwest::Error),
    #[error("no event or keep-alive for {0:?}: the connection is taken as broken")]
    Silent(Duration),
}

type SseStream = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, ClientError>> + Send>>;

/// The background task: owns the SSE connection and the poll timer.
struct Driver {
    shared: Arc<Shared>,
    mode: Mode,
    fallback: bool,
    poll_interval: Duration,
    stream: Option<SseStream>,
    last_event_id: Option<String>,
    next_attempt: Instant,
    backoff: Backoff,
    /// A stream silent this long (no event, no keep-alive) is reconnected.
    idle_timeout: Duration,
}

enum Wake {
    Command(Option<Command>),
    Event(Option<Result<eventsource_stream::Event, ClientError>>),
    Poll,
    Retry,
}

#[derive(Deserialize)]
struct StatusMessage {
    id: u64,
    message: String,
}

impl Driver {
    fn wants_sse(&self) -> bool {
        self.mode != Mode::Poll
    }

    fn polling(&self) -> bool {
        self.mode == Mode::Poll
            || (self.stream.is_none() && (self.mode == Mode::Auto || self.fallback))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.wants_sse() && self.stream.is_none() && Instant::now() >= self.next_attempt {
                self.connect().await;
            }
            let polling = self.polling();
            let retry_at = self.next_attempt;
            let retrying = self.wants_sse() && self.stream.is_none();
            let wake = tokio::select! {
                command = commands.recv() => Wake::Command(command),
                event = next_event(&mut self.stream), if self.stream.is_some() => Wake::Event(event),
                _ = poll.tick(), if polling => Wake::Poll,
                () = tokio::time::sleep_until(retry_at), if retrying => Wake::Retry,
            };
            match wake {
                Wake::Command(None) => return,
                Wake::Command(Some(Command::Check(id))) => {
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move { shared.check_until_answered(id).await });
                }
                Wake::Command(Some(Command::Mode(mode))) => {
                    self.mode = mode;
                    if mode == Mode::Poll {
                        self.stream = None;
                    }
                    self.next_attempt = Instant::now();
                    self.backoff.reset();
                    self.shared.check_all().await;
                }
                Wake::Event(Some(Ok(event))) => self.on_event(event),
                Wake::Event(Some(Err(error))) => self.lost(&error).await,
                Wake::Event(None) => {
                    self.lost(&ClientError::sse("the server ended the stream", None))
                        .await;
                }
                Wake::Poll => self.shared.check_all().await,
                Wake::Retry => {}
            }
        }
    }

    async fn connect(&mut self) {
        let mut request = self
            .shared
            .http
            .get(self.shared.url(&["status"]))
            .header("accept", "text/event-stream");
        if let Some(id) = &self.last_event_id {
            request = request.header("last-event-id", id.as_str());
        }
        let opened = match tokio::time::timeout(self.shared.request_timeout, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(response),
            Ok(Ok(response)) => Err(ClientError::sse(
                format!("GET /status answered HTTP {}", response.status()),
                None,
            )),
            Ok(Err(error)) => Err(ClientError::sse(
                format!("GET /status: {error}"),
                Some(Arc::new(error)),
            )),
            Err(_) => Err(ClientError::sse(
                format!(
                    "GET /status: no answer within {:?}",
                    self.shared.request_timeout
                ),
                None,
            )),
        };
        match opened {
            Ok(response) => {
                // A half-open connection sends nothing, not even keep-alives: a silence
                // of two intervals ends the stream, and it is opened again.
                let idle = self.idle_timeout;
                let bytes = tokio_stream::StreamExt::timeout(response.bytes_stream(), idle).map(
                    move |chunk| match chunk {
                        Ok(Ok(bytes)) => Ok(bytes),
                        Ok(Err(error)) => Err(SseFailure::Transport(error)),
                        Err(_) => Err(SseFailure::Silent(idle)),
                    },
                );
                let events = bytes.eventsource().map(|event| {
                    event
                        .map_err(|error| ClientError::sse(error.to_string(), Some(Arc::new(error))))
                });
                self.stream = Some(Box::pin(events));
                self.backoff.reset();
                self.shared.log(format_args!("SSE connected"));
                // Whatever finished while we were not connected.
                self.shared.check_all().await;
            }
            Err(error) => {
                self.shared.log(format_args!("{error}"));
                self.report(&error);
                self.schedule_retry();
                if self.polling() {
                    self.shared.check_all().await;
                }
            }
        }
    }

    fn schedule_retry(&mut self) {
        self.next_attempt = Instant::now() + self.backoff.next_delay();
    }

    /// With SSE only and no fallback, a stream that cannot be opened is the listeners'
    /// error (the TypeScript client's behaviour): nothing else would tell them anything. A
    /// stream that breaks once open (or falls silent) is opened again instead.
    fn report(&self, error: &ClientError) {
        if self.mode == Mode::Sse && !self.fallback {
            self.shared.fail_all(error);
        }
    }

    async fn lost(&mut self, why: &ClientError) {
        self.shared.log(format_args!("SSE lost: {why}"));
        self.stream = None;
        self.schedule_retry();
        if self.polling() {
            self.shared.log(format_args!("falling back to polling"));
            self.shared.check_all().await;
        }
    }

    fn on_event(&mut self, event: eventsource_stream::Event) {
        if !event.id.is_empty() {
            self.last_event_id = Some(event.id.clone());
        }
        if !event.event.starts_with("status_") {
            return;
        }
        match serde_json::from_str::<StatusMessage>(&event.data) {
            Ok(message) => match (
                (message.id > 0).then_some(JobId(message.id)),
                JobStatus::parse(&message.message),
            ) {
                (Some(id), Some(status)) => {
                    self.shared
                        .log(format_args!("job {id} is {status:?} (SSE)"));
                    self.shared.deliver(id, Ok(status));
                }
                _ => self.shared.log(format_args!(
                    "{}",
                    ClientError::parse(event.data.clone(), None)
                )),
            },
            Err(error) => self.shared.log(format_args!(
                "{}",
                ClientError::parse(format!("{error}: {}", event.data), None)
            )),
        }
    }
}

async fn next_event(
    stream: &mut Option<SseStream>,
) -> Option<Result<eventsource_stream::Event, ClientError>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
