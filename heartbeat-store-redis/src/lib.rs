//! # heartbeat-store-redis
//!
//! Redis storage for heartbeat on [`fred`], shared safely by any number of server
//! instances and by the Node.js heartbeat server during a migration. One [`RedisStore`]
//! implements all three storage traits of `heartbeat-core`
//! ([`SessionStore`](heartbeat_core::SessionStore), [`JobStore`](heartbeat_core::jobs::JobStore),
//! [`EventBus`](heartbeat_core::jobs::EventBus)).
//!
//! ```no_run
//! # async fn run() -> Result<(), heartbeat_store_redis::ConnectError> {
//! use std::time::Duration;
//! use heartbeat_store_redis::{RedisConfig, RedisStore};
//!
//! let mut config = RedisConfig::new("redis://127.0.0.1:6379");
//! config.namespace = "prod:".into();
//! config.command_timeout = Duration::from_millis(500);
//! let store = RedisStore::connect(config).await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! # Keys
//!
//! Every key starts with [`RedisConfig::namespace`] (the Node server's `REDIS_NAMESPACE`).
//! `<tag>` is a short text that hashes to the slot of the user's session key (the Node
//! server's name, which cannot change), so that one script writes all of a user's keys on
//! a Redis Cluster too.
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `hb_sessions:<user>:active_sessions` | hash | session id → `{"timestamp","hit_counter","started_at",…}` (the Node server's key and format) | the longest possible life of its sessions |
//! | `hb_progress:{<tag>}:<user>` | hash | asset id → `{"progress","updated_at","session_id"}` | retention |
//! | `hb_history:{<tag>}:<user>` | list | play records, newest first, capped | retention |
//! | `{hb_history_index}:finished`, `{hb_history_index}:refusals` | sorted sets | the analytics indexes (one server) | retention |
//! | `hb_index:{<tag>}:finished`, `hb_index:{<tag>}:refusals` | sorted sets | the analytics indexes, a part per hash slot (Redis Cluster, or [`RedisConfig::one_script_per_key`]) | retention |
//! | `user_progress` | hash | `<user>:<asset>` → progress (the Node server's key; only with [`RedisConfig::node_progress`], one server only) | retention |
//! | `hb_job:{<tag>}:<id>` | string | the job; its id is `n × 16384 + slot` (≥ 2^34), so the id names the owner's slot (an earlier build's job, id below 2^34, moved here by the migration: the slot `id mod 16384`) | [`RedisConfig::job_retention`] |
//! | `hb_jobs:{<tag>}:last_id`, `hb_jobs:{<tag>}:owner:<owner>` | counter, sorted set | job ids drawn in a slot (never below the time in seconds; a job is never stored over another: `SET NX`, the next id drawn), an owner's jobs | job retention |
//! | `hb_jobs:due` (one server), `hb_jobs:due:{<shard tag>}` (cluster, 16 shards) | sorted set | jobs the simulator completes, by due time | job retention |
//! | `hb_events:{<tag>}:last_id`, `hb_events:{<tag>}:owner:<owner>` | counter, sorted set | event ids drawn in a slot, an owner's newest events | job retention |
//! | `hb_layout:version` | string | the layout version (no TTL); `hb_layout:migration` holds a running migration's cursors | none |
//!
//! For jobs and events `<tag>` hashes to the slot of the owner's name. Job events are
//! published on `hb_job_events` on one server; on a cluster with `SPUBLISH` on
//! `hb_job_events:{<tag>}`, and an instance listens (`SSUBSCRIBE`) only on the slots of
//! the owners its streams watch; every 2 s it leaves the slots nobody watches and, when
//! a resharding moved a watched slot to another master (Redis drops the subscription
//! there without telling the client), subscribes again and has its streams replay.
//! Session notices are published on `hb_session_notices` on one server, and on a cluster
//! on `hb_session_notices:{<tag>}` of the user's slot, listened on the same way.
//!
//! A heartbeat costs two round trips on one server and on a cluster alike: `HGETALL` of
//! the session hash, then one script that compares it and, if unchanged, writes the
//! sessions, progress, history and the analytics index entry together. On a cluster an
//! export page asks every master once for the index parts of its slots, merged in order.
//!
//! One value, the crate's `Layout`, names every key, says which keys a read consults
//! and where events travel; the table above is its answer at layout version 2.
//!
//! Earlier builds (before the slot tag; see CHANGELOG) named progress and history
//! `hb_progress:<user>` and `hb_history:<user>`, kept the analytics index in
//! `{hb_history_index}:*` and the due jobs in `hb_jobs:due` on a cluster too, drew job ids
//! from `hb_jobs:last_id` (ids below 2^34, stored as `hb_job:<id>`, listed in
//! `hb_jobs:owner:<owner>`) and kept events in `{hb_events}:owner:<owner>`. Nothing
//! writes those any more. While the Redis is at layout version 1 they are read too (the
//! newer progress of the two names, history, index entries, jobs and events merged in
//! order); [`RedisStore::migrate_layout`] (`heartbeat-server migrate-redis`) moves them
//! and sets version 2, after which each read consults one key. A Redis without any key
//! starts at version 2; a version above 2 is refused ([`ConnectError::Layout`]). During a
//! rolling upgrade on a cluster, a stream held by an instance of the earlier build sees
//! events published by this build's instances only once it reconnects to one of them.
//!
//! # Atomicity
//!
//! A session commit is one Lua script on the user's hash: it compares the hash with what
//! was loaded (field by field, so writes of a Node server count too) and applies the change
//! only if nothing moved; the core retries a bounded number of times. No lock is held
//! across a round trip. Progress, history and the index entry are written by the same
//! script, on every topology.
//!
//! # Failures
//!
//! Every command gives up after [`RedisConfig::command_timeout`] with
//! [`StoreError::Unavailable`](heartbeat_core::StoreError) and is not resent (a resent
//! compare-and-set could apply twice). The client reconnects by itself, forever, with
//! backoff; subscribers are told to replay (a lag) after a reconnection, since events
//! published meanwhile did not reach them.
//!
//! On a Redis Cluster each master has a pool of its own and the store routes every
//! command by its hash slot, so while one master fails over only the users of its slots
//! wait (set `cluster-require-full-coverage no` on the cluster, or Redis itself refuses
//! every command meanwhile). `MOVED` and `ASK` answers are followed (the command did not
//! run there), and the routing is read again from any master, or the URL's nodes, after
//! a failure.
#![deny(missing_docs)]

mod bus;
mod jobs;
mod layout;
mod migrate;
mod nodes;
mod per_slot;
mod scripts;
mod sessions;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, Config, ErrorKind};
use heartbeat_core::StoreError;
use heartbeat_core::live::Fanout;
use tokio::task::JoinHandle;

