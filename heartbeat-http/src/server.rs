//! Running the server: open the store chosen by `STORAGE`, bind, serve until SIGINT or
//! SIGTERM, then stop accepting, let requests finish, end SSE streams and flush the store.

use std::future::Future;
use std::sync::Arc;

use heartbeat_core::jobs::{EventBus, JobStore, JobsConfig};
use heartbeat_core::{Clock, HeartbeatConfig, SessionStore, SystemClock, TokenCodec};
use tokio::net::TcpListener;

use crate::config::{ConfigError, ServerArgs, Settings, StoreKind};
use crate::{App, Surface};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or reached (exit code 1).
    #[error("cannot open the store: {0}")]
    Store(String),
    /// The port could not be bound (exit code 1).
    #[error("cannot serve on {address}: {source}")]
    Io {
        /// The address.
        address: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// The process exit code for this error: 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// An application over the given stores with the settings' rules applied, on the system
/// clock.
pub fn app<S, J, B>(codec: TokenCodec, sessions: S, jobs: J, bus: B, settings: Settings) -> App
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
{
    app_with_clock(codec, sessions, jobs, bus, settings, SystemClock)
}

/// As [`app`], reading time from `clock` (tests move a
/// [`ManualClock`](heartbeat_core::ManualClock) instead of waiting).
pub fn app_with_clock<S, J, B, C>(
    codec: TokenCodec,
    sessions: S,
    jobs: J,
    bus: B,
    settings: Settings,
    clock: C,
) -> App
where
    S: SessionStore,
    J: JobStore,
    B: EventBus,
    C: Clock,
{
    app_on_storage(
        codec,
        heartbeat_core::Storage::new(sessions, jobs, bus),
        settings,
        Arc::new(clock),
    )
}

/// An application over `storage`, with the settings' rules applied and time from `clock`.
pub fn app_on_storage(
    codec: TokenCodec,
    storage: heartbeat_core::Storage,
    settings: Settings,
    clock: heartbeat_core::SharedClock,
) -> App {
    let heartbeats = storage
        .heartbeats(codec)
        .with_config(HeartbeatConfig {
            retention: settings.retention,
            fail_open: settings.fail_open,
            playback: settings.playback,
            gone_grace: settings.gone_grace,
            ..HeartbeatConfig::default()
        })
        .with_clock(Arc::clone(&clock));
    let jobs = storage
        .jobs()
        .with_config(JobsConfig {
            job_time: settings.job_time,
            retention: settings.job_retention,
            ..JobsConfig::default()
        })
        .with_clock(clock);
    App::new(heartbeats, jobs, settings)
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully:
/// in-flight requests finish, SSE streams end, the store is flushed.
///
/// Failing to accept a connection does not end serving: connection errors are skipped,
/// others (out of file descriptors) logged and retried after a second.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = app.router();
    serve_router(app, router, listener, shutdown).await
}

/// As [`serve`], with a router of your own making: usually `app.router()` with more
/// routes or layers (authentication, CORS...).
pub async fn serve_router(
    app: App,
    router: axum::Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Publishes what the bus refused before, and runs the JOB_TIME simulator when set.
    let background = {
        let jobs = app.jobs().clone();
        tokio::spawn(async move {
            jobs.run_background(|error| {
                tracing::warn!(%error, "job background work failed; retrying");
            })
            .await;
        })
    };
    // Store-wide session figures for the metrics.
    let watcher = {
        let (heartbeats, metrics) = (app.heartbeats().clone(), app.metrics().clone());
        tokio::spawn(async move {
            heartbeats
                .watch_sessions(
                    |counts| metrics.session_counts(&counts),
                    |error| tracing::warn!(%error, "reading the session figures failed; retrying"),
                )
                .await;
        })
    };
    let stop = app.shutdown().clone();
    crate::listen::serve(listener, router, listening(&app), async move {
        shutdown.await;
        tracing::info!("shutting down: finishing requests, closing event streams");
        stop.cancel();
    })
    .await;
    background.abort();
    watcher.abort();
    if let Err(error) = app.heartbeats().store().flush().await {
        tracing::error!(%error, "flushing the store on shutdown failed");
    }
    tracing::info!("stopped");
}

/// What a listener of `app` admits connections under and reads client addresses with.
fn listening(app: &App) -> crate::listen::Listening {
    let settings = app.settings();
    crate::listen::Listening {
        connections: crate::connections::Connections::new(settings.connection_caps),
        proxies: settings.trusted_proxies.clone(),
        metrics: app.metrics().clone(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Connections waiting to be accepted (capped by the kernel's `net.core.somaxconn`). The
/// standard library's 128 overflows when thousands of SSE clients reconnect at once (after
/// a deploy): the kernel then drops their SYNs and they retry only after 1, 3, 7 s.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(address: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| StartError::Io { address, source })
}

/// Serves until a signal; with an admin listener (`ADMIN_ADDR`), the operator's routes
/// there and the public ones on `listener`.
async fn run_app(
    app: App,
    listener: TcpListener,
    admin: Option<TcpListener>,
) -> Result<(), StartError> {
    let address = app.settings().address;
    tracing::info!(%address, "listening");
    let Some(admin) = admin else {
        serve(app, listener, shutdown_signal()).await;
        return Ok(());
    };
    tracing::info!(address = ?app.settings().admin_address, "admin API and metrics listening");
    let stop = app.shutdown().clone();
    let operator = tokio::spawn(crate::listen::serve(
        admin,
        app.router_for(Surface::Admin),
        listening(&app),
        async move { stop.cancelled().await },
    ));
    let public = app.router_for(Surface::Public);
    serve_router(app, public, listener, shutdown_signal()).await;
    let _ = operator.await;
    Ok(())
}

#[cfg_attr(
    all(feature = "memory", feature = "sled", feature = "redis"),
    allow(dead_code)
)]
fn not_built(storage: &str) -> StartError {
    StartError::Config(ConfigError::new(
        "STORAGE",
        format!(
            "is `{storage}`, but this build has no {storage} store (cargo feature `{storage}`)"
        ),
    ))
}

/// Checks the settings, opens the store, binds the port and serves until a signal.
///
/// # Errors
///
/// [`StartError`], with the exit code to use.
pub async fn run(args: ServerArgs) -> Result<(), StartError> {
    let app = open(&args).await?;
    log_configuration(&args, app.settings());
    let listener = bind(app.settings().address)?;
    let admin = app.settings().admin_address.map(bind).transpose()?;
    run_app(app, listener, admin).await
}

/// Logs the effective configuration once at startup, without secrets, and warns about a
/// short `SHARED_KEY` (accepted: Node-era deployments have short keys).
fn log_configuration(args: &ServerArgs, settings: &Settings) {
    let summary = configuration(args, settings);
    let value = |name: &str| {
        summary
            .iter()
            .find(|(setting, _)| *setting == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let rest: Vec<String> = summary
        .iter()
        .filter(|(name, _)| !["version", "store", "address"].contains(name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    tracing::info!(
        version = %value("version"),
        store = %value("store"),
        address = %value("address"),
        settings = %rest.join(" "),
        "starting"
    );
    if args
        .tokens
        .shared_key
        .as_deref()
        .is_some_and(|key| key.len() < MIN_SHARED_KEY_LEN)
    {
        tracing::warn!(
            "SHARED_KEY is shorter than {MIN_SHARED_KEY_LEN} bytes: tokens sealed with a \
             short key can be forged by guessing it. Use a long random key (rotating keys \
             ends every playing session at its next heartbeat)."
        );
    }
}

/// The effective configuration, by name, without secrets (keys are reported as set or
/// not, the Redis URL's password as `***`): the startup log line and `check-config`.
pub fn configuration(args: &ServerArgs, settings: &Settings) -> Vec<(&'static str, String)> {
    let store = match args.storage {
        StoreKind::Memory => "memory (nothing survives a restart)".to_owned(),
        StoreKind::Sled => format!(
            "sled at {} (sync writes: {})",
            args.sled_path.display(),
            args.sled_sync_writes
        ),
        StoreKind::Redis => format!(
            "redis at {} (namespace `{}`, pool {}, timeout {} ms)",
            redact(&args.redis_url),
            args.redis_namespace,
            args.redis_pool_size,
            args.redis_timeout_ms
        ),
    };
    let on = |set: bool| if set { "set" } else { "unset" }.to_owned();
    vec![
        ("version", crate::config::VERSION.to_owned()),
        ("store", store),
        ("address", settings.address.to_string()),
        (
            "admin_address",
            settings.admin_address.map_or_else(
                || "the public address".to_owned(),
                |address| address.to_string(),
            ),
        ),
        ("token_format", args.tokens.token_format.name().to_owned()),
        ("accept_legacy", args.tokens.accept_legacy.to_string()),
        ("shared_key", on(args.tokens.shared_key.is_some())),
        (
            "shared_key_previous",
            format!("{} key(s)", args.tokens.shared_key_previous.len()),
        ),
        ("admin_key", on(settings.admin_key.is_some())),
        ("worker_key", on(settings.worker_key.is_some())),
        ("issuer_key", on(settings.issuer_key.is_some())),
        ("owner_key", on(settings.owner_tokens.is_some())),
        (
            "cors_origins",
            settings
                .cors
                .as_ref()
                .map_or_else(|| "unset (no CORS headers)".to_owned(), ToString::to_string),
        ),
        ("fail_open", settings.fail_open.to_string()),
        (
            "start_window_secs",
            (settings.playback.start_window_millis / 1000).to_string(),
        ),
        (
            "legacy_start_window_secs",
            settings
                .playback
                .legacy_start_window_millis
                .map_or_else(|| "none".to_owned(), |millis| (millis / 1000).to_string()),
        ),
        (
            "default_sessions_edge",
            settings.playback.default_sessions_edge.to_string(),
        ),
        (
            "enforce_limits",
            settings.playback.enforce_limits.to_string(),
        ),
        (
            "gone_grace_secs",
            settings
                .gone_grace
                .map_or_else(|| "off".to_owned(), |grace| grace.as_secs().to_string()),
        ),
        (
            "job_time_ms",
            settings
                .job_time
                .map_or(0, |time| time.as_millis())
                .to_string(),
        ),
        (
            "job_retention_days",
            (settings.job_retention.as_secs() / 86_400).to_string(),
        ),
        (
            "retention_days",
            (settings.retention.retention_secs / 86_400).to_string(),
        ),
        ("history_cap", settings.retention.history_cap.to_string()),
        ("body_limit", settings.body_limit.to_string()),
        ("trusted_proxies", settings.trusted_proxies.to_string()),
        (
            "connections",
            format!(
                "{} in all, {} per address (0: no cap)",
                settings.connection_caps.total, settings.connection_caps.per_address
            ),
        ),
        (
            "job_creations",
            format!(
                "per owner {}/s burst {}, per address {}/s burst {}, total {}/s burst {} (0: no limit)",
                settings.job_rates.per_owner.per_second,
                settings.job_rates.per_owner.burst,
                settings.job_rates.per_address.per_second,
                settings.job_rates.per_address.burst,
                settings.job_rates.total.per_second,
                settings.job_rates.total.burst
            ),
        ),
        ("memory_max_jobs", settings.memory_max_jobs.to_string()),
        (
            "log",
            format!("{} ({:?})", args.log, args.log_format).to_lowercase(),
        ),
        ("access_log", settings.access_log.to_string()),
    ]
}

/// Shortest `SHARED_KEY` started without a warning.
pub const MIN_SHARED_KEY_LEN: usize = 16;

/// A Redis URL fit for logs (its password replaced).
fn redact(url: &str) -> String {
    #[cfg(feature = "redis")]
    return heartbeat_store_redis::redact_url(url);
    #[cfg(not(feature = "redis"))]
    url.to_owned()
}

/// Connects to the Redis the `REDIS_*` settings name, keeping jobs for `job_retention`.
///
/// # Errors
///
/// [`StartError::Config`] for a bad URL or setting, [`StartError::Store`] when Redis does
/// not answer or holds a layout this build cannot serve.
#[cfg(feature = "redis")]
pub async fn connect_redis(
    args: &ServerArgs,
    job_retention: std::time::Duration,
) -> Result<heartbeat_store_redis::RedisStore, StartError> {
    use heartbeat_store_redis::{ConnectError, RedisConfig, RedisStore};
    let mut config = RedisConfig::new(args.redis_url.clone());
    config.namespace = args.redis_namespace.clone();
    config.password = args.redis_password.clone();
    config.command_timeout = std::time::Duration::from_millis(args.redis_timeout_ms);
    config.node_progress = args.redis_node_progress;
    config.pool_size = args.redis_pool_size;
    config.job_retention = job_retention;
    RedisStore::connect(config)
        .await
        .map_err(|error| match error {
            ConnectError::Invalid { reason, .. } => {
                StartError::Config(ConfigError::new("REDIS_URL", reason))
            }
            other => StartError::Store(other.to_string()),
        })
}

/// Checks the settings and opens the store `STORAGE` names, with the application over
/// it; binds nothing and starts no background work.
///
/// # Errors
///
/// [`StartError`], with the exit code to use.
pub async fn open(args: &ServerArgs) -> Result<App, StartError> {
    open_store(args, true).await
}

/// True when `STORAGE=sled` and `SLED_PATH` holds no database yet (a missing path or an
/// empty directory): the server creates one there when it starts, and the commands that
/// only read create nothing.
pub fn sled_database_is_new(args: &ServerArgs) -> bool {
    if args.storage != StoreKind::Sled {
        return false;
    }
    #[cfg(feature = "sled")]
    {
        !heartbeat_store_sled::SledStore::holds_database(&args.sled_path)
    }
    #[cfg(not(feature = "sled"))]
    {
        !args.sled_path.exists()
    }
}

/// [`open`] for a command that only reads the store (`check-config`, `export-history`):
/// a sled database of an earlier layout is read as it is, not moved to this build's, so
/// that the build before can still open it.
///
/// # Errors
///
/// [`StartError`], with the exit code to use.
pub async fn open_to_read(args: &ServerArgs) -> Result<App, StartError> {
    open_store(args, false).await
}

async fn open_store(args: &ServerArgs, migrate: bool) -> Result<App, StartError> {
    let settings = args.settings()?;
    let codec = args.tokens.codec()?;
    match args.storage {
        StoreKind::Memory => {
            #[cfg(feature = "memory")]
            {
                use heartbeat_core::memory::{MemoryEventBus, MemoryJobStore, MemorySessionStore};
                let retention = settings.job_retention;
                Ok(app(
                    codec,
                    MemorySessionStore::new(),
                    MemoryJobStore::with_limits(retention, settings.memory_max_jobs),
                    MemoryEventBus::with_limits(
                        heartbeat_core::jobs::DEFAULT_EVENT_HISTORY,
                        retention,
                    ),
                    settings,
                ))
            }
            #[cfg(not(feature = "memory"))]
            Err(not_built("memory"))
        }
        StoreKind::Sled => {
            #[cfg(feature = "sled")]
            {
                let mut config = heartbeat_store_sled::SledConfig::new(&args.sled_path);
                config.sync_writes = args.sled_sync_writes;
                config.job_retention = settings.job_retention;
                config.migrate = migrate;
                let store = heartbeat_store_sled::SledStore::open(config)
                    .map_err(|error| StartError::Store(format!("SLED_PATH: {error}")))?;
                Ok(app(codec, store.clone(), store.clone(), store, settings))
            }
            #[cfg(not(feature = "sled"))]
            {
                let _ = migrate; // only sled has layouts to move
                Err(not_built("sled"))
            }
        }
        StoreKind::Redis => {
            #[cfg(feature = "redis")]
            {
                let store = connect_redis(args, settings.job_retention).await?;
                Ok(app(codec, store.clone(), store.clone(), store, settings))
            }
            #[cfg(not(feature = "redis"))]
            Err(not_built("redis"))
        }
    }
}
