//! Configuration: flags, environment variables and a `.env` file, with the Node.js server's
//! names where they exist. Every value is checked before the port is bound; a bad one ends
//! the process with exit code 2 and a message naming the setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::connections::ConnectionCaps;
use crate::proxy::TrustedProxies;
use crate::rate::{JobRates, Rate};
use crate::streams::StreamCaps;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use heartbeat_core::sessions::Retention;
use heartbeat_core::sessions::rules::PlaybackPolicy;
use heartbeat_core::{TokenCodec, TokenFormat};

/// Shortest admin key accepted: a short key is guessable.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// The version `--version` prints and `heartbeat_build_info` carries: the crate version
/// and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HEARTBEAT_GIT_COMMIT"),
    ")"
);

/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("HEARTBEAT_GIT_COMMIT");

/// `LOG_FORMAT`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only when standard error is a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The command line of `heartbeat-server`.
#[derive(Debug, Parser)]
#[command(
    name = "heartbeat-server",
    version = VERSION,
    about = "Session limiting with rotated heartbeat tokens, and job status over SSE.",
    long_about = "Session limiting with rotated heartbeat tokens, progress and play history, \
                  and job status over Server-Sent Events with a polling fallback. Every \
                  setting can be given as a flag, an environment variable or a line of a \
                  .env file in the working directory (flags win, then the environment, then \
                  .env)."
)]
pub struct Cli {
    /// What to do; without a subcommand the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a heartbeat token for a new playback (what a backend hands its player).
    IssueToken(IssueTokenArgs),
    /// Print an owner token for `/v1` (needs `OWNER_KEY`).
    IssueOwnerToken(IssueOwnerTokenArgs),
    /// Write finished sessions of all users as NDJSON to standard output, read from the
    /// store the settings name (as `GET /admin/history` does).
    ExportHistory(ExportHistoryArgs),
    /// Move what builds before the slot tag wrote in Redis to today's key names, then
    /// set the layout version to 2 (every instance then reads one name per call).
    /// Resumable and safe while instances serve: see docs/operations.md.
    MigrateRedis(MigrateRedisArgs),
    /// Check every setting and that the store opens and answers, then print the
    /// effective configuration without secrets. Exit code 0, or 2 (a setting) or 1 (the
    /// store) with the error.
    CheckConfig,
}

/// `export-history` options.
#[derive(Debug, Clone, Args)]
pub struct ExportHistoryArgs {
    /// Sessions that ended at or after this time (ISO 8601, e.g. 2026-11-30T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Sessions that ended before this time (ISO 8601).
    #[arg(long)]
    pub until: Option<String>,
    /// Most sessions to write (default 100000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue after an earlier export (the `cursor` of its last line).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Write refusals instead of sessions (the NDJSON of `GET /admin/refusals`): refused
    /// heartbeats, and those report-only limits would have refused (`"enforced": false`).
    #[arg(long)]
    pub refusals: bool,
}

/// `migrate-redis` options.
#[derive(Debug, Clone, Args)]
pub struct MigrateRedisArgs {
    /// Stop (resumable: run the command again) once about this many keys have moved.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_keys: Option<u64>,
    /// Keys each `SCAN` asks a master for (1 to 100000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub scan_count: u32,
}

/// `issue-owner-token` options.
#[derive(Debug, Clone, Args)]
pub struct IssueOwnerTokenArgs {
    /// The owner (the `uuid` its jobs are created with).
    #[arg(long)]
    pub owner: String,
    /// The key owner tokens are signed with (the server's `OWNER_KEY`).
    #[arg(long, env = "OWNER_KEY", hide_env_values = true)]
    pub owner_key: Option<String>,
    /// Seconds the token is valid for (1 to 31536000, a year); past it the server answers
    /// 401 and the owner needs a new token.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub ttl_secs: i64,
}

/// `OWNER_AUTH`: whether the job routes (`/v1` and HeyGen) need an owner token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OwnerAuth {
    /// A token is checked when given; a plain `uuid` is accepted too.
    Optional,
    /// A plain `uuid` is refused (401): only owner tokens.
    Required,
}