pub use heartbeat_core::jobs::DEFAULT_EVENT_HISTORY;
pub use jobs::StoredJob;
pub use migrate::{MigrateOptions, MigrationReport};

/// How to reach Redis and how long to keep things.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (server setting `REDIS_URL`).
    pub url: String,
    /// The password, when the URL carries none (server setting `PASSWORD`, the Node
    /// server's name for it).
    pub password: Option<String>,
    /// Prefix of every key (server setting `REDIS_NAMESPACE`; the Node server's too).
    pub namespace: String,
    /// How long one command may take before it fails with `Unavailable` (default 1 s).
    pub command_timeout: Duration,
    /// How long connecting may take (default 2 s).
    pub connect_timeout: Duration,
    /// Connections in the pool (default 1: commands are pipelined on a connection, and one
    /// connection measured fastest against a local Redis; see the README).
    pub pool_size: usize,
    /// Events kept per owner for replay (default [`DEFAULT_EVENT_HISTORY`]).
    pub event_history: usize,
    /// How long jobs and their events are kept after their last change (default 7 days).
    pub job_retention: Duration,
    /// Also write progress to the Node server's `user_progress` hash (default off). One
    /// server only: that hash is one key, which a cluster cannot write in a user's slot
    /// (and the Node server does not run on a cluster).
    pub node_progress: bool,
    /// Lay keys out as on a Redis Cluster (for a proxy that routes by hash slot): the
    /// analytics index in a part per slot, every script's keys in one slot; then
    /// [`node_progress`](Self::node_progress) cannot be on, and the namespace cannot hold
    /// braces. Always on for `redis-cluster://` URLs (default off).
    pub one_script_per_key: bool,
    /// How often an instance reads the layout version while earlier builds' key names
    /// may still be there, to read one name per call as soon as `migrate-redis` has
    /// finished (default 60 s).
    pub layout_check_every: Duration,
}

