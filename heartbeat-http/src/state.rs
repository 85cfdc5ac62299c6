//! The application state every request reads: the services, the settings, the metrics,
//! the stream and rate caps, and the shutdown signal.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use heartbeat_core::{SharedHeartbeats, SharedJobs};
use tokio_util::sync::CancellationToken;

use heartbeat_core::StoreError;
use heartbeat_core::jobs::{Job, JobsError, Owner};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::rate::{JobCreations, RateLimited};
use crate::sse::StreamContext;
use crate::streams::{StreamSlots, StreamsFull};

/// Everything a request needs: the two services (over stores chosen at run time), the
/// settings, the metrics and the shutdown signal that ends SSE streams. Clones share it.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    heartbeats: SharedHeartbeats,
    jobs: SharedJobs,
    settings: Settings,
    metrics: Metrics,
    streams: StreamSlots,
    job_creations: JobCreations,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// An application over `heartbeats` and `jobs` with `settings`
    /// ([`server::app`](crate::server::app) builds both from stores and settings).
    pub fn new(heartbeats: SharedHeartbeats, jobs: SharedJobs, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                heartbeats,
                jobs,
                streams: StreamSlots::new(settings.stream_caps),
                job_creations: JobCreations::new(settings.job_rates),
                settings,
                metrics: Metrics::new(),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The heartbeat service.
    pub fn heartbeats(&self) -> &SharedHeartbeats {
        &self.inner.heartbeats
    }

    /// The jobs service.
    pub fn jobs(&self) -> &SharedJobs {
        &self.inner.jobs
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The open event streams, under the caps of `settings().stream_caps`.
    pub fn streams(&self) -> &StreamSlots {
        &self.inner.streams
    }

    /// The job creation allowances: per owner, per client address and in total
    /// (`JOBS_*` settings).
    pub fn job_creations(&self) -> &JobCreations {
        &self.inner.job_creations
    }

    /// Creates a job for `owner`, if the allowances let it: `address` is the client's
    /// address, or `None` for a backend that proved who it is (it is not throttled as
    /// one client). A refusal is counted in the metrics and stores nothing.
    pub async fn create_job(
        &self,
        owner: &Owner,
        address: Option<IpAddr>,
    ) -> Result<Job, CreateRefused> {
        if let Err(limited) = self.inner.job_creations.check(owner, address) {
            self.inner.metrics.creation_refused(limited.limit.name());
            return Err(CreateRefused::Limited(limited));
        }
        self.inner.jobs.create(owner).await.map_err(|error| {
            if matches!(error, JobsError::Store(StoreError::Full { .. })) {
                self.inner.metrics.creation_refused("store_full");
            }
            CreateRefused::Jobs(error)
        })
    }

    /// Opens an event stream for a client at `address` following `owner`'s events: its
    /// place under the stream caps and what it needs to frame (see [`crate::sse::response`]), or
    /// the cap it would pass (answered 503 with `Retry-After`).
    pub fn open_stream(&self, address: IpAddr, owner: &str) -> Result<StreamContext, StreamsFull> {
        let permit = self.inner.streams.acquire(address, owner)?;
        Ok(StreamContext {
            permit,
            open: self.inner.metrics.sse_connection(),
            shutdown: self.inner.shutdown.clone(),
            max_lifetime: self.inner.streams.caps().max_lifetime,
            keep_alive: self.inner.settings.sse_keepalive,
            on_client_gone: None,
        })
    }

    /// Cancelled when the server shuts down: SSE streams end on it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

/// Why [`App::create_job`] created nothing.
#[derive(Debug)]
pub enum CreateRefused {
    /// A rate limit (429 with `Retry-After`).
    Limited(RateLimited),
    /// The jobs service refused or failed (a full store is
    /// [`StoreError::Full`]).
    Jobs(JobsError),
}

impl FromRef<App> for Metrics {
    fn from_ref(app: &App) -> Metrics {
        app.inner.metrics.clone()
    }
}