/// Owner tokens on the job routes (`OWNER_KEY`, `OWNER_AUTH`).
#[derive(Debug, Clone)]
pub struct OwnerTokens {
    /// The signing key.
    pub key: heartbeat_core::jobs::OwnerKey,
    /// Whether a plain `uuid` is refused.
    pub required: bool,
}

/// Where sessions, progress, history and jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In memory: fast, single instance, nothing survives a restart.
    Memory,
    /// Embedded sled database at `SLED_PATH`: persistent, single instance (the default).
    Sled,
    /// Redis at `REDIS_URL`: shared by many instances and by the Node.js server.
    Redis,
}

/// The token settings both the server and `issue-token` need.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The key tokens are sealed with; the backends use the same one. Required; there is no
    /// built-in default.
    #[arg(long, env = "SHARED_KEY", hide_env_values = true)]
    pub shared_key: Option<String>,
    /// Earlier shared keys, comma-separated, during a key rotation: tokens sealed with
    /// them still open (tried after SHARED_KEY, in order), and every answer is sealed with
    /// SHARED_KEY, so playing devices move to it at their next heartbeat.
    #[arg(
        long,
        env = "SHARED_KEY_PREVIOUS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub shared_key_previous: Vec<String>,
    /// Format of the tokens this server issues, in its heartbeat answers and from
    /// `issue-token` and `POST /admin/tokens`: `v2` (authenticated, XChaCha20-Poly1305, the
    /// default), `v3` (authenticated, AES-256-GCM-SIV over a compact payload: the cheapest on
    /// CPUs with AES-NI; builds before it cannot read it, so set it only once every instance
    /// runs this build or a later one), `b1` (authenticated, AES-256-GCM over JSON) or
    /// `legacy` (CryptoJS, readable by Node.js servers running beside this one). Every
    /// format is read whatever this says.
    #[arg(long, env = "TOKEN_FORMAT", default_value = "v2", value_parser = clap::value_parser!(TokenFormat))]
    pub token_format: TokenFormat,
    /// Accept legacy CryptoJS tokens (as backends of the Node.js server issue them).
    #[arg(long, env = "ACCEPT_LEGACY", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub accept_legacy: bool,
}

impl TokenArgs {
    /// The codec these settings describe.
    ///
    /// # Errors
    ///
    /// Names `SHARED_KEY` or `TOKEN_FORMAT` when they are missing or invalid.
    pub fn codec(&self) -> Result<TokenCodec, ConfigError> {
        let key = ConfigError::required(
            self.shared_key.as_deref(),
            "SHARED_KEY",
            "the key your backends seal tokens with",
        )?;
        let previous = self
            .shared_key_previous
            .iter()
            .map(|key| key.trim())
            .filter(|key| !key.is_empty());
        Ok(TokenCodec::new(key)
            .map_err(|error| ConfigError::new("SHARED_KEY", error.to_string()))?
            .with_previous_keys(previous)
            .map_err(|error| ConfigError::new("SHARED_KEY_PREVIOUS", error.to_string()))?
            .issuing(self.token_format)
            .accepting_legacy(self.accept_legacy))
    }
}