impl RedisConfig {
    /// Defaults for the server at `url`.
    ///
    /// ```
    /// let config = heartbeat_store_redis::RedisConfig::new("redis://127.0.0.1:6379");
    /// assert_eq!(config.namespace, "");
    /// assert_eq!(config.command_timeout, std::time::Duration::from_secs(1));
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            namespace: String::new(),
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            pool_size: 1,
            event_history: DEFAULT_EVENT_HISTORY,
            job_retention: Duration::from_secs(7 * 86_400),
            node_progress: false,
            one_script_per_key: false,
            layout_check_every: Duration::from_secs(60),
        }
    }
}

/// Why [`RedisStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL or another setting is not valid.
    #[error("invalid Redis configuration ({url}): {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The Redis holds a layout this build cannot serve (a newer build's).
    #[error("the Redis at {url} cannot be served by this build: {reason}")]
    Layout {
        /// The URL given, its password replaced by `***`.
        url: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {reason}; is redis-server running there?")]
    Unreachable {
        /// The URL given, its password replaced by `***`.
        url: String,
        /// What went wrong, in a few words.
        reason: String,
        /// The client's error.
        #[source]
        source: fred::error::Error,
    },
}

/// `url` with the password of its user part (if any) replaced by `***`, fit for logs.
///
/// ```
/// use heartbeat_store_redis::redact_url;
///
/// assert_eq!(redact_url("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact_url("redis://app:s3cret@cache"), "redis://app:***@cache");
/// assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user_part = &rest[..at];
    let user = user_part
        .split_once(':')
        .map_or(user_part, |(user, _)| user);
    let redacted = if user_part.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    format!("{scheme}://{redacted}{}", &rest[at..])
}

/// The few words a person needs from a client error: the operating system's message
/// when there is one (`Connection refused`), not the client's debug text.
fn plain_reason(error: &fred::error::Error) -> String {
    let details = error.details();
    details
        .split_once("message: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| details.to_owned(), |(message, _)| message.to_owned())
}

struct Inner {
    nodes: nodes::Nodes,
    subscriber: SubscriberClient,
    layout: layout::Layout,
    scripts: scripts::Scripts,
    live: bus::Live,
    /// The sharded event and notice channels listened on (Redis Cluster; none on one
    /// server).
    sharded: bus::ShardedChannels,
    event_history: usize,
    job_retention_millis: i64,
    node_progress: bool,
    /// When a commit also drops the analytics index entries past the retention.
    index_trims: heartbeat_core::store::kit::SweepCadence,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let nodes = self.nodes.clone();
        let subscriber = self.subscriber.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = subscriber.quit().await;
                nodes.quit().await;
            });
        }
    }
}

