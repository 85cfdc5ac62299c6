//! A throwaway Redis behind Sentinel: one master, one replica, three sentinels.

use std::time::Duration;

use super::guarded::{Guarded, ScratchDir, data_node, info_field, redis_cli, wait_for};

/// The name the sentinels monitor the master under (`sentinelServiceName`).
pub const SENTINEL_SERVICE: &str = "heartbeat";

/// How long the master may be unreachable before the sentinels call it down
/// (`down-after-milliseconds`).
pub const SENTINEL_DOWN_AFTER_MS: u64 = 1_000;

/// How long forming the group (or a failover) may take before the testkit gives up.
const FORM_WAIT: Duration = Duration::from_secs(60);

/// One master, one replica and three `redis-server --sentinel` processes (quorum 2) on
/// free loopback ports. Everything is killed, and its directory removed, on drop or when
/// the test process ends.
///
/// ```no_run
/// use heartbeat_store_redis::testkit::RedisSentinel;
///
/// let group = RedisSentinel::start();
/// println!("{}", group.url()); // redis-sentinel://127.0.0.1:…?sentinelServiceName=heartbeat&…
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    master: Guarded,
    replica: Guarded,
    sentinels: Vec<Guarded>,
    dir: ScratchDir,
}

impl RedisSentinel {
    /// Starts the master, its replica and three sentinels, and waits until the replica is
    /// in sync and every sentinel knows the replica and the other two sentinels.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing, or the group does not form within a
    /// minute.
    pub fn start() -> Self {
        let dir = ScratchDir::new("redis-sentinel");
        let master = Guarded::start_on_free_ports(&dir, 1, |ports, _| data_node(ports[0], &[]));
        let master_port = master.port().to_string();
        let replica = Guarded::start_on_free_ports(&dir, 1, |ports, _| {
            data_node(ports[0], &["--replicaof", "127.0.0.1", &master_port])
        });
        let sentinels = (0..3)
            .map(|_| {
                Guarded::start_on_free_ports(&dir, 1, |ports, node_dir| {
                    // A sentinel rewrites its configuration file: each has its own.
                    let config = node_dir.join("sentinel.conf");
                    let text = format!(
                        "port {port}\nbind 127.0.0.1\nlogfile sentinel.log\n\
                         sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_SERVICE} {SENTINEL_DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                         sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                        port = ports[0],
                    );
                    std::fs::write(&config, text).expect("a sentinel configuration file");
                    vec![config.display().to_string(), "--sentinel".to_owned()]
                })
            })
            .collect();
        let group = Self {
            master,
            replica,
            sentinels,
            dir,
        };
        wait_for(FORM_WAIT, || group.formed()).unwrap_or_else(|| {
            panic!(
                "the sentinels did not see the replica and each other within {FORM_WAIT:?} \
                 (logs in {})",
                group.dir.path().display()
            )
        });
        group
    }

    /// `redis-sentinel://127.0.0.1:<sentinel>/0?sentinelServiceName=heartbeat&node=…`,
    /// naming all three sentinels.
    pub fn url(&self) -> String {
        let mut sentinels = self.sentinels.iter().map(Guarded::port);
        let first = sentinels.next().unwrap_or_default();
        let rest: String = sentinels
            .map(|port| format!("&node=127.0.0.1:{port}"))
            .collect();
        format!("redis-sentinel://127.0.0.1:{first}/0?sentinelServiceName={SENTINEL_SERVICE}{rest}")
    }

    /// The port of the first master (killed by [`kill_master`](Self::kill_master)).
    pub fn master_port(&self) -> u16 {
        self.master.port()
    }

    /// The port of the replica (the master after a failover).
    pub fn replica_port(&self) -> u16 {
        self.replica.port()
    }

    /// Kills the master with `kill -9`.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// Waits until every sentinel names the replica as the master and the replica has
    /// taken the role: how long that took, or `None` after a minute.
    pub fn wait_for_promotion(&self) -> Option<Duration> {
        let promoted = self.replica.port().to_string();
        wait_for(FORM_WAIT, || {
            self.sentinels.iter().all(|sentinel| {
                redis_cli(
                    sentinel.port(),
                    &["sentinel", "get-master-addr-by-name", SENTINEL_SERVICE],
                )
                .lines()
                .nth(1)
                .is_some_and(|port| port.trim() == promoted)
            }) && info_field(
                &redis_cli(self.replica.port(), &["info", "replication"]),
                "role",
            ) == Some("master")
        })
    }

    fn formed(&self) -> bool {
        let replication = redis_cli(self.replica.port(), &["info", "replication"]);
        info_field(&replication, "master_link_status") == Some("up")
            && self.sentinels.iter().all(|sentinel| {
                let master = redis_cli(sentinel.port(), &["sentinel", "master", SENTINEL_SERVICE]);
                let field = |name: &str| {
                    let mut lines = master.lines().map(str::trim);
                    lines.find(|line| *line == name)?;
                    lines.next().map(str::to_owned)
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
    }
}