/// The server's settings.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Token settings.
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Where to keep state.
    #[arg(
        long,
        env = "STORAGE",
        value_enum,
        default_value = "sled",
        ignore_case = true
    )]
    pub storage: StoreKind,
    /// Directory of the sled database (`STORAGE=sled`).
    #[arg(long, env = "SLED_PATH", default_value = "data/heartbeat.sled")]
    pub sled_path: PathBuf,
    /// Flush every sled write before answering (`false`: flush every 500 ms).
    #[arg(long, env = "SLED_SYNC_WRITES", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub sled_sync_writes: bool,
    /// Redis URL (`STORAGE=redis`).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Redis password, used when `REDIS_URL` carries none (the Node.js server's setting).
    #[arg(
        long = "password",
        visible_alias = "redis-password",
        env = "PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<String>,
    /// Prefix of every Redis key (the Node.js server's setting of the same name).
    #[arg(long, env = "REDIS_NAMESPACE", default_value = "")]
    pub redis_namespace: String,
    /// Milliseconds a Redis command may take before the request gets a 503.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,
    /// Connections to Redis (commands are pipelined on each).
    #[arg(long, env = "REDIS_POOL_SIZE", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub redis_pool_size: usize,
    /// Also keep the Node.js server's `user_progress` hash up to date.
    #[arg(long, env = "REDIS_NODE_PROGRESS", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_node_progress: bool,
    /// Milliseconds after which a new job completes by itself unless a worker touched it,
    /// like the HeyGen mock (which uses 2000); 0 (the default): off, jobs complete when a
    /// worker says so. At most 86400000 (a day).
    #[arg(long, env = "JOB_TIME", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=86_400_000))]
    pub job_time: u64,
    /// Bearer key of the admin API and the worker job updates; without it they answer 404.
    /// At least 16 characters.
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Bearer key that may only update jobs (`PATCH /v1/jobs/{id}`): give it to workers
    /// instead of ADMIN_KEY. At least 16 characters.
    #[arg(long, env = "WORKER_KEY", hide_env_values = true)]
    pub worker_key: Option<String>,
    /// Jobs one owner may create per second, sustained (`POST /create`, `POST /v1/jobs`);
    /// past it 429 with Retry-After. 0: no limit.
    #[arg(long, env = "JOBS_PER_OWNER_PER_SEC", default_value_t = 10)]
    pub jobs_per_owner_per_sec: u32,
    /// Jobs one owner may create at once before the per-second rate applies (at least 1).
    #[arg(long, env = "JOBS_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs_burst: u32,
    /// Jobs one client address may create per second, sustained, whatever the owners
    /// (`POST /create`, `POST /v1/jobs`); past it 429 with Retry-After. Not applied to
    /// requests carrying the admin or worker key or the owner's token. 0: no limit.
    #[arg(long, env = "JOBS_PER_ADDRESS_PER_SEC", default_value_t = 20)]
    pub jobs_per_address_per_sec: u32,
    /// Jobs one client address may create at once before its per-second rate applies (at
    /// least 1).
    #[arg(long, env = "JOBS_PER_ADDRESS_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs_per_address_burst: u32,
    /// Jobs the whole server may create per second, sustained, for every client and
    /// backend together; past it 429 with Retry-After. 0: no limit.
    #[arg(long, env = "JOBS_TOTAL_PER_SEC", default_value_t = 1000)]
    pub jobs_total_per_sec: u32,
    /// Jobs the whole server may create at once before its per-second rate applies (at
    /// least 1).
    #[arg(long, env = "JOBS_TOTAL_BURST", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs_total_burst: u32,
    /// Most jobs the memory store keeps (`STORAGE=memory`): past it, finished jobs past
    /// their retention are dropped, and when none is, a creation is refused (503 with
    /// Retry-After). At least 1.
    #[arg(long, env = "MEMORY_MAX_JOBS", default_value_t = heartbeat_core::memory::DEFAULT_MAX_JOBS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub memory_max_jobs: usize,
    /// The reverse proxies in front of the server: a comma-separated list of IP addresses
    /// and CIDR networks (`10.0.0.0/8,192.168.1.7`). From them only, the client address
    /// is read from X-Forwarded-For (or Forwarded); from any other peer those headers are
    /// ignored. Unset: no proxy is trusted.
    #[arg(long, env = "TRUSTED_PROXIES")]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Client connections open at once; at the cap the longest-idle connection is closed
    /// to make room, or the new one when none is idle. 0: no cap. Default: the file
    /// limit (`ulimit -n`) less a reserve of 64 or a sixteenth of it, whichever is more.
    #[arg(long, env = "CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Client connections open at once from one address (trusted proxies excepted); a
    /// new one past it is closed at once. 0: no cap.
    #[arg(long, env = "CONNECTIONS_PER_ADDRESS", default_value_t = 256)]
    pub connections_per_address: usize,
    /// Event streams (SSE) open at once on this server; past it a new stream gets 503 with
    /// Retry-After while every other route keeps answering. 0: no cap. Default: the file
    /// limit (`ulimit -n`) less a reserve of 256 or an eighth of it, whichever is more.
    #[arg(long, env = "STREAMS_MAX")]
    pub streams_max: Option<usize>,
    /// Event streams open at once from one client address. Behind a reverse proxy, set
    /// `TRUSTED_PROXIES` so that each client counts by its own address. 0: no cap.
    #[arg(long, env = "STREAMS_PER_ADDRESS", default_value_t = 100)]
    pub streams_per_address: usize,
    /// Event streams open at once per owner: a job owner, one user's notice streams, or
    /// the analytics feed. 0: no cap.
    #[arg(long, env = "STREAMS_PER_OWNER", default_value_t = 16)]
    pub streams_per_owner: usize,
    /// Seconds an event stream lives before the server closes it (clients reconnect with
    /// Last-Event-ID and lose nothing); 1 to 604800 (a week).
    #[arg(long, env = "STREAM_MAX_LIFETIME_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub stream_max_lifetime_secs: u64,
    /// Bearer key that may only mint heartbeat tokens (`POST /admin/tokens`): give it to
    /// backends that mint over HTTP instead of ADMIN_KEY. At least 16 characters.
    #[arg(long, env = "ISSUER_KEY", hide_env_values = true)]
    pub issuer_key: Option<String>,
    /// A separate address for `/admin/*` and `/metrics` (e.g. 127.0.0.1:9090): when set,
    /// they are served there only, and the public port answers 404 for them.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Web origins browsers may call the server from: `*`, or a comma-separated list such
    /// as `https://app.example.com,http://localhost:5173`. Unset: no CORS headers.
    #[arg(long, env = "CORS_ORIGINS")]
    pub cors_origins: Option<CorsOrigins>,
    /// Key the owner tokens of the job routes are signed with (at least 16 characters):
    /// `owner.<expiry>.<base64url HMAC-SHA256(OWNER_KEY, owner + "\n" + expiry)>`, the
    /// expiry in unix seconds; `issue-owner-token` prints one.
    #[arg(long, env = "OWNER_KEY", hide_env_values = true)]
    pub owner_key: Option<String>,
    /// `optional`: a token is checked when given; `required`: every job route, the HeyGen
    /// ones (`/create`, `/status`) included, refuses a plain `uuid` (401) unless the
    /// request carries the owner's token (or the admin or worker key).
    #[arg(
        long,
        env = "OWNER_AUTH",
        value_enum,
        default_value = "optional",
        ignore_case = true
    )]
    pub owner_auth: OwnerAuth,
    /// Seconds after its `timestamp` within which an authenticated backend token (v2, b1)
    /// starts (or restarts) a playback; later it is refused with reason `expired`. Ended
    /// playbacks are remembered as long, so that only their latest token resumes them.
    #[arg(long, env = "START_WINDOW_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub start_window_secs: u32,
    /// The same window for legacy (CryptoJS) backend tokens; unset: none (Node-era
    /// backends may mint tokens long before use).
    #[arg(long, env = "LEGACY_START_WINDOW_SECS", value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub legacy_start_window_secs: Option<u32>,
    /// The `sessions_edge` of tokens that have none: a heartbeat that would start one
    /// more session than this is refused (`sessions_edge`); sessions already playing never
    /// are.
    #[arg(long, env = "DEFAULT_SESSIONS_EDGE", default_value_t = heartbeat_core::sessions::rules::DEFAULT_SESSIONS_EDGE, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub default_sessions_edge: u32,
    /// Enforce the limits of tokens without an `enforce` field. `false` makes them
    /// report-only (SPEC §3.8): a heartbeat they would refuse is answered 200 with
    /// `would_refuse`, counted in `heartbeat_would_refuse_total` and exported by
    /// `GET /admin/refusals` with `enforced: false`. `sessions_edge` is enforced either way.
    #[arg(long, env = "ENFORCE_LIMITS", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub enforce_limits: bool,
    /// End a session as `gone` when its notice stream's client went away and no heartbeat
    /// came within `GONE_GRACE_SECS` (SPEC §3.8): a crashed or killed player frees its
    /// slot in seconds. `false`: it frees it when it expires (cycle + tolerance).
    #[arg(long, env = "GONE_SESSIONS", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub gone_sessions: bool,
    /// Seconds a session whose notice stream closed has to heartbeat or reconnect its
    /// stream before it ends as `gone` (1 to 3600; more than `EventSource`'s 2 s retry).
    #[arg(long, env = "GONE_GRACE_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub gone_grace_secs: u64,
    /// Answer 200 with a rotated token when the store is down, instead of 503.
    #[arg(long, env = "FAIL_OPEN", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub fail_open: bool,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `heartbeat_http=debug,info`.
    #[arg(long, env = "LOG", default_value = "info")]
    pub log: String,
    /// Log line format: `text`, or `json` (one object per line). Logs go to standard
    /// error, without colours unless it is a terminal (and `NO_COLOR` is unset).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log one line per answered request (request id, method, path, status, latency) at
    /// info level.
    #[arg(long, env = "ACCESS_LOG", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub access_log: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = 16 * 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(256..=16 * 1024 * 1024))]
    pub body_limit: usize,
    /// Milliseconds a request may take before it is answered 408 (SSE streams excepted).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Seconds between SSE keep-alive comments.
    #[arg(long, env = "SSE_KEEPALIVE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sse_keepalive_secs: u64,
    /// Play history entries kept per user.
    #[arg(long, env = "HISTORY_CAP", default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub history_cap: usize,
    /// Days a finished job and its events are kept after it finished (1 to 3650), on every
    /// store.
    #[arg(long = "job-retention", visible_alias = "job-retention-days", env = "JOB_RETENTION", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub job_retention_days: u64,
    /// Days progress and history are kept after their last change.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub retention_days: u64,
}