/// Sessions, progress, history, jobs and job events in Redis. Clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.layout.namespace())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects, loads the scripts and subscribes to the job event channel.
    ///
    /// # Errors
    ///
    /// [`ConnectError::Invalid`] for a bad URL or setting, [`ConnectError::Unreachable`]
    /// when Redis does not answer within [`RedisConfig::connect_timeout`].
    pub async fn connect(config: RedisConfig) -> Result<Self, ConnectError> {
        let invalid = |reason: String| ConnectError::Invalid {
            url: redact_url(&config.url),
            reason,
        };
        let scheme = config.url.split_once("://").map(|(scheme, _)| scheme);
        if !scheme.is_some_and(|scheme| scheme.starts_with("redis") || scheme.starts_with("valkey"))
        {
            return Err(invalid(
                "the URL must start with redis:// (or rediss://, redis-cluster://, redis-sentinel://)"
                    .into(),
            ));
        }
        if config.pool_size == 0 {
            return Err(invalid("the pool needs at least one connection".into()));
        }
        if config.command_timeout.is_zero()
            || config.connect_timeout.is_zero()
            || config.layout_check_every.is_zero()
        {
            return Err(invalid("timeouts must be longer than zero".into()));
        }
        let job_retention_millis = i64::try_from(config.job_retention.as_millis())
            .ok()
            .filter(|millis| *millis > 0)
            .ok_or_else(|| {
                invalid("the job retention must be between 1 ms and i64::MAX ms".into())
            })?;
        let mut redis_config =
            Config::from_url(&config.url).map_err(|error| invalid(error.to_string()))?;
        if redis_config.password.is_none() {
            redis_config.password = config
                .password
                .clone()
                .filter(|password| !password.is_empty());
        }
        // Rediscover a cluster from every node it last knew, not only from the ones the
        // URL names: a single seed whose master dies would otherwise keep every instance
        // away from the whole cluster, even once its replica has taken over. The URL's
        // nodes (a configuration endpoint behind DNS included) are still tried too.
        if let fred::types::config::ServerConfig::Clustered { policy, .. } =
            &mut redis_config.server
        {
            *policy = fred::types::config::ClusterDiscoveryPolicy::UseCache;
        }
        // A cluster (or a proxy that routes by slot) keeps the analytics index in a key
        // per slot, so that the commit script writes it in the user's slot.
        let topology = if config.one_script_per_key || redis_config.server.is_clustered() {
            layout::check_cluster_namespace(&config.namespace).map_err(invalid)?;
            if config.node_progress {
                return Err(invalid(
                    "node_progress (REDIS_NODE_PROGRESS) writes the Node server's one \
                     user_progress hash, which a Redis Cluster cannot write in the user's \
                     slot, and the Node server does not run on a cluster: turn it off"
                        .into(),
                ));
            }
            layout::Topology::Cluster
        } else {
            layout::Topology::OneServer
        };
        let clustered = redis_config.server.is_clustered();
        let connector = nodes::Connector {
            config: redis_config,
            pool_size: config.pool_size,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
        };
        let unreachable = |source: fred::error::Error| ConnectError::Unreachable {
            url: redact_url(&config.url),
            reason: plain_reason(&source),
            source,
        };
        let subscriber = connector
            .builder(None)
            .build_subscriber_client()
            .map_err(|error| invalid(error.to_string()))?;
        let mut tasks = Vec::new();
        let nodes = if clustered {
            // A pool per master, each reconnecting by itself: a failover stops only the
            // commands of its own master's slots.
            let cluster = nodes::Cluster::connect(connector)
                .await
                .map_err(unreachable)?;
            tasks.push(nodes::start_refreshing(Arc::downgrade(&cluster)));
            nodes::Nodes::Cluster(cluster)
        } else {
            let pool = connector
                .builder(None)
                .build_pool(config.pool_size)
                .map_err(|error| invalid(error.to_string()))?;
            init(&pool, config.connect_timeout)
                .await
                .map_err(unreachable)?;
            nodes::Nodes::One(pool)
        };
        init(&subscriber, config.connect_timeout)
            .await
            .map_err(unreachable)?;
        let layout = layout::Layout::new(config.namespace, topology);
        match Self::read_layout(&nodes, &layout, true)
            .await
            .map_err(unreachable)?
        {
            Ok(layout::version::Stored::Current) => layout.migrated(),
            Ok(layout::version::Stored::Earlier) => tracing::warn!(
                "the Redis may hold keys of builds before the slot tag (layout version 1): \
                 reads consult their names too until `heartbeat-server migrate-redis` has \
                 moved them (docs/operations.md)"
            ),
            Err(reason) => {
                nodes.quit().await;
                return Err(ConnectError::Layout {
                    url: redact_url(&config.url),
                    reason,
                });
            }
        }
        let scripts = scripts::Scripts::new();
        nodes.load(&scripts.all()).await.map_err(unreachable)?;
        let live = bus::Live {
            events: Arc::new(Fanout::new()),
            notices: Arc::new(Fanout::new()),
        };
        tasks.extend(
            bus::start_forwarding(
                &subscriber,
                &layout,
                bus::Live {
                    events: Arc::clone(&live.events),
                    notices: Arc::clone(&live.notices),
                },
            )
            .await
            .map_err(unreachable)?,
        );
        let inner = Arc::new_cyclic(|inner| {
            if topology == layout::Topology::Cluster {
                tasks.push(bus::start_tending(inner.clone()));
            }
            if layout.reads_earlier() {
                tasks.push(migrate::start_watching(
                    inner.clone(),
                    config.layout_check_every,
                ));
            }
            Inner {
                nodes,
                subscriber,
                layout,
                scripts,
                live,
                sharded: bus::ShardedChannels::default(),
                event_history: config.event_history.max(1),
                job_retention_millis,
                node_progress: config.node_progress,
                index_trims: heartbeat_core::store::kit::SweepCadence::default(),
                tasks,
            }
        });
        Ok(Self { inner })
    }
}