/// `issue-token` options: the heartbeat data of a new playback.
#[derive(Debug, Clone, Args)]
pub struct IssueTokenArgs {
    /// Token settings.
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// The user (a number or a string).
    #[arg(long)]
    pub user: String,
    /// The asset played (a number or a string).
    #[arg(long)]
    pub asset: String,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 30)]
    pub cycle: u64,
    /// Seconds a heartbeat may come early.
    #[arg(long, default_value_t = 0)]
    pub lower_tolerance: u64,
    /// Seconds a heartbeat may come late.
    #[arg(long, default_value_t = 10)]
    pub upper_tolerance: u64,
    /// Sessions the user may play at once.
    #[arg(long, default_value_t = 1)]
    pub limit: u32,
    /// `checking_threshold`: heartbeats a session must have sent before it counts against
    /// the limit. Written as 1 when not given (a token without the field means 0).
    #[arg(long)]
    pub threshold: Option<u32>,
    /// `sessions_edge`: the most sessions the user may have active; a heartbeat that would
    /// start one more is refused at once. Written as `--limit` + 10 when not given.
    #[arg(long)]
    pub edge: Option<u32>,
    /// Which device is refused over the limit: `LEAST_RECENT` or `MOST_RECENT`.
    #[arg(long, default_value = "LEAST_RECENT")]
    pub strategy: String,
    /// The device's label, shown to the user's other devices ("Living-room TV").
    #[arg(long)]
    pub device: Option<String>,
    /// The device's family, for `--family-limit` (`tv`, `mobile`, `web`…).
    #[arg(long)]
    pub device_family: Option<String>,
    /// Counted sessions allowed in one device family, as `FAMILY=N`; repeat it per
    /// family (`--family-limit tv=1 --family-limit mobile=2`).
    #[arg(long = "family-limit", value_name = "FAMILY=N", value_parser = parse_family_limit)]
    pub family_limits: Vec<(String, u32)>,
    /// Counted sessions allowed on the same asset.
    #[arg(long)]
    pub asset_limit: Option<u32>,
}

/// Reads `FAMILY=N` for `--family-limit`.
fn parse_family_limit(text: &str) -> Result<(String, u32), String> {
    let (family, limit) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not FAMILY=N (for example tv=1)"))?;
    let limit = limit
        .trim()
        .parse()
        .map_err(|_| format!("the limit of `{family}` must be a whole number, not `{limit}`"))?;
    Ok((family.trim().to_owned(), limit))
}

/// A setting with an invalid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting} {reason}")]
pub struct ConfigError {
    /// The environment variable name of the setting.
    pub setting: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// A setting that must be given and not empty: its value, or an error saying what to
    /// set it to.
    ///
    /// # Errors
    ///
    /// `<setting> is required: set it to <what>`.
    pub fn required<'a>(
        value: Option<&'a str>,
        setting: &'static str,
        what: &str,
    ) -> Result<&'a str, ConfigError> {
        value
            .filter(|value| !value.is_empty())
            .ok_or_else(|| ConfigError::new(setting, format!("is required: set it to {what}")))
    }

    /// `setting` is wrong for `reason`.
    pub fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            reason: reason.into(),
        }
    }
}

/// The checked settings the router and the server run with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub address: SocketAddr,
    /// `ADMIN_ADDR`: where `/admin/*` and `/metrics` are served instead of `address`.
    pub admin_address: Option<SocketAddr>,
    /// The admin bearer key, if the admin API is on.
    pub admin_key: Option<String>,
    /// `WORKER_KEY`: a bearer key that may only update jobs.
    pub worker_key: Option<String>,
    /// `ISSUER_KEY`: a bearer key that may only mint heartbeat tokens.
    pub issuer_key: Option<String>,
    /// Answer 200 when the store is down.
    pub fail_open: bool,
    /// `GONE_SESSIONS`, `GONE_GRACE_SECS`: how long after its notice stream's client went
    /// away a session ends as `gone`; `None`: never (SPEC §3.8).
    pub gone_grace: Option<Duration>,
    /// `START_WINDOW_SECS`, `LEGACY_START_WINDOW_SECS`, `DEFAULT_SESSIONS_EDGE`: how
    /// playbacks are guarded against replays (SPEC §3.2); `ENFORCE_LIMITS`: whether the
    /// limits of tokens without `enforce` are enforced (SPEC §3.8).
    pub playback: PlaybackPolicy,
    /// Largest body accepted.
    pub body_limit: usize,
    /// Longest time to answer a request.
    pub request_timeout: Duration,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
    /// `JOB_TIME`.
    pub job_time: Option<Duration>,
    /// `JOB_RETENTION`: how long finished jobs and their events are kept.
    pub job_retention: Duration,
    /// History and progress retention.
    pub retention: Retention,
    /// `CORS_ORIGINS`: the browser origins allowed to call the server; `None`: no CORS
    /// headers at all.
    pub cors: Option<CorsOrigins>,
    /// `OWNER_KEY` / `OWNER_AUTH`: owner tokens on the `/v1` routes; `None`: plain `uuid`.
    pub owner_tokens: Option<OwnerTokens>,
    /// `ACCESS_LOG`: one info line per answered request.
    pub access_log: bool,
    /// `STREAMS_MAX`, `STREAMS_PER_ADDRESS`, `STREAMS_PER_OWNER`,
    /// `STREAM_MAX_LIFETIME_SECS`: caps on open event streams.
    pub stream_caps: StreamCaps,
    /// `JOBS_PER_OWNER_PER_SEC`, `JOBS_BURST`, `JOBS_PER_ADDRESS_PER_SEC`,
    /// `JOBS_PER_ADDRESS_BURST`, `JOBS_TOTAL_PER_SEC`, `JOBS_TOTAL_BURST`: job creation
    /// rates.
    pub job_rates: JobRates,
    /// `TRUSTED_PROXIES`: the proxies whose forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// `CONNECTIONS_MAX`, `CONNECTIONS_PER_ADDRESS`: caps on open connections.
    pub connection_caps: ConnectionCaps,
    /// `MEMORY_MAX_JOBS`: most jobs the memory store keeps.
    pub memory_max_jobs: usize,
}