/// Connects `client`, failing after `timeout` instead of retrying forever.
async fn init<C: ClientLike>(client: &C, timeout: Duration) -> Result<(), fred::error::Error> {
    match tokio::time::timeout(timeout, client.init()).await {
        Ok(result) => result.map(drop),
        Err(_) => {
            let _ = client.quit().await;
            Err(fred::error::Error::new(
                ErrorKind::Timeout,
                format!("no connection within {timeout:?}"),
            ))
        }
    }
}

/// Maps a client error into the core's store error.
fn store_error(what: &str, error: fred::error::Error) -> StoreError {
    if is_transient(&error) {
        return StoreError::unavailable(format!("Redis {what}: {error}"), error);
    }
    match error.kind() {
        ErrorKind::Parse => StoreError::corrupt(format!("Redis {what}: {error}"), error),
        _ => StoreError::backend(format!("Redis {what}: {error}"), error),
    }
}

/// Whether `error` passes by itself: a lost or slow connection, or a failover under way
/// (a cluster without a master for a slot, a replica not yet promoted, a dataset still
/// loading).
fn is_transient(error: &fred::error::Error) -> bool {
    /// Replies Redis gives while a master is being replaced.
    const FAILOVER_REPLIES: [&str; 5] = [
        "READONLY",
        "LOADING",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
    ];
    matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Cluster
    ) || FAILOVER_REPLIES
        .iter()
        .any(|reply| error.details().trim_start().starts_with(reply))
        // The client had no connection to write the command on (it reconnects).
        || error.details().starts_with("Failed to route command")
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    heartbeat_core::store::kit::decode(what, json.as_bytes())
}

impl RedisStore {
    /// Runs a script (reloading it if Redis forgot it, as after a restart) on the node
    /// serving its first key.
    async fn eval<R: fred::types::FromValue>(
        &self,
        what: &str,
        script: &fred::types::scripts::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, StoreError> {
        self.inner
            .nodes
            .eval(script, keys, args)
            .await
            .map_err(|error| store_error(what, error))
    }

    /// Sends `command` with `args` to the node serving `key` (the first key of `args`).
    async fn run<R: fred::types::FromValue>(
        &self,
        what: &str,
        key: &str,
        command: &'static str,
        args: Vec<fred::types::Value>,
    ) -> Result<R, StoreError> {
        self.inner
            .nodes
            .run(key, command, args)
            .await
            .map_err(|error| store_error(what, error))
    }
}

#[cfg(test)]
mod tests {
    use fred::error::{Error, ErrorKind};

    use super::is_transient;

    #[test]
    fn failover_replies_are_transient_and_others_are_not() {
        let reply = |kind, details: &str| Error::new(kind, details.to_owned());
        for transient in [
            reply(
                ErrorKind::Unknown,
                "READONLY You can't write against a read only replica.",
            ),
            reply(
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            reply(ErrorKind::Unknown, "MASTERDOWN Link with MASTER is down"),
            reply(
                ErrorKind::Unknown,
                "TRYAGAIN Multiple keys request during rehashing of slot",
            ),
            reply(ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"),
            reply(ErrorKind::IO, "connection reset"),
            reply(ErrorKind::Timeout, "Request timed out."),
            reply(ErrorKind::Unknown, "Failed to route command."),
        ] {
            assert!(is_transient(&transient), "{transient:?}");
        }
        for lasting in [
            reply(ErrorKind::Unknown, "ERR unknown command"),
            reply(
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key",
            ),
            reply(ErrorKind::Auth, "NOAUTH Authentication required."),
            reply(ErrorKind::Parse, "not a number"),
        ] {
            assert!(!is_transient(&lasting), "{lasting:?}");
        }
    }
}