/// Which web origins browsers may call the server from (`CORS_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin.
    Any,
    /// These origins exactly (`https://app.example.com`, …).
    List(Vec<String>),
}

impl std::fmt::Display for CorsOrigins {
    /// As `CORS_ORIGINS` takes it: `*`, or the origins comma-separated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(origins) => f.write_str(&origins.join(",")),
        }
    }
}

impl std::str::FromStr for CorsOrigins {
    type Err = String;

    /// `*`, or a comma-separated list of origins (`scheme://host[:port]`, no path).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::new();
        for origin in text
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
        {
            let uri: axum::http::Uri = origin
                .parse()
                .map_err(|_| format!("`{origin}` is not an origin like https://app.example.com"))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            let path_ok = uri
                .path_and_query()
                .is_none_or(|path| matches!(path.as_str(), "" | "/"));
            if !scheme_ok || uri.authority().is_none() || !path_ok || origin.ends_with('/') {
                return Err(format!(
                    "`{origin}` is not an origin like https://app.example.com (scheme, host, optional port; no path)"
                ));
            }
            origins.push(origin.to_owned());
        }
        if origins.is_empty() {
            return Err("must be `*` or a comma-separated list of origins".to_owned());
        }
        Ok(CorsOrigins::List(origins))
    }
}

impl Default for Settings {
    /// The defaults of the command line, listening on 127.0.0.1:3000.
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_address: None,
            admin_key: None,
            worker_key: None,
            issuer_key: None,
            fail_open: false,
            gone_grace: Some(heartbeat_core::DEFAULT_GONE_GRACE),
            playback: PlaybackPolicy::default(),
            body_limit: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            sse_keepalive: Duration::from_secs(15),
            job_time: None,
            job_retention: heartbeat_core::jobs::DEFAULT_JOB_RETENTION,
            retention: Retention::default(),
            cors: None,
            owner_tokens: None,
            access_log: false,
            stream_caps: StreamCaps::default(),
            job_rates: JobRates::default(),
            trusted_proxies: TrustedProxies::default(),
            connection_caps: ConnectionCaps::default(),
            memory_max_jobs: heartbeat_core::memory::DEFAULT_MAX_JOBS,
        }
    }
}

/// A key setting (`ADMIN_KEY`, `WORKER_KEY`, `ISSUER_KEY`, `OWNER_KEY`): unset or empty is
/// none; one shorter than [`MIN_ADMIN_KEY_LEN`] bytes is refused, naming the setting.
///
/// # Errors
///
/// A key that is too short.
pub fn bearer_key(setting: &'static str, key: Option<&str>) -> Result<Option<String>, ConfigError> {
    match key {
        None | Some("") => Ok(None),
        Some(key) if key.len() < MIN_ADMIN_KEY_LEN => Err(ConfigError::new(
            setting,
            format!("must be at least {MIN_ADMIN_KEY_LEN} characters long"),
        )),
        Some(key) => Ok(Some(key.to_owned())),
    }
}

/// The soft file descriptor limit of the process (`ulimit -n`), if it can be read.
fn file_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

impl ServerArgs {
    /// Refuses two equal keys among `SHARED_KEY`, `SHARED_KEY_PREVIOUS`, `ADMIN_KEY`,
    /// `WORKER_KEY`, `ISSUER_KEY` and `OWNER_KEY`: a key given for one purpose must not
    /// open another.
    ///
    /// # Errors
    ///
    /// The later setting of the first equal pair, naming the other.
    pub fn keys_differ(&self) -> Result<(), ConfigError> {
        let mut keys: Vec<(&'static str, &str)> = Vec::new();
        keys.extend(
            self.tokens
                .shared_key
                .as_deref()
                .map(|key| ("SHARED_KEY", key)),
        );
        keys.extend(
            self.tokens
                .shared_key_previous
                .iter()
                .map(|key| ("SHARED_KEY_PREVIOUS", key.trim())),
        );
        for (setting, key) in [
            ("ADMIN_KEY", &self.admin_key),
            ("WORKER_KEY", &self.worker_key),
            ("ISSUER_KEY", &self.issuer_key),
            ("OWNER_KEY", &self.owner_key),
        ] {
            keys.extend(key.as_deref().map(|key| (setting, key)));
        }
        keys.retain(|(_, key)| !key.is_empty());
        for (later, (setting, key)) in keys.iter().enumerate() {
            if let Some((other, _)) = keys[..later].iter().find(|(_, earlier)| earlier == key) {
                let reason = if other == setting {
                    "lists the same key twice".to_owned()
                } else {
                    format!("is the same as {other}: give every key its own value")
                };
                return Err(ConfigError::new(setting, reason));
            }
        }
        Ok(())
    }

    /// What is allowed but unwise in these settings, one sentence each saying what to do:
    /// `check-config` prints them and the server logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(key) = &self.tokens.shared_key
            && key.chars().count() < MIN_ADMIN_KEY_LEN
        {
            warnings.push(format!(
                "SHARED_KEY is shorter than {MIN_ADMIN_KEY_LEN} characters: a short key can be \
                 guessed. It is accepted because Node-era backends may use one; move to a \
                 longer key with SHARED_KEY_PREVIOUS (docs/operations.md, \"Rotating SHARED_KEY\")"
            ));
        }
        warnings
    }

    /// Checks every value.
    ///
    /// # Errors
    ///
    /// The first invalid setting, by name.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let admin_key = bearer_key("ADMIN_KEY", self.admin_key.as_deref())?;
        let worker_key = bearer_key("WORKER_KEY", self.worker_key.as_deref())?;
        let issuer_key = bearer_key("ISSUER_KEY", self.issuer_key.as_deref())?;
        self.keys_differ()?;
        let address = SocketAddr::new(self.host, self.port);
        if self.admin_addr == Some(address) {
            return Err(ConfigError::new(
                "ADMIN_ADDR",
                format!("is the public address {address}: give the admin API another port"),
            ));
        }
        let owner_tokens = match (
            bearer_key("OWNER_KEY", self.owner_key.as_deref())?,
            self.owner_auth,
        ) {
            (Some(key), auth) => Some(OwnerTokens {
                key: heartbeat_core::jobs::OwnerKey::new(&key),
                required: auth == OwnerAuth::Required,
            }),
            (None, OwnerAuth::Required) => {
                return Err(ConfigError::new(
                    "OWNER_AUTH",
                    "is `required`, but OWNER_KEY is not set: set the key owner tokens are signed with",
                ));
            }
            (None, OwnerAuth::Optional) => None,
        };
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|error| ConfigError::new("LOG", format!("is not a valid filter: {error}")))?;
        if self.sled_path.as_os_str().is_empty() {
            return Err(ConfigError::new("SLED_PATH", "must not be empty"));
        }
        Ok(Settings {
            address,
            admin_address: self.admin_addr,
            admin_key,
            worker_key,
            issuer_key,
            fail_open: self.fail_open,
            gone_grace: self
                .gone_sessions
                .then(|| Duration::from_secs(self.gone_grace_secs)),
            playback: PlaybackPolicy {
                start_window_millis: i64::from(self.start_window_secs) * 1000,
                legacy_start_window_millis: self
                    .legacy_start_window_secs
                    .map(|secs| i64::from(secs) * 1000),
                default_sessions_edge: self.default_sessions_edge,
                enforce_limits: self.enforce_limits,
            },
            access_log: self.access_log,
            body_limit: self.body_limit,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            sse_keepalive: Duration::from_secs(self.sse_keepalive_secs),
            job_time: (self.job_time > 0).then(|| Duration::from_millis(self.job_time)),
            job_retention: Duration::from_secs(self.job_retention_days * 86_400),
            retention: Retention {
                history_cap: self.history_cap,
                retention_secs: self.retention_days * 86_400,
            },
            cors: self.cors_origins.clone(),
            owner_tokens,
            stream_caps: StreamCaps {
                total: self.streams_max.unwrap_or_else(|| {
                    file_limit().map_or(StreamCaps::default().total, |limit| {
                        StreamCaps::total_for_file_limit(limit)
                    })
                }),
                per_address: self.streams_per_address,
                per_owner: self.streams_per_owner,
                max_lifetime: Duration::from_secs(self.stream_max_lifetime_secs),
            },
            job_rates: JobRates {
                per_owner: Rate {
                    per_second: self.jobs_per_owner_per_sec,
                    burst: self.jobs_burst,
                },
                per_address: Rate {
                    per_second: self.jobs_per_address_per_sec,
                    burst: self.jobs_per_address_burst,
                },
                total: Rate {
                    per_second: self.jobs_total_per_sec,
                    burst: self.jobs_total_burst,
                },
            },
            trusted_proxies: self.trusted_proxies.clone().unwrap_or_default(),
            connection_caps: ConnectionCaps {
                total: self.connections_max.unwrap_or_else(|| {
                    file_limit().map_or(ConnectionCaps::default().total, |limit| {
                        ConnectionCaps::total_for_file_limit(limit)
                    })
                }),
                per_address: self.connections_per_address,
            },
            memory_max_jobs: self.memory_max_jobs,
        })
    }
}
